//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the
//! template, creating in slow-start batches (at most 500 per pass, kube's burst) and
//! deleting the lowest-ranked surplus first; reports replicas, fully labelled, ready
//! and available counts and a ReplicaFailure condition when pods cannot be made.

use std::sync::Arc;
use std::time::Duration;

use berth_pods::readiness;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;

use crate::{owner, podcontrol, Error, Shared};

/// The most pods one pass creates or deletes (kube's burstReplicas).
const BURST: usize = 500;

pub(crate) type Ctx = crate::PodOwner;

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let (ctx, queue) = crate::pod_owner(
        shared,
        &shared.replicasets,
        "replicaset-controller",
        berth_pods::identities::REPLICASET,
    );
    let ctx = Arc::new(ctx);
    let store: Store<ReplicaSet> = shared.replicasets.store();
    crate::drive("replicaset", store, queue, reconcile, ctx)
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let spec = rs.spec.clone().unwrap_or_default();
    let wanted = Replicas {
        want: spec.replicas.unwrap_or(1).max(0) as usize,
        template: spec.template.unwrap_or_default(),
        min_ready: spec.min_ready_seconds.unwrap_or(0),
        status: rs.status.clone().unwrap_or_default(),
    };
    keep(rs.as_ref(), wanted, &ctx).await
}

/// What the replica loop keeps: a ReplicaSet's (or a ReplicationController's) count,
/// template and readiness delay, and the status it has (the two kinds' statuses have
/// the same fields).
pub(crate) struct Replicas {
    pub want: usize,
    pub template: PodTemplateSpec,
    pub min_ready: i32,
    pub status: ReplicaSetStatus,
}

/// Keeps `r.want` active pods of `owner` from `r.template`, and writes its status.
pub(crate) async fn keep<K>(owner: &K, r: Replicas, ctx: &Ctx) -> Result<Action, Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let m = owner.meta();
    let uid = m.uid.clone().unwrap_or_default();
    let ns = m.namespace.clone().unwrap_or_default();
    let name = m.name.clone().unwrap_or_default();
    let want = r.want;
    // Expectations before the pods: a creation seen in between must not satisfy them
    // while an older list is used.
    let satisfied = ctx.expectations.satisfied(&uid);
    let mut active: Vec<Arc<Pod>> = ctx
        .pods
        .owned(&uid)
        .into_iter()
        .filter(|p| readiness::is_active(p))
        .collect();
    let mut failure: Option<String> = None;
    if m.deletion_timestamp.is_none() && satisfied {
        if active.len() < want {
            let n = (want - active.len()).min(BURST);
            let template = r.template.clone();
            let reference = owner::reference_to(owner);
            let prefix = crate::generate_prefix(&name);
            failure = ctx
                .create_pods(owner, n, |_| {
                    podcontrol::from_template(
                        &template,
                        reference.clone(),
                        &ns,
                        None,
                        Some(prefix.clone()),
                    )
                })
                .await;
        } else if active.len() > want {
            let n = (active.len() - want).min(BURST);
            podcontrol::rank_for_deletion(&mut active);
            let victims: Vec<Arc<Pod>> = active.drain(..n).collect();
            failure = ctx.delete_pods(owner, &victims).await;
        }
    }
    let now = jiff::Timestamp::now();
    let min_ready = r.min_ready;
    let template_labels = r
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let current = ctx.pods.owned(&uid);
    let active: Vec<&Arc<Pod>> = current.iter().filter(|p| readiness::is_active(p)).collect();
    let labelled = active
        .iter()
        .filter(|p| {
            let l = p.metadata.labels.clone().unwrap_or_default();
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| readiness::is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| readiness::is_available(p, min_ready, now))
        .count();
    let old = r.status;
    let mut conditions: Vec<ReplicaSetCondition> = old
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .collect();
    if let Some(msg) = &failure {
        let reason = if active.len() < want {
            "FailedCreate"
        } else {
            "FailedDelete"
        };
        conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(msg.clone()),
            last_transition_time: Some(Time(now)),
        });
    }
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(labelled as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        observed_generation: m.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
    };
    if crate::status_differs(&old, &status) {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(crate::status_patch(&status, &["conditions"])),
        )
        .await?;
    }
    if failure.is_some() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    // A pod ready but not yet available becomes available without any event.
    if min_ready > 0 && ready > available {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}
