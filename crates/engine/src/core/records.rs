//! The engine's records of sandboxes and containers, typed, written whole (temporary
//! file and rename) by the engine only.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cri::{ContainerConfig, SandboxConfig};
use crate::error::Result;
use berth_monitor::record::{read_json, write_json};

/// Where a sandbox is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxPhase {
    /// Made but never brought up (a lean sandbox before its container's first
    /// start): there is nothing to release.
    Created,
    /// Being made (its maker holds its lock).
    Creating,
    /// Namespaces, network and infra process are up.
    Ready,
    /// Released (stopped): its record stays until it is removed.
    Stopped,
}

/// `sandboxes/ID/sandbox.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// The ID (64 hex digits).
    pub id: String,
    /// The reserved name (`NAME_NAMESPACE_UID_ATTEMPT`), empty for lean sandboxes.
    pub name: String,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// What it was made from.
    pub config: SandboxConfig,
    /// Where it is in its life.
    pub phase: SandboxPhase,
    /// The cgroup parent in use.
    pub cgroup_parent: String,
    /// Whether the engine made the parent cgroup (and so removes it).
    pub made_cgroup_parent: bool,
    /// The infra process: pid and start time (to tell it from a reused pid).
    pub infra: Option<(i32, u64)>,
    /// The network the sandbox is on, as shown (`pods`, a berth network, `cni:NAME`,
    /// `host`, `none`, `sandbox:ID`).
    pub network: String,
}

impl SandboxRecord {
    /// Whether this is a container's own lean sandbox rather than a pod's.
    pub fn lean(&self) -> bool {
        !self.config.infra
    }

    /// Reads `dir/sandbox.json`.
    pub fn load(dir: &Path) -> Result<Option<SandboxRecord>> {
        Ok(read_json(&dir.join("sandbox.json"))?)
    }

    /// Writes `dir/sandbox.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        Ok(write_json(&dir.join("sandbox.json"), self)?)
    }
}

/// `containers/ID/container.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The ID (64 hex digits).
    pub id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// Its unique name on this host.
    pub name: String,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// The image's config digest (its ID).
    pub image_id: String,
    /// The image manifest the root filesystem was made from.
    pub image_manifest: String,
    /// The root filesystem on the host.
    pub rootfs: PathBuf,
    /// The command line (entrypoint and command resolved).
    pub args: Vec<String>,
    /// The log file.
    pub log_path: PathBuf,
    /// The cgroup path (`PARENT/ID`).
    pub cgroup: String,
    /// What it was made from.
    pub config: ContainerConfig,
    /// What a client keeps with the container for itself (berth's docker-shaped CLI
    /// keeps its flags here, for `inspect`); the engine does not read it.
    #[serde(default)]
    pub client: serde_json::Value,
}

impl ContainerRecord {
    /// Reads a container's record from its directory.
    pub fn load(dir: &Path) -> Result<Option<ContainerRecord>> {
        Ok(read_json(&dir.join("container.json"))?)
    }

    /// Writes it into its directory.
    pub fn save(&self, dir: &Path) -> Result<()> {
        Ok(write_json(&dir.join("container.json"), self)?)
    }
}
