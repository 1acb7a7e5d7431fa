//! The engine's state root on disk (`/var/lib/berth` by default):
//!
//! ```text
//! containers/ID/     a container: container.json, supervise.json, config.json and
//!                    the monitor's records (see berth-monitor's `record`)
//! sandboxes/ID/      a sandbox: sandbox.json, net.json, hostname, hosts, resolv.conf,
//!                    and for pods the infra process's bundle
//! names/NAME         a container name taken (holds the container's ID)
//! sandbox-names/NAME a pod sandbox name taken
//! locks/ID           per-object locks (flock)
//! creating/ID        an object being made; one whose maker died is undone at open
//! events/ID          each container's last event (see berth-monitor's `supervise`)
//! runtime/           berth-runtime's state (`--root`)
//! image/             the image store
//! pod-network.json   the node's pod network settings (pod CIDR)
//! cni/net.d/         CNI configurations for pods (none: berth's pod bridge)
//! ```

use std::path::{Path, PathBuf};

use berth_monitor::record::Paths;

/// The directories of one state root.
#[derive(Clone, Debug)]
pub struct StateDirs {
    root: PathBuf,
}

impl StateDirs {
    /// The layout under `root`.
    pub fn new(root: &Path) -> StateDirs {
        StateDirs {
            root: root.to_path_buf(),
        }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every directory the engine keeps, made at open.
    pub fn all(&self) -> [PathBuf; 7] {
        [
            self.containers(),
            self.sandboxes(),
            self.names(),
            self.sandbox_names(),
            self.locks(),
            self.creating(),
            self.events(),
        ]
    }

    /// `containers/`.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The files of container `id`.
    pub fn container(&self, id: &str) -> Paths {
        Paths {
            dir: self.containers().join(id),
        }
    }

    /// `sandboxes/`.
    pub fn sandboxes(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// The directory of sandbox `id`.
    pub fn sandbox(&self, id: &str) -> PathBuf {
        self.sandboxes().join(id)
    }

    /// `names/`.
    pub fn names(&self) -> PathBuf {
        self.root.join("names")
    }

    /// `sandbox-names/`.
    pub fn sandbox_names(&self) -> PathBuf {
        self.root.join("sandbox-names")
    }

    /// `locks/`.
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// `creating/`.
    pub fn creating(&self) -> PathBuf {
        self.root.join("creating")
    }

    /// `events/`.
    pub fn events(&self) -> PathBuf {
        self.root.join("events")
    }

    /// berth-runtime's state root.
    pub fn runtime(&self) -> PathBuf {
        self.root.join("runtime")
    }

    /// The image store.
    pub fn images(&self) -> PathBuf {
        self.root.join("image")
    }

    /// The CNI configurations of the pod network (empty: berth's own bridge).
    pub fn pod_cni(&self) -> PathBuf {
        self.root.join("cni").join("net.d")
    }

    /// The node's pod network settings.
    pub fn pod_network(&self) -> PathBuf {
        self.root.join("pod-network.json")
    }
}
