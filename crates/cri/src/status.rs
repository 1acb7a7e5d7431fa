//! Engine errors as gRPC statuses, with the codes CRI clients act on: the kubelet
//! treats NotFound on stop and remove as done, and crictl prints the message.

use berth_engine::error::Error;
use tonic::{Code, Status};

/// The gRPC status of an engine error.
pub fn of(e: Error) -> Status {
    let code = match &e {
        Error::Invalid(_) => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::Conflict(_) => Code::FailedPrecondition,
        Error::Image(i) => match i {
            berth_image::Error::Invalid(_) => Code::InvalidArgument,
            berth_image::Error::NotFound(_) => Code::NotFound,
            berth_image::Error::InUse(_) => Code::FailedPrecondition,
            berth_image::Error::Unsupported(_) => Code::Unimplemented,
            // As containerd answers a failed pull: the message says what the registry
            // said (401, not found, unreachable); the kubelet reports it as ErrImagePull.
            berth_image::Error::Registry(_) => Code::Unknown,
            berth_image::Error::DigestMismatch(_) => Code::DataLoss,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// A request that lacks a field CRI requires.
pub fn missing(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}

/// A task that did the engine's blocking work panicked or was cancelled.
pub fn join(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("the engine call did not finish: {e}"))
}
