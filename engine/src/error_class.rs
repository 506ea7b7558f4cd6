//! [`ErrorClass`]: what kind of failure an [`Error`] is, decided from its variant (and, for
//! DataFusion's and delta-rs's errors, from theirs). Each front door turns a class into its
//! protocol's code in one place: the Flight front door into a gRPC status, the Postgres one into a
//! SQLSTATE. No class is chosen by reading a message, except delta-rs's generic write failures
//! ([`is_bad_data`]), which carry nothing else.

use datafusion::error::DataFusionError;

use crate::Error;

/// The kind of an engine error, as clients are told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Text that does not parse.
    Syntax,
    /// A statement or request that parses but is not valid (a missing column, a bad option).
    Invalid,
    /// Data that does not fit (a cast that fails, a value a Delta table cannot hold).
    BadData,
    /// Something Flywheel does not do; the message says what to do instead.
    Unsupported,
    /// A table (or a Flywheel object read as a table) that does not exist.
    UndefinedTable,
    /// Another named thing that does not exist (an entity, a version, a timestamp).
    UndefinedObject,
    /// A table name that is taken.
    DuplicateTable,
    /// Another name that is taken (an entity, a feature view).
    DuplicateObject,
    /// No or wrong credentials.
    Unauthenticated,
    /// A file or folder the statement may not use.
    PermissionDenied,
    /// A write that lost a race with another writer; running it again may succeed.
    Conflict,
    /// State that must be repaired first (an unreadable definition in the registry).
    FailedPrecondition,
    /// A statement past `statement_timeout`.
    Timeout,
    /// A statement over a limit of the server (size, depth, keys).
    Limit,
    /// A statement that needs more memory than `memory_limit`.
    OutOfMemory,
    /// A service Flywheel depends on is down for now.
    Unavailable,
    /// A fault of Flywheel itself.
    Internal,
}

impl Error {
    /// The class of this error ([`Error::Stopped`] takes its cause's).
    pub fn class(&self) -> ErrorClass {
        use ErrorClass as K;
        use flywheel_catalog::Error as C;
        match self {
            Error::Stopped { cause, .. } => cause.class(),
            Error::Sql(_) => K::Syntax,
            Error::InvalidInput(_) | Error::NotOneStatement { .. } | Error::Config(_) => K::Invalid,
            Error::Arrow(_) => K::BadData,
            Error::Unsupported { .. } => K::Unsupported,
            Error::NotFound { .. } | Error::NotRefreshable { .. } | Error::NotServed { .. } => {
                K::UndefinedObject
            }
            Error::AlreadyExists { .. } => K::DuplicateObject,
            Error::NameTaken { .. } => K::DuplicateTable,
            Error::Unauthenticated(_) => K::Unauthenticated,
            Error::Catalog(c) => match c {
                C::TableNotFound { .. } => K::UndefinedTable,
                C::ObjectNotFound { .. }
                | C::VersionNotFound { .. }
                | C::TimestampNotFound { .. } => K::UndefinedObject,
                C::TableExists { .. } => K::DuplicateTable,
                C::ObjectExists { .. } => K::DuplicateObject,
                C::NotADeltaTable { .. }
                | C::InvalidLocation { .. }
                | C::InvalidName { .. }
                | C::FilesNotDelta { .. }
                | C::Files { .. } => K::Invalid,
                C::RegistryBusy { .. } => K::Conflict,
                C::UnreadableDefinition { .. } => K::FailedPrecondition,
                _ => K::Internal,
            },
            Error::DataFusion(df) => datafusion_class(df),
            Error::Delta(d) if is_bad_data(d) => K::BadData,
            Error::Delta(d) if flywheel_catalog::is_commit_race(d) => K::Conflict,
            Error::Conflict(_) => K::Conflict,
            Error::Limit(_) => K::Limit,
            Error::Timeout(_) => K::Timeout,
            Error::PermissionDenied(_) => K::PermissionDenied,
            Error::Unavailable(_) => K::Unavailable,
            Error::Delta(_) | Error::Io(_) | Error::Transport(_) | Error::Internal(_) => {
                K::Internal
            }
        }
    }
}

fn datafusion_class(df: &DataFusionError) -> ErrorClass {
    use ErrorClass as K;
    match df.find_root() {
        DataFusionError::SQL(..) => K::Syntax,
        DataFusionError::SchemaError(..) | DataFusionError::Plan(_) => K::Invalid,
        DataFusionError::NotImplemented(_) => K::Unsupported,
        DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => K::BadData,
        DataFusionError::ResourcesExhausted(_) => K::OutOfMemory,
        _ => K::Internal,
    }
}

/// A Delta write that failed on the data it was given (a value that does not cast, a type Delta
/// cannot store): delta-rs reports those as generic errors carrying the engine's message.
fn is_bad_data(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::DeltaTableError as D;
    match e {
        D::Generic(m) => {
            m.contains("Execution error") || m.contains("Cast error") || m.contains("cannot cast")
        }
        D::Arrow { .. } | D::SchemaMismatch { .. } => true,
        _ => false,
    }
}
