//! The names by which Kubernetes' volume binding is coordinated between the
//! scheduler, the PersistentVolume controller, provisioners and the API server, and
//! berth's local-path provisioner (k3s ships the same idea as rancher.io/local-path);
//! and whether a volume can serve a claim, which the scheduler and the
//! PersistentVolume controller both ask.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// On a claim: the node the scheduler picked for its first consumer
/// (WaitForFirstConsumer classes are provisioned and bound there).
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// On a claim: the provisioner asked to make a volume for it.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";

/// The older name of [`STORAGE_PROVISIONER`], which provisioners still read.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";

/// On a volume: the provisioner that made it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// On a claim: its binding is complete.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";

/// On a claim or volume: the controller (not the user) bound it.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

/// On a StorageClass: the class claims without one get.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// berth's local-path provisioner: a directory on the node the pod was placed on.
pub const LOCAL_PATH_PROVISIONER: &str = "berth.dev/local-path";

/// The StorageClass berth installs for it (the default class, as k3s's local-path).
pub const LOCAL_PATH_CLASS: &str = "local-path";

/// Where local-path volumes live on each node unless configured otherwise (k3s's
/// --default-local-storage-path).
pub const DEFAULT_LOCAL_STORAGE_PATH: &str = "/var/lib/berth/storage";

/// The directory of the local-path volume of a claim, under `root`.
pub fn local_path_dir(root: &str, claim_uid: &str, namespace: &str, claim: &str) -> String {
    format!(
        "{}/pvc-{claim_uid}_{namespace}_{claim}",
        root.trim_end_matches('/')
    )
}

/// The name of the volume a provisioner makes for a claim (kube's convention).
pub fn volume_name(claim_uid: &str) -> String {
    format!("pvc-{claim_uid}")
}

/// Whether the volume is reserved for the claim (its claimRef names it).
pub fn reserved_for(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    v.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| {
            r.name == c.metadata.name
                && r.namespace == c.metadata.namespace
                && r.uid
                    .as_ref()
                    .is_none_or(|u| Some(u) == c.metadata.uid.as_ref())
        })
}

/// The storage a claim asks for or a volume holds, in bytes (0 when unreadable).
pub fn storage_bytes(resources: Option<&std::collections::BTreeMap<String, Quantity>>) -> i64 {
    resources
        .and_then(|r| r.get("storage"))
        .and_then(|q| crate::value(q).ok())
        .unwrap_or(0)
}

/// Whether the volume could serve the claim: free or reserved for it, not being
/// deleted, of its class, with its access modes, at least its size, matching its
/// selector.
pub fn satisfies(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let (vs, cs) = (
        v.spec.clone().unwrap_or_default(),
        c.spec.clone().unwrap_or_default(),
    );
    let free = vs.claim_ref.is_none() || reserved_for(v, c);
    let modes_ok = cs
        .access_modes
        .iter()
        .flatten()
        .all(|m| vs.access_modes.iter().flatten().any(|h| h == m));
    let want = storage_bytes(cs.resources.as_ref().and_then(|r| r.requests.as_ref()));
    let have = storage_bytes(vs.capacity.as_ref());
    let selector_ok = cs.selector.as_ref().is_none_or(|s| {
        crate::labels::matches(s, v.metadata.labels.as_ref().unwrap_or(&Default::default()))
    });
    free && v.metadata.deletion_timestamp.is_none()
        && vs.storage_class_name.unwrap_or_default() == cs.storage_class_name.unwrap_or_default()
        && modes_ok
        && have >= want
        && selector_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(
        class: &str,
        size: &str,
        modes: &[&str],
        claim: Option<(&str, &str)>,
    ) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "v", "labels": {"tier": "fast"}},
            "spec": {"storageClassName": class, "capacity": {"storage": size},
                     "accessModes": modes,
                     "claimRef": claim.map(|(n, u)| serde_json::json!(
                         {"namespace": "default", "name": n, "uid": u}))},
        }))
        .unwrap()
    }

    fn pvc(
        class: &str,
        size: &str,
        modes: &[&str],
        selector: serde_json::Value,
    ) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "default", "uid": "u1"},
            "spec": {"storageClassName": class, "accessModes": modes,
                     "resources": {"requests": {"storage": size}}, "selector": selector},
        }))
        .unwrap()
    }

    #[test]
    fn a_volume_serves_a_claim_of_its_class_size_modes_and_selector() {
        let c = pvc("fast", "1Gi", &["ReadWriteOnce"], serde_json::Value::Null);
        assert!(satisfies(
            &pv("fast", "1Gi", &["ReadWriteOnce", "ReadOnlyMany"], None),
            &c
        ));
        assert!(!satisfies(&pv("slow", "1Gi", &["ReadWriteOnce"], None), &c));
        assert!(!satisfies(
            &pv("fast", "512Mi", &["ReadWriteOnce"], None),
            &c
        ));
        assert!(!satisfies(&pv("fast", "1Gi", &["ReadOnlyMany"], None), &c));
        // Taken by another claim, or reserved for this one.
        assert!(!satisfies(
            &pv("fast", "1Gi", &["ReadWriteOnce"], Some(("other", "u2"))),
            &c
        ));
        assert!(satisfies(
            &pv("fast", "1Gi", &["ReadWriteOnce"], Some(("c", "u1"))),
            &c
        ));
        let picky = pvc(
            "fast",
            "1Gi",
            &[],
            serde_json::json!({"matchLabels": {"tier": "slow"}}),
        );
        assert!(!satisfies(&pv("fast", "1Gi", &[], None), &picky));
    }
}
