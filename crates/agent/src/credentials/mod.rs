//! The node's credentials, as the kubelet keeps them: a client certificate for
//! `system:node:NAME` got by joining with a token ([`join`]) and renewed before it
//! expires, and a serving certificate for its HTTPS endpoint asked of the cluster CA
//! ([`rotate`]); the API client presents whichever client certificate is current
//! ([`client`]), so renewal needs no restart.

pub mod client;
pub mod join;
pub mod rotate;
pub mod servers;

use std::path::{Path, PathBuf};

/// Where a node keeps its certificates (STATE_ROOT/agent/pki), and the kubeconfig
/// that points at them.
#[derive(Clone, Debug)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// The files under `dir`.
    pub fn new(dir: &Path) -> Files {
        Files {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster CA the node trusts (verified against its join token).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The client certificate.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    /// The client key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// The serving certificate of the node's HTTPS endpoint.
    pub fn serving_cert(&self) -> PathBuf {
        self.dir.join("serving.crt")
    }

    /// The serving key.
    pub fn serving_key(&self) -> PathBuf {
        self.dir.join("serving.key")
    }

    /// A kubeconfig naming the files (for kubectl as the node, and for restarts).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("node.kubeconfig")
    }
}

/// Writes a private file whole or not at all.
pub(crate) fn write_private(path: &Path, data: &str) -> std::io::Result<()> {
    berth_hostdirs::write_private(path, data.as_bytes())
}
