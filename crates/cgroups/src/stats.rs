//! Resource usage read from a container's cgroups, in the JSON shape of runc's
//! `events --stats` (what containerd and monitoring tools parse).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::paths::CgroupPaths;

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    read(dir, file)
        .and_then(|s| {
            let t = s.trim();
            if t == "max" {
                Some(u64::MAX)
            } else {
                t.parse().ok()
            }
        })
        .unwrap_or(0)
}

/// "key value" lines (memory.stat, cpu.stat, cpuacct.stat) as a map.
fn flat_keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    read(dir, file)
        .map(|s| {
            s.lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    Some((it.next()?.to_string(), it.next()?.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

const USER_HZ_NS: u64 = 1_000_000_000 / 100;

/// Collects the stats object (`data` of a stats event).
pub fn collect(paths: &CgroupPaths) -> Value {
    if paths.v2_only {
        match paths.unified.as_deref() {
            Some(d) => collect_v2(d),
            None => json!({}),
        }
    } else {
        collect_v1(paths)
    }
}

fn entry(limit: u64, usage: u64, max: u64, failcnt: u64) -> Value {
    json!({"limit": limit, "usage": usage, "max": max, "failcnt": failcnt})
}

fn collect_v1(paths: &CgroupPaths) -> Value {
    let mut out = Map::new();
    let mut cpu = json!({"usage": {}, "throttling": {}});
    if let Some(d) = paths.v1_dir("cpuacct") {
        let percpu: Vec<u64> = read(d, "cpuacct.usage_percpu")
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let st = flat_keyed(d, "cpuacct.stat");
        cpu["usage"] = json!({
            "total": read_u64(d, "cpuacct.usage"),
            "percpu": percpu,
            "kernel": st.get("system").copied().unwrap_or(0) * USER_HZ_NS,
            "user": st.get("user").copied().unwrap_or(0) * USER_HZ_NS,
        });
    }
    if let Some(d) = paths.v1_dir("cpu") {
        let st = flat_keyed(d, "cpu.stat");
        cpu["throttling"] = json!({
            "periods": st.get("nr_periods").copied().unwrap_or(0),
            "throttledPeriods": st.get("nr_throttled").copied().unwrap_or(0),
            "throttledTime": st.get("throttled_time").copied().unwrap_or(0),
        });
    }
    out.insert("cpu".into(), cpu);
    if let Some(d) = paths.v1_dir("memory") {
        let raw = flat_keyed(d, "memory.stat");
        let e = |p: &str| {
            entry(
                read_u64(d, &format!("{p}.limit_in_bytes")),
                read_u64(d, &format!("{p}.usage_in_bytes")),
                read_u64(d, &format!("{p}.max_usage_in_bytes")),
                read_u64(d, &format!("{p}.failcnt")),
            )
        };
        let oom = flat_keyed(d, "memory.oom_control");
        out.insert(
            "memory".into(),
            json!({
                "cache": raw.get("cache").copied().unwrap_or(0),
                "usage": e("memory"),
                "swap": e("memory.memsw"),
                "kernel": e("memory.kmem"),
                "kernelTCP": e("memory.kmem.tcp"),
                "raw": raw,
                "oomKill": oom.get("oom_kill").copied().unwrap_or(0),
            }),
        );
    }
    if let Some(d) = paths.v1_dir("pids") {
        out.insert(
            "pids".into(),
            json!({"current": read_u64(d, "pids.current"), "limit": read_u64(d, "pids.max")}),
        );
    }
    if let Some(d) = paths.v1_dir("blkio") {
        let parse = |file: &str| -> Vec<Value> {
            read(d, file)
                .map(|s| {
                    s.lines()
                        .filter_map(|l| {
                            let f: Vec<&str> = l.split_whitespace().collect();
                            let (maj, min) = f.first()?.split_once(':')?;
                            Some(json!({
                                "major": maj.parse::<u64>().ok()?,
                                "minor": min.parse::<u64>().ok()?,
                                "op": f.get(1)?,
                                "value": f.get(2)?.parse::<u64>().ok()?,
                            }))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        out.insert(
            "blkio".into(),
            json!({
                "ioServiceBytesRecursive": parse("blkio.throttle.io_service_bytes"),
                "ioServicedRecursive": parse("blkio.throttle.io_serviced"),
            }),
        );
    }
    if let Some(d) = paths.v1_dir("hugetlb") {
        out.insert(
            "hugetlb".into(),
            hugetlb(d, "limit_in_bytes", "usage_in_bytes"),
        );
    }
    Value::Object(out)
}

fn hugetlb(d: &Path, max_file: &str, usage_file: &str) -> Value {
    let mut m = Map::new();
    if let Ok(entries) = std::fs::read_dir(d) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(size) = name
                .strip_prefix("hugetlb.")
                .and_then(|r| r.strip_suffix(&format!(".{usage_file}")))
            {
                if size.contains('.') {
                    continue;
                }
                m.insert(
                    size.to_string(),
                    json!({
                        "usage": read_u64(d, &name),
                        "max": read_u64(d, &format!("hugetlb.{size}.{max_file}")),
                        "failcnt": read_u64(d, &format!("hugetlb.{size}.failcnt")),
                    }),
                );
            }
        }
    }
    Value::Object(m)
}

fn collect_v2(d: &Path) -> Value {
    let cpu = flat_keyed(d, "cpu.stat");
    let g = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let raw = flat_keyed(d, "memory.stat");
    let events = flat_keyed(d, "memory.events");
    let io: Vec<Value> = read(d, "io.stat")
        .map(|s| {
            s.lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    let (maj, min) = it.next()?.split_once(':')?;
                    let kv: BTreeMap<&str, u64> = it
                        .filter_map(|p| {
                            let (k, v) = p.split_once('=')?;
                            Some((k, v.parse().ok()?))
                        })
                        .collect();
                    Some(
                        json!({"major": maj.parse::<u64>().ok()?, "minor": min.parse::<u64>().ok()?,
                        "rbytes": kv.get("rbytes"), "wbytes": kv.get("wbytes"),
                        "rios": kv.get("rios"), "wios": kv.get("wios")}),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "cpu": {
            "usage": {
                "total": g(&cpu, "usage_usec") * 1000,
                "kernel": g(&cpu, "system_usec") * 1000,
                "user": g(&cpu, "user_usec") * 1000,
            },
            "throttling": {
                "periods": g(&cpu, "nr_periods"),
                "throttledPeriods": g(&cpu, "nr_throttled"),
                "throttledTime": g(&cpu, "throttled_usec") * 1000,
            },
        },
        "memory": {
            "cache": g(&raw, "file"),
            "usage": entry(read_u64(d, "memory.max"), read_u64(d, "memory.current"), read_u64(d, "memory.peak"), g(&events, "max")),
            "swap": entry(read_u64(d, "memory.swap.max"), read_u64(d, "memory.swap.current"), 0, 0),
            "raw": raw,
            "oomKill": g(&events, "oom_kill"),
        },
        "pids": {"current": read_u64(d, "pids.current"), "limit": read_u64(d, "pids.max")},
        "blkio": {"ioStat": io},
        "hugetlb": hugetlb(d, "max", "current"),
    })
}

/// The number of OOM kills so far in the container's memory cgroup.
pub fn oom_kills(paths: &CgroupPaths) -> u64 {
    if paths.v2_only {
        paths
            .unified
            .as_deref()
            .map(|d| {
                flat_keyed(d, "memory.events")
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    } else {
        paths
            .v1_dir("memory")
            .map(|d| {
                flat_keyed(d, "memory.oom_control")
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }
}
