//! Joining a cluster, the facts every side shares: the join token a server prints
//! and an agent presents ([`token`]), the bootstrap token Secrets that back it
//! ([`secret`]), the signed cluster-info a node given bare token credentials trusts
//! the CA from ([`discovery`]), and the names of the identities and signers a node's
//! certificates are issued under ([`identity`]).

pub mod csr;
pub mod discovery;
pub mod identity;
pub mod secret;
pub mod token;

pub use secret::TokenSecret;
pub use token::{ca_hash, BootstrapToken, JoinCredentials, JoinToken};

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

/// What a server hands another server joining its cluster on a shared datastore:
/// the cluster CA and the ServiceAccount signing key, so both sign and verify the
/// same certificates and tokens. Only the server's own join token may fetch it.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerBootstrap {
    /// The CA certificate (PEM).
    pub ca_cert: String,
    /// The CA key (PEM).
    pub ca_key: String,
    /// The ServiceAccount token signing key (PEM).
    pub service_account_key: String,
    /// The nodes' serving CA certificate (PEM).
    pub kubelet_ca_cert: String,
    /// The nodes' serving CA key (PEM).
    pub kubelet_ca_key: String,
}

impl std::fmt::Debug for ServerBootstrap {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerBootstrap(CA and ServiceAccount keys)")
    }
}

/// Where a server serves [`ServerBootstrap`].
pub const SERVER_BOOTSTRAP_PATH: &str = "/v1-berth/server-bootstrap";
