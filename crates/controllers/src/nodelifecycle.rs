//! Node lifecycle, as kube-controller-manager's node lifecycle and taint eviction
//! controllers: a node whose kubelet has not renewed its Lease (nor posted its
//! status) for 40 s (the grace period) gets its conditions set to Unknown, its pods marked not ready and
//! the unreachable taints; a node reporting NotReady gets the not-ready taints; both
//! go when it is Ready again; the NoExecute taints come at the pace of
//! [`crate::taintrate`]. A pod on a node with a NoExecute taint it does not
//! tolerate is evicted at once, one that tolerates it for tolerationSeconds (300 s by
//! the DefaultTolerationSeconds admission) once that time has passed since the taint
//! came. Zones' health is reported as kube reports it ([`crate::zonehealth`]).

use std::sync::Arc;
use std::time::Duration;

use berth_events::EventType;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::index::Index;
use crate::informer::{itself, Change};
use crate::taintrate::{EvictionRates, Pacer};
use crate::{Error, Shared};

/// The taint of a node whose kubelet stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node that reports NotReady.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The namespace of the nodes' heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

struct Ctx {
    client: kube::Client,
    leases: Store<Lease>,
    pods: Arc<Index<Pod>>,
    recorder: berth_events::Recorder,
    /// How long a node may go without a heartbeat.
    grace: Duration,
    /// Per node: the last heartbeat seen and when (by this controller's clock), so a
    /// kubelet's clock need not agree with ours (as kube's node monitor times it).
    seen: std::sync::Mutex<
        std::collections::HashMap<String, (Option<Timestamp>, std::time::Instant)>,
    >,
    nodes: Store<Node>,
    /// How fast nodes get NoExecute taints, by zone.
    rates: EvictionRates,
    pacer: Pacer,
}

/// The controller, ready to run once the shared informers run.
pub fn controller(
    shared: &Shared,
    grace: Duration,
    rates: EvictionRates,
) -> impl std::future::Future<Output = ()> + Send {
    let by_lease = shared.leases.trigger(|c: &Change<'_, Lease>| {
        let l = match c {
            Change::Applied { new, .. } => *new,
            Change::Deleted(l) => *l,
        };
        l.metadata.name.iter().map(|n| ObjectRef::new(n)).collect()
    });
    // A pod newly bound to a node may have to leave it at once.
    let by_pod = shared.pods.trigger(|c: &Change<'_, Pod>| match c {
        Change::Applied { old, new } => {
            let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
            match (old.as_deref().and_then(node), node(new)) {
                (before, Some(n)) if before.as_deref() != Some(n.as_str()) => {
                    vec![ObjectRef::new(&n)]
                }
                _ => Vec::new(),
            }
        }
        Change::Deleted(_) => Vec::new(),
    });
    let queue = futures_util::stream::select(
        shared.nodes.trigger(itself),
        futures_util::stream::select(by_lease, by_pod),
    );
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::NODE),
        leases: shared.leases.store(),
        pods: shared.pods_by_node.clone(),
        recorder: shared.recorder("node-controller", berth_pods::identities::NODE),
        grace,
        seen: Default::default(),
        nodes: shared.nodes.store(),
        rates,
        pacer: Pacer::default(),
    });
    // Forget nodes that go.
    let forget = ctx.clone();
    shared.nodes.on(move |c| {
        if let Change::Deleted(n) = c {
            let name = n.metadata.name.clone().unwrap_or_default();
            forget
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        }
    });
    // Pods of a node that is gone have no kubelet to stop them: they go at once
    // (kube's pod garbage collector).
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel::<String>();
    shared.nodes.on(move |c| {
        if let Change::Deleted(n) = c {
            let _ = gone_tx.send(n.metadata.name.clone().unwrap_or_default());
        }
    });
    let gc_ctx = ctx.clone();
    let gc = async move {
        while let Some(node) = gone.recv().await {
            for pod in gc_ctx.pods.get(&node) {
                force_delete(&gc_ctx, &pod).await;
            }
        }
    };
    // And level-triggered, for a node deleted while no controller ran or named by a
    // pod but never registered: after a quarantine of the node monitor's grace period
    // (40 s, as kube's pod garbage collector waits), confirmed by a read.
    let sweep_ctx = ctx.clone();
    let sweep = async move {
        let mut missing: std::collections::HashMap<String, std::time::Instant> = Default::default();
        loop {
            tokio::time::sleep((sweep_ctx.grace / 2).min(ORPHAN_SWEEP)).await;
            sweep_orphans(&sweep_ctx, &mut missing).await;
        }
    };
    // Zones' health, for the gauges and the log (the pace itself is reckoned afresh
    // at each taint).
    let zones_ctx = ctx.clone();
    let zones = async move {
        let mut health = crate::zonehealth::ZoneHealth::default();
        loop {
            tokio::time::sleep(crate::zonehealth::PERIOD).await;
            let nodes = zones_ctx.nodes.state();
            for t in health.observe(&nodes, zones_ctx.rates.unhealthy_zone_threshold) {
                crate::zonehealth::log(&t);
            }
        }
    };
    let controller = crate::drive("nodelifecycle", shared.nodes.store(), queue, reconcile, ctx);
    async move {
        tokio::join!(controller, gc, sweep, zones);
    }
}

/// How often, at most, pods are checked for nodes that do not exist.
const ORPHAN_SWEEP: Duration = Duration::from_secs(20);

/// Force-deletes the pods of nodes missing for the grace period (`missing`
/// remembers since when: a node may register just after its first pods are bound),
/// once a live read confirms the node is not there.
async fn sweep_orphans(
    ctx: &Ctx,
    missing: &mut std::collections::HashMap<String, std::time::Instant>,
) {
    let now = std::time::Instant::now();
    let absent: Vec<String> = ctx
        .pods
        .keys()
        .into_iter()
        .filter(|n| ctx.nodes.get(&ObjectRef::new(n)).is_none())
        .collect();
    missing.retain(|n, _| absent.contains(n));
    for node in absent {
        let since = *missing.entry(node.clone()).or_insert(now);
        if now.duration_since(since) < ctx.grace {
            continue;
        }
        match Api::<Node>::all(ctx.client.clone()).get_opt(&node).await {
            Ok(None) => {
                for pod in ctx.pods.get(&node) {
                    force_delete(ctx, &pod).await;
                }
                missing.remove(&node);
            }
            Ok(Some(_)) => {
                missing.remove(&node);
            }
            Err(e) => tracing::debug!(node, error = %e, "pod garbage collector: reading a node"),
        }
    }
}

/// Deletes a pod with no grace (its node is gone: nothing runs it).
async fn force_delete(ctx: &Ctx, pod: &Pod) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let dp = berth_watch::delete_exactly(pod.metadata.uid.clone(), Some(0), false);
    match Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .delete(name, &dp)
        .await
    {
        Ok(_) => {
            let msg = format!("Deleting pod {ns}/{name}: its node is gone");
            ctx.recorder
                .pod(pod, "", EventType::Normal, "PodGCOrphaned", &msg);
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "deleting a pod of a node that is gone"),
    }
}

fn ready(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let now = Timestamp::now();
    let lease = ctx
        .leases
        .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
    let renewed = lease
        .as_ref()
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let posted = ready(&node).and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    let heartbeat = renewed.max(posted);
    let age = {
        let mut seen = ctx.seen.lock().unwrap_or_else(|e| e.into_inner());
        let e = seen
            .entry(name.clone())
            .or_insert((heartbeat, std::time::Instant::now()));
        if e.0 != heartbeat {
            *e = (heartbeat, std::time::Instant::now());
        }
        SignedDuration::try_from(e.1.elapsed()).unwrap_or_default()
    };
    let grace = SignedDuration::try_from(ctx.grace).unwrap_or_default();
    let status = ready(&node).map(|c| c.status.clone()).unwrap_or_default();
    if age > grace && status != "Unknown" {
        mark_unknown(&ctx, &node, now).await?;
        return Ok(Action::await_change());
    }
    let mut next = (age < grace).then(|| (grace - age).unsigned_abs() + Duration::from_secs(1));

    // The taints the Ready condition calls for.
    let want = match status.as_str() {
        "Unknown" => Some(UNREACHABLE),
        "False" => Some(NOT_READY),
        _ => None,
    };
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut new_taints: Vec<Taint> = taints
        .iter()
        .filter(|t| {
            !matches!(t.key.as_str(), UNREACHABLE | NOT_READY) || Some(t.key.as_str()) == want
        })
        .cloned()
        .collect();
    // Whether this reconcile took its zone's turn for a NoExecute taint, and whether
    // it adds one (paced, or swapped from not-ready to unreachable or back).
    let mut paced = false;
    let mut no_execute_added = false;
    if let Some(key) = want {
        // From not-ready to unreachable or back: swapped at once, as kube swaps them.
        let swapping = taints
            .iter()
            .any(|t| t.effect == "NoExecute" && matches!(t.key.as_str(), UNREACHABLE | NOT_READY));
        for effect in ["NoSchedule", "NoExecute"] {
            if !new_taints
                .iter()
                .any(|t| t.key == key && t.effect == effect)
            {
                if effect == "NoExecute" && !swapping {
                    let all = ctx.nodes.state();
                    match ctx
                        .pacer
                        .take(&ctx.rates, &node, &all, std::time::Instant::now())
                    {
                        Ok(()) => paced = true,
                        Err(wait) => {
                            next = Some(next.map_or(wait, |n| n.min(wait)));
                            continue;
                        }
                    }
                }
                no_execute_added |= effect == "NoExecute";
                new_taints.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
            }
        }
    }
    if new_taints != taints {
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": new_taints},
        });
        let written = Api::<Node>::all(ctx.client.clone())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if let Err(e) = written {
            // The zone's turn was not used: the next node (or this one, retried) may
            // have it.
            if paced {
                ctx.pacer.refund(&node, std::time::Instant::now());
            }
            return Err(e.into());
        }
        if no_execute_added {
            crate::zonehealth::evicting(&crate::taintrate::zone_of(&node));
        }
        // A NoExecute taint held back waits for its zone's turn.
        return Ok(next
            .map(Action::requeue)
            .unwrap_or_else(Action::await_change));
    }

    // Taint eviction.
    let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    // When no node is Ready, the fault is more likely ours (or the network's) than
    // every node's: evict nothing (kube's full-disruption mode).
    // Asked only of a tainted node: every Lease renewal reconciles its node, and a
    // look at every node each time was most of this controller's work.
    let any_ready = || {
        ctx.nodes
            .state()
            .iter()
            .any(|n| ready(n).is_some_and(|c| c.status == "True"))
    };
    if !no_execute.is_empty() && any_ready() {
        for pod in ctx.pods.get(&name) {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match evict_at(&pod, &no_execute) {
                Some(at) if at <= now => evict(&ctx, &pod).await?,
                Some(at) => {
                    let wait = at.duration_since(now).unsigned_abs() + Duration::from_secs(1);
                    next = Some(next.map_or(wait, |n| n.min(wait)));
                }
                None => {}
            }
        }
    }
    Ok(next
        .map(Action::requeue)
        .unwrap_or_else(Action::await_change))
}

/// When the pod must leave a node with these NoExecute taints: now if one is not
/// tolerated, else when the shortest tolerationSeconds since its taint came ends
/// (None: tolerated for ever).
fn evict_at(pod: &Pod, taints: &[&Taint]) -> Option<Timestamp> {
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut at: Option<Timestamp> = None;
    for t in taints {
        let matching: Vec<_> = tols
            .iter()
            .filter(|tol| berth_scheduler::filter::tolerates(tol, t))
            .collect();
        if matching.is_empty() {
            return Some(Timestamp::UNIX_EPOCH);
        }
        // The tolerance is the shortest of those that set a limit.
        let secs = matching
            .iter()
            .filter_map(|tol| tol.toleration_seconds)
            .min();
        if let Some(secs) = secs {
            let since = t
                .time_added
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(Timestamp::now);
            let end = crate::later(since, secs.max(0));
            at = Some(at.map_or(end, |a| a.min(end)));
        }
    }
    at
}

/// Deletes a pod for a taint, as kube's taint manager (the DisruptionTarget condition
/// first, so its controller and users see why).
async fn evict(ctx: &Ctx, pod: &Pod) -> Result<(), Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut conds = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conds.retain(|c| c.type_ != "DisruptionTarget");
    conds.push(k8s_openapi::api::core::v1::PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(Time(Timestamp::now())),
        ..Default::default()
    });
    let patch = serde_json::json!({"status": {"conditions": conds}});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    ctx.recorder.pod(
        pod,
        "",
        EventType::Normal,
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {ns}/{name}"),
    );
    let dp = berth_watch::delete_exactly(pod.metadata.uid.clone(), None, false);
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sets the node's conditions to Unknown (its kubelet stopped reporting) and its pods
/// not ready.
async fn mark_unknown(ctx: &Ctx, node: &Node, now: Timestamp) -> Result<(), Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for kind in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        match conds.iter_mut().find(|c| c.type_ == kind) {
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
            }
            None => conds.push(NodeCondition {
                type_: kind.into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_transition_time: Some(Time(now)),
                last_heartbeat_time: None,
            }),
        }
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "status": {"conditions": conds},
    });
    Api::<Node>::all(ctx.client.clone())
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.recorder.about(
        node,
        EventType::Normal,
        "NodeNotReady",
        &format!("Node {name} status is now: NodeNotReady"),
    );
    for pod in ctx.pods.get(&name) {
        let mut pconds = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut changed = false;
        for c in pconds
            .iter_mut()
            .filter(|c| c.type_ == "Ready" && c.status != "False")
        {
            c.status = "False".into();
            c.last_transition_time = Some(Time(now));
            changed = true;
        }
        if !changed {
            continue;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let patch = serde_json::json!({"status": {"conditions": pconds}});
        match Api::<Pod>::namespaced(ctx.client.clone(), ns)
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
