//! VolumeBinding, as kube-scheduler's plugin decides it: a pod's claims must exist;
//! a bound claim's volume must be reachable from the node (its node affinity); an
//! unbound claim of a WaitForFirstConsumer class is bound where the pod goes — to a
//! free volume that node reaches, or by the class's provisioner, told the node by the
//! selected-node annotation the scheduler writes before binding the pod; an unbound
//! claim of an Immediate class keeps the pod waiting.

use std::sync::Arc;

use berth_pods::storage;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::filter::Reason;

/// The volume objects the scheduler watches.
#[derive(Clone)]
pub struct Stores {
    /// Claims.
    pub claims: Store<PersistentVolumeClaim>,
    /// Volumes.
    pub volumes: Store<PersistentVolume>,
    /// Classes.
    pub classes: Store<StorageClass>,
}

/// Whether `node` can reach the volume (its node affinity holds there).
pub fn reachable_from(v: &PersistentVolume, node: Option<&Node>) -> bool {
    let required = v
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref());
    match (required, node) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(r), Some(n)) => r
            .node_selector_terms
            .iter()
            .any(|t| crate::filter::term_matches(n, t)),
    }
}

/// What a pod's claims ask of its node, worked out once per attempt.
#[derive(Default)]
pub struct Claims {
    /// Volumes already bound: the node must reach each.
    bound: Vec<Arc<PersistentVolume>>,
    /// Unbound WaitForFirstConsumer claims with no provisioner: the node must reach
    /// a free volume for each.
    static_unbound: Vec<Vec<Arc<PersistentVolume>>>,
    /// Unbound WaitForFirstConsumer claims: told the chosen node.
    pub to_select: Vec<Arc<PersistentVolumeClaim>>,
}

impl Claims {
    /// The pod's claims, or why no node can take the pod now (kube's words).
    pub fn of(pod: &Pod, stores: &Stores) -> Result<Option<Claims>, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let names: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.as_str())
            .collect();
        if names.is_empty() {
            return Ok(None);
        }
        let mut out = Claims::default();
        for name in names {
            let claim = stores
                .claims
                .get(&ObjectRef::new(name).within(&ns))
                .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" not found"))?;
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            let spec = claim.spec.clone().unwrap_or_default();
            if let Some(vn) = spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
                let pv = stores
                    .volumes
                    .get(&ObjectRef::new(vn))
                    .ok_or_else(|| format!("persistentvolume \"{vn}\" not found"))?;
                out.bound.push(pv);
                continue;
            }
            let class = spec
                .storage_class_name
                .as_deref()
                .and_then(|c| stores.classes.get(&ObjectRef::new(c)));
            let wait = class
                .as_ref()
                .and_then(|c| c.volume_binding_mode.as_deref())
                == Some("WaitForFirstConsumer");
            if !wait {
                return Err("pod has unbound immediate PersistentVolumeClaims".into());
            }
            let provisioned = class
                .as_ref()
                .is_some_and(|c| c.provisioner != "kubernetes.io/no-provisioner");
            if !provisioned {
                let free: Vec<Arc<PersistentVolume>> = stores
                    .volumes
                    .state()
                    .into_iter()
                    .filter(|v| storage::satisfies(v, &claim))
                    .collect();
                out.static_unbound.push(free);
            }
            let selected = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(storage::SELECTED_NODE));
            if selected.is_none() {
                out.to_select.push(claim);
            }
        }
        Ok(Some(out))
    }

    /// Whether the node serves the pod's claims.
    pub fn filter(&self, node: &Node) -> Result<(), Reason> {
        if !self.bound.iter().all(|v| reachable_from(v, Some(node))) {
            return Err("node(s) had volume node affinity conflict".into());
        }
        for free in &self.static_unbound {
            if !free.iter().any(|v| reachable_from(v, Some(node))) {
                return Err("node(s) didn't find available persistent volumes to bind".into());
            }
        }
        Ok(())
    }
}
