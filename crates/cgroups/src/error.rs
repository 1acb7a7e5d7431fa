//! The cgroup library's error type. Its variants mirror berth-runtime's so that the
//! runtime reports cgroup failures exactly as before they moved here.

use std::fmt::Display;

/// Result alias of the cgroup library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A cgroup operation's error: the message names the file, the value and, where there
/// is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path or value involved.
        context: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// The request is wrong (a bad path or value).
    #[error("{0}")]
    Invalid(String),
    /// The cgroup is not in a state that allows the operation (a freeze that never
    /// finished).
    #[error("{0}")]
    State(String),
    /// The host cannot do what was asked (a missing controller or kernel file).
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// Builds an [`Error::Invalid`].
    pub fn invalid(msg: impl Display) -> Self {
        Error::Invalid(msg.to_string())
    }

    /// Builds an [`Error::Unsupported`].
    pub fn unsupported(msg: impl Display) -> Self {
        Error::Unsupported(msg.to_string())
    }

    /// Builds an [`Error::Io`] from an OS error and a context line.
    pub fn io(context: impl Display, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            context: context.to_string(),
            source: source.into(),
        }
    }

    /// The raw OS error number, when the error came from a system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Adds context to fallible system calls, turning their error into [`Error::Io`].
pub trait Context<T> {
    /// Attaches a context line computed only on failure.
    fn ctx<D: Display>(self, f: impl FnOnce() -> D) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx<D: Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl<T> Context<T> for rustix::io::Result<T> {
    fn ctx<D: Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::io(f(), std::io::Error::from(e)))
    }
}
