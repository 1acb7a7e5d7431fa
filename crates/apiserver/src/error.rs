//! What keeps the API server from starting.

/// What keeps the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificates, keys, files, the listener.
    #[error("{0}")]
    Setup(String),
    /// The store.
    #[error("storage: {0}")]
    Store(#[from] berth_store::Error),
}
