//! The one place where engine errors become gRPC status codes, by their [`ErrorClass`].

use tonic::Status;

use flywheel_engine::{Error, ErrorClass};

/// Maps an engine error to the status a client sees: user errors carry their message; internal
/// errors are logged with detail and reported without internals.
pub fn to_status(e: Error) -> Status {
    use ErrorClass as K;
    let message = e.user_message();
    match e.class() {
        K::Syntax | K::Invalid | K::BadData | K::Limit => Status::invalid_argument(message),
        K::Unsupported => Status::unimplemented(message),
        K::UndefinedTable | K::UndefinedObject => Status::not_found(message),
        K::DuplicateTable | K::DuplicateObject => Status::already_exists(message),
        K::Unauthenticated => Status::unauthenticated(message),
        K::PermissionDenied => Status::permission_denied(message),
        K::Conflict => Status::aborted(message),
        K::FailedPrecondition => Status::failed_precondition(message),
        K::Timeout => Status::deadline_exceeded(message),
        K::OutOfMemory => Status::resource_exhausted(message),
        K::Unavailable => {
            tracing::warn!(error = %message, "unavailable");
            Status::unavailable(message)
        }
        K::Internal => {
            tracing::error!(error = ?e, "internal error");
            Status::internal(format!("internal error: {message}"))
        }
    }
}
