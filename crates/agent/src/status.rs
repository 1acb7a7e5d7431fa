//! A pod's status computed from what the engine reports (never from the agent's
//! memory of what it did): phase as the seeds define it, conditions, container
//! statuses with their last state, addresses and QoS class.

use std::collections::BTreeMap;
use std::net::IpAddr;

use berth_engine::cri::{ContainerState, ContainerStatus, SandboxState, SandboxStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerState as KState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as KStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::labels;
use crate::probes::{Kind, Results};

/// What the engine holds of one pod.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Its sandboxes, newest first.
    pub sandboxes: Vec<SandboxStatus>,
    /// Its containers in every sandbox, newest attempt first.
    pub containers: Vec<ContainerStatus>,
}

impl Observed {
    /// The newest sandbox.
    pub fn sandbox(&self) -> Option<&SandboxStatus> {
        self.sandboxes.first()
    }

    /// The newest sandbox when it is ready.
    pub fn ready_sandbox(&self) -> Option<&SandboxStatus> {
        self.sandbox()
            .filter(|s| s.summary.state == SandboxState::Ready)
    }

    /// Attempts of a container, newest first (across sandboxes).
    pub fn attempts(&self, name: &str, init: bool) -> Vec<&ContainerStatus> {
        let mut v: Vec<&ContainerStatus> = self
            .containers
            .iter()
            .filter(|c| {
                c.summary
                    .labels
                    .get(labels::CONTAINER_NAME)
                    .map(String::as_str)
                    == Some(name)
                    && c.summary.labels.contains_key(labels::INIT_CONTAINER) == init
            })
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse((c.summary.metadata.attempt, c.summary.created_at)));
        v
    }

    /// The newest attempt of a container in the newest sandbox.
    pub fn current(&self, name: &str, init: bool) -> Option<&ContainerStatus> {
        let sb = self.sandbox()?;
        self.attempts(name, init)
            .into_iter()
            .find(|c| c.summary.sandbox_id == sb.summary.id)
    }
}

/// Why a container is waiting, as the agent last saw it (ErrImagePull,
/// CrashLoopBackOff, CreateContainerConfigError...).
pub type Waiting = BTreeMap<String, (String, String)>;

fn time_of(ns: i64) -> Option<Time> {
    (ns > 0)
        .then(|| jiff::Timestamp::from_nanosecond(ns as i128).ok())
        .flatten()
        .map(|t| Time(t.round(jiff::Unit::Second).unwrap_or(t)))
}

/// The Kubernetes reason of an ended container.
fn terminated_reason(c: &ContainerStatus) -> String {
    if c.oom_killed {
        "OOMKilled".into()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else if c.reason == "ContainerCannotRun" || c.reason == "StartError" {
        "StartError".into()
    } else {
        "Error".into()
    }
}

fn terminated(c: &ContainerStatus, message: Option<String>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: c.exit_code,
        reason: Some(terminated_reason(c)),
        message: message
            .filter(|m| !m.is_empty())
            .or_else(|| (!c.message.is_empty()).then(|| c.message.clone())),
        started_at: time_of(c.started_at),
        finished_at: time_of(c.finished_at),
        container_id: Some(format!("berth://{}", c.summary.id)),
        signal: None,
    }
}

/// Reads what an ended container left as its termination message.
pub type MessageOf<'a> = &'a dyn Fn(&ContainerStatus) -> Option<String>;

/// One container's status.
fn container_status(
    spec: &Container,
    init: bool,
    obs: &Observed,
    waiting: &Waiting,
    probes: &Results,
    message_of: MessageOf,
) -> KStatus {
    let attempts = obs.attempts(&spec.name, init);
    let cur = obs.current(&spec.name, init);
    let image = spec.image.clone().unwrap_or_default();
    let mut st = KStatus {
        name: spec.name.clone(),
        image: image.clone(),
        image_id: String::new(),
        restart_count: attempts
            .first()
            .map_or(0, |c| c.summary.metadata.attempt as i32),
        ready: false,
        started: Some(false),
        ..Default::default()
    };
    let last = match cur {
        Some(c) => attempts
            .iter()
            .find(|a| a.summary.metadata.attempt < c.summary.metadata.attempt),
        None => attempts.first(),
    };
    if let Some(l) = last {
        st.last_state = Some(KState {
            terminated: Some(terminated(l, message_of(l))),
            ..Default::default()
        });
    }
    let waiting_state = |reason: &str, message: &str| KState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: (!message.is_empty()).then(|| message.into()),
        }),
        ..Default::default()
    };
    if let Some((reason, message)) = waiting.get(&spec.name) {
        st.state = Some(waiting_state(reason, message));
        if let Some(c) = cur {
            st.image_id = c.image_ref.clone();
            st.container_id = Some(format!("berth://{}", c.summary.id));
            if !c.summary.state.is_running() && c.summary.state != ContainerState::Created {
                st.last_state = Some(KState {
                    terminated: Some(terminated(c, message_of(c))),
                    ..Default::default()
                });
            }
        }
        return st;
    }
    let Some(c) = cur else {
        st.state = Some(waiting_state(
            if init {
                "PodInitializing"
            } else {
                "ContainerCreating"
            },
            "",
        ));
        return st;
    };
    st.image_id = c.image_ref.clone();
    st.container_id = Some(format!("berth://{}", c.summary.id));
    match &c.summary.state {
        s if s.is_running() => {
            let startup = spec.startup_probe.is_none()
                || probes.get(&c.summary.id, Kind::Startup).ok == Some(true);
            st.started = Some(startup);
            st.ready = startup
                && match &spec.readiness_probe {
                    None => true,
                    Some(_) => probes.get(&c.summary.id, Kind::Readiness).ok == Some(true),
                };
            st.state = Some(KState {
                running: Some(ContainerStateRunning {
                    started_at: time_of(c.started_at),
                }),
                ..Default::default()
            });
        }
        ContainerState::Created => {
            st.state = Some(waiting_state("ContainerCreating", ""));
        }
        _ => {
            st.state = Some(KState {
                terminated: Some(terminated(c, message_of(c))),
                ..Default::default()
            });
            // A restart of this container replaces the one before as last state.
            if let Some(prev) = attempts
                .iter()
                .find(|a| a.summary.metadata.attempt < c.summary.metadata.attempt)
            {
                st.last_state = Some(KState {
                    terminated: Some(terminated(prev, message_of(prev))),
                    ..Default::default()
                });
            } else {
                st.last_state = Some(KState::default());
            }
        }
    }
    st
}

fn is_terminated_ok(s: &KStatus) -> bool {
    s.state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.exit_code == 0)
}

fn is_terminated(s: &KStatus) -> bool {
    s.state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .is_some()
}

/// Whether a container of a pod with `policy` is restarted after exiting with `code`.
pub fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

pub use berth_pods::is_sidecar;

/// Everything the status is computed from.
pub struct Inputs<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// What the engine holds.
    pub observed: &'a Observed,
    /// Waiting reasons.
    pub waiting: &'a Waiting,
    /// Probe verdicts.
    pub probes: &'a Results,
    /// The node's address.
    pub host_ip: IpAddr,
    /// When the agent first took the pod.
    pub start_time: Option<Time>,
    /// Reads termination messages.
    pub message_of: MessageOf<'a>,
}

/// The pod's status.
pub fn compute(i: &Inputs) -> PodStatus {
    let pod = i.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let old = pod.status.clone().unwrap_or_default();
    let inits: Vec<KStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(c, true, i.observed, i.waiting, i.probes, i.message_of))
        .collect();
    let apps: Vec<KStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, false, i.observed, i.waiting, i.probes, i.message_of))
        .collect();
    let init_specs: Vec<&Container> = spec.init_containers.iter().flatten().collect();
    let initialized = inits.iter().zip(&init_specs).all(|(s, c)| {
        if is_sidecar(c) {
            s.started == Some(true)
                || is_terminated(s)
                || i.observed.attempts(&c.name, true).len() > 1
        } else {
            is_terminated_ok(s)
        }
    });
    let init_failed = policy == "Never"
        && inits
            .iter()
            .zip(&init_specs)
            .any(|(s, c)| !is_sidecar(c) && is_terminated(s) && !is_terminated_ok(s));
    let all_terminated = apps.iter().all(is_terminated);
    let any_running = apps
        .iter()
        .any(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()));
    let phase = if init_failed {
        "Failed"
    } else if initialized && !apps.is_empty() && all_terminated && {
        // Terminal only when nothing will be restarted.
        apps.iter().all(|s| {
            let code = s
                .state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .map_or(0, |t| t.exit_code);
            !restarts(&policy, code)
        })
    } {
        if apps.iter().all(is_terminated_ok) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if initialized
        && (any_running
            || apps
                .iter()
                .any(|s| s.container_id.is_some() && s.restart_count > 0))
    {
        "Running"
    } else {
        "Pending"
    };
    let sandbox_ready = i.observed.ready_sandbox().is_some();
    let containers_ready = initialized && !apps.is_empty() && apps.iter().all(|s| s.ready);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let now = Time(
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(jiff::Timestamp::now()),
    );
    let cond = |kind: &str, status: bool, reason: Option<&str>| {
        let status = if status { "True" } else { "False" };
        // The transition time moves only when the status does.
        let prev = old
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind && c.status == status)
            .and_then(|c| c.last_transition_time.clone());
        PodCondition {
            type_: kind.into(),
            status: status.into(),
            last_transition_time: Some(prev.unwrap_or_else(|| now.clone())),
            reason: reason.map(str::to_string),
            ..Default::default()
        }
    };
    let not_ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut conditions = vec![
        cond("PodReadyToStartContainers", sandbox_ready, None),
        cond(
            "Initialized",
            initialized,
            if initialized {
                None
            } else {
                Some("ContainersNotInitialized")
            },
        ),
        cond(
            "Ready",
            containers_ready && !terminal,
            (!containers_ready || terminal).then_some(not_ready_reason),
        ),
        cond(
            "ContainersReady",
            containers_ready && !terminal,
            (!containers_ready || terminal).then_some(not_ready_reason),
        ),
    ];
    // PodScheduled is the scheduler's (or the binding's); kept as it is, else True.
    let scheduled = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
        .cloned()
        .unwrap_or_else(|| cond("PodScheduled", true, None));
    conditions.push(scheduled);
    let sb = i.observed.sandbox();
    let pod_ip = if spec.host_network == Some(true) {
        Some(i.host_ip)
    } else {
        sb.and_then(|s| s.ip).or_else(|| {
            // A pod keeps its last IP while it ends.
            old.pod_ip.as_deref().and_then(|p| p.parse().ok())
        })
    };
    let mut pod_ips: Vec<PodIP> = pod_ip
        .iter()
        .map(|ip| PodIP { ip: ip.to_string() })
        .collect();
    if spec.host_network != Some(true) {
        if let Some(s) = sb {
            pod_ips.extend(
                s.additional_ips
                    .iter()
                    .map(|ip| PodIP { ip: ip.to_string() }),
            );
        }
    }
    let message_reason = |s: &PodStatus| (s.message.clone(), s.reason.clone());
    let (message, reason) = message_reason(&old);
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(i.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: i.host_ip.to_string(),
        }]),
        pod_ip: pod_ip.map(|ip| ip.to_string()),
        pod_ips: (!pod_ips.is_empty()).then_some(pod_ips),
        start_time: old.start_time.clone().or_else(|| i.start_time.clone()),
        container_statuses: Some(apps),
        init_container_statuses: (!inits.is_empty()).then_some(inits),
        qos_class: Some(crate::qos::class(pod).as_str().to_string()),
        message,
        reason,
        ..Default::default()
    }
}

/// The status with its timestamps and ordering made comparable, to tell whether it
/// changed.
pub fn comparable(s: &PodStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(cs) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in cs.iter_mut().filter_map(|c| c.as_object_mut()) {
            c.remove("lastProbeTime");
            c.remove("lastTransitionTime");
        }
        cs.sort_by_key(|c| c["type"].as_str().unwrap_or("").to_string());
    }
    v
}
