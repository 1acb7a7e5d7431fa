//! A sandbox's resource use: its containers' summed, its processes counted, and its
//! network interfaces read from its network namespace (the infra process's
//! /proc/PID/net/dev).

use berth_engine::cri as engine;
use k8s_cri::v1 as pb;

use crate::convert::{container, now_ns, sandbox};
use crate::Engine;

/// The stats of sandbox `id`.
pub fn of<E: Engine>(e: &E, id: &str) -> berth_engine::error::Result<pb::PodSandboxStats> {
    let st = e.pod_sandbox_status(id)?;
    let list = e.list_containers(&engine::ContainerFilter {
        sandbox_id: Some(st.summary.id.clone()),
        ..Default::default()
    })?;
    let stats: Vec<_> = list
        .iter()
        .filter_map(|c| e.container_stats(&c.id).ok().map(|s| (s, c)))
        .collect();
    let now = now_ns();
    let v = |value: u64| Some(pb::UInt64Value { value });
    let sum = |f: fn(&engine::ContainerStats) -> u64| stats.iter().map(|(s, _)| f(s)).sum::<u64>();
    let interfaces = st
        .infra_pid
        .filter(|_| st.config.namespaces.network != engine::SandboxNetwork::Node)
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok())
        .map(|t| net_dev(&t))
        .unwrap_or_default();
    Ok(pb::PodSandboxStats {
        attributes: Some(sandbox::attributes(&st.summary)),
        linux: Some(pb::LinuxPodSandboxStats {
            cpu: Some(pb::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: v(sum(|s| s.cpu_usage_ns)),
                usage_nano_cores: None,
            }),
            memory: Some(pb::MemoryUsage {
                timestamp: now,
                working_set_bytes: v(sum(|s| s.memory_working_set)),
                usage_bytes: v(sum(|s| s.memory_usage)),
                ..Default::default()
            }),
            network: Some(pb::NetworkUsage {
                timestamp: now,
                default_interface: interfaces.iter().find(|i| i.name == "eth0").cloned(),
                interfaces,
            }),
            process: Some(pb::ProcessUsage {
                timestamp: now,
                process_count: v(sum(|s| s.pids)),
            }),
            containers: stats
                .iter()
                .map(|(s, c)| container::stats(s, Some(c)))
                .collect(),
        }),
        windows: None,
    })
}

/// The interfaces of a /proc/net/dev table, loopback left out (as the kubelet does).
fn net_dev(text: &str) -> Vec<pb::NetworkInterfaceUsage> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let n: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            if n.len() < 16 {
                return None;
            }
            let v = |value: u64| Some(pb::UInt64Value { value });
            Some(pb::NetworkInterfaceUsage {
                name: name.to_string(),
                rx_bytes: v(n[0]),
                rx_errors: v(n[2]),
                tx_bytes: v(n[8]),
                tx_errors: v(n[10]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn interfaces_come_from_the_table_without_loopback() {
        let t = "Inter-|   Receive                                                |  Transmit\n \
                 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                 lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
                 eth0:    5000      40    2    0    0     0          0         0     7000      50    3    0    0     0       0          0\n";
        let i = super::net_dev(t);
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].name, "eth0");
        assert_eq!(i[0].rx_bytes.unwrap().value, 5000);
        assert_eq!(i[0].rx_errors.unwrap().value, 2);
        assert_eq!(i[0].tx_bytes.unwrap().value, 7000);
        assert_eq!(i[0].tx_errors.unwrap().value, 3);
    }
}
