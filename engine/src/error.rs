//! [`Error`]: everything an engine operation can fail with, as structured variants. Each error has
//! a class ([`crate::ErrorClass`]); front doors choose their protocol's codes by class, in one place
//! each (the Flight front door's `status` module, the Postgres front door's `sqlstate`).

use datafusion::error::DataFusionError;
use flywheel_sql::ast::ObjectKind;

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the engine, or of a front door over it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sql(#[from] flywheel_sql::Error),

    #[error(transparent)]
    Catalog(#[from] flywheel_catalog::Error),

    #[error("{0}")]
    DataFusion(#[from] DataFusionError),

    #[error(transparent)]
    Delta(#[from] deltalake::DeltaTableError),

    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),

    /// A statement or clause Flywheel does not support; `hint` says what to do instead.
    #[error("{what} is not supported: {hint}")]
    Unsupported { what: String, hint: String },

    /// Input that is well-formed but invalid for Flywheel (a statement, a ticket, a request);
    /// the message says what is wrong and what to do instead.
    #[error("{0}")]
    InvalidInput(String),

    /// A Flywheel object that does not exist.
    #[error("{} `{name}` not found; SHOW {} lists them", kind.noun(), kind.plural_sql())]
    NotFound { kind: ObjectKind, name: String },

    /// A name given to `REFRESH` that is no feature view, label or training set.
    #[error(
        "`{name}` is not a feature view, label or training set; SHOW FEATURE VIEWS, SHOW LABELS \
         and SHOW TRAINING SETS list them"
    )]
    NotRefreshable { name: String },

    /// A lookup named a feature view with no online snapshot: `reason` says why and what loads
    /// one ([`crate::not_served`] finds it from the registry).
    #[error("feature view `{view}` {reason}")]
    NotServed { view: String, reason: String },

    /// An object name that is taken; `hint` says how to replace or reuse it.
    #[error("{} `{name}` already exists; {hint}", kind.noun())]
    AlreadyExists {
        kind: ObjectKind,
        name: String,
        hint: String,
    },

    /// A table holds the name an object's own table would take.
    #[error(
        "a table named `{name}` already exists; a {} is materialized as a table of its name, so \
         pick another name",
        kind.noun()
    )]
    NameTaken { kind: ObjectKind, name: String },

    /// A caller without valid credentials; the message says what to send.
    #[error("{0}")]
    Unauthenticated(String),

    #[error("expected exactly one statement, found {found}")]
    NotOneStatement { found: usize },

    #[error("configuration error: {0}")]
    Config(String),

    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),

    #[error("server error: {0}")]
    Transport(String),

    /// A fault of Flywheel itself (a broken invariant), not of the request.
    #[error("{0}")]
    Internal(String),

    /// A write that lost to other writers' concurrent commits to the same table; nothing was
    /// committed and the statement can be run again.
    #[error("{0}")]
    Conflict(String),

    /// A file or folder the statement may not use (outside the warehouse and `allowed_paths`,
    /// or inside Flywheel's own folders); the message names the rule and the setting.
    #[error("{0}")]
    PermissionDenied(String),

    /// A statement over several objects (a `REFRESH` following the lineage) that stopped at one of
    /// them: what it was doing, and that object's own error (whose status code it keeps).
    #[error("{context}: {}", .cause.user_message())]
    Stopped { context: String, cause: Box<Error> },

    /// A statement that ran past `statement_timeout` and was cancelled.
    #[error("{0}")]
    Timeout(String),

    /// A statement over a limit of the server (expression depth, statement size, memory, time);
    /// the message names the limit and the setting that raises it.
    #[error("{0}")]
    Limit(String),

    /// A service Flywheel depends on (the online store's Redis) cannot be reached for now; the
    /// call may succeed when retried.
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    /// Recovers Flywheel's own errors that travelled through DataFusion as `External`.
    pub fn from_datafusion(e: DataFusionError) -> Self {
        match e {
            DataFusionError::External(inner) => match inner.downcast::<flywheel_catalog::Error>() {
                Ok(c) => Error::Catalog(*c),
                Err(inner) => match inner.downcast::<Error>() {
                    Ok(own) => *own,
                    Err(inner) => Error::DataFusion(DataFusionError::External(inner)),
                },
            },
            DataFusionError::Context(ctx, inner) => match Self::from_datafusion(*inner) {
                Error::DataFusion(inner) => {
                    Error::DataFusion(DataFusionError::Context(ctx, Box::new(inner)))
                }
                own => own,
            },
            other => Error::DataFusion(other),
        }
    }

    /// The message a user sees: DataFusion's nested prefixes stripped down to the cause.
    pub fn user_message(&self) -> String {
        match self {
            Error::DataFusion(e) => datafusion_message(e),
            Error::Delta(d) if flywheel_catalog::is_commit_race(d) => format!(
                "{self}: another writer committed to the same table first; nothing was committed \
                 by this statement, run it again"
            ),
            other => other.to_string(),
        }
    }
}

/// DataFusion prints errors as `Error during planning: ...`, `External error: ...`, with diagnostics;
/// keep the kind and the message, drop wrappers that add nothing for a user.
fn datafusion_message(e: &DataFusionError) -> String {
    match e {
        DataFusionError::External(inner) => inner.to_string(),
        DataFusionError::Context(_, inner) => datafusion_message(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_message(inner),
        DataFusionError::Shared(inner) => datafusion_message(inner),
        DataFusionError::ResourcesExhausted(m) => out_of_memory(m),
        other => match other.find_root() {
            DataFusionError::ResourcesExhausted(m) => out_of_memory(m),
            _ => other.strip_backtrace(),
        },
    }
}

/// DataFusion's memory refusal (a list of the pool's consumers and the failed allocation) as one
/// line: what failed, and the setting that bounds it.
fn out_of_memory(message: &str) -> String {
    let failed = message
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Error: "))
        .or_else(|| message.lines().next())
        .unwrap_or(message)
        .trim();
    format!(
        "the query needs more memory than memory_limit allows ({failed}); raise memory_limit in \
         the server's configuration, or make the query hold less (filter first, join a smaller \
         table on the build side)"
    )
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(inner) => inner,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
