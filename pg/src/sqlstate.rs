//! The one place where engine errors become PostgreSQL errors: a SQLSTATE chosen by the error's
//! [`ErrorClass`], and the same message the Flight front door sends.

use flywheel_engine::{Error, ErrorClass};
use pgwire::error::{ErrorInfo, PgWireError};

/// The SQLSTATE of an error class.
pub fn sqlstate(class: ErrorClass) -> &'static str {
    use ErrorClass as K;
    match class {
        K::Syntax => "42601",
        K::Invalid => "42000",
        K::BadData => "22000",
        K::Unsupported => "0A000",
        K::UndefinedTable => "42P01",
        K::UndefinedObject => "42704",
        K::DuplicateTable => "42P07",
        K::DuplicateObject => "42710",
        K::Unauthenticated => "28P01",
        K::PermissionDenied => "42501",
        K::Conflict => "40001",
        K::FailedPrecondition => "55000",
        K::Timeout => "57014",
        K::Limit => "54000",
        K::OutOfMemory => "53200",
        K::Unavailable => "57P03",
        K::Internal => "XX000",
    }
}

/// An engine error as the error response a client receives.
pub fn to_pg(e: Error) -> PgWireError {
    let class = e.class();
    let mut message = e.user_message();
    if class == ErrorClass::Internal {
        tracing::error!(error = ?e, "internal error");
        message = format!("internal error: {message}");
    }
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        sqlstate(class).to_owned(),
        message,
    )))
}

/// An error of this front door itself (a message it cannot decode), with its class.
pub fn refusal(class: ErrorClass, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        sqlstate(class).to_owned(),
        message.into(),
    )))
}
