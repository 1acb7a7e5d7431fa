//! The agent's errors: each names the object and what went wrong.

/// An agent error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("{0}: {1}")]
    Api(String, #[source] Box<kube::Error>),
    /// The engine failed.
    #[error(transparent)]
    Engine(berth_engine::Error),
    /// A file operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A pod's spec asks for something the agent can't do (the message says what and
    /// where).
    #[error("{0}")]
    Spec(String),
    /// Something the pod needs does not exist yet (a ConfigMap, a Secret): retried.
    #[error("{0}")]
    Missing(String),
    /// A setting of the agent this host cannot use (the message names the flag).
    #[error("{0}")]
    Config(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The agent's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an API error.
pub(crate) trait ApiContext<T> {
    /// Names the request.
    fn api(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> ApiContext<T> for std::result::Result<T, kube::Error> {
    fn api(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Api(what(), Box::new(e)))
    }
}

/// Whether an API error is a 404.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API error is a 409.
pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl From<berth_pods::QuantityError> for Error {
    fn from(e: berth_pods::QuantityError) -> Self {
        Error::Spec(e.0)
    }
}
