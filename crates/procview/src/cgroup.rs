//! What a process's cgroups say about its limits and use, on cgroup v1 (a directory per
//! controller) and cgroup v2 (one directory), found from /proc/PID/cgroup and the
//! host's cgroup mounts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The cgroup directories of one process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cgroups {
    /// v1 controller name → directory.
    pub v1: Vec<(String, PathBuf)>,
    /// The cgroup2 directory, when the process has one with controllers in use.
    pub v2: Option<PathBuf>,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_u64(p: &Path) -> Option<u64> {
    read(p)?.parse().ok()
}

/// The host's cgroup layout (berth-cgroups'), read once by the view's server.
pub type Mounts = berth_cgroups::Layout;

impl Cgroups {
    /// The cgroups of process `pid` (as this process sees pids).
    pub fn of(pid: u32, mounts: &Mounts) -> Option<Cgroups> {
        let lines = berth_cgroups::proc::read(Some(pid as i32)).ok()?;
        let mut c = Cgroups::default();
        for line in lines {
            let path = Path::new(&line.path);
            if line.is_unified() {
                if let Some(m) = &mounts.unified {
                    c.v2 = Some(mounts.dir_on(m, "", path));
                }
                continue;
            }
            for ctrl in &line.controllers {
                if let Some(m) = mounts.v1.get(ctrl) {
                    c.v1.push((ctrl.clone(), mounts.dir_on(m, ctrl, path)));
                }
            }
        }
        Some(c)
    }

    fn v1(&self, ctrl: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(n, _)| n == ctrl)
            .map(|(_, p)| p.as_path())
    }

    /// Whether the v2 directory has controller files (a v2 or hybrid host where the
    /// controller is bound to cgroup2).
    fn v2_has(&self, file: &str) -> Option<PathBuf> {
        self.v2
            .as_ref()
            .map(|d| d.join(file))
            .filter(|p| p.exists())
    }

    /// A name that identifies the container (the memory cgroup's path, else cgroup2's).
    pub fn key(&self) -> String {
        self.v1("memory")
            .or(self.v2.as_deref())
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// The memory limit in bytes (None when unlimited).
    pub fn memory_limit(&self) -> Option<u64> {
        if let Some(d) = self.v1("memory") {
            return read_u64(&d.join("memory.limit_in_bytes")).filter(|l| *l < (1 << 62));
        }
        read_u64(&self.v2_has("memory.max")?)
    }

    /// Memory in use, less the page cache that could be reclaimed (what `free` calls
    /// used), and the page cache itself.
    pub fn memory_usage(&self) -> Option<(u64, u64)> {
        self.memory_usage_from(&self.memory_stats())
    }

    /// [`Cgroups::memory_usage`] with memory.stat as read already.
    pub fn memory_usage_from(&self, stat: &MemoryStat) -> Option<(u64, u64)> {
        let usage = self.memory_current()?;
        let cache = stat.get_either("cache", "file");
        Some((usage.saturating_sub(cache), cache))
    }

    /// Memory charged to the container, page cache included (v1 usage_in_bytes, v2
    /// memory.current).
    pub fn memory_current(&self) -> Option<u64> {
        match self.v1("memory") {
            Some(d) => read_u64(&d.join("memory.usage_in_bytes")),
            None => read_u64(&self.v2_has("memory.current")?),
        }
    }

    /// One reading of the memory controller's memory.stat (empty without one): the
    /// file is long and, on v1, costly to make, so callers read it once.
    pub fn memory_stats(&self) -> MemoryStat {
        let (dir, v1) = match self.v1("memory") {
            Some(d) => (Some(d.to_path_buf()), true),
            None => (self.v2_has("memory.stat").and(self.v2.clone()), false),
        };
        let counters = dir
            .and_then(|d| read(&d.join("memory.stat")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect();
        MemoryStat { v1, counters }
    }

    /// Swap in use, in bytes.
    pub fn swap_usage(&self) -> u64 {
        self.swap_usage_beyond(self.memory_current().unwrap_or(0))
    }

    /// [`Cgroups::swap_usage`] with the memory in use (`memory_current`) read already.
    pub fn swap_usage_beyond(&self, memory: u64) -> u64 {
        if let Some(d) = self.v1("memory") {
            let both = read_u64(&d.join("memory.memsw.usage_in_bytes")).unwrap_or(0);
            return both.saturating_sub(memory);
        }
        self.v2_has("memory.swap.current")
            .and_then(|p| read_u64(&p))
            .unwrap_or(0)
    }

    /// The number of tasks in the container (pids.current), else of its processes.
    pub fn task_count(&self) -> u64 {
        let counted = match self.v1("pids") {
            Some(d) => read_u64(&d.join("pids.current")),
            None => self.v2_has("pids.current").and_then(|p| read_u64(&p)),
        };
        counted.unwrap_or_else(|| self.pids().len() as u64)
    }

    /// The swap limit in bytes beyond memory (None when unlimited or unknown).
    pub fn swap_limit(&self) -> Option<u64> {
        self.swap_limit_beyond(self.memory_limit())
    }

    /// [`Cgroups::swap_limit`] with the memory limit read already.
    pub fn swap_limit_beyond(&self, memory_limit: Option<u64>) -> Option<u64> {
        if let Some(d) = self.v1("memory") {
            let both =
                read_u64(&d.join("memory.memsw.limit_in_bytes")).filter(|l| *l < (1 << 62))?;
            return Some(both.saturating_sub(memory_limit.unwrap_or(both)));
        }
        read_u64(&self.v2_has("memory.swap.max")?)
    }

    /// CPUs allowed by cpuset.
    pub fn cpuset(&self) -> Option<BTreeSet<u32>> {
        let text = if let Some(d) = self.v1("cpuset") {
            read(&d.join("cpuset.effective_cpus")).or_else(|| read(&d.join("cpuset.cpus")))?
        } else {
            read(&self.v2_has("cpuset.cpus.effective")?)?
        };
        Some(parse_cpu_list(&text))
    }

    /// The CPU quota in CPUs (quota / period), None when unlimited.
    pub fn cpu_quota(&self) -> Option<f64> {
        if let Some(d) = self.v1("cpu") {
            let q: i64 = read(&d.join("cpu.cfs_quota_us"))?.parse().ok()?;
            let p: i64 = read(&d.join("cpu.cfs_period_us"))?.parse().ok()?;
            return (q > 0 && p > 0).then(|| q as f64 / p as f64);
        }
        let text = read(&self.v2_has("cpu.max")?)?;
        let mut f = text.split_whitespace();
        let (q, p) = (f.next()?, f.next()?);
        if q == "max" {
            return None;
        }
        Some(q.parse::<f64>().ok()? / p.parse::<f64>().ok()?)
    }

    /// CPU time used: (user, system) in nanoseconds.
    pub fn cpu_usage(&self) -> (u64, u64) {
        if let Some(d) = self.v1("cpuacct") {
            // cpuacct.stat is in USER_HZ ticks.
            let text = read(&d.join("cpuacct.stat")).unwrap_or_default();
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    * 10_000_000
            };
            return (get("user "), get("system "));
        }
        let text = self
            .v2_has("cpu.stat")
            .and_then(|p| read(&p))
            .unwrap_or_default();
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1000
        };
        (get("user_usec "), get("system_usec "))
    }

    /// The processes in the container's cgroup.
    pub fn pids(&self) -> Vec<u32> {
        let dir = self
            .v1("pids")
            .or(self.v1("memory"))
            .map(Path::to_path_buf)
            .or_else(|| self.v2.clone());
        dir.and_then(|d| read(&d.join("cgroup.procs")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// The counters of one memory.stat reading.
#[derive(Clone, Debug, Default)]
pub struct MemoryStat {
    v1: bool,
    counters: std::collections::HashMap<String, u64>,
}

impl MemoryStat {
    /// A counter by its v1 name (on v1 the hierarchical `total_` one when present);
    /// 0 when absent.
    pub fn get(&self, key: &str) -> u64 {
        let total = self
            .v1
            .then(|| self.counters.get(&format!("total_{key}")))
            .flatten();
        total
            .or_else(|| self.counters.get(key))
            .copied()
            .unwrap_or(0)
    }

    /// A counter named `v1` on cgroup v1 and `v2` on cgroup v2.
    pub fn get_either(&self, v1: &str, v2: &str) -> u64 {
        self.get(if self.v1 { v1 } else { v2 })
    }
}

/// Parses a cpu list like `0-3,6`.
pub fn parse_cpu_list(s: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    out.insert(a);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-2,5\n").into_iter().collect::<Vec<_>>(),
            vec![0, 1, 2, 5]
        );
        assert!(parse_cpu_list("").is_empty());
    }
}

/// I/O done by a cgroup on one device.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoCounters {
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

impl Cgroups {
    /// Per device ("MAJ:MIN"), what the cgroup read and wrote.
    pub fn io_counters(&self) -> std::collections::HashMap<String, IoCounters> {
        let mut out: std::collections::HashMap<String, IoCounters> = Default::default();
        if let Some(d) = self.v1("blkio") {
            for (file, bytes) in [
                ("blkio.throttle.io_serviced", false),
                ("blkio.throttle.io_service_bytes", true),
            ] {
                for l in read(&d.join(file)).unwrap_or_default().lines() {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    if let [dev, op, v] = f.as_slice() {
                        let v: u64 = v.parse().unwrap_or(0);
                        let e = out.entry(dev.to_string()).or_default();
                        match (*op, bytes) {
                            ("Read", false) => e.reads = v,
                            ("Write", false) => e.writes = v,
                            ("Read", true) => e.read_bytes = v,
                            ("Write", true) => e.write_bytes = v,
                            _ => {}
                        }
                    }
                }
            }
            return out;
        }
        let text = self
            .v2_has("io.stat")
            .and_then(|p| read(&p))
            .unwrap_or_default();
        for l in text.lines() {
            let mut f = l.split_whitespace();
            let Some(dev) = f.next() else { continue };
            let e = out.entry(dev.to_string()).or_default();
            for kv in f {
                if let Some((k, v)) = kv.split_once('=') {
                    let v: u64 = v.parse().unwrap_or(0);
                    match k {
                        "rios" => e.reads = v,
                        "wios" => e.writes = v,
                        "rbytes" => e.read_bytes = v,
                        "wbytes" => e.write_bytes = v,
                        _ => {}
                    }
                }
            }
        }
        out
    }
}
