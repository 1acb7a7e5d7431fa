//! The Deployment controller, as kube's: a Deployment owns ReplicaSets, one per
//! template (named by the template's hash, which its pods carry as
//! pod-template-hash); the one matching the current template is the new one, the
//! others old. Rolling updates move replicas from old to new within maxSurge and
//! maxUnavailable; Recreate stops the old pods before starting new ones; a change of
//! replicas alone scales the ReplicaSets proportionally; a paused Deployment scales
//! but does not roll. Revisions number the templates (a rollback makes an old one
//! current again with a new number), and old ReplicaSets beyond
//! revisionHistoryLimit go.

mod rolling;
pub mod status;
pub mod util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_events::EventType;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::index::OwnerIndex;
use crate::informer::{controller_owner, itself, Change};
use crate::{owner, Error, Shared};

pub(crate) struct Ctx {
    client: kube::Client,
    replicasets: Arc<OwnerIndex<ReplicaSet>>,
    pods: Arc<OwnerIndex<Pod>>,
    recorder: berth_events::Recorder,
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    // A Recreate rollout waits for the old pods to be gone, which no ReplicaSet
    // change need announce: a pod that goes (or finishes) wakes its Deployment.
    let replicasets = shared.replicasets.store();
    let by_pod = shared.pods.trigger(move |c: &Change<'_, Pod>| {
        let pod = match c {
            Change::Deleted(p) => *p,
            Change::Applied {
                old: Some(old),
                new,
            } if is_finished(new) && !is_finished(old) => *new,
            Change::Applied { .. } => return Vec::new(),
        };
        let Some(r) = owner::controller_ref(&pod.metadata).filter(|r| r.kind == "ReplicaSet")
        else {
            return Vec::new();
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        replicasets
            .get(&ObjectRef::new(&r.name).within(ns))
            .and_then(|rs| {
                let d = owner::controller_ref(&rs.metadata)?;
                (d.kind == "Deployment").then(|| ObjectRef::new(&d.name).within(ns))
            })
            .into_iter()
            .collect()
    });
    let queue = futures_util::stream::select(
        futures_util::stream::select(
            shared.deployments.trigger(itself),
            shared
                .replicasets
                .trigger(controller_owner::<ReplicaSet, Deployment>),
        ),
        by_pod,
    );
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::DEPLOYMENT),
        replicasets: shared.replicasets_by_owner.clone(),
        pods: shared.pods_by_owner.clone(),
        recorder: shared.recorder("deployment-controller", berth_pods::identities::DEPLOYMENT),
    });
    crate::drive(
        "deployment",
        shared.deployments.store(),
        queue,
        reconcile,
        ctx,
    )
}

/// Whether the pod ran to its end (Succeeded or Failed): as good as gone for Recreate.
fn is_finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The Deployment's ReplicaSets: the new one (its template is the Deployment's) and
/// the old ones.
struct Family {
    new: Option<Arc<ReplicaSet>>,
    old: Vec<Arc<ReplicaSet>>,
}

impl Family {
    fn all(&self) -> Vec<Arc<ReplicaSet>> {
        self.old.iter().cloned().chain(self.new.clone()).collect()
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = d.spec.clone().unwrap_or_default();
    if berth_pods::labels::is_empty(&spec.selector) {
        ctx.recorder.about(
            d.as_ref(),
            EventType::Warning,
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.",
        );
        return Ok(Action::await_change());
    }
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let mut rss = ctx.replicasets.owned(&uid);
    util::oldest_first(&mut rss);
    let template = spec.template.clone();
    let new = rss
        .iter()
        .find(|r| {
            r.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| util::equal_ignoring_hash(t, &template))
        })
        .cloned();
    let old = rss
        .iter()
        .filter(|r| Some(r.metadata.uid.clone()) != new.as_ref().map(|n| n.metadata.uid.clone()))
        .cloned()
        .collect();
    let mut fam = Family { new, old };

    if let Some(action) = paused_condition(&ctx, &d).await? {
        return Ok(action);
    }
    let paused = spec.paused == Some(true);
    if paused || is_scaling_event(&d, &fam) {
        fam.new = new_replica_set(&ctx, &d, &fam, false).await?;
        rolling::scale(&ctx, &d, &fam).await?;
        if paused {
            rolling::clean_up(&ctx, &d, &fam).await?;
        }
        let s = status::calculate(&d, &fam.all(), fam.new.as_deref());
        write_status(&ctx, &d, s).await?;
        return Ok(Action::await_change());
    }
    if util::is_rolling(&d) {
        rolling::rollout_rolling(&ctx, &d, fam).await
    } else {
        rolling::rollout_recreate(&ctx, &d, fam).await
    }
}

/// Sets Progressing to DeploymentPaused or DeploymentResumed when `paused` changed;
/// Some when the status was written (the watch brings the Deployment back).
async fn paused_condition(ctx: &Ctx, d: &Deployment) -> Result<Option<Action>, Error> {
    if status::deadline(d).is_none() {
        return Ok(None);
    }
    let mut s = d.status.clone().unwrap_or_default();
    let was = status::condition(&s, "Progressing").and_then(|c| c.reason.as_deref())
        == Some(status::PAUSED);
    let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
    if paused && !was {
        status::set_condition(
            &mut s,
            "Progressing",
            "Unknown",
            status::PAUSED,
            "Deployment is paused".into(),
        );
    } else if !paused && was {
        status::set_condition(
            &mut s,
            "Progressing",
            "Unknown",
            status::RESUMED,
            "Deployment is resumed".into(),
        );
    } else {
        return Ok(None);
    }
    write_status(ctx, d, s).await?;
    Ok(Some(Action::await_change()))
}

/// Whether only replicas changed: an active ReplicaSet was sized for another count.
fn is_scaling_event(d: &Deployment, fam: &Family) -> bool {
    let want = util::desired(d).to_string();
    fam.all().iter().filter(|r| util::replicas(r) > 0).any(|r| {
        r.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(util::DESIRED_REPLICAS))
            .is_some_and(|v| *v != want)
    })
}

/// Writes the Deployment's status if it changed.
async fn write_status(ctx: &Ctx, d: &Deployment, s: DeploymentStatus) -> Result<(), Error> {
    let old = d.status.clone().unwrap_or_default();
    if crate::status_differs(&old, &s) {
        let ns = d.metadata.namespace.as_deref().unwrap_or("default");
        let name = d.metadata.name.as_deref().unwrap_or_default();
        Api::<Deployment>::namespaced(ctx.client.clone(), ns)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(crate::status_patch(&s, &["conditions"])),
            )
            .await?;
    }
    Ok(())
}

/// The new ReplicaSet with its revision brought up to date, or made (when `create`)
/// if the template has none yet.
async fn new_replica_set(
    ctx: &Ctx,
    d: &Deployment,
    fam: &Family,
    create: bool,
) -> Result<Option<Arc<ReplicaSet>>, Error> {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let max_old = fam.old.iter().map(|r| util::revision(r)).max().unwrap_or(0);
    let next = max_old + 1;
    if let Some(existing) = &fam.new {
        let mut ann = existing.metadata.annotations.clone().unwrap_or_default();
        let mut changed = copy_annotations(d, &mut ann);
        let cur = util::revision(existing);
        if cur < next {
            if cur > 0 {
                let h = ann.get(util::REVISION_HISTORY).cloned().unwrap_or_default();
                let h = if h.is_empty() {
                    cur.to_string()
                } else {
                    format!("{h},{cur}")
                };
                ann.insert(util::REVISION_HISTORY.into(), h);
            }
            ann.insert(util::REVISION.into(), next.to_string());
            changed = true;
        }
        let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let rs_min_ready = existing.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let mut current = existing.clone();
        if changed || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0) {
            let patch = serde_json::json!({
                "metadata": {"annotations": ann, "resourceVersion": existing.metadata.resource_version},
                "spec": {"minReadySeconds": min_ready},
            });
            let name = existing.metadata.name.as_deref().unwrap_or_default();
            current = Arc::new(
                rs_api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?,
            );
        }
        set_deployment_revision(ctx, d, util::revision(&current)).await?;
        return Ok(Some(current));
    }
    if !create {
        return Ok(None);
    }
    let spec = d.spec.clone().unwrap_or_default();
    let collisions = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = util::template_hash(&spec.template, collisions);
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(util::HASH_LABEL.into(), hash.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(util::HASH_LABEL.into(), hash.clone());
    let d_name = d.metadata.name.clone().unwrap_or_default();
    let name = format!("{d_name}-{hash}");
    let replicas = rolling::new_rs_replicas(d, &fam.all(), None);
    let mut ann = BTreeMap::new();
    copy_annotations(d, &mut ann);
    ann.insert(util::REVISION.into(), next.to_string());
    ann.insert(util::DESIRED_REPLICAS.into(), util::desired(d).to_string());
    ann.insert(
        util::MAX_REPLICAS.into(),
        (util::desired(d) + util::max_surge(d)).to_string(),
    );
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(ann),
            owner_references: Some(vec![owner::reference_to(d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    match rs_api.create(&PostParams::default(), &rs).await {
        Ok(made) => {
            if replicas > 0 {
                ctx.recorder.about(
                    d,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {name} from 0 to {replicas}"),
                );
            }
            if status::deadline(d).is_some() {
                let mut s = d.status.clone().unwrap_or_default();
                status::set_condition(
                    &mut s,
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                );
                write_status(ctx, d, s).await?;
            }
            set_deployment_revision(ctx, d, next).await?;
            Ok(Some(Arc::new(made)))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Ours but not yet in the watch: use it. Another's, or another template
            // with the same hash: count a collision, so the next hash differs.
            let found = rs_api.get(&name).await?;
            let same = owner::controlled_by(
                &found.metadata,
                d.metadata.uid.as_deref().unwrap_or_default(),
            ) && found
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| util::equal_ignoring_hash(t, &spec.template));
            if same {
                return Ok(Some(Arc::new(found)));
            }
            let mut s = d.status.clone().unwrap_or_default();
            s.collision_count = Some(collisions.unwrap_or(0) + 1);
            write_status(ctx, d, s).await?;
            Err(Error::Kube(kube::Error::Api(e)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies the Deployment's annotations to a ReplicaSet's; whether any changed.
fn copy_annotations(d: &Deployment, ann: &mut BTreeMap<String, String>) -> bool {
    let mut changed = false;
    for (k, v) in util::copied_annotations(d) {
        if ann.get(&k) != Some(&v) {
            ann.insert(k, v);
            changed = true;
        }
    }
    changed
}

/// Puts the current revision on the Deployment, where kubectl shows it.
async fn set_deployment_revision(ctx: &Ctx, d: &Deployment, rev: i64) -> Result<(), Error> {
    let cur = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(util::REVISION));
    if rev == 0 || cur.is_some_and(|c| *c == rev.to_string()) {
        return Ok(());
    }
    let ns = d.metadata.namespace.as_deref().unwrap_or("default");
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let patch = serde_json::json!({"metadata": {"annotations": {util::REVISION: rev.to_string()}}});
    Api::<Deployment>::namespaced(ctx.client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// How long until a rollout that is not moving must be looked at again.
fn recheck(after: Option<Duration>) -> Action {
    after
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change)
}
