//! The one place where engine errors become gRPC status codes.

use datafusion::error::DataFusionError;
use tonic::Status;

use flywheel_engine::Error;

/// Maps an engine error to the status a client sees: user errors carry their message; internal
/// errors are logged with detail and reported without internals.
pub fn to_status(e: Error) -> Status {
    use flywheel_catalog::Error as C;
    if let Error::Stopped { context, cause } = e {
        let inner = to_status(*cause);
        return Status::new(inner.code(), format!("{context}: {}", inner.message()));
    }
    let message = e.user_message();
    match &e {
        Error::Sql(_)
        | Error::InvalidInput(_)
        | Error::NotOneStatement { .. }
        | Error::Arrow(_) => Status::invalid_argument(message),
        Error::Unsupported { .. } => Status::unimplemented(message),
        Error::NotFound { .. } | Error::NotRefreshable { .. } | Error::NotServed { .. } => {
            Status::not_found(message)
        }
        Error::AlreadyExists { .. } | Error::NameTaken { .. } => Status::already_exists(message),
        Error::Unauthenticated(_) => Status::unauthenticated(message),
        Error::Catalog(c) => match c {
            C::TableNotFound { .. }
            | C::ObjectNotFound { .. }
            | C::VersionNotFound { .. }
            | C::TimestampNotFound { .. } => Status::not_found(message),
            C::TableExists { .. } | C::ObjectExists { .. } => Status::already_exists(message),
            C::NotADeltaTable { .. } | C::InvalidLocation { .. } | C::InvalidName { .. } => {
                Status::invalid_argument(message)
            }
            C::RegistryBusy { .. } => Status::aborted(message),
            C::UnreadableDefinition { .. } => Status::failed_precondition(message),
            _ => internal(&e),
        },
        Error::DataFusion(df) => datafusion_status(df, message, &e),
        Error::Config(_) => Status::invalid_argument(message),
        Error::Delta(d) if is_bad_data(d) => Status::invalid_argument(message),
        Error::Conflict(_) => Status::aborted(message),
        Error::Delta(d) if flywheel_catalog::is_commit_race(d) => Status::aborted(format!(
            "{message}: another writer committed to the same table first; nothing was committed \
             by this statement, run it again"
        )),
        Error::Limit(_) => Status::invalid_argument(message),
        Error::Timeout(_) => Status::deadline_exceeded(message),
        // Unwrapped above.
        Error::Stopped { .. } => internal(&e),
        Error::PermissionDenied(_) => Status::permission_denied(message),
        Error::Unavailable(_) => {
            tracing::warn!(error = %message, "unavailable");
            Status::unavailable(message)
        }
        Error::Delta(_) | Error::Io(_) | Error::Transport(_) | Error::Internal(_) => internal(&e),
    }
}

fn datafusion_status(df: &DataFusionError, message: String, e: &Error) -> Status {
    match df.find_root() {
        DataFusionError::SQL(..) => Status::invalid_argument(message),
        DataFusionError::SchemaError(..) | DataFusionError::Plan(_) => {
            Status::invalid_argument(message)
        }
        DataFusionError::NotImplemented(_) => Status::unimplemented(message),
        DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => {
            Status::invalid_argument(message)
        }
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        _ => internal(e),
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

fn internal(e: &Error) -> Status {
    tracing::error!(error = ?e, "internal error");
    Status::internal(format!("internal error: {}", e.user_message()))
}
