//! The runtime's error type: every error names what failed and where, in one line.

use std::fmt::Display;

/// Result alias used throughout the runtime library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from a runtime operation. The message is meant for the user as-is: it names
/// the object (field, path, value) and, where there is one, the fix.
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
    /// The user's input (config.json, flags, ids) is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The container is not in a state that allows the operation.
    #[error("{0}")]
    State(String),
    /// The host cannot do what was asked (missing controller, kernel feature).
    #[error("{0}")]
    Unsupported(String),
    /// A hook failed or timed out.
    #[error("{0}")]
    Hook(String),
    /// The container's setup process reported an error.
    #[error("{0}")]
    Child(String),
}

impl Error {
    /// Builds an [`Error::Invalid`] from anything displayable.
    pub fn invalid(msg: impl Display) -> Self {
        Error::Invalid(msg.to_string())
    }

    /// Builds an [`Error::Unsupported`] from anything displayable.
    pub fn unsupported(msg: impl Display) -> Self {
        Error::Unsupported(msg.to_string())
    }

    /// Builds an [`Error::Io`] from an errno-style error and a context line.
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

impl From<berth_cgroups::Error> for Error {
    fn from(e: berth_cgroups::Error) -> Self {
        match e {
            berth_cgroups::Error::Io { context, source } => Error::Io { context, source },
            berth_cgroups::Error::Invalid(m) => Error::Invalid(m),
            berth_cgroups::Error::State(m) => Error::State(m),
            berth_cgroups::Error::Unsupported(m) => Error::Unsupported(m),
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

impl<T> Context<T> for std::result::Result<T, pathrs::error::Error> {
    fn ctx<D: Display>(self, f: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| {
            let source = match e.kind() {
                pathrs::error::ErrorKind::OsError(Some(errno)) => {
                    std::io::Error::from_raw_os_error(errno)
                }
                _ => std::io::Error::other(e.to_string()),
            };
            Error::io(f(), source)
        })
    }
}
