//! The pods bound to simulated nodes: reported Running with every container ready
//! as soon as they are seen, finished after their run time unless they restart always,
//! and removed for good (the kubelet's zero-grace delete) once deleted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::nodes::{node_ip, pod_net};
use crate::SimConfig;

/// The annotation giving a simulated pod's exit code.
pub const EXIT_CODE: &str = "sim.berth.dev/exit-code";
/// The annotation giving how long a simulated pod that does not restart always runs.
pub const RUN_SECONDS: &str = "sim.berth.dev/run-seconds";
/// Pod updates in flight at once.
const PARALLEL: usize = 64;

struct Sim {
    client: kube::Client,
    cfg: Arc<SimConfig>,
    /// The next address to hand out on each node (2 to 254, then round again).
    next_ip: Mutex<HashMap<usize, u8>>,
    /// Pods whose end is already timed.
    ending: Mutex<HashSet<String>>,
    limit: Arc<Semaphore>,
}

/// Watches the pods bound to any node and looks after those on simulated ones.
pub async fn run(client: kube::Client, cfg: Arc<SimConfig>) {
    let sim = Arc::new(Sim {
        client: client.clone(),
        cfg,
        next_ip: Mutex::new(HashMap::new()),
        ending: Mutex::new(HashSet::new()),
        limit: Arc::new(Semaphore::new(PARALLEL)),
    });
    let api: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = watcher(api, wc).backoff(berth_watch::backoff()).boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Apply(p) | Event::InitApply(p)) => {
                let Ok(permit) = sim.limit.clone().acquire_owned().await else {
                    return;
                };
                let sim = sim.clone();
                tokio::spawn(async move {
                    sim.look_after(p).await;
                    drop(permit);
                });
            }
            Ok(Event::Delete(p)) => {
                let uid = p.metadata.uid.unwrap_or_default();
                sim.ending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&uid);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching pods on simulated nodes"),
        }
    }
}

impl Sim {
    async fn look_after(self: &Arc<Self>, p: Pod) {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        let Some(i) = node.as_deref().and_then(|n| self.cfg.node_index(n)) else {
            return;
        };
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if p.metadata.deletion_timestamp.is_some() {
            // Nothing to stop: confirm the deletion, as the kubelet does once stopped.
            let dp = berth_watch::delete_exactly(Some(uid), Some(0), false);
            // Gone already, or another pod of that name now (409): nothing to do.
            let r = pods.delete(&name, &dp).await.map(drop);
            warn_unless(r, &[404, 409], &name, "removing a simulated pod");
            return;
        }
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let running = phase == "Running" && p.status.as_ref().is_some_and(|s| s.pod_ip.is_some());
        if phase == "Succeeded" || phase == "Failed" {
            return;
        }
        if !running {
            let status = self.running_status(&p, i);
            if !report(&pods, &name, &status, "reporting a simulated pod running").await {
                return;
            }
        }
        let restarts_always = p
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .is_none_or(|r| r == "Always");
        if restarts_always
            || !self
                .ending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.metadata.uid.clone().unwrap_or_default())
        {
            return;
        }
        let ann = |k: &str| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .cloned()
        };
        let secs = ann(RUN_SECONDS)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(self.cfg.run_seconds);
        let code: i32 = ann(EXIT_CODE).and_then(|s| s.parse().ok()).unwrap_or(0);
        let sim = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            let status = finished_status(&p, code);
            report(&pods, &name, &status, "reporting a simulated pod finished").await;
            let uid = p.metadata.uid.clone().unwrap_or_default();
            sim.ending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
        });
    }

    /// The status of a pod that runs on node `i`: every init container done, every
    /// container running and ready.
    fn running_status(&self, p: &Pod, i: usize) -> Value {
        let last = {
            let mut next = self.next_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = next.entry(i).or_insert(2);
            let ip = *n;
            *n = if *n >= 254 { 2 } else { *n + 1 };
            ip
        };
        let [a, b, c] = pod_net(i);
        let host = node_ip(i).to_string();
        let host_network = p
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let ip = if host_network {
            host.clone()
        } else {
            format!("{a}.{b}.{c}.{last}")
        };
        let now = jiff::Timestamp::now().to_string();
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let spec = p.spec.clone().unwrap_or_default();
        let container = |c: &k8s_openapi::api::core::v1::Container, state: Value, ready: bool| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("sim://{uid}/{}", c.name),
                "ready": ready, "started": ready, "restartCount": 0, "state": state,
            })
        };
        let inits: Vec<Value> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                let state = if sidecar {
                    json!({"running": {"startedAt": now}})
                } else {
                    json!({"terminated": {"exitCode": 0, "reason": "Completed",
                                          "startedAt": now, "finishedAt": now}})
                };
                container(c, state, sidecar)
            })
            .collect();
        let apps: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| container(c, json!({"running": {"startedAt": now}}), true))
            .collect();
        let cond = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
        let conditions = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]
        .map(cond);
        json!({"status": {
            "phase": "Running",
            "hostIP": host, "hostIPs": [{"ip": host}],
            "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": conditions,
            "initContainerStatuses": inits,
            "containerStatuses": apps,
        }})
    }
}

/// Writes a pod's status; false if it failed (a pod gone meanwhile is not worth a
/// warning).
async fn report(pods: &Api<Pod>, name: &str, status: &Value, what: &str) -> bool {
    let r = pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map(drop);
    let ok = r.is_ok();
    warn_unless(r, &[404], name, what);
    ok
}

/// Logs a failed request about pod `name` unless its status code is one of `codes`.
fn warn_unless(r: Result<(), kube::Error>, codes: &[u16], name: &str, what: &str) {
    if let Err(e) = r {
        if !matches!(&e, kube::Error::Api(s) if codes.contains(&s.code)) {
            tracing::warn!(pod = %name, error = %e, "{what}");
        }
    }
}

/// The status of a pod whose containers all exited with `code`.
fn finished_status(p: &Pod, code: i32) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let started = p
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.clone());
    let reason = if code == 0 { "Completed" } else { "Error" };
    let apps: Vec<Value> = p
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("sim://{uid}/{}", c.name),
                "ready": false, "started": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason,
                                         "startedAt": started, "finishedAt": now}},
            })
        })
        .collect();
    let cond = |kind: &str, status: &str, reason: &str| {
        let mut c = json!({"type": kind, "status": status, "lastTransitionTime": now});
        if !reason.is_empty() {
            c["reason"] = json!(reason);
        }
        c
    };
    json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [
            cond("PodReadyToStartContainers", "False", ""),
            cond("Initialized", "True", ""),
            cond("Ready", "False", "PodCompleted"),
            cond("ContainersReady", "False", "PodCompleted"),
            cond("PodScheduled", "True", ""),
        ],
        "containerStatuses": apps,
    }})
}
