//! What `berth cluster` keeps of a cluster (`ROOT/clusters/NAME/cluster.json`) and
//! where each of its parts lives: one place for every path, so that create, delete,
//! load and the tests never work one out again.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The port the server listens on inside its node.
pub const API_PORT: u16 = 6443;

/// A node's part in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `berth server` (API server, scheduler, controllers, and a node agent).
    Server,
    /// `berth agent`.
    Agent,
}

/// One node: a network namespace on the cluster's bridge, with its own state root.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The Node's name.
    pub name: String,
    /// Server or agent.
    pub role: Role,
    /// Its address on the cluster's bridge (its InternalIP).
    pub ip: Ipv4Addr,
    /// The host end of its veth.
    pub host_veth: String,
}

/// A cluster made by `berth cluster create`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Its name.
    pub name: String,
    /// The host bridge its nodes share.
    pub bridge: String,
    /// The nodes' network (the bridge has its first address).
    pub subnet: ipnet::Ipv4Net,
    /// How pods reach other nodes' pods.
    pub backend: String,
    /// Its nodes, the server first.
    pub nodes: Vec<NodeRecord>,
}

/// Where the clusters of a state root live.
pub fn clusters_dir(root: &Path) -> PathBuf {
    root.join("clusters")
}

/// The paths of one cluster.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `ROOT/clusters/NAME`: the record, the kubeconfig, nodes' state and logs.
    pub dir: PathBuf,
    /// `RUN/clusters/NAME` (tmpfs): nodes' runtime directories, namespace pins, pids.
    pub run: PathBuf,
}

impl Paths {
    /// The paths of cluster `name` under state root `root`.
    pub fn of(root: &Path, name: &str) -> Paths {
        Paths {
            dir: clusters_dir(root).join(name),
            run: berth_hostdirs::run_dir().join("clusters").join(name),
        }
    }

    /// The cluster's record.
    pub fn record(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }

    /// The admin kubeconfig, with the server's node address.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The kubeconfig the server writes (its loopback address).
    pub fn server_kubeconfig(&self) -> PathBuf {
        self.dir.join("server.kubeconfig")
    }

    /// An agent's kubeconfig: its node's identity (system:node:NAME), the
    /// certificate it got by joining with the server's token.
    pub fn node_kubeconfig(&self, node: &str) -> PathBuf {
        berth_agent::AgentConfig::under(&self.node_root(node))
            .pki_dir
            .map(|d| berth_agent::credentials::Files::new(&d).kubeconfig())
            .unwrap_or_default()
    }

    /// The server's agents' join token file (in its data directory).
    pub fn agent_token(&self, server: &str) -> PathBuf {
        berth_apiserver::certificates::bootstrap::agent_token_path(
            &self.node_root(server).join("server"),
        )
    }

    /// A node's state root.
    pub fn node_root(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }

    /// A node's log.
    pub fn node_log(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(format!("{node}.log"))
    }

    /// A node's runtime directory (its BERTH_RUN_DIR).
    pub fn node_run(&self, node: &str) -> PathBuf {
        self.run.join("nodes").join(node)
    }

    /// The pin of a node's network namespace.
    pub fn node_netns(&self, node: &str) -> PathBuf {
        self.run.join("netns").join(node)
    }

    /// The pid file of a node's process.
    pub fn node_pid(&self, node: &str) -> PathBuf {
        self.run.join(format!("{node}.pid"))
    }
}

impl ClusterRecord {
    /// Reads cluster `name`'s record.
    pub fn read(paths: &Paths, name: &str) -> anyhow::Result<ClusterRecord> {
        let p = paths.record();
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                anyhow::bail!("no cluster {name:?} (berth cluster ls lists them)")
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        serde_json::from_slice(&text).with_context(|| format!("{} is damaged", p.display()))
    }

    /// Writes the record.
    pub fn write(&self, paths: &Paths) -> anyhow::Result<()> {
        std::fs::create_dir_all(&paths.dir)
            .with_context(|| format!("creating {}", paths.dir.display()))?;
        let tmp = paths.dir.join("cluster.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, paths.record())
            .with_context(|| format!("writing {}", paths.record().display()))
    }

    /// The server's node.
    pub fn server(&self) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.role == Role::Server)
    }

    /// The API server's URL, reachable from the host and every node.
    pub fn api_url(&self) -> Option<String> {
        self.server()
            .map(|s| format!("https://{}:{API_PORT}", s.ip))
    }
}

/// A short hash of a cluster's name, for kernel names limited to 15 bytes.
pub fn name_hash(name: &str) -> String {
    // FNV-1a: stable across builds.
    let mut h: u32 = 0x811c9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    format!("{h:08x}")
}

/// Checks a cluster name: a DNS label of 1 to 40 characters (it names nodes and
/// directories).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    anyhow::ensure!(
        ok,
        "cluster name {name:?}: use 1 to 40 lowercase letters, digits and '-', starting and ending with a letter or digit"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_hashed_short() {
        assert!(check_name("dev").is_ok());
        assert!(check_name("a-1").is_ok());
        for bad in ["", "-a", "a-", "Dev", "a_b", &"x".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(name_hash("dev").len(), 8);
        assert_ne!(name_hash("dev"), name_hash("dew"));
        assert_eq!(name_hash("dev"), name_hash("dev"));
    }
}
