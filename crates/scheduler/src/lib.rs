//! berth's scheduler: places each pending pod (no node yet, this scheduler's name) on
//! the node kube-scheduler would choose — the feasible nodes by the filters of
//! [`filter`], the best by the scores of [`score`] — and binds it through the
//! pods/binding subresource. Shaped as kube-runtime's Controller: a watch of pending
//! pods feeds a queue, one pod is never placed twice at once, a pod that fits nowhere
//! is tried again after a back-off (1 s doubling to 10 s, kube's) and when nodes change.
//! The decisions read [`cache::Cache`], kept from the watches of every pod and node.

pub mod cache;
pub mod filter;
pub mod interpod;
pub mod preempt;
pub mod quantities;
pub mod score;
pub mod spread;
pub mod volumes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, Namespace, Node, ObjectReference, PersistentVolumeClaim, Pod,
};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;

use crate::cache::{Cache, Needs};

/// The scheduler's settings.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// The schedulerName this scheduler answers to (pods naming another are left).
    pub name: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            name: "default-scheduler".into(),
        }
    }
}

/// Why a pod was not placed this time.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No node fits (kube's FailedScheduling message).
    #[error("{0}")]
    Unschedulable(String),
    /// The API server refused or failed the binding.
    #[error("binding {0}: {1}")]
    Bind(String, #[source] Box<kube::Error>),
}

struct Ctx {
    client: kube::Client,
    cfg: SchedulerConfig,
    cache: Mutex<Cache>,
    /// Round-robin among equal best nodes, as kube picks one of them.
    ties: std::sync::atomic::AtomicUsize,
    /// Wakes every pending pod when nodes change (a new node may fit them).
    wake: tokio::sync::mpsc::UnboundedSender<()>,
    recorder: berth_events::Recorder,
    /// Failed attempts per pod UID, for its back-off.
    attempts: Mutex<std::collections::HashMap<String, u32>>,
    /// Claims, volumes and classes (VolumeBinding).
    volumes: volumes::Stores,
    /// PodDisruptionBudgets (preemption spares the pods they protect).
    budgets: kube::runtime::reflector::Store<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    /// Which of the cache's watches ([`Synced`]) have listed everything once.
    synced: tokio::sync::watch::Sender<Synced>,
}

/// How long the scheduler waits for its watches' first lists before saying so.
const SYNC_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// The cache's watches that have listed everything once: until all have, no pod is
/// placed (as kube-scheduler waits for its informers' caches), or a pod would meet
/// "0/0 nodes" or be placed beside pods the cache does not know yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Synced {
    nodes: bool,
    pods: bool,
    namespaces: bool,
}

impl Synced {
    fn all(self) -> bool {
        self.nodes && self.pods && self.namespaces
    }
}

/// Places pods until the task is dropped.
pub async fn run(client: kube::Client, cfg: SchedulerConfig) {
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel::<()>();
    let cfg_name = cfg.name.clone();
    let (claims, claims_writer) = kube::runtime::reflector::store();
    let (pvs, pvs_writer) = kube::runtime::reflector::store();
    let (classes, classes_writer) = kube::runtime::reflector::store();
    let (budgets, budgets_writer) = kube::runtime::reflector::store();
    let ctx = Arc::new(Ctx {
        budgets,
        volumes: volumes::Stores {
            claims,
            volumes: pvs,
            classes,
        },
        client: client.clone(),
        cfg,
        cache: Mutex::new(Cache::default()),
        ties: Default::default(),
        wake,
        recorder: berth_events::Recorder::new(client.clone(), &cfg_name, &cfg_name, None),
        attempts: Default::default(),
        synced: tokio::sync::watch::Sender::new(Synced::default()),
    });
    let pending = watcher::Config::default().fields("spec.nodeName=");
    let placing = ctx.clone();
    let controller = async move {
        let mut synced = placing.synced.subscribe();
        // A watch that cannot list (a missing right) would hold the scheduler up for
        // good: say which, now and then.
        while tokio::time::timeout(SYNC_PATIENCE, synced.wait_for(|s| s.all()))
            .await
            .is_err()
        {
            let s = *synced.borrow();
            tracing::warn!(
                nodes = s.nodes,
                pods = s.pods,
                namespaces = s.namespaces,
                "scheduler: still waiting for its watches to list everything once (false: not yet); no pod is placed until they have"
            );
        }
        let v = &placing.volumes;
        let stores = futures_util::future::join4(
            v.claims.wait_until_ready(),
            v.volumes.wait_until_ready(),
            v.classes.wait_until_ready(),
            placing.budgets.wait_until_ready(),
        );
        tokio::pin!(stores);
        while tokio::time::timeout(SYNC_PATIENCE, &mut stores)
            .await
            .is_err()
        {
            tracing::warn!(
                "scheduler: still waiting for its claims, volumes, storage classes and disruption budgets to be listed once; no pod is placed until they are"
            );
        }
        // What woke pending pods while nothing was placed is covered by the
        // controller's first pass over all of them.
        while woken.try_recv().is_ok() {}
        let woken = futures_util::stream::unfold(woken, |mut rx| async move {
            rx.recv().await.map(|v| (v, rx))
        });
        tracing::debug!("scheduler: caches synced, placing pods");
        Controller::new(Api::<Pod>::all(placing.client.clone()), pending)
            .trigger_backoff(berth_watch::backoff())
            .reconcile_all_on(woken)
            .run(reconcile, error_policy, placing.clone())
            .for_each(|_| async {})
            .await
    };
    // In this task, not spawned: dropping the scheduler stops its watches too.
    // A claim, volume or class changing may let waiting pods in.
    let volume_watches = futures_util::future::join4(
        reflect(claims_writer, Api::all(client.clone()), ctx.wake.clone()),
        reflect(pvs_writer, Api::all(client.clone()), ctx.wake.clone()),
        reflect(classes_writer, Api::all(client.clone()), ctx.wake.clone()),
        reflect(budgets_writer, Api::all(client.clone()), ctx.wake.clone()),
    );
    tokio::join!(
        watch_nodes(ctx.clone()),
        watch_namespaces(ctx.clone()),
        watch_pods(ctx),
        controller,
        volume_watches
    );
}

/// Keeps `writer`'s store of `api`'s objects, waking the pending pods on each change.
async fn reflect<K>(
    writer: kube::runtime::reflector::store::Writer<K>,
    api: Api<K>,
    wake: tokio::sync::mpsc::UnboundedSender<()>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let objects = watcher(api, watcher::Config::default())
        .modify(|o| kube::Resource::meta_mut(o).managed_fields = None);
    kube::runtime::reflector(writer, objects)
        .backoff(berth_watch::backoff())
        .touched_objects()
        .for_each(move |_| {
            let _ = wake.send(());
            futures_util::future::ready(())
        })
        .await
}

fn lock(ctx: &Ctx) -> std::sync::MutexGuard<'_, Cache> {
    ctx.cache.lock().unwrap_or_else(|e| e.into_inner())
}

async fn watch_nodes(ctx: Arc<Ctx>) {
    let mut seen = std::collections::HashSet::new();
    // The cache keeps each Node; it never reads their managedFields, most of a
    // decoded Node's memory.
    let mut events = watcher(Api::<Node>::all(ctx.client.clone()), Default::default())
        .modify(|n| n.metadata.managed_fields = None)
        .backoff(berth_watch::backoff())
        .boxed();
    while let Some(ev) = events.next().await {
        let changed = match ev {
            Ok(Event::Init) => {
                seen.clear();
                false
            }
            Ok(Event::InitApply(n)) => {
                seen.insert(n.metadata.name.clone().unwrap_or_default());
                lock(&ctx).set_node(n);
                true
            }
            // Nodes deleted while the watch was away are not in the new list.
            Ok(Event::InitDone) => {
                lock(&ctx).retain_nodes(&seen);
                ctx.synced.send_modify(|s| s.nodes = true);
                true
            }
            Ok(Event::Apply(n)) => {
                lock(&ctx).set_node(n);
                true
            }
            Ok(Event::Delete(n)) => {
                lock(&ctx).remove_node(n.metadata.name.as_deref().unwrap_or(""));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduler: watching nodes");
                false
            }
        };
        if changed {
            let _ = ctx.wake.send(());
        }
    }
}

/// Namespaces' labels, which affinity terms' namespaceSelectors read.
async fn watch_namespaces(ctx: Arc<Ctx>) {
    let mut events = watcher(
        Api::<Namespace>::all(ctx.client.clone()),
        Default::default(),
    )
    .backoff(berth_watch::backoff())
    .boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::InitApply(n) | Event::Apply(n)) => lock(&ctx).set_namespace(&n),
            Ok(Event::Delete(n)) => {
                lock(&ctx).remove_namespace(n.metadata.name.as_deref().unwrap_or(""))
            }
            Ok(Event::InitDone) => ctx.synced.send_modify(|s| s.namespaces = true),
            Ok(Event::Init) => {}
            Err(e) => tracing::warn!(error = %e, "scheduler: watching namespaces"),
        }
    }
}

async fn watch_pods(ctx: Arc<Ctx>) {
    let mut seen = std::collections::HashSet::new();
    let mut events = watcher(Api::<Pod>::all(ctx.client.clone()), Default::default())
        .backoff(berth_watch::backoff())
        .boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(p)) => {
                seen.insert(p.metadata.uid.clone().unwrap_or_default());
                lock(&ctx).set_pod(&p);
            }
            // Pods deleted while the watch was away are not in the new list.
            Ok(Event::InitDone) => {
                lock(&ctx).retain_pods(&seen);
                ctx.synced.send_modify(|s| s.pods = true);
            }
            Ok(Event::Apply(p)) => lock(&ctx).set_pod(&p),
            Ok(Event::Delete(p)) => {
                lock(&ctx).remove_pod(&p);
                let uid = p.metadata.uid.clone().unwrap_or_default();
                ctx.attempts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&uid);
            }
            Err(e) => tracing::warn!(error = %e, "scheduler: watching pods"),
        }
    }
}

fn is_ours(pod: &Pod, cfg: &SchedulerConfig) -> bool {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("default-scheduler");
    name == cfg.name
        && spec
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("")
            .is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The node for `pod` (needing `needs`): the best-scored feasible one, or kube's
/// message for none.
pub fn choose(cache: &Cache, pod: &Pod, needs: &Needs, tie: usize) -> Result<String, String> {
    choose_with(cache, pod, needs, tie, None)
}

/// How many feasible nodes to find before scoring, of `all` nodes: kube-scheduler's
/// default percentageOfNodesToScore, adaptive (50% less 1% per 125 nodes, at least
/// 5%) and never fewer than 100 nodes; at 5,000 nodes, the first 500 that fit.
pub fn feasible_nodes_to_find(all: usize) -> usize {
    const MIN_NODES: usize = 100;
    if all < MIN_NODES {
        return all;
    }
    let percent = 50usize.saturating_sub(all / 125).max(5);
    (all * percent / 100).max(MIN_NODES)
}

/// [`choose`], with the pod's claims (VolumeBinding) to respect. The search stops
/// after [`feasible_nodes_to_find`] feasible nodes, as kube-scheduler's does, and the
/// next one starts where it stopped.
pub fn choose_with(
    cache: &Cache,
    pod: &Pod,
    needs: &Needs,
    tie: usize,
    claims: Option<&volumes::Claims>,
) -> Result<String, String> {
    let inter = interpod::InterPod::of(pod, cache);
    let spread = spread::Spread::of(pod, cache);
    let mut reasons = Vec::new();
    let mut feasible: Vec<(&cache::NodeInfo, i64)> = Vec::new();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let priority = cache::priority(pod);
    // kube's filter order: the node's own checks, then spreading, then pods. Room
    // preemption freed for a pod of higher priority is not this one's.
    let check = |info: &cache::NodeInfo| {
        let seen = cache.as_seen_by(info, uid, priority);
        let fits = filter::fits(pod, needs, &seen)
            .and_then(|()| spread.as_ref().map_or(Ok(()), |s| s.filter(&info.node)))
            .and_then(|()| inter.as_ref().map_or(Ok(()), |i| i.filter(&info.node)))
            .and_then(|()| claims.map_or(Ok(()), |c| c.filter(&info.node)));
        fits.map(|()| score::score(needs, &seen))
    };
    // As kube-scheduler: a pod preemption made room for goes to its nominated node
    // when it fits there, before any search (which might stop short of that node).
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    if let Some(info) = nominated.and_then(|n| cache.node(n)) {
        if check(info).is_ok() {
            return Ok(nominated.unwrap_or_default().to_string());
        }
    }
    let wanted = feasible_nodes_to_find(cache.node_count());
    let mut last = None;
    for info in cache.nodes_in_turn() {
        if feasible.len() >= wanted {
            break;
        }
        last = info.node.metadata.name.as_deref();
        let fits = check(info);
        match fits {
            Ok(score) => feasible.push((info, score)),
            Err(r) => reasons.push(r),
        }
    }
    cache.searched(last);
    if feasible.is_empty() {
        return Err(filter::failure_message(cache.node_count(), &reasons));
    }
    score::add_preferences(pod, &mut feasible, inter.as_ref(), spread.as_ref());
    let top = feasible.iter().map(|(_, s)| *s).max().unwrap_or(0);
    let best: Vec<&str> = feasible
        .iter()
        .filter(|(_, s)| *s == top)
        .map(|(i, _)| i.node.metadata.name.as_deref().unwrap_or(""))
        .collect();
    Ok(best[tie % best.len()].to_string())
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !is_ours(&pod, &ctx.cfg) {
        return Ok(Action::await_change());
    }
    let started = std::time::Instant::now();
    let r = attempt(pod, ctx.clone()).await;
    let result = match &r {
        Ok(_) => "scheduled",
        Err(Error::Unschedulable(_)) => "unschedulable",
        Err(Error::Bind(..)) => "error",
    };
    let labels = [("result", result), ("profile", ctx.cfg.name.as_str())];
    let m = berth_metrics::global();
    m.inc(
        "scheduler_schedule_attempts_total",
        "Number of attempts to schedule pods, by the result.",
        &labels,
    );
    m.observe(
        "scheduler_scheduling_attempt_duration_seconds",
        "Scheduling attempt latency in seconds (scheduling algorithm + binding).",
        &labels,
        started.elapsed().as_secs_f64(),
    );
    r
}

/// One attempt to place a pod that is this scheduler's.
async fn attempt(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let tie = ctx.ties.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let claims = match volumes::Claims::of(&pod, &ctx.volumes) {
        Ok(c) => c,
        Err(why) => {
            let message = format!("0/{} nodes are available: {why}.", lock(&ctx).node_count());
            unschedulable(&ctx, &pod, &message).await;
            return Err(Error::Unschedulable(message));
        }
    };
    let chosen = {
        let mut cache = lock(&ctx);
        // The queue may hand over a pod as it was before its binding was seen here
        // (a bulk retry queued meanwhile): the cache knows better.
        if cache.is_placed(&pod) {
            return Ok(Action::await_change());
        }
        let needs = Needs::of(&pod);
        let chosen = choose_with(&cache, &pod, &needs, tie, claims.as_ref());
        if let Ok(node) = &chosen {
            cache.assume(&pod, needs, node);
        }
        chosen
    };
    let node = match chosen {
        Ok(node) => node,
        Err(message) => {
            let budgets = ctx.budgets.state();
            let plan = preempt::find(&lock(&ctx), &pod, &Needs::of(&pod), &budgets);
            if let Some((node, victims)) = plan {
                preempt(&ctx, &pod, &node, &victims).await;
            }
            unschedulable(&ctx, &pod, &message).await;
            return Err(Error::Unschedulable(message));
        }
    };
    // Claims waiting for their first consumer learn its node before it is bound.
    for claim in claims.iter().flat_map(|c| c.to_select.iter()) {
        if let Err(e) = select_node(&ctx, claim, &node).await {
            lock(&ctx).forget_assumed(&pod);
            return Err(Error::Bind(format!("{ns}/{name} to {node}"), Box::new(e)));
        }
    }
    let binding = Binding {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..Default::default()
        },
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let r: Result<serde_json::Value, kube::Error> = pods
        .create_subresource(
            "binding",
            &name,
            &kube::api::PostParams::default(),
            &binding,
        )
        .await;
    match r {
        Ok(_) => {
            tracing::debug!(pod = %format!("{ns}/{name}"), node = %node, "scheduled");
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            ctx.attempts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
            ctx.recorder.pod(
                &pod,
                "",
                berth_events::EventType::Normal,
                "Scheduled",
                &format!("Successfully assigned {ns}/{name} to {node}"),
            );
            Ok(Action::await_change())
        }
        Err(e) => {
            lock(&ctx).forget_assumed(&pod);
            // Bound already (by an earlier attempt, or by hand) or being deleted: the
            // watch brings where it went; nothing to retry.
            if matches!(&e, kube::Error::Api(s) if s.code == 409 || s.code == 404) {
                tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "not bound");
                return Ok(Action::await_change());
            }
            Err(Error::Bind(format!("{ns}/{name} to {node}"), Box::new(e)))
        }
    }
}

/// Writes the node chosen for a claim's first consumer on the claim.
async fn select_node(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    node: &str,
) -> Result<(), kube::Error> {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({"metadata": {"annotations": {
        berth_pods::storage::SELECTED_NODE: node}}});
    api.patch(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// Makes room for `pod` on `node`, as kube's DefaultPreemption does: the node
/// nominated in the pod's status (and counted as taken for pods of no higher
/// priority meanwhile), each victim deleted with a Preempted event; the pod is placed
/// by a later attempt, once the victims are gone.
async fn preempt(ctx: &Ctx, pod: &Pod, node: &str, victims: &[preempt::Victim]) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    tracing::info!(pod = %format!("{ns}/{name}"), node, victims = victims.len(), "preempting");
    lock(ctx).nominate(pod, Some(node));
    let patch = serde_json::json!({"status": {"nominatedNodeName": node}});
    patch_status(ctx, &ns, &name, &patch, "nominating a node").await;
    for v in victims {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.namespace);
        let dp = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(v.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&v.name, &dp).await {
            Ok(_) => {
                let about = Pod {
                    metadata: kube::api::ObjectMeta {
                        name: Some(v.name.clone()),
                        namespace: Some(v.namespace.clone()),
                        uid: Some(v.uid.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                ctx.recorder.pod(
                    &about,
                    "",
                    berth_events::EventType::Normal,
                    "Preempted",
                    &format!("Preempted by pod {uid} on node {node}"),
                );
            }
            Err(e) => tracing::debug!(victim = %v.name, error = %e, "preempting"),
        }
    }
}

/// Marks the pod unschedulable as kube-scheduler does: the PodScheduled condition False
/// with reason Unschedulable and the message (written only when it changed), and a
/// FailedScheduling event.
async fn unschedulable(ctx: &Ctx, pod: &Pod, message: &str) {
    ctx.recorder.pod(
        pod,
        "",
        berth_events::EventType::Warning,
        "FailedScheduling",
        message,
    );
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    }) {
        return;
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut conditions: Vec<serde_json::Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != "PodScheduled")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(serde_json::json!({
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null,
        "lastTransitionTime": jiff::Timestamp::now().to_string(),
    }));
    let patch = serde_json::json!({"status": {"conditions": conditions}});
    patch_status(ctx, &ns, &name, &patch, "marking a pod unschedulable").await;
}

/// Merges `patch` into a pod's status; a failure is only logged (the next attempt
/// writes again).
async fn patch_status(ctx: &Ctx, ns: &str, name: &str, patch: &serde_json::Value, doing: &str) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    if let Err(e) = pods
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
    {
        tracing::debug!(pod = %name, error = %e, "{doing}");
    }
}

/// kube's pod back-off: 1 s doubling to 10 s per failed attempt.
fn backoff(ctx: &Ctx, pod: &Pod) -> Duration {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut attempts = ctx.attempts.lock().unwrap_or_else(|e| e.into_inner());
    let n = attempts.entry(uid).or_default();
    *n = n.saturating_add(1);
    Duration::from_secs((1u64 << (*n - 1).min(4)).min(10))
}

fn error_policy(pod: Arc<Pod>, e: &Error, ctx: Arc<Ctx>) -> Action {
    if let Error::Bind(..) = e {
        tracing::warn!(error = %e, "scheduler");
    }
    Action::requeue(backoff(&ctx, &pod))
}
