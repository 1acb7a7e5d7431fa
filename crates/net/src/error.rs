//! The network library's error type.

/// Result alias of the network library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A networking error: what failed, with the object (network, address, port) named.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user input: a CIDR, an address, a port mapping, a name.
    #[error("{0}")]
    Invalid(String),
    /// No such network.
    #[error("{0}")]
    NotFound(String),
    /// In use: a network with containers, a taken port, an overlapping subnet, an
    /// exhausted address range.
    #[error("{0}")]
    Conflict(String),
    /// A netlink request the kernel refused.
    #[error("{context}: {message}")]
    Netlink {
        /// What was being done.
        context: String,
        /// The kernel's answer.
        message: String,
    },
    /// nftables failed (or `nft` is missing).
    #[error("{0}")]
    Nft(String),
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

    /// A netlink error with context.
    pub fn netlink(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
        Error::Netlink {
            context: context.to_string(),
            message: e.to_string(),
        }
    }
}

/// Adds context to I/O results.
pub trait Context<T> {
    /// Attaches a context line computed only on failure.
    fn ctx<F: FnOnce() -> S, S: std::fmt::Display>(self, f: F) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> Context<T> for std::result::Result<T, E> {
    fn ctx<F: FnOnce() -> S, S: std::fmt::Display>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}
