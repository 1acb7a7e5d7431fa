//! The image store's error type: one line saying what failed, on which object, and why.

use std::fmt::Display;

/// Result alias of the image crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the image store, a format reader or the registry client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The input (reference, archive, manifest, layer) is malformed or hostile.
    #[error("{0}")]
    Invalid(String),
    /// Something that should exist does not (image, blob, container).
    #[error("{0}")]
    NotFound(String),
    /// Content does not match its digest.
    #[error("{0}")]
    DigestMismatch(String),
    /// The registry refused or failed the request.
    #[error("{0}")]
    Registry(String),
    /// The store's metadata database failed.
    #[error("image metadata: {0}")]
    Db(#[from] rusqlite::Error),
    /// The object is in use and cannot be removed.
    #[error("{0}")]
    InUse(String),
    /// The host cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// An [`Error::Invalid`] from anything displayable.
    pub fn invalid(msg: impl Display) -> Self {
        Error::Invalid(msg.to_string())
    }

    /// An [`Error::NotFound`] from anything displayable.
    pub fn not_found(msg: impl Display) -> Self {
        Error::NotFound(msg.to_string())
    }

    /// An [`Error::Io`] with context.
    pub fn io(context: impl Display, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            context: context.to_string(),
            source: source.into(),
        }
    }

    /// The raw OS error number, for I/O errors.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Adds context to I/O results.
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
