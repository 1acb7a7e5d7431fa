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
    #[error("image metadata: {}", db_message(.0))]
    Db(#[from] rusqlite::Error),
    /// The object is in use and cannot be removed.
    #[error("{0}")]
    InUse(String),
    /// The host cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
}

/// A database error as users read it: a full disk said as the other writes say it
/// (SQLite's own words are "database or disk is full").
fn db_message(e: &rusqlite::Error) -> String {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        format!("No space left on device ({e}): free space where the store is")
    } else {
        e.to_string()
    }
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

#[cfg(test)]
mod db_message_tests {
    use super::*;

    #[test]
    fn a_full_disk_is_said_as_other_writes_say_it() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        let msg = Error::Db(full).to_string();
        assert!(
            msg.starts_with("image metadata: No space left on device ("),
            "{msg}"
        );
        let other = rusqlite::Error::QueryReturnedNoRows;
        assert_eq!(
            Error::Db(other).to_string(),
            "image metadata: Query returned no rows"
        );
    }
}
