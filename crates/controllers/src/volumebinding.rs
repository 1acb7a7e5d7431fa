//! The PersistentVolume controller, as kube's: binds each claim to a volume that
//! satisfies it (its class, capacity, access modes and selector; a volume already
//! reserved for the claim first, then the smallest that fits), or asks the class's
//! provisioner for one; for WaitForFirstConsumer classes only once the scheduler has
//! picked the node (the selected-node annotation), and only to a volume that node
//! can reach. It keeps every volume's phase (Available, Bound, Released) and the
//! claims' status, and deletes released volumes whose reclaim policy is Delete.

use std::sync::Arc;

use berth_pods::storage::{self, reserved_for, satisfies, storage_bytes};
use berth_scheduler::volumes::reachable_from;
use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use berth_events::EventType;

use crate::informer::{itself, Change};
use crate::{Error, Shared};

struct Ctx {
    client: kube::Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    nodes: Store<Node>,
    recorder: berth_events::Recorder,
}

/// The controllers (claims and volumes), ready to run once the informers run.
pub fn controllers(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::PV_BINDER),
        claims: shared.claims.store(),
        volumes: shared.volumes.store(),
        classes: shared.classes.store(),
        nodes: shared.nodes.store(),
        recorder: shared.recorder(
            "persistentvolume-controller",
            berth_pods::identities::PV_BINDER,
        ),
    });
    // A volume wakes its claim, and every unbound claim when it may now serve one.
    let claims = shared.claims.store();
    let by_volume = shared
        .volumes
        .trigger(move |c: &Change<'_, PersistentVolume>| {
            let pv = match c {
                Change::Applied { new, .. } => *new,
                Change::Deleted(p) => *p,
            };
            match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                Some(r) => vec![ObjectRef::new(r.name.as_deref().unwrap_or_default())
                    .within(r.namespace.as_deref().unwrap_or_default())],
                None => claims
                    .state()
                    .iter()
                    .filter(|c| volume_name(c).is_none())
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect(),
            }
        });
    let claim_queue = futures_util::stream::select(shared.claims.trigger(itself), by_volume);
    // A claim wakes the volume it names or that names it.
    let volumes = shared.volumes.store();
    let by_claim = shared
        .claims
        .trigger(move |c: &Change<'_, PersistentVolumeClaim>| {
            let pvc = match c {
                Change::Applied { new, .. } => *new,
                Change::Deleted(p) => *p,
            };
            let uid = pvc.metadata.uid.clone();
            volumes
                .state()
                .iter()
                .filter(|v| {
                    volume_name(pvc) == v.metadata.name
                        || v.spec
                            .as_ref()
                            .and_then(|s| s.claim_ref.as_ref())
                            .is_some_and(|r| r.uid == uid)
                })
                .map(|v| ObjectRef::from_obj(v.as_ref()))
                .collect()
        });
    let volume_queue = futures_util::stream::select(shared.volumes.trigger(itself), by_claim);
    let a = crate::drive(
        "persistentvolumeclaim",
        shared.claims.store(),
        claim_queue,
        reconcile_claim,
        ctx.clone(),
    );
    let b = crate::drive(
        "persistentvolume",
        shared.volumes.store(),
        volume_queue,
        reconcile_volume,
        ctx,
    );
    async move {
        futures_util::future::join(a, b).await;
    }
}

fn volume_name(c: &PersistentVolumeClaim) -> Option<String> {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty())
}

fn annotation<'a>(m: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    m.annotations.as_ref()?.get(key).map(String::as_str)
}

fn class_of_claim(c: &PersistentVolumeClaim) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

async fn reconcile_claim(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    if let Some(vn) = volume_name(&pvc) {
        let pv = ctx.volumes.get(&ObjectRef::new(&vn));
        let phase = match &pv {
            Some(v) if reserved_for(v, &pvc) => "Bound",
            // Named a volume that is gone or serves another claim.
            _ => "Lost",
        };
        return claim_status(&ctx, &pvc, phase, pv.as_deref()).await;
    }
    let class_name = class_of_claim(&pvc);
    let class = (!class_name.is_empty())
        .then(|| ctx.classes.get(&ObjectRef::new(&class_name)))
        .flatten();
    let wait_for_consumer = class
        .as_ref()
        .and_then(|c| c.volume_binding_mode.as_deref())
        == Some("WaitForFirstConsumer");
    let selected = annotation(&pvc.metadata, storage::SELECTED_NODE).map(str::to_string);
    if wait_for_consumer && selected.is_none() {
        ctx.recorder.about(
            pvc.as_ref(),
            EventType::Normal,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        );
        return Ok(Action::await_change());
    }
    let node = selected
        .as_ref()
        .and_then(|n| ctx.nodes.get(&ObjectRef::new(n)));
    let mut candidates: Vec<Arc<PersistentVolume>> = ctx
        .volumes
        .state()
        .into_iter()
        .filter(|v| satisfies(v, &pvc))
        .filter(|v| selected.is_none() || reachable_from(v, node.as_deref()))
        .collect();
    // Reserved first, then the smallest that fits.
    candidates.sort_by_key(|v| {
        (
            !reserved_for(v, &pvc),
            storage_bytes(v.spec.as_ref().and_then(|s| s.capacity.as_ref())),
        )
    });
    if let Some(pv) = candidates.first() {
        return bind(&ctx, &pvc, pv).await;
    }
    match class.as_ref().map(|c| c.provisioner.clone()) {
        Some(p) if p != "kubernetes.io/no-provisioner" => {
            if annotation(&pvc.metadata, storage::STORAGE_PROVISIONER) != Some(p.as_str()) {
                let patch = serde_json::json!({"metadata": {"annotations": {
                    storage::STORAGE_PROVISIONER: p, storage::BETA_STORAGE_PROVISIONER: p}}});
                let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
                api.patch(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
                    .await?;
                let msg = format!("Waiting for a volume to be created either by the external provisioner '{p}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.");
                ctx.recorder.about(
                    pvc.as_ref(),
                    EventType::Normal,
                    "ExternalProvisioning",
                    &msg,
                );
            }
        }
        _ => {
            if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Pending") {
                claim_status(&ctx, &pvc, "Pending", None).await?;
            }
            let msg = if class_name.is_empty() {
                "no persistent volumes available for this claim and no storage class is set"
                    .to_string()
            } else if class.is_none() {
                format!("storageclass.storage.k8s.io \"{class_name}\" not found")
            } else {
                "no persistent volumes available for this claim".to_string()
            };
            ctx.recorder
                .about(pvc.as_ref(), EventType::Warning, "FailedBinding", &msg);
            // Volumes arriving wake the claim; a slow retry covers the rest.
            return Ok(Action::requeue(std::time::Duration::from_secs(30)));
        }
    }
    Ok(Action::await_change())
}

/// Binds `pvc` and `pv` both ways, as kube's controller does: the volume's claimRef,
/// then its phase, then the claim's volumeName and annotations, then its status.
async fn bind(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<Action, Error> {
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut v = pv.clone();
    let spec = v.spec.get_or_insert_with(Default::default);
    let pre_bound = spec.claim_ref.as_ref().is_some_and(|r| r.uid.is_some());
    spec.claim_ref = Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: Some(ns.clone()),
        name: Some(name.clone()),
        uid: pvc.metadata.uid.clone(),
        resource_version: pvc.metadata.resource_version.clone(),
        ..Default::default()
    });
    if !pre_bound {
        v.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(storage::BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    let mut v = volumes
        .replace(&pv_name, &PostParams::default(), &v)
        .await?;
    v.status = Some(PersistentVolumeStatus {
        phase: Some("Bound".into()),
        ..v.status.clone().unwrap_or_default()
    });
    let v = volumes
        .replace_status(&pv_name, &PostParams::default(), &v)
        .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "metadata": {"annotations": {storage::BIND_COMPLETED: "yes", storage::BOUND_BY_CONTROLLER: "yes"}},
        "spec": {"volumeName": pv_name},
    });
    let c = claims
        .patch(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
        .await?;
    claim_status(ctx, &c, "Bound", Some(&v)).await
}

/// Writes the claim's phase (and, when bound, the volume's capacity and modes).
async fn claim_status(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    phase: &str,
    pv: Option<&PersistentVolume>,
) -> Result<Action, Error> {
    let mut status = PersistentVolumeClaimStatus {
        phase: Some(phase.into()),
        ..Default::default()
    };
    if phase == "Bound" {
        let spec = pv.and_then(|v| v.spec.clone()).unwrap_or_default();
        status.capacity = spec.capacity;
        status.access_modes = spec.access_modes;
    }
    let old = pvc.status.clone().unwrap_or_default();
    if old.phase == status.phase
        && old.capacity == status.capacity
        && old.access_modes == status.access_modes
    {
        return Ok(Action::await_change());
    }
    if phase == "Lost" {
        let msg = "Bound claim has lost its PersistentVolume. Data on the volume is lost!";
        ctx.recorder
            .about(pvc, EventType::Warning, "ClaimLost", msg);
    }
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = crate::status_patch(&status, &["capacity", "accessModes"]);
    api.patch_status(&name, &Default::default(), &kube::api::Patch::Merge(&patch))
        .await?;
    Ok(Action::await_change())
}

async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = pv.metadata.name.clone().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    let phase = match &spec.claim_ref {
        None => "Available",
        Some(r) => {
            let claim = ctx.claims.get(
                &ObjectRef::new(r.name.as_deref().unwrap_or_default())
                    .within(r.namespace.as_deref().unwrap_or_default()),
            );
            match claim {
                Some(c) if r.uid.is_none() || r.uid == c.metadata.uid => {
                    // Reserved but not yet bound: the claim's reconcile binds it.
                    let bound = volume_name(&c).as_deref() == Some(name.as_str());
                    if bound {
                        "Bound"
                    } else {
                        "Available"
                    }
                }
                // The claim is gone (or was replaced by another of its name).
                _ if r.uid.is_some() => "Released",
                _ => "Available",
            }
        }
    };
    let policy = spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or("Retain");
    if phase == "Released" && policy == "Delete" {
        let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
        match api.delete(&name, &DeleteParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        return Ok(Action::await_change());
    }
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some(phase) {
        let mut v = (*pv).clone();
        v.status = Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
        api.replace_status(&name, &PostParams::default(), &v)
            .await?;
    }
    Ok(Action::await_change())
}
