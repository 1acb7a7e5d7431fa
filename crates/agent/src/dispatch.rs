//! Pods to workers: a watch of the pods bound to this node (kube-runtime's watcher,
//! which relists after a broken watch), one worker per pod UID fed the newest version
//! of its pod; engine events and ConfigMap or Secret changes wake the workers they
//! concern. After each full list, whatever the engine or the pods directory holds of
//! pods that no longer exist (deleted while the agent was down) is removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_engine::cri::{RuntimeService, SandboxFilter};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::{watch, Notify};

use crate::error::Result;
use crate::labels::{self, PodKey};
use crate::worker::{remove_pod_files, Worker};
use crate::Ctx;

/// Who to wake for what: workers by pod UID, sandboxes by ID; the pods the workers
/// run (their newest versions) and the evictions asked of them.
#[derive(Default)]
pub struct Hub {
    pods: Mutex<HashMap<String, (String, Arc<Notify>)>>,
    sandboxes: Mutex<HashMap<String, String>>,
    latest: Mutex<HashMap<String, Arc<Pod>>>,
    evictions: Mutex<HashMap<String, String>>,
    /// Pods whose status must be written again though it did not change (a static
    /// pod's new mirror).
    rewrite_status: Mutex<HashSet<String>>,
}

fn ended(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
        || matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

impl Hub {
    /// Records the version of a pod its worker acts on.
    pub(crate) fn set_pod(&self, uid: &str, pod: Arc<Pod>) {
        if let Ok(mut m) = self.latest.lock() {
            m.insert(uid.to_string(), pod);
        }
    }

    /// The pods that run here: not ended, not being deleted.
    pub(crate) fn active_pods(&self) -> Vec<Arc<Pod>> {
        self.latest
            .lock()
            .map(|m| m.values().filter(|p| !ended(p)).cloned().collect())
            .unwrap_or_default()
    }

    /// Asks a pod's worker to evict it, with the message its status will carry.
    pub(crate) fn evict(&self, uid: &str, message: String) {
        if let Ok(mut m) = self.evictions.lock() {
            m.entry(uid.to_string()).or_insert(message);
        }
        self.wake_pod(uid);
    }

    fn wake_pod(&self, uid: &str) {
        let n = self
            .pods
            .lock()
            .ok()
            .and_then(|m| m.get(uid).map(|(_, n)| n.clone()));
        if let Some(n) = n {
            n.notify_one();
        }
    }

    /// Wakes every worker (the node's pod network became ready).
    pub(crate) fn wake_all(&self) {
        let all: Vec<Arc<Notify>> = self
            .pods
            .lock()
            .map(|m| m.values().map(|(_, n)| n.clone()).collect())
            .unwrap_or_default();
        for n in all {
            n.notify_one();
        }
    }

    /// Has a pod's worker write its status again (and wakes it).
    pub(crate) fn rewrite_status(&self, uid: &str) {
        if let Ok(mut m) = self.rewrite_status.lock() {
            m.insert(uid.to_string());
        }
        self.wake_pod(uid);
    }

    /// Whether a pod's status must be written again; asking clears it.
    pub(crate) fn take_rewrite_status(&self, uid: &str) -> bool {
        self.rewrite_status.lock().is_ok_and(|mut m| m.remove(uid))
    }

    /// The eviction asked of a pod, if any.
    pub(crate) fn eviction(&self, uid: &str) -> Option<String> {
        self.evictions.lock().ok()?.get(uid).cloned()
    }

    /// Whether an evicted pod has not ended yet.
    pub(crate) fn evicting(&self) -> bool {
        let uids: Vec<String> = self
            .evictions
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let latest = self.latest.lock();
        latest.is_ok_and(|l| uids.iter().any(|u| l.get(u).is_some_and(|p| !ended(p))))
    }

    /// A worker's wake-up, registered under its pod.
    pub(crate) fn register_pod(&self, key: &PodKey) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        if let Ok(mut m) = self.pods.lock() {
            m.insert(key.uid.clone(), (key.namespace.clone(), n.clone()));
        }
        n
    }

    /// Forgets a worker.
    pub(crate) fn unregister_pod(&self, key: &PodKey) {
        if let Ok(mut m) = self.pods.lock() {
            m.remove(&key.uid);
        }
        if let Ok(mut m) = self.latest.lock() {
            m.remove(&key.uid);
        }
        if let Ok(mut m) = self.evictions.lock() {
            m.remove(&key.uid);
        }
        if let Ok(mut m) = self.sandboxes.lock() {
            m.retain(|_, uid| *uid != key.uid);
        }
    }

    /// Ties a sandbox to its pod.
    pub(crate) fn register_sandbox(&self, sandbox: &str, key: &PodKey) {
        if let Ok(mut m) = self.sandboxes.lock() {
            m.insert(sandbox.to_string(), key.uid.clone());
        }
    }

    /// Forgets a sandbox.
    pub(crate) fn unregister_sandbox(&self, sandbox: &str) {
        if let Ok(mut m) = self.sandboxes.lock() {
            m.remove(sandbox);
        }
    }

    fn wake_sandbox(&self, sandbox: &str) {
        let uid = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|m| m.get(sandbox).cloned());
        if let Some(uid) = uid {
            if let Some((_, n)) = self.pods.lock().ok().and_then(|m| m.get(&uid).cloned()) {
                n.notify_one();
            }
        }
    }

    fn wake_namespace(&self, ns: &str) {
        let all: Vec<Arc<Notify>> = self
            .pods
            .lock()
            .map(|m| {
                m.values()
                    .filter(|(n, _)| n == ns)
                    .map(|(_, w)| w.clone())
                    .collect()
            })
            .unwrap_or_default();
        for n in all {
            n.notify_one();
        }
    }
}

/// Stops the engine event thread when dropped.
pub(crate) struct EventsGuard(Arc<AtomicBool>);

impl EventsGuard {
    /// Stops the thread.
    pub fn abort(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for EventsGuard {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Reads the engine's container events (from the monitors, without polling) and
/// wakes the worker of the pod each concerns.
pub(crate) fn forward_engine_events(ctx: Arc<Ctx>) -> EventsGuard {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("agent-events".into())
        .spawn(move || {
            let mut stream = match ctx.core.container_events() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "engine events unavailable; pods are resynced every 10 s instead");
                    return;
                }
            };
            while !flag.load(Ordering::Relaxed) {
                match stream.next_event(Some(Duration::from_millis(500))) {
                    Ok(Some(ev)) => ctx.hub.wake_sandbox(&ev.sandbox_id),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reading engine events failed");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
        .ok();
    EventsGuard(stop)
}

/// Keeps the Services cache (a reflector) and wakes the pods of a namespace whenever
/// a ConfigMap or Secret they use there changes (`changed` brings the namespaces, from
/// the single-object watches of [`crate::objwatch`]), so their volumes are written
/// again within a second or two.
async fn watch_sources(
    ctx: Arc<Ctx>,
    mut changed: tokio::sync::mpsc::UnboundedReceiver<String>,
    services_writer: reflector::store::Writer<Service>,
) {
    // Services only feed the cache (their variables are read when a container starts).
    let services = reflector(
        services_writer,
        watcher(
            Api::<Service>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .backoff(berth_watch::backoff())
    .applied_objects()
    .for_each(|_| std::future::ready(()));
    let wake = async {
        while let Some(ns) = changed.recv().await {
            ctx.hub.wake_namespace(&ns);
        }
    };
    tokio::join!(services, wake);
}

/// Removes sandboxes and pod directories of pods that are not among `live` (UIDs).
async fn collect_orphans(ctx: &Arc<Ctx>, live: &HashSet<String>) -> Result<()> {
    let node = ctx.cfg.node_name.clone();
    let live2 = live.clone();
    let orphans: Vec<(String, PodKey)> = ctx
        .engine(move |core| {
            Ok(core
                .list_pod_sandbox(&SandboxFilter {
                    labels: BTreeMap::from([(labels::NODE.to_string(), node)]),
                    ..Default::default()
                })?
                .into_iter()
                .filter_map(|s| {
                    let uid = s.labels.get(labels::POD_UID)?.clone();
                    (!live2.contains(&uid)).then(|| {
                        (
                            s.id.clone(),
                            PodKey {
                                namespace: s.metadata.namespace.clone(),
                                name: s.metadata.name.clone(),
                                uid,
                            },
                        )
                    })
                })
                .collect())
        })
        .await?;
    for (id, key) in &orphans {
        tracing::info!(pod = %key, sandbox = %id, "removing the sandbox of a pod that no longer exists");
        let id = id.clone();
        ctx.engine(move |core| core.remove_pod_sandbox(&id)).await?;
        remove_pod_files(key, &ctx.cfg.pods_dir, &ctx.cfg.log_dir)?;
    }
    // Pod directories without a pod (their sandboxes gone already).
    if let Ok(rd) = std::fs::read_dir(&ctx.cfg.pods_dir) {
        for e in rd.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&uid) {
                crate::volumes::clean_up(&e.path())?;
            }
        }
    }
    Ok(())
}

/// A worker's feed of its pod's versions (None: the pod is gone).
type Feed = watch::Sender<Option<Arc<Pod>>>;

/// Pods to their workers, after admission.
struct Dispatcher {
    ctx: Arc<Ctx>,
    /// Each admitted pod's worker, with the newest version of its pod.
    workers: HashMap<String, (Feed, Arc<Pod>)>,
    /// Pods turned away (by UID), not to be checked again.
    rejected: HashSet<String>,
    /// The UIDs of static pods (from files).
    statics: HashSet<String>,
    room: crate::admit::Room,
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

impl Dispatcher {
    /// Whether a pod must pass admission before it gets a worker: new to this agent,
    /// never started here (no start time), not ended, not being deleted.
    fn needs_admission(&self, p: &Pod) -> bool {
        let uid = p.metadata.uid.as_deref().unwrap_or("");
        !self.workers.contains_key(uid)
            && !crate::static_pods::is_static(p)
            && p.metadata.deletion_timestamp.is_none()
            && p.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .is_none()
            && !matches!(phase(p), "Succeeded" | "Failed")
    }

    async fn dispatch(&mut self, pod: Pod) {
        let key = PodKey::of(&pod);
        if self.rejected.contains(&key.uid) && phase(&pod) != "Failed" {
            return;
        }
        if self.needs_admission(&pod) {
            let running = self
                .workers
                .values()
                .map(|(_, p)| p.as_ref())
                .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"));
            if let Err(r) = crate::admit::admit(&pod, running, self.room) {
                self.reject(&pod, &key, r).await;
                return;
            }
            self.ctx
                .devices
                .set_active(self.workers.values().map(|(_, p)| p.as_ref()));
            if let Err(r) = self.ctx.devices.admit(&pod).await {
                self.reject(&pod, &key, r).await;
                return;
            }
        }
        let pod = Arc::new(pod);
        if let Some((tx, latest)) = self.workers.get_mut(&key.uid) {
            *latest = pod.clone();
            if tx.send(Some(pod.clone())).is_ok() {
                return;
            }
        }
        let (tx, rx) = watch::channel(Some(pod.clone()));
        self.workers.insert(key.uid.clone(), (tx, pod));
        tokio::spawn(Worker::new(self.ctx.clone(), key, rx).run());
    }

    /// Fails a pod that does not fit, as the kubelet rejects it.
    async fn reject(&mut self, pod: &Pod, key: &PodKey, r: crate::admit::Rejection) {
        tracing::info!(pod = %key, reason = %r.reason, "pod rejected: {}", r.message);
        self.rejected.insert(key.uid.clone());
        self.ctx.recorder.pod(
            pod,
            "",
            crate::recorder::EventType::Warning,
            &r.reason,
            &r.message,
        );
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        let patch = serde_json::json!({
            "metadata": {"uid": key.uid},
            "status": {
                "phase": "Failed",
                "reason": r.reason,
                "message": r.message,
                "hostIP": self.ctx.cfg.node_ip.to_string(),
                "startTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            },
        });
        if let Err(e) = api
            .patch_status(
                &key.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(pod = %key, error = %e, "writing the rejection failed");
        }
    }
}

/// Watches the node's pods and runs a worker for each, until the watch ends; the
/// Services cache is filled and pods are woken by changes of what they use meanwhile.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    changed: tokio::sync::mpsc::UnboundedReceiver<String>,
    services_writer: reflector::store::Writer<Service>,
) -> Result<()> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.cfg.node_name));
    let mut stream = watcher(api, cfg).backoff(berth_watch::backoff()).boxed();
    let sources = tokio::spawn(watch_sources(ctx.clone(), changed, services_writer));
    let mut d = Dispatcher {
        ctx: ctx.clone(),
        workers: HashMap::new(),
        rejected: HashSet::new(),
        statics: HashSet::new(),
        room: crate::admit::Room::of_host(&ctx.cfg),
    };
    let (static_tx, mut static_rx) = tokio::sync::mpsc::channel(16);
    let files = ctx
        .cfg
        .pod_manifest_path
        .clone()
        .map(|dir| tokio::spawn(crate::static_pods::run(ctx.clone(), dir, static_tx)));
    let mut listing: HashSet<String> = HashSet::new();
    // New pods met in a full list wait for its end, then are admitted oldest first
    // beside every pod already running (as the kubelet admits at start).
    let mut deferred: Vec<Pod> = Vec::new();
    loop {
        let ev = tokio::select! {
            ev = stream.next() => match ev {
                Some(ev) => ev,
                None => break,
            },
            Some(change) = static_rx.recv() => {
                match change {
                    crate::static_pods::Change::Apply(p) => {
                        d.statics.insert(p.metadata.uid.clone().unwrap_or_default());
                        d.dispatch(*p).await;
                    }
                    crate::static_pods::Change::Remove(uid) => {
                        d.statics.remove(&uid);
                        if let Some((tx, _)) = d.workers.remove(&uid) {
                            let _ = tx.send(None);
                        }
                    }
                }
                continue;
            }
        };
        // Mirrors stand for static pods, which run from their files.
        let mirror = match &ev {
            Ok(Event::InitApply(p) | Event::Apply(p) | Event::Delete(p)) => {
                crate::static_pods::is_mirror(p)
            }
            _ => false,
        };
        if mirror {
            continue;
        }
        match ev {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(p)) => {
                listing.insert(p.metadata.uid.clone().unwrap_or_default());
                if d.needs_admission(&p) {
                    deferred.push(p);
                } else {
                    d.dispatch(p).await;
                }
            }
            Ok(Event::Apply(p)) => d.dispatch(p).await,
            Ok(Event::Delete(p)) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                d.rejected.remove(&uid);
                if let Some((tx, _)) = d.workers.remove(&uid) {
                    let _ = tx.send(None);
                }
            }
            Ok(Event::InitDone) => {
                let gone: Vec<String> = d
                    .workers
                    .keys()
                    .filter(|u| !listing.contains(*u) && !d.statics.contains(*u))
                    .cloned()
                    .collect();
                for uid in gone {
                    if let Some((tx, _)) = d.workers.remove(&uid) {
                        let _ = tx.send(None);
                    }
                }
                deferred.sort_by(|a, b| {
                    a.metadata
                        .creation_timestamp
                        .cmp(&b.metadata.creation_timestamp)
                });
                for p in deferred.drain(..) {
                    d.dispatch(p).await;
                }
                let live: HashSet<String> = listing.union(&d.statics).cloned().collect();
                if let Err(e) = collect_orphans(&ctx, &live).await {
                    tracing::warn!(error = %e, "collecting orphaned sandboxes failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching pods failed; retrying"),
        }
        d.workers.retain(|_, (tx, _)| !tx.is_closed());
        ctx.devices
            .set_active(d.workers.values().map(|(_, p)| p.as_ref()));
    }
    sources.abort();
    if let Some(f) = files {
        f.abort();
    }
    Ok(())
}
