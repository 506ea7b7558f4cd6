//! Errors of the SQL front end.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while parsing SQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not valid SQL; the message carries the line and column of the offending token.
    #[error("syntax error: {message}")]
    Syntax { message: String },
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // DataFusion wraps sqlparser errors as `SQL error: ParserError("...")`; keep only the message.
        let message = match e.find_root() {
            datafusion::error::DataFusionError::SQL(inner, _) => match inner.as_ref() {
                sqlparser::parser::ParserError::ParserError(m)
                | sqlparser::parser::ParserError::TokenizerError(m) => m.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        Error::Syntax { message }
    }
}
