//! Admission, as the kubelet checks a pod bound to it before running anything of it:
//! the node must have room for one more pod (max-pods), for its CPU and memory
//! requests beside those of the pods it runs, and its host ports must be free. A pod
//! that does not fit is rejected — phase Failed, reason OutOfpods, OutOfcpu,
//! OutOfmemory or NodePorts, "Pod was rejected: …" — and never started (the scheduler
//! keeps this from happening; a pod bound by hand to a full node meets it).

use berth_pods::{host_ports, pod_request};
use k8s_openapi::api::core::v1::Pod;

use crate::hostinfo;

/// Why a pod was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status reason and event reason.
    pub reason: String,
    /// The status message.
    pub message: String,
}

/// What the node has for pods.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    /// Pods it takes.
    pub pods: u64,
    /// CPU, millicores.
    pub cpu_milli: i128,
    /// Memory, bytes.
    pub memory: i128,
}

impl Room {
    /// This host's allocatable resources, as the Node reports them.
    pub fn of_host(cfg: &crate::AgentConfig) -> Room {
        let mem = hostinfo::meminfo("MemTotal").unwrap_or(0);
        Room {
            pods: u64::from(cfg.max_pods),
            cpu_milli: hostinfo::cpus() as i128 * 1000,
            memory: i128::from(mem.saturating_sub(cfg.eviction_hard.reserved_memory(mem))),
        }
    }
}

/// Whether `pod` fits beside the `running` pods (admitted, not ended).
pub fn admit<'a>(
    pod: &Pod,
    running: impl Iterator<Item = &'a Pod> + Clone,
    room: Room,
) -> Result<(), Rejection> {
    let insufficient = |what: &str, requested: i128, used: i128, capacity: i128| {
        Rejection {
        reason: format!("OutOf{what}"),
        message: format!(
            "Pod was rejected: Node didn't have enough resource: {what}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
    };
    let count = running.clone().count() as i128;
    if count + 1 > i128::from(room.pods as i64) {
        return Err(insufficient("pods", 1, count, room.pods.into()));
    }
    for (what, capacity) in [("cpu", room.cpu_milli), ("memory", room.memory)] {
        let requested = pod_request(pod, what);
        if requested == 0 {
            continue;
        }
        let used: i128 = running.clone().map(|p| pod_request(p, what)).sum();
        if used + requested > capacity {
            return Err(insufficient(what, requested, used, capacity));
        }
    }
    let wanted = host_ports(pod);
    if !wanted.is_empty() {
        let taken: Vec<_> = running.flat_map(host_ports).collect();
        if wanted.iter().any(|w| taken.iter().any(|t| w.conflicts(t))) {
            return Err(Rejection {
                reason: "NodePorts".into(),
                message: "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: &str) -> Pod {
        serde_json::from_str(json).unwrap()
    }

    const ROOM: Room = Room {
        pods: 3,
        cpu_milli: 2000,
        memory: 1 << 30,
    };

    #[test]
    fn a_full_node_turns_pods_away_with_the_kubelets_reasons() {
        let small = pod(
            r#"{"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}}]}}"#,
        );
        let big_cpu = pod(
            r#"{"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1500m"}}}]}}"#,
        );
        let init_heavy = pod(
            r#"{"spec": {"initContainers": [{"name": "i", "resources": {"requests": {"memory": "2Gi"}}}], "containers": [{"name": "a"}]}}"#,
        );
        assert_eq!(admit(&small, [&small].into_iter(), ROOM), Ok(()));
        let e = admit(&big_cpu, [&small, &small].into_iter(), ROOM).unwrap_err();
        assert_eq!(e.reason, "OutOfcpu");
        assert!(
            e.message
                .ends_with("cpu, requested: 1500, used: 1000, capacity: 2000"),
            "{}",
            e.message
        );
        let e = admit(&small, [&small, &small, &small].into_iter(), ROOM).unwrap_err();
        assert_eq!(e.reason, "OutOfpods");
        assert!(
            e.message
                .contains("pods, requested: 1, used: 3, capacity: 3"),
            "{}",
            e.message
        );
        let e = admit(&init_heavy, std::iter::empty(), ROOM).unwrap_err();
        assert_eq!(e.reason, "OutOfmemory");
    }

    #[test]
    fn host_ports_conflict_by_protocol_port_and_address() {
        let on = |port: i32, ip: &str, proto: &str| {
            pod(&format!(
                r#"{{"spec": {{"containers": [{{"name": "a", "ports": [{{"containerPort": 80, "hostPort": {port}, "hostIP": "{ip}", "protocol": "{proto}"}}]}}]}}}}"#
            ))
        };
        let web = on(8080, "", "TCP");
        assert_eq!(
            admit(&on(8080, "", "TCP"), [&web].into_iter(), ROOM)
                .unwrap_err()
                .reason,
            "NodePorts"
        );
        assert!(admit(&on(8080, "127.0.0.1", "TCP"), [&web].into_iter(), ROOM).is_err());
        assert!(admit(&on(8080, "", "UDP"), [&web].into_iter(), ROOM).is_ok());
        assert!(admit(&on(8081, "", "TCP"), [&web].into_iter(), ROOM).is_ok());
        let local = on(9090, "127.0.0.1", "TCP");
        assert!(admit(&on(9090, "127.0.0.2", "TCP"), [&local].into_iter(), ROOM).is_ok());
    }
}
