//! Joining a cluster, the facts every side shares: the join token a server prints
//! and an agent presents ([`token`]), the bootstrap token Secrets that back it
//! ([`secret`]), and the names of the identities and signers a node's certificates
//! are issued under ([`identity`]).

pub mod csr;
pub mod identity;
pub mod secret;
pub mod token;

pub use secret::TokenSecret;
pub use token::{ca_hash, BootstrapToken, JoinToken};

/// Why a token or a bootstrap Secret was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The text is not a token of the expected form.
    #[error("{0}")]
    Malformed(String),
    /// The token is known but may not be used (expired, wrong secret, not for this use).
    #[error("{0}")]
    Refused(String),
}
