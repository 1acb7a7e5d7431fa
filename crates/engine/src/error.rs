//! The engine's error type.

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An engine error: what failed and why, with the object named.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user input (flag values, names).
    #[error("{0}")]
    Invalid(String),
    /// No such container.
    #[error("{0}")]
    NotFound(String),
    /// A name or resource in use, or a container in the wrong state.
    #[error("{0}")]
    Conflict(String),
    /// The monitor library failed.
    #[error(transparent)]
    Monitor(#[from] berth_monitor::Error),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] berth_image::Error),
    /// Networking failed.
    #[error(transparent)]
    Net(#[from] berth_net::Error),
    /// A cgroup could not be made, limited or read.
    #[error(transparent)]
    Cgroup(#[from] berth_cgroups::Error),
    /// The runtime failed.
    #[error("{0}")]
    Runtime(String),
    /// A system call or file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error with context.
    pub fn io(context: impl std::fmt::Display, source: impl Into<std::io::Error>) -> Error {
        Error::Io {
            context: context.to_string(),
            source: source.into(),
        }
    }
}

/// Adds context to I/O results.
pub trait Context<T> {
    /// Attaches a context line computed only on failure.
    fn ctx<D: std::fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx<D: std::fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl<T> Context<T> for rustix::io::Result<T> {
    fn ctx<D: std::fmt::Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::io(f(), std::io::Error::from(e)))
    }
}
