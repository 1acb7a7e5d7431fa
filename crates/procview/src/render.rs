//! The files of the /proc view, computed from the reading container's cgroups with the
//! host's files as the template; for a reader outside any limit, the host's own.

use std::collections::BTreeSet;

use crate::cgroup::Cgroups;

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
    let oldest = cg
        .pids()
        .iter()
        .filter_map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(19)?.parse::<u64>().ok()
        })
        .min();
    match oldest {
        Some(start) => (host_uptime() - start as f64 / HZ as f64).max(0.0),
        None => host_uptime(),
    }
}

fn kib(b: u64) -> u64 {
    b / 1024
}

/// /proc/meminfo with the container's memory limit as the total.
pub fn meminfo(cg: &Cgroups) -> String {
    let text = host("meminfo");
    let Some(limit) = cg.memory_limit() else {
        return text;
    };
    let host_total = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(u64::MAX / 1024);
    let total = kib(limit).min(host_total);
    let (used, cache) = cg.memory_usage().unwrap_or((0, 0));
    let (used, cache) = (kib(used).min(total), kib(cache));
    let free = total.saturating_sub(used + cache);
    let avail = total.saturating_sub(used);
    let swap = cg.swap_limit().map(kib);
    text.lines()
        .map(|l| {
            let key = l.split(':').next().unwrap_or("");
            let v = match key {
                "MemTotal" => Some(total),
                "MemFree" => Some(free),
                "MemAvailable" => Some(avail),
                "Cached" => Some(cache.min(total)),
                "Buffers" | "SwapCached" => Some(0),
                "SwapTotal" | "SwapFree" => swap.or(Some(0)),
                _ => None,
            };
            match v {
                Some(v) => format!("{:<16}{v:>8} kB\n", format!("{key}:")),
                None => format!("{l}\n"),
            }
        })
        .collect()
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
            "anon 20971520\nfile 10485760\nkernel 1048576\n",
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
        let cg = Cgroups {
            v1: Vec::new(),
            v2: Some(d.path().to_path_buf()),
        };
        (d, cg)
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
        let field = |k: &str| {
            mem.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap()
        };
        assert_eq!(field("MemTotal:"), 262144);
        assert_eq!(field("MemAvailable:"), 262144 - 30720);
        assert_eq!(field("Cached:"), 10240);
        assert_eq!(cpu_online(&cg), "0-1\n");
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
