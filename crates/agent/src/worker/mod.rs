//! One pod's worker: a level-triggered loop that compares the pod's spec with what the
//! engine holds and acts on the difference — volumes, the sandbox, init containers in
//! order, app containers with their restart policy, back-off and probes — then writes
//! the status computed from the engine, only when it changed. It wakes on a new
//! version of the pod, on an engine event of one of its containers, on a probe's
//! verdict, or when a back-off ends.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_engine::cri::{
    ContainerFilter, ContainerState, ContainerStatus, RuntimeService, SandboxFilter,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

mod containers;
mod teardown;

use teardown::evicted_status;

use crate::envvars::{PodFacts, Sources};
use crate::error::{is_not_found, ApiContext, Error, Result};
use crate::labels::{self, PodKey};
use crate::probes::{Kind, Results};
use crate::recorder::EventType::{Normal, Warning};
use crate::status::{self, Observed, Waiting};
use crate::{podspec, volumes, Ctx};

/// The first restart back-off, doubled after each restart.
const BACKOFF_START: Duration = Duration::from_secs(10);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off reset.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often a pod is looked at with nothing else happening (the kubelet's resync).
const RESYNC: Duration = Duration::from_secs(10);
/// How often projected service account tokens are renewed (they last an hour).
const TOKEN_REFRESH: Duration = Duration::from_secs(45 * 60);

/// What the loop does next.
enum Next {
    /// Wait for a change (or the resync).
    Idle,
    /// Look again after this long at the latest.
    After(Duration),
    /// The pod is gone: the worker ends.
    Done,
}

/// What one pass of a pod's sync works with once its sandbox is ready.
struct Pass<'a> {
    pod: &'a Pod,
    sandbox_id: &'a str,
    obs: &'a Observed,
    vols: &'a BTreeMap<String, volumes::Prepared>,
    facts: &'a PodFacts<'a>,
    ip: std::net::IpAddr,
}

/// A pod's worker.
pub struct Worker {
    ctx: Arc<Ctx>,
    key: PodKey,
    pod: watch::Receiver<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
    /// Restart back-off per container name (and image pulls per image).
    backoff: HashMap<String, Duration>,
    pull_backoff: HashMap<String, (Duration, Instant)>,
    waiting: Waiting,
    results: Results,
    probe_tasks: HashMap<(String, Kind), JoinHandle<()>>,
    /// Probe failures already reported as Unhealthy events.
    reported_failures: HashMap<(String, Kind), u64>,
    last_status: Option<serde_json::Value>,
    start_time: Option<Time>,
    token_refreshed: Option<Instant>,
    mount_failures: u32,
    /// Why the pod was evicted (its status ends Failed with it).
    evicted: Option<String>,
}

impl Worker {
    /// A worker for the pod `rx` carries (None once it is gone from the API).
    pub(crate) fn new(ctx: Arc<Ctx>, key: PodKey, rx: watch::Receiver<Option<Arc<Pod>>>) -> Worker {
        let wake = ctx.hub.register_pod(&key);
        Worker {
            ctx,
            key,
            pod: rx,
            wake,
            backoff: HashMap::new(),
            pull_backoff: HashMap::new(),
            waiting: BTreeMap::new(),
            results: Results::default(),
            probe_tasks: HashMap::new(),
            reported_failures: HashMap::new(),
            last_status: None,
            start_time: None,
            token_refreshed: None,
            mount_failures: 0,
            evicted: None,
        }
    }

    /// Runs until the pod is gone and everything of it removed.
    pub async fn run(mut self) {
        let mut errors = 0u32;
        loop {
            let pod = self.pod.borrow_and_update().clone();
            let next = match pod {
                Some(p) => match self.sync(&p).await {
                    Ok(n) => {
                        errors = 0;
                        n
                    }
                    Err(e) => {
                        errors += 1;
                        tracing::warn!(pod = %self.key, error = %e, "pod sync failed; retrying");
                        Next::After(Duration::from_millis(500 << errors.min(6)))
                    }
                },
                None => match self.remove_all(Duration::from_secs(2)).await {
                    Ok(()) => Next::Done,
                    Err(e) => {
                        errors += 1;
                        tracing::warn!(pod = %self.key, error = %e, "cleaning up a deleted pod failed; retrying");
                        Next::After(Duration::from_millis(500 << errors.min(6)))
                    }
                },
            };
            let wait = match next {
                Next::Done => break,
                Next::Idle => RESYNC,
                Next::After(d) => d.min(RESYNC),
            };
            tokio::select! {
                r = self.pod.changed() => if r.is_err() {
                    if self.pod.borrow().is_some() {
                        // The dispatcher is gone (the agent stops): containers stay.
                        break;
                    }
                    tokio::time::sleep(wait).await;
                },
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        for (_, t) in self.probe_tasks.drain() {
            t.abort();
        }
        self.ctx.hub.unregister_pod(&self.key);
    }

    async fn observe(&self) -> Result<Observed> {
        let uid = self.key.uid.clone();
        let obs = self
            .ctx
            .engine(move |core| {
                let labels = BTreeMap::from([(labels::POD_UID.to_string(), uid)]);
                let mut sandboxes = Vec::new();
                for s in core.list_pod_sandbox(&SandboxFilter {
                    labels: labels.clone(),
                    ..Default::default()
                })? {
                    match core.pod_sandbox_status(&s.id) {
                        Ok(st) => sandboxes.push(st),
                        Err(berth_engine::Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                sandboxes.sort_by_key(|s| {
                    std::cmp::Reverse((s.summary.metadata.attempt, s.summary.created_at))
                });
                let mut containers = Vec::new();
                for c in core.list_containers(&ContainerFilter {
                    labels,
                    ..Default::default()
                })? {
                    match core.container_status(&c.id) {
                        Ok(st) => containers.push(st),
                        Err(berth_engine::Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Observed {
                    sandboxes,
                    containers,
                })
            })
            .await?;
        for s in &obs.sandboxes {
            self.ctx.hub.register_sandbox(&s.summary.id, &self.key);
        }
        Ok(obs)
    }

    fn facts<'a>(&self, pod: &'a Pod, obs: &Observed) -> PodFacts<'a> {
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let pod_ip = if host_network {
            self.ctx.cfg.node_ip.to_string()
        } else {
            obs.sandbox()
                .and_then(|s| s.ip)
                .map(|ip| ip.to_string())
                .unwrap_or_default()
        };
        PodFacts {
            pod,
            host_ip: self.ctx.cfg.node_ip.to_string(),
            pod_ip,
            node_cpu_milli: crate::hostinfo::cpus() as i128 * 1000,
            node_memory: crate::hostinfo::meminfo("MemTotal").unwrap_or(0) as i64,
        }
    }

    async fn sync(&mut self, pod: &Arc<Pod>) -> Result<Next> {
        self.ctx.hub.set_pod(&self.key.uid, pod.clone());
        if self.ctx.hub.take_rewrite_status(&self.key.uid) {
            self.last_status = None;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64;
            self.terminate(pod, Duration::from_secs(grace)).await?;
            self.confirm_deletion(pod).await?;
            return Ok(Next::Done);
        }
        if self.start_time.is_none() {
            self.start_time = Some(Time(jiff::Timestamp::now()));
            if self.last_status.is_none() {
                self.last_status = pod.status.as_ref().map(status::comparable);
            }
        }
        let obs = self.observe().await?;
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase != "Succeeded" && phase != "Failed" {
            if let Some(message) = self.ctx.hub.eviction(&self.key.uid) {
                return self.evict(pod, message).await;
            }
        }
        if phase == "Succeeded" || phase == "Failed" {
            // Ended for good: nothing runs, the sandbox's address goes back.
            self.stop_everything(pod, &obs, Duration::from_secs(5))
                .await?;
            volumes::tear_down(&self.key.pod_dir(&self.ctx.cfg.pods_dir))?;
            return Ok(Next::Idle);
        }
        let mut next: Option<Duration> = None;
        let mut soonest = |d: Duration| next = Some(next.map_or(d, |n: Duration| n.min(d)));
        let spec = podspec::spec(pod)?.clone();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());

        // Volumes first: a container never starts without its volumes.
        let pod_dir = self.key.pod_dir(&self.ctx.cfg.pods_dir);
        let facts = self.facts(pod, &obs);
        let mut sources = Sources::new(
            self.ctx.client.clone(),
            Some(self.ctx.caches.clone()),
            &self.key.namespace,
        );
        let refresh = self
            .token_refreshed
            .is_none_or(|t| t.elapsed() >= TOKEN_REFRESH);
        let vols = {
            let cx = volumes::VolumeCtx {
                client: &self.ctx.client,
                pod_dir: &pod_dir,
                facts: &facts,
            };
            volumes::prepare(&cx, &mut sources, refresh).await
        };
        let vols = match vols {
            Ok(v) => {
                if refresh {
                    self.token_refreshed = Some(Instant::now());
                }
                self.mount_failures = 0;
                v
            }
            Err(e @ (Error::Missing(_) | Error::Spec(_) | Error::Io(..))) => {
                self.mount_failures += 1;
                self.ctx
                    .recorder
                    .pod(pod, "", Warning, "FailedMount", &e.to_string());
                self.write_status(pod, &obs).await?;
                let d = Duration::from_secs(1 << self.mount_failures.min(5));
                return Ok(Next::After(d));
            }
            Err(e) => return Err(e),
        };

        // Everything ended for good (restartPolicy Never or OnFailure): no sandbox
        // is made again.
        let ended_for_good = !spec.containers.is_empty()
            && spec.containers.iter().all(|c| {
                obs.attempts(&c.name, false).first().is_some_and(|a| {
                    !a.summary.state.is_running()
                        && a.summary.state != ContainerState::Created
                        && !status::restarts(&policy, a.exit_code)
                })
            });
        let sandbox = match obs.ready_sandbox() {
            Some(s) => s.clone(),
            None if ended_for_good => {
                self.write_status(pod, &obs).await?;
                return Ok(Next::Idle);
            }
            None => {
                if spec.host_network != Some(true) {
                    if let Some(why) = self.ctx.pod_cidr.not_ready() {
                        self.ctx
                            .recorder
                            .pod(pod, "", Warning, "NetworkNotReady", &why);
                        self.write_status(pod, &obs).await?;
                        return Ok(Next::After(Duration::from_secs(5)));
                    }
                }
                let attempt = obs.sandbox().map_or(0, |s| s.summary.metadata.attempt + 1);
                if let Some(old) = obs.sandbox() {
                    self.ctx.recorder.pod(
                        pod,
                        "",
                        Normal,
                        "SandboxChanged",
                        "Pod sandbox changed, it will be killed and re-created.",
                    );
                    let old_id = old.summary.id.clone();
                    self.ctx
                        .engine(move |core| core.stop_pod_sandbox(&old_id))
                        .await?;
                }
                let cfg = podspec::sandbox_config(pod, &self.ctx.cfg, attempt)?;
                match self
                    .ctx
                    .engine(move |core| core.run_pod_sandbox(&cfg))
                    .await
                {
                    Ok(id) => self.ctx.hub.register_sandbox(&id, &self.key),
                    Err(e) => {
                        self.ctx.recorder.pod(
                            pod,
                            "",
                            Warning,
                            "FailedCreatePodSandBox",
                            &format!("Failed to create pod sandbox: {e}"),
                        );
                        self.write_status(pod, &obs).await?;
                        return Ok(Next::After(Duration::from_secs(5)));
                    }
                }
                let obs = self.observe().await?;
                match obs.ready_sandbox() {
                    Some(s) => s.clone(),
                    None => return Ok(Next::After(Duration::from_secs(1))),
                }
            }
        };
        let ip = if spec.host_network == Some(true) {
            self.ctx.cfg.node_ip
        } else {
            sandbox.ip.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
        };
        let facts = self.facts(pod, &obs);
        let pass = Pass {
            pod,
            sandbox_id: &sandbox.summary.id,
            obs: &obs,
            vols: &vols,
            facts: &facts,
            ip,
        };

        // Init containers, in order.
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            let sidecar = status::is_sidecar(c);
            match obs.current(&c.name, true) {
                None => {
                    if let Some(d) = self.start(&pass, &mut sources, c, true).await? {
                        soonest(d);
                    }
                    initialized = false;
                    break;
                }
                Some(cs) if cs.summary.state.is_running() => {
                    if sidecar {
                        self.ensure_probes(c, &cs.summary.id, ip);
                        if let Some(d) = self.check_health(pod, c, cs).await? {
                            soonest(d);
                        }
                        let started = c.startup_probe.is_none()
                            || self.results.get(&cs.summary.id, Kind::Startup).ok == Some(true);
                        if started {
                            continue;
                        }
                    }
                    initialized = false;
                    break;
                }
                Some(cs) if cs.summary.state == ContainerState::Created => {
                    initialized = false;
                    break;
                }
                Some(cs) if cs.exit_code == 0 && !sidecar => continue,
                Some(cs) => {
                    // Failed (or a sidecar that ended): again, unless the pod never
                    // restarts (then it failed).
                    if sidecar || policy != "Never" {
                        if let Some(d) = self.restart(&pass, &mut sources, c, true, cs).await? {
                            soonest(d);
                        }
                    }
                    if !sidecar {
                        initialized = false;
                        break;
                    }
                }
            }
        }

        // App containers.
        for c in spec.containers.iter().filter(|_| initialized) {
            match obs.current(&c.name, false) {
                None => {
                    if let Some(d) = self.start(&pass, &mut sources, c, false).await? {
                        soonest(d);
                    }
                }
                Some(cs) if cs.summary.state.is_running() => {
                    self.ensure_probes(c, &cs.summary.id, ip);
                    if let Some(d) = self.check_health(pod, c, cs).await? {
                        soonest(d);
                    }
                }
                Some(cs) if cs.summary.state == ContainerState::Created => {
                    let id = cs.summary.id.clone();
                    if let Err(e) = self.ctx.engine(move |core| core.start_container(&id)).await {
                        self.run_failed(pod, c, &e.to_string());
                    }
                }
                Some(cs) if !status::restarts(&policy, cs.exit_code) => {
                    self.waiting.remove(&c.name);
                }
                Some(cs) => {
                    if let Some(d) = self.restart(&pass, &mut sources, c, false, cs).await? {
                        soonest(d);
                    }
                }
            }
        }
        let obs = self.observe().await?;
        self.forget_probes(&obs);
        // Sidecars end once every app container has ended for good.
        let apps_done = !spec.containers.is_empty()
            && spec.containers.iter().all(|c| {
                obs.current(&c.name, false).is_some_and(|a| {
                    !a.summary.state.is_running()
                        && a.summary.state != ContainerState::Created
                        && !status::restarts(&policy, a.exit_code)
                })
            });
        if apps_done {
            self.stop_everything(pod, &obs, Duration::from_secs(5))
                .await?;
        }
        let obs = if apps_done {
            self.observe().await?
        } else {
            obs
        };
        self.write_status(pod, &obs).await?;
        Ok(match next {
            Some(d) => Next::After(d),
            None => Next::Idle,
        })
    }

    async fn write_status(&mut self, pod: &Pod, obs: &Observed) -> Result<()> {
        let pod_dir = self.key.pod_dir(&self.ctx.cfg.pods_dir);
        let spec = pod.spec.clone().unwrap_or_default();
        let message_of = |c: &ContainerStatus| termination_message(&pod_dir, &spec, c);
        let st = status::compute(&status::Inputs {
            pod,
            observed: obs,
            waiting: &self.waiting,
            probes: &self.results,
            host_ip: self.ctx.cfg.node_ip,
            start_time: self.start_time.clone(),
            message_of: &message_of,
        });
        let mut st = st;
        if let Some(message) = &self.evicted {
            evicted_status(&mut st, message);
        }
        let cmp = status::comparable(&st);
        if self.last_status.as_ref() == Some(&cmp) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.key.namespace);
        // A static pod's status goes to its mirror, whose UID is the API's.
        let patch = if crate::static_pods::is_static(pod) {
            serde_json::json!({ "status": st })
        } else {
            serde_json::json!({
                "metadata": {"uid": self.key.uid},
                "status": st,
            })
        };
        match api
            .patch_status(
                &self.key.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                self.last_status = Some(cmp);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).api(|| format!("update status of pod {}", self.key)),
        }
    }
}

/// How long a container gets to stop when the agent restarts it.
fn grace_of(pod: &Pod) -> Duration {
    Duration::from_secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    )
}

/// `spec.containers{NAME}` (or initContainers), as events name a container.
fn field_path(c: &Container, init: bool) -> String {
    format!(
        "spec.{}{{{}}}",
        if init { "initContainers" } else { "containers" },
        c.name
    )
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// What an ended container left in its termination message file, or (with
/// FallbackToLogsOnError after a failure) the tail of its log.
fn termination_message(
    pod_dir: &std::path::Path,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    c: &ContainerStatus,
) -> Option<String> {
    let name = c.summary.labels.get(labels::CONTAINER_NAME)?;
    let file = podspec::termination_file(pod_dir, name, c.summary.metadata.attempt);
    let mut msg = std::fs::read(&file).unwrap_or_default();
    msg.truncate(4096);
    if !msg.is_empty() {
        return Some(String::from_utf8_lossy(&msg).into_owned());
    }
    let policy = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|x| &x.name == name)
        .and_then(|x| x.termination_message_policy.clone());
    if policy.as_deref() == Some("FallbackToLogsOnError") && c.exit_code != 0 {
        return crate::logs::tail_message(&c.log_path, 80, 2048);
    }
    None
}

/// Removes a pod's directory (unmounting its volumes) and its logs.
pub(crate) fn remove_pod_files(
    key: &PodKey,
    pods_dir: &std::path::Path,
    log_dir: &std::path::Path,
) -> Result<()> {
    volumes::clean_up(&key.pod_dir(pods_dir))?;
    let logs: PathBuf = key.log_dir(log_dir);
    match std::fs::remove_dir_all(&logs) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io(format!("remove {}", logs.display()), e)),
    }
}
