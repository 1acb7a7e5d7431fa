//! The StatefulSet controller, as kube's: pods with stable names (`NAME-0`,
//! `NAME-1`...), hostnames under the governing Service's subdomain and their own
//! PersistentVolumeClaims from volumeClaimTemplates (`CLAIM-NAME-0`); with
//! OrderedReady, made one at a time in ordinal order, each after its predecessors
//! run and are ready, and removed highest first; with Parallel, all at once. A new
//! template replaces pods from the highest ordinal down to the partition, one at a
//! time (RollingUpdate), or as they are deleted (OnDelete); revisions are
//! ControllerRevisions whose names the pods carry as controller-revision-hash.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_events::EventType;
use berth_pods::readiness;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;

use crate::{owner, podcontrol, revisions, Error, Shared};

/// The label naming a StatefulSet pod (for per-pod Services).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

type Ctx = crate::RevisionedOwner;

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let (base, queue) = crate::pod_owner(
        shared,
        &shared.statefulsets,
        "statefulset-controller",
        berth_pods::identities::STATEFULSET,
    );
    let ctx = Arc::new(crate::RevisionedOwner {
        base,
        revisions: shared.revisions_by_owner.clone(),
    });
    crate::drive(
        "statefulset",
        shared.statefulsets.store(),
        queue,
        reconcile,
        ctx,
    )
}

fn ordinal(sts_name: &str, p: &Pod) -> Option<i32> {
    p.metadata
        .name
        .as_deref()?
        .strip_prefix(sts_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn revision_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(revisions::HASH_LABEL)
        .map(String::as_str)
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Running, ready and not being deleted: what OrderedReady waits for.
fn healthy(p: &Pod) -> bool {
    phase(p) == "Running" && readiness::is_ready(p) && p.metadata.deletion_timestamp.is_none()
}

/// The claim name of template `claim` for pod `pod`.
fn claim_name(claim: &str, pod: &str) -> String {
    format!("{claim}-{pod}")
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = sts.metadata.uid.clone().unwrap_or_default();
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let name = sts.metadata.name.clone().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let old_status = sts.status.clone().unwrap_or_default();

    let (existing, update) = ctx
        .revisions(sts.as_ref(), &spec.template, old_status.collision_count)
        .await?;
    let update_rev = update.metadata.name.clone().unwrap_or_default();
    let current_rev = old_status
        .current_revision
        .clone()
        .filter(|r| {
            existing
                .iter()
                .any(|e| e.metadata.name.as_deref() == Some(r))
        })
        .unwrap_or_else(|| update_rev.clone());
    let current_template: PodTemplateSpec = existing
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(current_rev.as_str()))
        .and_then(|r| revisions::template_of(r))
        .and_then(|t| serde_json::from_value(t).ok())
        .unwrap_or_else(|| spec.template.clone());

    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let range = start..start + replicas;
    let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);

    // Expectations before the pods: a creation seen in between must not satisfy them
    // while an older list is used.
    let satisfied = ctx.expectations.satisfied(&uid);
    let pods = ctx.pods.owned(&uid);
    let mut slots: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
    for p in &pods {
        match ordinal(&name, p) {
            Some(i) if range.contains(&i) => {
                slots.insert(i, p.clone());
            }
            Some(i) => condemned.push((i, p.clone())),
            None => {}
        }
    }
    condemned.sort_by_key(|(i, _)| std::cmp::Reverse(*i));

    let mut failed: Option<String> = None;
    if satisfied {
        'pods: {
            // Make and mend the pods in range, in order.
            let mut made = Vec::new();
            for i in range.clone() {
                match slots.get(&i) {
                    None => {
                        // OnDelete: a pod deleted comes back at the update revision; RollingUpdate:
                        // from the partition (counted from the first ordinal) up.
                        let from_update = on_delete || i >= start + partition;
                        let (template, rev) = if from_update || current_rev == update_rev {
                            (&spec.template, &update_rev)
                        } else {
                            (&current_template, &current_rev)
                        };
                        made.push((i, template.clone(), rev.clone()));
                        if ordered {
                            break;
                        }
                    }
                    Some(p) if phase(p) == "Failed" && p.metadata.deletion_timestamp.is_none() => {
                        failed = ctx.delete_pods(sts.as_ref(), std::slice::from_ref(p)).await;
                        if ordered {
                            break 'pods;
                        }
                    }
                    Some(p) if ordered && !healthy(p) => break,
                    Some(_) => {}
                }
            }
            if !made.is_empty() {
                for (i, _, _) in &made {
                    ensure_claims(&ctx, &sts, &format!("{name}-{i}")).await?;
                }
                failed = ctx
                    .create_pods(sts.as_ref(), made.len(), |k| {
                        let (i, t, rev) = &made[k];
                        pod_for(&sts, t, *i, rev)
                    })
                    .await;
                break 'pods;
            }
            let all_healthy = range
                .clone()
                .all(|i| slots.get(&i).is_some_and(|p| healthy(p)));
            // Scale down, highest ordinal first.
            if !condemned.is_empty() {
                if ordered && !all_healthy {
                    break 'pods;
                }
                let victims: Vec<Arc<Pod>> = if ordered {
                    match condemned.first() {
                        Some((_, p)) if p.metadata.deletion_timestamp.is_some() => break 'pods,
                        Some((_, p)) => vec![p.clone()],
                        None => vec![],
                    }
                } else {
                    condemned
                        .iter()
                        .filter(|(_, p)| p.metadata.deletion_timestamp.is_none())
                        .map(|(_, p)| p.clone())
                        .collect()
                };
                failed = ctx.delete_pods(sts.as_ref(), &victims).await;
                if spec
                    .persistent_volume_claim_retention_policy
                    .as_ref()
                    .and_then(|r| r.when_scaled.as_deref())
                    == Some("Delete")
                {
                    for v in &victims {
                        delete_claims(&ctx, &sts, v.metadata.name.as_deref().unwrap_or_default())
                            .await?;
                    }
                }
                break 'pods;
            }
            // Rolling update: one pod at a time, from the highest ordinal down.
            if !on_delete && all_healthy {
                let stale = range
                    .clone()
                    .rev()
                    .filter(|i| *i >= start + partition)
                    .filter_map(|i| slots.get(&i))
                    .find(|p| revision_of(p) != Some(update_rev.as_str()));
                if let Some(p) = stale {
                    failed = ctx.delete_pods(sts.as_ref(), std::slice::from_ref(p)).await;
                }
            }
        }
    }

    // Status.
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let live: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    let ready = count(&|p| readiness::is_ready(p));
    let updated = count(&|p| revision_of(p) == Some(update_rev.as_str()));
    let done = updated == replicas && ready == replicas && live.len() as i32 == replicas;
    let current_rev = if done {
        update_rev.clone()
    } else {
        current_rev
    };
    let status = StatefulSetStatus {
        replicas: live.len() as i32,
        ready_replicas: Some(ready),
        available_replicas: Some(count(&|p| readiness::is_available(p, min_ready, now))),
        current_replicas: Some(count(&|p| revision_of(p) == Some(current_rev.as_str()))),
        updated_replicas: Some(updated),
        current_revision: Some(current_rev),
        update_revision: Some(update_rev.clone()),
        observed_generation: sts.metadata.generation,
        collision_count: old_status.collision_count,
        conditions: old_status.conditions.clone(),
    };
    if crate::status_differs(&old_status, &status) {
        Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(crate::status_patch(&status, &[])),
            )
            .await?;
    }
    let in_use: HashSet<String> = pods
        .iter()
        .filter_map(|p| revision_of(p).map(str::to_string))
        .collect();
    revisions::trim(
        &ctx.client,
        &existing,
        &update_rev,
        &in_use,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;
    if failed.is_some() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if min_ready > 0 && ready > status.available_replicas.unwrap_or(0) {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

/// Pod `i` of the set from `template` (revision `rev`): its stable name, hostname,
/// subdomain, identity labels, and its claims as volumes.
fn pod_for(sts: &StatefulSet, template: &PodTemplateSpec, i: i32, rev: &str) -> Pod {
    let set = sts.metadata.name.clone().unwrap_or_default();
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let name = format!("{set}-{i}");
    let mut pod = podcontrol::from_template(
        template,
        owner::reference_to(sts),
        &ns,
        Some(name.clone()),
        None,
    );
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(revisions::HASH_LABEL.into(), rev.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), i.to_string());
    let spec = sts.spec.clone().unwrap_or_default();
    if let Some(ps) = pod.spec.as_mut() {
        ps.hostname = Some(name.clone());
        if !spec.service_name.as_deref().unwrap_or("").is_empty() {
            ps.subdomain = spec.service_name.clone();
        }
        for claim in spec.volume_claim_templates.iter().flatten() {
            let cn = claim.metadata.name.clone().unwrap_or_default();
            let vols = ps.volumes.get_or_insert_with(Vec::new);
            vols.retain(|v| v.name != cn);
            vols.push(Volume {
                name: cn.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&cn, &name),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
    }
    pod
}

/// Makes the claims of pod `pod` that do not exist yet (owned by the set when its
/// retention policy deletes them with it).
async fn ensure_claims(ctx: &Ctx, sts: &StatefulSet, pod: &str) -> Result<(), Error> {
    let spec = sts.spec.clone().unwrap_or_default();
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let owned = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|r| r.when_deleted.as_deref())
        == Some("Delete");
    for t in spec.volume_claim_templates.iter().flatten() {
        let name = claim_name(t.metadata.name.as_deref().unwrap_or_default(), pod);
        let mut labels = t.metadata.labels.clone().unwrap_or_default();
        labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: t.metadata.annotations.clone(),
                owner_references: owned.then(|| vec![owner::reference_to(sts)]),
                ..Default::default()
            },
            spec: t.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                let set = sts.metadata.name.as_deref().unwrap_or_default();
                let msg = format!("create Claim {name} Pod {pod} in StatefulSet {set} success");
                ctx.recorder
                    .about(sts, EventType::Normal, "SuccessfulCreate", &msg);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Deletes the claims of a pod scaled away (retention policy whenScaled: Delete).
async fn delete_claims(ctx: &Ctx, sts: &StatefulSet, pod: &str) -> Result<(), Error> {
    let spec = sts.spec.clone().unwrap_or_default();
    let ns = sts.metadata.namespace.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for t in spec.volume_claim_templates.iter().flatten() {
        let name = claim_name(t.metadata.name.as_deref().unwrap_or_default(), pod);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
