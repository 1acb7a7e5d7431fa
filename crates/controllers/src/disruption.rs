//! The disruption controller, as kube's: keeps each PodDisruptionBudget's status —
//! the pods it expects, how many must stay healthy, how many are, and so how many
//! may be disrupted now — which the eviction subresource spends. A percentage or a
//! maxUnavailable is taken of the scale of the pods' controllers (Deployments,
//! ReplicaSets, StatefulSets, ReplicationControllers); a budget whose pods have no
//! such controller allows nothing, with a SyncFailed condition saying why.
//! Evictions granted but not yet seen as deletions (disruptedPods) are not counted
//! healthy, and are forgotten after two minutes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_pods::disruption;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::index::Index;
use crate::informer::{itself, Change, Object};
use crate::{owner, status_differs, Error, Shared};

struct Ctx {
    client: kube::Client,
    pods: Arc<Index<Pod>>,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    statefulsets: Store<StatefulSet>,
    replicationcontrollers: Store<ReplicationController>,
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let budgets = shared.budgets.store();
    let for_pods = budgets.clone();
    // A pod wakes the budgets of its namespace that cover it, before or after.
    let by_pod = shared.pods.trigger(move |c: &Change<'_, Pod>| {
        let (old, new): (Option<&Pod>, &Pod) = match c {
            Change::Applied { old, new } => (old.as_deref(), *new),
            Change::Deleted(p) => (None, *p),
        };
        if let Some(o) = old {
            let facts = |p: &Pod| {
                (
                    p.metadata.labels.clone(),
                    disruption::is_healthy(p),
                    p.metadata.deletion_timestamp.is_some(),
                    owner::controller_ref(&p.metadata).map(|r| r.uid.clone()),
                )
            };
            if facts(o) == facts(new) {
                return Vec::new();
            }
        }
        for_pods
            .state()
            .iter()
            .filter(|b| {
                [Some(new), old]
                    .into_iter()
                    .flatten()
                    .any(|p| disruption::covers(b, p))
            })
            .map(|b| ObjectRef::from_obj(b.as_ref()))
            .collect()
    });
    // A controller's scale sets what percentages are of.
    let queue = futures_util::stream::select(
        futures_util::stream::select(shared.budgets.trigger(itself), by_pod),
        futures_util::stream::select(
            futures_util::stream::select(
                shared
                    .deployments
                    .trigger(rescaled(budgets.clone(), |d: &Deployment| {
                        d.spec.as_ref().and_then(|s| s.replicas)
                    })),
                shared
                    .replicasets
                    .trigger(rescaled(budgets.clone(), |r: &ReplicaSet| {
                        r.spec.as_ref().and_then(|s| s.replicas)
                    })),
            ),
            futures_util::stream::select(
                shared
                    .statefulsets
                    .trigger(rescaled(budgets.clone(), |s: &StatefulSet| {
                        s.spec.as_ref().and_then(|s| s.replicas)
                    })),
                shared
                    .replicationcontrollers
                    .trigger(rescaled(budgets, |r: &ReplicationController| {
                        r.spec.as_ref().and_then(|s| s.replicas)
                    })),
            ),
        ),
    );
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::DISRUPTION),
        pods: shared.pods_by_namespace.clone(),
        deployments: shared.deployments.store(),
        replicasets: shared.replicasets.store(),
        statefulsets: shared.statefulsets.store(),
        replicationcontrollers: shared.replicationcontrollers.store(),
    });
    crate::drive("disruption", shared.budgets.store(), queue, reconcile, ctx)
}

/// A trigger waking the budgets of a controller's namespace when its scale changes.
fn rescaled<K: Object>(
    budgets: Store<PodDisruptionBudget>,
    replicas: fn(&K) -> Option<i32>,
) -> impl Fn(&Change<'_, K>) -> Vec<ObjectRef<PodDisruptionBudget>> + Send + Sync + 'static {
    move |c| {
        let new = match c {
            Change::Applied { old: Some(o), new } if replicas(o) != replicas(new) => *new,
            Change::Applied { old: None, new } => *new,
            Change::Deleted(o) => *o,
            _ => return Vec::new(),
        };
        let ns = new.meta().namespace.clone();
        budgets
            .state()
            .iter()
            .filter(|b| b.metadata.namespace == ns)
            .map(|b| ObjectRef::from_obj(b.as_ref()))
            .collect()
    }
}

/// `value` of `total` (an int, or a percentage rounded up), as kube scales them.
fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok(((pct * i64::from(total) + 99) / 100).clamp(0, i64::from(i32::MAX)) as i32)
        }
    }
}

impl Ctx {
    /// The replicas the controller of `pod` wants, with the controller's UID.
    fn scale_of(&self, pod: &Pod) -> Result<(String, i32), String> {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let r = owner::controller_ref(&pod.metadata)
            .ok_or_else(|| format!("found no controller ref for pod \"{pod_name}\""))?;
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let key = |name: &str| (name.to_string(), ns.clone());
        let found = |uid: Option<&String>| uid.is_some_and(|u| *u == r.uid);
        let answer = match (r.api_version.as_str(), r.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => lookup(&self.replicasets, key(&r.name)).and_then(|rs| {
                if !found(rs.metadata.uid.as_ref()) {
                    return None;
                }
                // A Deployment's ReplicaSet: the Deployment's scale is the one to keep.
                if let Some(d) = owner::controller_ref(&rs.metadata)
                    .filter(|d| d.kind == "Deployment")
                    .and_then(|d| {
                        lookup(&self.deployments, key(&d.name))
                            .filter(|dep| dep.metadata.uid.as_deref() == Some(d.uid.as_str()))
                    })
                {
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    return Some((d.metadata.uid.clone().unwrap_or_default(), want));
                }
                Some((
                    r.uid.clone(),
                    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                ))
            }),
            ("apps/v1", "StatefulSet") => lookup(&self.statefulsets, key(&r.name))
                .filter(|s| found(s.metadata.uid.as_ref()))
                .map(|s| {
                    (
                        r.uid.clone(),
                        s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    )
                }),
            ("v1", "ReplicationController") => lookup(&self.replicationcontrollers, key(&r.name))
                .filter(|s| found(s.metadata.uid.as_ref()))
                .map(|s| {
                    (
                        r.uid.clone(),
                        s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    )
                }),
            _ => None,
        };
        answer.ok_or_else(|| format!("found no controllers for pod \"{pod_name}\""))
    }

    /// The sum of the scales of the pods' controllers, each counted once.
    fn expected_scale(&self, pods: &[Arc<Pod>]) -> Result<i32, String> {
        let mut seen = HashSet::new();
        let mut total = 0i32;
        for p in pods {
            let (uid, want) = self.scale_of(p)?;
            if seen.insert(uid) {
                total = total.saturating_add(want.max(0));
            }
        }
        Ok(total)
    }
}

fn lookup<K: Object>(store: &Store<K>, (name, ns): (String, String)) -> Option<Arc<K>> {
    store.get(&ObjectRef::new(&name).within(&ns))
}

/// (expected pods, desired healthy) for the budget, as kube's getExpectedPodCount.
fn expected(ctx: &Ctx, pdb: &PodDisruptionBudget, pods: &[Arc<Pod>]) -> Result<(i32, i32), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max) = &spec.max_unavailable {
        let n = ctx.expected_scale(pods)?;
        let unavailable = scaled(max, n)?;
        return Ok((n, (n - unavailable).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(i)) => Ok((pods.len() as i32, *i)),
        Some(pct) => {
            let n = ctx.expected_scale(pods)?;
            Ok((n, scaled(pct, n)?))
        }
        None => Ok((pods.len() as i32, 0)),
    }
}

fn condition(
    old: &PodDisruptionBudgetStatus,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let prev = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed");
    let since = prev
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pdb.metadata.namespace.clone().unwrap_or_default();
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let generation = pdb.metadata.generation;
    let old = pdb.status.clone().unwrap_or_default();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .get(&ns)
        .into_iter()
        .filter(|p| disruption::covers(&pdb, p))
        .collect();
    let now = Timestamp::now();
    // Evictions in flight: kept while their pod is still here, not deleting, and the
    // two minutes have not passed.
    let by_name: BTreeMap<&str, &Arc<Pod>> = pods
        .iter()
        .map(|p| (p.metadata.name.as_deref().unwrap_or_default(), p))
        .collect();
    let mut next_expiry: Option<Timestamp> = None;
    let disrupted: BTreeMap<String, Time> = old
        .disrupted_pods
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(pod, since)| {
            let live = by_name
                .get(pod.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none());
            let keep = live && disruption::in_flight(since.0, now);
            if keep {
                let at = crate::later(since.0, disruption::DELETION_TIMEOUT_SECS);
                next_expiry = Some(next_expiry.map_or(at, |n| n.min(at)));
            }
            keep
        })
        .collect();
    let healthy = pods
        .iter()
        .filter(|p| disruption::is_healthy(p))
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
        .count() as i32;
    let mut status = PodDisruptionBudgetStatus {
        observed_generation: generation,
        current_healthy: healthy,
        disrupted_pods: Some(disrupted).filter(|d| !d.is_empty()),
        ..Default::default()
    };
    match expected(&ctx, &pdb, &pods) {
        Ok((expected, desired)) => {
            status.expected_pods = expected;
            status.desired_healthy = desired;
            status.disruptions_allowed = (healthy - desired).max(0);
            status.conditions = Some(vec![if status.disruptions_allowed > 0 {
                condition(&old, "True", "SufficientPods", "", generation)
            } else {
                condition(&old, "False", "InsufficientPods", "", generation)
            }]);
        }
        // Fail safe: nothing may be disrupted while the budget cannot be worked out.
        Err(why) => {
            status.disruptions_allowed = 0;
            status.conditions = Some(vec![condition(
                &old,
                "False",
                "SyncFailed",
                &why,
                generation,
            )]);
        }
    }
    if status_differs(&old, &status) {
        let mut updated = (*pdb).clone();
        updated.status = Some(status);
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        // A whole-object write with the resourceVersion read: an eviction that spent a
        // disruption meanwhile makes this a 409, and the next try counts it.
        api.replace_status(&name, &PostParams::default(), &updated)
            .await?;
    }
    Ok(match next_expiry {
        Some(at) => {
            let wait = at.duration_since(now).unsigned_abs();
            Action::requeue(wait.max(Duration::from_secs(1)))
        }
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_as_kubes_do() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(&pct("50%"), 3), Ok(2));
        assert_eq!(scaled(&pct("25%"), 4), Ok(1));
        assert_eq!(scaled(&pct("0%"), 7), Ok(0));
        assert_eq!(scaled(&IntOrString::Int(2), 7), Ok(2));
        assert!(scaled(&pct("half"), 3).is_err());
    }
}
