//! berth's local-path provisioner (k3s ships rancher.io/local-path for the same
//! job): a claim of a class with provisioner berth.dev/local-path, once the scheduler
//! has picked its first consumer's node, gets a hostPath volume — a directory under
//! the node's local storage path, created by the node agent when the pod mounts it —
//! with node affinity to that node, reserved for the claim. The node agent removes
//! the directory once the volume is deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_pods::storage;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::informer::itself;
use crate::{Error, Shared};

struct Ctx {
    client: kube::Client,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    root: String,
}

/// The provisioner, making volumes under `root` on each node.
pub fn controller(shared: &Shared, root: String) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::LOCAL_PATH),
        volumes: shared.volumes.store(),
        classes: shared.classes.store(),
        root,
    });
    crate::drive(
        "local-path-provisioner",
        shared.claims.store(),
        shared.claims.trigger(itself),
        reconcile,
        ctx,
    )
}

/// The class berth installs for the provisioner: the default, binding once a pod
/// is placed (the volume lives on that pod's node), deleted with its claim.
pub fn default_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(storage::LOCAL_PATH_CLASS.into()),
            annotations: Some(BTreeMap::from([(
                storage::DEFAULT_CLASS.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        provisioner: storage::LOCAL_PATH_PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ann = pvc.metadata.annotations.clone().unwrap_or_default();
    let asked = ann.get(storage::STORAGE_PROVISIONER).map(String::as_str)
        == Some(storage::LOCAL_PATH_PROVISIONER);
    let bound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let Some(node) = ann.get(storage::SELECTED_NODE) else {
        return Ok(Action::await_change());
    };
    if !asked || bound || pvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    let pv_name = storage::volume_name(&uid);
    if ctx.volumes.get(&ObjectRef::new(&pv_name)).is_some() {
        return Ok(Action::await_change());
    }
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let spec = pvc.spec.clone().unwrap_or_default();
    let class_name = spec.storage_class_name.clone().unwrap_or_default();
    let class = ctx.classes.get(&ObjectRef::new(&class_name));
    let capacity = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned()
        .ok_or_else(|| Error::Failed(format!("claim {ns}/{name} requests no storage")))?;
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.clone()),
            annotations: Some(BTreeMap::from([(
                storage::PROVISIONED_BY.to_string(),
                storage::LOCAL_PATH_PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), capacity)])),
            access_modes: spec.access_modes.clone(),
            host_path: Some(HostPathVolumeSource {
                path: storage::local_path_dir(&ctx.root, &uid, &ns, &name),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.clone()]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(ns),
                name: Some(name),
                uid: Some(uid),
                ..Default::default()
            }),
            persistent_volume_reclaim_policy: class
                .and_then(|c| c.reclaim_policy.clone())
                .or_else(|| Some("Delete".into())),
            storage_class_name: Some(class_name),
            volume_mode: spec.volume_mode.clone(),
            ..Default::default()
        }),
        status: None,
    };
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api.create(&PostParams::default(), &pv).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    Ok(Action::await_change())
}
