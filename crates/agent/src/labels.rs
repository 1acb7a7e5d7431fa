//! The labels that tie the engine's sandboxes and containers to pods (the kubelet's
//! names for them, so that crictl users see what they know), and the paths of a pod's
//! files on the node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

/// The pod's name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// The pod's UID: how the agent finds a pod's sandboxes and containers.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// The container's name in the pod.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Marks an init container (a value of "true").
pub const INIT_CONTAINER: &str = "io.berth.container.init";
/// The agent that made it: its node's name (several agents may share one engine in
/// tests and on one machine).
pub const NODE: &str = "io.berth.node";

/// Who a pod is, as the agent keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

impl PodKey {
    /// The key of a pod object.
    pub fn of(pod: &Pod) -> PodKey {
        PodKey {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// The labels every sandbox and container of the pod carries.
    pub fn labels(&self, node: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (POD_NAME.to_string(), self.name.clone()),
            (POD_NAMESPACE.to_string(), self.namespace.clone()),
            (POD_UID.to_string(), self.uid.clone()),
            (NODE.to_string(), node.to_string()),
        ])
    }

    /// The pod's log directory under the log root (kubelet's `NS_NAME_UID`).
    pub fn log_dir(&self, log_root: &Path) -> PathBuf {
        log_root.join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
    }

    /// The pod's directory under the pods root (volumes, termination messages).
    pub fn pod_dir(&self, pods_root: &Path) -> PathBuf {
        pods_root.join(&self.uid)
    }
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
