//! The files of the /proc view, computed from the reading container's cgroups with the
//! host's files as the template; for a reader outside any limit, the host's own.

use std::collections::BTreeSet;

use crate::cgroup::{Cgroups, MemoryStat};

/// Clock ticks per second (USER_HZ) as /proc reports them.
const HZ: u64 = 100;

fn host(file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{file}")).unwrap_or_default()
}

fn host_cpus() -> BTreeSet<u32> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let set = crate::cgroup::parse_cpu_list(online.trim());
    if set.is_empty() {
        (0..std::thread::available_parallelism().map_or(1, |n| n.get() as u32)).collect()
    } else {
        set
    }
}

/// The CPUs the container may use: its cpuset, cut to its quota rounded up.
pub fn visible_cpus(cg: &Cgroups) -> Vec<u32> {
    let set = cg
        .cpuset()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(host_cpus);
    let mut cpus: Vec<u32> = set.into_iter().collect();
    if let Some(q) = cg.cpu_quota() {
        cpus.truncate((q.ceil() as usize).max(1));
    }
    cpus
}

fn host_uptime() -> f64 {
    host("uptime")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Seconds since the container's oldest process started.
pub fn container_uptime(cg: &Cgroups) -> f64 {
    uptime_since(container_start(cg))
}

/// When the container's oldest process started, in clock ticks since boot (None for
/// a cgroup without processes).
pub fn container_start(cg: &Cgroups) -> Option<u64> {
    cg.pids()
        .iter()
        .filter_map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(19)?.parse::<u64>().ok()
        })
        .min()
}

/// Seconds since `start` (clock ticks since boot; None: since boot).
pub fn uptime_since(start: Option<u64>) -> f64 {
    match start {
        Some(start) => (host_uptime() - start as f64 / HZ as f64).max(0.0),
        None => host_uptime(),
    }
}

fn kib(b: u64) -> u64 {
    b / 1024
}

/// A limited container's memory, in bytes, as `free` and `sysinfo` report it: the
/// limit (capped at the host's memory) is the total, reclaimable page cache is cache.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    /// The limit, at most the host's memory.
    pub total: u64,
    /// In use, less the page cache.
    pub used: u64,
    /// Page cache.
    pub cache: u64,
    /// Neither used nor cache.
    pub free: u64,
    /// What could be had without swapping: free and cache.
    pub available: u64,
    /// Shared memory (tmpfs, shm).
    pub shared: u64,
    /// The swap allowance beyond memory (0 when none is known).
    pub swap_total: u64,
    /// The part of the allowance not in use.
    pub swap_free: u64,
}

/// The memory of a container with a memory limit (None without one: the host's
/// figures stand). `host_total` is the host's memory in bytes.
pub fn memory(cg: &Cgroups, host_total: u64) -> Option<Memory> {
    memory_from(cg, host_total, &cg.memory_stats())
}

/// [`memory`] with memory.stat as read already.
fn memory_from(cg: &Cgroups, host_total: u64, stat: &MemoryStat) -> Option<Memory> {
    // Each cgroup file is read once: each read costs the kernel a few microseconds,
    // and sysinfo(2) answers pay them per call.
    let limit = cg.memory_limit()?;
    let total = limit.min(host_total);
    let current = cg.memory_current().unwrap_or(0);
    let cache = stat.get_either("cache", "file");
    let used = current.saturating_sub(cache).min(total);
    let swap_total = cg.swap_limit_beyond(Some(limit)).unwrap_or(0);
    Some(Memory {
        total,
        used,
        cache,
        free: total.saturating_sub(used + cache),
        available: total.saturating_sub(used),
        shared: stat.get("shmem").min(total),
        swap_total,
        swap_free: swap_total.saturating_sub(cg.swap_usage_beyond(current)),
    })
}

/// /proc/meminfo with the container's memory limit as the total.
pub fn meminfo(cg: &Cgroups) -> String {
    let text = host("meminfo");
    let host_total = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(u64::MAX, |k| k.saturating_mul(1024));
    let stat = cg.memory_stats();
    let Some(m) = memory_from(cg, host_total, &stat) else {
        return text;
    };
    text.lines()
        .map(|l| {
            let key = l.split(':').next().unwrap_or("");
            let v = match key {
                "MemTotal" => Some(m.total),
                "MemFree" => Some(m.free),
                "MemAvailable" => Some(m.available),
                "Cached" => Some(m.cache.min(m.total)),
                "Shmem" => Some(m.shared),
                "Buffers" | "SwapCached" => Some(0),
                "SwapTotal" => Some(m.swap_total),
                "SwapFree" => Some(m.swap_free),
                // The host's figures would not add up with the container's: `free`
                // counts SReclaimable as cache, and used = total - free - cache.
                _ if m.total > 0 => stat_line(&stat, key),
                _ => None,
            };
            match v {
                Some(v) => format!("{:<16}{:>8} kB\n", format!("{key}:"), kib(v)),
                None => format!("{l}\n"),
            }
        })
        .collect()
}

/// A meminfo line taken from the container's memory.stat, by meminfo key (v1 counter
/// name, v2 counter name); None for lines left as the host has them.
fn stat_line(stat: &MemoryStat, key: &str) -> Option<u64> {
    let (v1, v2) = match key {
        "Active(anon)" => ("active_anon", "active_anon"),
        "Inactive(anon)" => ("inactive_anon", "inactive_anon"),
        "Active(file)" => ("active_file", "active_file"),
        "Inactive(file)" => ("inactive_file", "inactive_file"),
        "Unevictable" => ("unevictable", "unevictable"),
        "Dirty" => ("dirty", "file_dirty"),
        "Writeback" => ("writeback", "file_writeback"),
        "AnonPages" => ("rss", "anon"),
        "Mapped" => ("mapped_file", "file_mapped"),
        "Slab" => ("slab", "slab"),
        "SReclaimable" => ("slab_reclaimable", "slab_reclaimable"),
        "SUnreclaim" => ("slab_unreclaimable", "slab_unreclaimable"),
        "Active" => {
            return Some(stat_line(stat, "Active(anon)")? + stat_line(stat, "Active(file)")?)
        }
        "Inactive" => {
            return Some(stat_line(stat, "Inactive(anon)")? + stat_line(stat, "Inactive(file)")?)
        }
        _ => return None,
    };
    Some(stat.get_either(v1, v2))
}

/// /proc/cpuinfo with only the visible CPUs, numbered from 0.
pub fn cpuinfo(cg: &Cgroups) -> String {
    let cpus = visible_cpus(cg);
    let text = host("cpuinfo");
    let mut out = String::new();
    let mut n = 0;
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let id: Option<u32> = block
            .lines()
            .find_map(|l| l.strip_prefix("processor"))
            .and_then(|v| v.trim_start_matches([' ', '\t', ':']).trim().parse().ok());
        if id.is_some_and(|i| cpus.contains(&i)) {
            for l in block.lines() {
                if l.starts_with("processor") {
                    out.push_str(&format!("processor\t: {n}\n"));
                } else {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            out.push('\n');
            n += 1;
        }
    }
    out
}

/// /proc/stat with the container's CPU time on its visible CPUs.
pub fn stat(cg: &Cgroups) -> String {
    let cpus = visible_cpus(cg).len() as u64;
    let (user, system) = cg.cpu_usage();
    let (user, system) = (user / (1_000_000_000 / HZ), system / (1_000_000_000 / HZ));
    let up = (container_uptime(cg) * HZ as f64) as u64;
    let idle = (up * cpus).saturating_sub(user + system);
    let line = |name: &str, u: u64, s: u64, i: u64| format!("{name} {u} 0 {s} {i} 0 0 0 0 0 0\n");
    let mut out = line("cpu ", user, system, idle);
    for c in 0..cpus {
        out.push_str(&line(
            &format!("cpu{c}"),
            user / cpus,
            system / cpus,
            idle / cpus,
        ));
    }
    for l in host("stat").lines().filter(|l| !l.starts_with("cpu")) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// /proc/uptime: the container's age, and the idle time of its CPUs.
pub fn uptime(cg: &Cgroups) -> String {
    let up = container_uptime(cg);
    let (u, s) = cg.cpu_usage();
    let busy = (u + s) as f64 / 1e9;
    let idle = (up * visible_cpus(cg).len() as f64 - busy).max(0.0);
    format!("{up:.2} {idle:.2}\n")
}

/// /sys/devices/system/cpu/online for the visible CPUs.
pub fn cpu_online(cg: &Cgroups) -> String {
    match visible_cpus(cg).len() {
        1 => "0\n".into(),
        n => format!("0-{}\n", n - 1),
    }
}

/// /proc/swaps: the container's swap allowance, if it has one.
pub fn swaps(cg: &Cgroups) -> String {
    let mut out = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
    if let Some(limit) = cg.swap_limit().filter(|l| *l > 0) {
        out.push_str(&format!(
            "none\t\t\t\t\tvirtual\t\t{}\t\t0\t\t0\n",
            kib(limit)
        ));
    }
    out
}

/// /proc/diskstats with the container's reads and writes per device (blkio / io.stat);
/// devices it never touched show zeros.
pub fn diskstats(cg: &Cgroups) -> String {
    let counters = cg.io_counters();
    host("diskstats")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 14 {
                return format!("{l}\n");
            }
            let dev = format!("{}:{}", f[0], f[1]);
            let c = counters.get(&dev).copied().unwrap_or_default();
            format!(
                "{:>4} {:>7} {} {} 0 {} 0 {} 0 {} 0 0 0 0\n",
                f[0],
                f[1],
                f[2],
                c.reads,
                c.read_bytes / 512,
                c.writes,
                c.write_bytes / 512
            )
        })
        .collect()
}

/// Per-CPU load averages kept by the sampler (see [`crate::load`]).
pub fn loadavg(avgs: (f64, f64, f64), running: usize, total: usize) -> String {
    let last_pid = host("loadavg")
        .split_whitespace()
        .nth(4)
        .unwrap_or("0")
        .to_string();
    format!(
        "{:.2} {:.2} {:.2} {running}/{total} {last_pid}\n",
        avgs.0, avgs.1, avgs.2
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup v2 directory as the kernel lays it out, for a container with 256 MiB
    /// and 1.5 CPUs on CPUs 0-1 (this host's cgroup2 mount has no controllers, so the
    /// v2 reading is checked against files written the kernel's way).
    fn v2_fixture() -> (tempfile::TempDir, Cgroups) {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, v: &str| std::fs::write(d.path().join(f), v).unwrap();
        w("memory.max", "268435456\n");
        w("memory.current", "41943040\n");
        w(
            "memory.stat",
            "anon 20971520\nfile 10485760\nkernel 1048576\nshmem 4096\n",
        );
        w("memory.swap.max", "max\n");
        w("cpu.max", "150000 100000\n");
        w("cpuset.cpus.effective", "0-1\n");
        w(
            "cpu.stat",
            "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n",
        );
        w(
            "io.stat",
            "8:0 rbytes=1048576 wbytes=2097152 rios=10 wios=20 dbytes=0 dios=0\n",
        );
        w("cgroup.procs", "");
        w("pids.current", "7\n");
        let cg = Cgroups {
            v1: Vec::new(),
            v2: Some(d.path().to_path_buf()),
        };
        (d, cg)
    }

    /// The kB figure of a meminfo line.
    fn kib_field(mem: &str, key: &str) -> u64 {
        mem.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key} in {mem}"))
    }

    #[test]
    fn a_swap_allowance_shows_in_meminfo() {
        let (d, cg) = v2_fixture();
        std::fs::write(d.path().join("memory.swap.max"), "67108864\n").unwrap();
        std::fs::write(d.path().join("memory.swap.current"), "1048576\n").unwrap();
        let mem = meminfo(&cg);
        let field = |k: &str| kib_field(&mem, k);
        assert_eq!(field("SwapTotal:"), 65536, "{mem}");
        assert_eq!(field("SwapFree:"), 65536 - 1024, "{mem}");
    }

    #[test]
    fn cgroup_v2_limits_become_the_files() {
        let (_d, cg) = v2_fixture();
        assert_eq!(cg.memory_limit(), Some(268435456));
        assert_eq!(cg.memory_usage(), Some((41943040 - 10485760, 10485760)));
        assert_eq!(cg.swap_limit(), None);
        assert_eq!(cg.cpu_quota(), Some(1.5));
        assert_eq!(visible_cpus(&cg), vec![0, 1]);
        assert_eq!(cg.cpu_usage(), (2_000_000_000, 1_000_000_000));
        let io = cg.io_counters();
        assert_eq!(io["8:0"].reads, 10);
        assert_eq!(io["8:0"].write_bytes, 2097152);
        let mem = meminfo(&cg);
        let field = |k: &str| kib_field(&mem, k);
        assert_eq!(field("MemTotal:"), 262144);
        assert_eq!(field("MemAvailable:"), 262144 - 30720);
        assert_eq!(field("Cached:"), 10240);
        assert_eq!(cpu_online(&cg), "0-1\n");
        let host = crate::sysinfo::Answer::host();
        let si = crate::sysinfo::Answer::for_container(&cg, (1.0, 0.0, 0.0), None, host);
        assert_eq!(si.totalram, 268435456);
        assert_eq!(si.freeram, 268435456 - 41943040);
        assert_eq!(si.sharedram, 4096);
        assert_eq!((si.totalswap, si.procs, si.loads[0]), (0, 7, 1 << 16));
        let stat = stat(&cg);
        assert!(stat.starts_with("cpu  200 0 100 "), "{stat}");
        assert!(stat.contains("\ncpu1 100 0 50 "), "{stat}");
    }

    #[test]
    fn a_reader_without_limits_sees_the_host() {
        let cg = Cgroups::default();
        let total = |t: &str| t.lines().next().unwrap_or("").to_string();
        assert_eq!(total(&meminfo(&cg)), total(&host("meminfo")));
        assert_eq!(visible_cpus(&cg).len(), host_cpus().len());
    }
}
