//! Resource usage as the kubelet reports it: the Summary API (`/stats/summary`, what
//! metrics-server and berth's built-in metrics.k8s.io read) and `/metrics/resource`
//! (Prometheus text). Usage is sampled when asked, not on a timer, so an idle node
//! spends nothing on it: CPU rates come from the previous sample (up to five minutes
//! old), or from a second sample half a second after the first.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_engine::cri::{ContainerFilter, ContainerStats, RuntimeService};
use serde_json::{json, Value};

use crate::error::Result;
use crate::{hostinfo, labels, Ctx};

/// A sample older than this gives no rate.
const MAX_RATE_WINDOW: Duration = Duration::from_secs(300);
/// Two samples closer than this give no meaningful rate.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(400);

/// One running container's usage at a moment.
#[derive(Clone, Debug)]
struct ContainerSample {
    key: labels::PodKey,
    name: String,
    created_at_ns: i64,
    stats: ContainerStats,
}

/// The node's and its containers' usage at a moment.
#[derive(Debug)]
pub(crate) struct Sample {
    taken: Instant,
    /// Wall clock, ns since the epoch.
    at_ns: i64,
    node_cpu_ns: u64,
    containers: Vec<ContainerSample>,
}

/// The last two samples, kept for rates.
#[derive(Default)]
pub(crate) struct Sampler {
    last: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    before: Option<Arc<Sample>>,
    last: Option<Arc<Sample>>,
}

/// A pod's containers and their sums.
struct PodTotals<'a> {
    key: &'a labels::PodKey,
    containers: Vec<Value>,
    nano_cores: u64,
    cpu_ns: u64,
    working_set: u64,
    pids: u64,
    start_ns: i64,
}

/// CPU time the machine spent not idle, ns (/proc/stat's first line).
fn node_cpu_ns() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let ticks: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| ticks.get(*i))
        .sum();
    let hz = rustix::param::clock_ticks_per_second().max(1);
    busy.saturating_mul(1_000_000_000 / hz)
}

fn take(ctx: &Ctx) -> Result<Sample> {
    let core = &ctx.core;
    let filter = ContainerFilter {
        labels: BTreeMap::from([(labels::NODE.to_string(), ctx.cfg.node_name.clone())]),
        ..Default::default()
    };
    let running: BTreeMap<String, _> = core
        .list_containers(&filter)
        .map_err(crate::Error::Engine)?
        .into_iter()
        .filter(|c| c.state.is_running())
        .map(|c| (c.id.clone(), c))
        .collect();
    let containers = core
        .list_container_stats(&filter)
        .map_err(crate::Error::Engine)?
        .into_iter()
        .filter_map(|stats| {
            let c = running.get(&stats.id)?;
            let l = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
            Some(ContainerSample {
                key: labels::PodKey {
                    namespace: l(labels::POD_NAMESPACE),
                    name: l(labels::POD_NAME),
                    uid: l(labels::POD_UID),
                },
                name: l(labels::CONTAINER_NAME),
                created_at_ns: c.created_at,
                stats,
            })
        })
        .collect();
    Ok(Sample {
        taken: Instant::now(),
        at_ns: now_ns(),
        node_cpu_ns: node_cpu_ns(),
        containers,
    })
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

impl Sampler {
    /// A fresh sample and the one to take rates against.
    pub(crate) async fn pair(&self, ctx: &Arc<Ctx>) -> Result<(Arc<Sample>, Arc<Sample>)> {
        {
            let g = self.last.lock().expect("sampler lock");
            if let (Some(before), Some(last)) = (&g.before, &g.last) {
                if last.taken.elapsed() < Duration::from_secs(1) {
                    return Ok((before.clone(), last.clone()));
                }
            }
        }
        let sample = |ctx: Arc<Ctx>| async move {
            tokio::task::spawn_blocking(move || take(&ctx))
                .await
                .map_err(|e| crate::Error::Internal(format!("stats sampling panicked: {e}")))?
                .map(Arc::new)
        };
        let last = self.last.lock().expect("sampler lock").last.clone();
        let before = match last {
            Some(l)
                if l.taken.elapsed() <= MAX_RATE_WINDOW && l.taken.elapsed() >= MIN_RATE_WINDOW =>
            {
                l
            }
            _ => {
                let first = sample(ctx.clone()).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                first
            }
        };
        let now = sample(ctx.clone()).await?;
        *self.last.lock().expect("sampler lock") = Recent {
            before: Some(before.clone()),
            last: Some(now.clone()),
        };
        Ok((before, now))
    }
}

/// CPU use in nanocores between two cumulative readings.
fn rate(before_ns: u64, after_ns: u64, window_ns: i64) -> u64 {
    if window_ns <= 0 {
        return 0;
    }
    (after_ns.saturating_sub(before_ns) as u128 * 1_000_000_000 / window_ns as u128) as u64
}

fn time(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A container's CPU rate: against its previous reading, or since it was created.
fn container_rate(c: &ContainerSample, before: &Sample, now: &Sample) -> u64 {
    match before.containers.iter().find(|p| p.stats.id == c.stats.id) {
        Some(p) => rate(
            p.stats.cpu_usage_ns,
            c.stats.cpu_usage_ns,
            c.stats.timestamp - p.stats.timestamp,
        ),
        None => rate(0, c.stats.cpu_usage_ns, now.at_ns - c.created_at_ns),
    }
}

/// The Summary API's document (stats/v1alpha1), as the kubelet serves it.
pub(crate) fn summary(ctx: &Ctx, before: &Sample, now: &Sample) -> Value {
    let t = time(now.at_ns);
    let total = hostinfo::meminfo("MemTotal").unwrap_or(0);
    let used = total.saturating_sub(hostinfo::meminfo("MemFree").unwrap_or(0));
    let ws = used.saturating_sub(hostinfo::meminfo("Inactive(file)").unwrap_or(0));
    let fs = |path: &std::path::Path| {
        let (cap, avail) = hostinfo::disk(path).unwrap_or((0, 0));
        let (inodes, free) = hostinfo::inodes(path).unwrap_or((0, 0));
        json!({
            "time": t, "availableBytes": avail, "capacityBytes": cap,
            "usedBytes": cap.saturating_sub(avail), "inodesFree": free, "inodes": inodes,
            "inodesUsed": inodes.saturating_sub(free),
        })
    };
    let (max_pids, cur_pids) = hostinfo::pids();
    let node = json!({
        "nodeName": ctx.cfg.node_name,
        "systemContainers": [],
        "cpu": {
            "time": t,
            "usageNanoCores": rate(before.node_cpu_ns, now.node_cpu_ns, now.at_ns - before.at_ns),
            "usageCoreNanoSeconds": now.node_cpu_ns,
        },
        "memory": {
            "time": t, "availableBytes": total.saturating_sub(ws), "usageBytes": used,
            "workingSetBytes": ws, "pageFaults": 0, "majorPageFaults": 0,
        },
        "fs": fs(&ctx.cfg.pods_dir),
        "runtime": {"imageFs": fs(&ctx.cfg.engine_root), "containerFs": fs(&ctx.cfg.engine_root)},
        "rlimit": {"time": t, "maxpid": max_pids, "curproc": cur_pids},
    });
    let mut pods: BTreeMap<&str, PodTotals> = BTreeMap::new();
    for c in &now.containers {
        let cpu = container_rate(c, before, now);
        let s = &c.stats;
        let mut memory = json!({
            "time": t, "usageBytes": s.memory_usage, "workingSetBytes": s.memory_working_set,
        });
        if let Some(limit) = s.memory_limit {
            memory["availableBytes"] = json!(limit.saturating_sub(s.memory_working_set));
        }
        let p = pods.entry(c.key.uid.as_str()).or_insert_with(|| PodTotals {
            key: &c.key,
            containers: Vec::new(),
            nano_cores: 0,
            cpu_ns: 0,
            working_set: 0,
            pids: 0,
            start_ns: i64::MAX,
        });
        p.containers.push(json!({
            "name": c.name,
            "startTime": time(c.created_at_ns),
            "cpu": {"time": t, "usageNanoCores": cpu, "usageCoreNanoSeconds": s.cpu_usage_ns},
            "memory": memory,
            "rootfs": {"time": t, "usedBytes": s.writable_layer_bytes},
        }));
        p.nano_cores += cpu;
        p.cpu_ns += s.cpu_usage_ns;
        p.working_set += s.memory_working_set;
        p.pids += s.pids;
        p.start_ns = p.start_ns.min(c.created_at_ns);
    }
    let pods: Vec<Value> = pods
        .into_values()
        .map(|p| {
            json!({
                "podRef": {"name": p.key.name, "namespace": p.key.namespace, "uid": p.key.uid},
                "startTime": time(p.start_ns),
                "containers": p.containers,
                "cpu": {"time": t, "usageNanoCores": p.nano_cores, "usageCoreNanoSeconds": p.cpu_ns},
                "memory": {"time": t, "workingSetBytes": p.working_set},
                "process_stats": {"process_count": p.pids},
            })
        })
        .collect();
    json!({"node": node, "pods": pods})
}

/// `/metrics/resource`: cumulative CPU seconds and working sets, Prometheus text (the
/// exposition format is a few lines per series: written here rather than through a
/// registry built and thrown away per scrape).
pub(crate) fn resource_metrics(summary: &Value) -> String {
    let mut out = String::new();
    let ms = jiff::Timestamp::now().as_millisecond();
    let families: [(&str, &str, &str); 7] = [
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
        ),
        (
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes",
        ),
        (
            "container_start_time_seconds",
            "gauge",
            "Start time of the container since unix epoch in seconds",
        ),
        (
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
        ),
        (
            "node_memory_working_set_bytes",
            "gauge",
            "Current working set of the node in bytes",
        ),
        (
            "pod_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
        ),
        (
            "pod_memory_working_set_bytes",
            "gauge",
            "Current working set of the pod in bytes",
        ),
    ];
    let num = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let start = |v: &Value| {
        v["startTime"]
            .as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .map_or(0, |t| t.as_second())
    };
    for (name, kind, help) in families {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}\n# TYPE {name} {kind}");
        if let Some(n) = name.strip_prefix("node_") {
            let v = if n.starts_with("cpu") {
                format!(
                    "{}",
                    num(summary, "/node/cpu/usageCoreNanoSeconds") as f64 / 1e9
                )
            } else {
                num(summary, "/node/memory/workingSetBytes").to_string()
            };
            let _ = writeln!(out, "{name} {v} {ms}");
            continue;
        }
        for pod in summary["pods"].as_array().into_iter().flatten() {
            let (ns, pn) = (
                pod["podRef"]["namespace"].as_str().unwrap_or(""),
                pod["podRef"]["name"].as_str().unwrap_or(""),
            );
            if name.starts_with("pod_") {
                let v = if name.contains("cpu") {
                    format!("{}", num(pod, "/cpu/usageCoreNanoSeconds") as f64 / 1e9)
                } else {
                    num(pod, "/memory/workingSetBytes").to_string()
                };
                let _ = writeln!(out, "{name}{{namespace=\"{ns}\",pod=\"{pn}\"}} {v} {ms}");
                continue;
            }
            for c in pod["containers"].as_array().into_iter().flatten() {
                let cn = c["name"].as_str().unwrap_or("");
                let v = match name {
                    "container_cpu_usage_seconds_total" => {
                        format!("{}", num(c, "/cpu/usageCoreNanoSeconds") as f64 / 1e9)
                    }
                    "container_memory_working_set_bytes" => {
                        num(c, "/memory/workingSetBytes").to_string()
                    }
                    _ => start(c).to_string(),
                };
                let _ = writeln!(
                    out,
                    "{name}{{container=\"{cn}\",namespace=\"{ns}\",pod=\"{pn}\"}} {v} {ms}"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE resource_scrape_error gauge\nresource_scrape_error 0"
    );
    out
}

/// `/metrics`: the agent's own (running pods and containers, its process).
pub(crate) async fn agent_metrics(ctx: &Arc<Ctx>) -> Result<String> {
    let node = ctx.cfg.node_name.clone();
    let (pods, containers) = ctx
        .engine(move |core| {
            let labels = BTreeMap::from([(labels::NODE.to_string(), node)]);
            let pods = core
                .list_pod_sandbox(&berth_engine::cri::SandboxFilter {
                    labels: labels.clone(),
                    state: Some(berth_engine::cri::SandboxState::Ready),
                    ..Default::default()
                })?
                .len();
            let containers = core
                .list_containers(&ContainerFilter {
                    labels,
                    ..Default::default()
                })?
                .iter()
                .filter(|c| c.state.is_running())
                .count();
            Ok((pods, containers))
        })
        .await?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // utime and stime: fields 14 and 15, counted after the command's closing paren.
    let cpu_ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let hz = rustix::param::clock_ticks_per_second().max(1) as f64;
    let started = ctx
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut out = String::new();
    let mut gauge = |name: &str, kind: &str, help: &str, series: &str, v: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{series} {v}"
        );
    };
    gauge(
        "kubelet_node_name",
        "gauge",
        "The node's name. The count is always 1.",
        &format!("{{node=\"{}\"}}", ctx.cfg.node_name),
        "1".into(),
    );
    gauge(
        "kubelet_running_pods",
        "gauge",
        "Number of pods that have a running pod sandbox",
        "",
        pods.to_string(),
    );
    gauge(
        "kubelet_running_containers",
        "gauge",
        "Number of containers currently running",
        "{container_state=\"running\"}",
        containers.to_string(),
    );
    gauge(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        "",
        (rss_kb * 1024).to_string(),
    );
    gauge(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        "",
        format!("{}", cpu_ticks as f64 / hz),
    );
    gauge(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        "",
        format!("{started}"),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_nanocores_and_never_divide_by_zero() {
        assert_eq!(rate(0, 500_000_000, 1_000_000_000), 500_000_000);
        assert_eq!(rate(10, 5, 1_000_000_000), 0);
        assert_eq!(rate(0, 5, 0), 0);
    }

    #[test]
    fn the_machine_has_used_some_cpu() {
        let a = node_cpu_ns();
        assert!(a > 0);
        assert!(node_cpu_ns() >= a);
    }

    #[test]
    fn resource_metrics_name_every_series_with_its_labels() {
        let s = json!({
            "node": {"cpu": {"usageCoreNanoSeconds": 2_500_000_000u64}, "memory": {"workingSetBytes": 1000}},
            "pods": [{"podRef": {"name": "p", "namespace": "n"}, "cpu": {"usageCoreNanoSeconds": 1_000_000_000u64},
                      "memory": {"workingSetBytes": 7},
                      "containers": [{"name": "c", "startTime": "2026-12-04T00:00:00Z",
                                      "cpu": {"usageCoreNanoSeconds": 500_000_000u64}, "memory": {"workingSetBytes": 5}}]}]
        });
        let m = resource_metrics(&s);
        for want in [
            "node_cpu_usage_seconds_total 2.5 ",
            "node_memory_working_set_bytes 1000 ",
            "pod_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\"} 1 ",
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"n\",pod=\"p\"} 0.5 ",
            "container_memory_working_set_bytes{container=\"c\",namespace=\"n\",pod=\"p\"} 5 ",
            "container_start_time_seconds{container=\"c\",namespace=\"n\",pod=\"p\"} 1796342400 ",
            "resource_scrape_error 0",
        ] {
            assert!(m.contains(want), "{want}\n{m}");
        }
    }
}
