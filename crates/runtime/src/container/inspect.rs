//! `ps`, `events` and `update`: looking at and adjusting a running container's cgroup.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use crate::cgroups::stats;
use crate::error::{Context, Error, Result};
use crate::state::{Container, DirLock, Root, Status};

/// `ps`: the container's pids as JSON, or `ps(1)` output filtered to them.
pub fn ps(root: &Root, id: &str, json: bool, ps_args: &[String]) -> Result<String> {
    let c = Container::load(root, id)?;
    if c.status() == Status::Stopped {
        return Err(Error::State(format!(
            "cannot ps container {id}: it is stopped"
        )));
    }
    let mut pids = c.record.cgroup.procs()?;
    if c.record.cgroup.procs_dir().is_none() && c.record.own_pid_ns {
        // No cgroup (rootless, where none could be made): the processes of the
        // container's pid namespace.
        pids = pid_namespace_members(c.record.pid);
    }
    if json {
        return Ok(serde_json::to_string(&pids).expect("pids serialize"));
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::unsupported(format!("run ps(1): {e} (install procps)")))?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Error::invalid("the ps output has no PID column"))?;
    let mut result = format!("{header}\n");
    for l in lines {
        if let Some(pid) = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
        {
            if pids.contains(&pid) {
                result.push_str(l);
                result.push('\n');
            }
        }
    }
    Ok(result)
}

/// `events`: one stats event with `once`, else stats every `interval` and an `oom`
/// event whenever the OOM killer strikes, until the container stops.
pub fn events(
    root: &Root,
    id: &str,
    once: bool,
    interval: Duration,
    out: &mut dyn Write,
) -> Result<()> {
    let c = Container::load(root, id)?;
    let stats_event = |c: &Container| serde_json::json!({"type": "stats", "id": id, "data": stats::collect(&c.record.cgroup)});
    if once {
        writeln!(out, "{}", stats_event(&c)).ctx(|| "write the event")?;
        return Ok(());
    }
    let mut ooms = stats::oom_kills(&c.record.cgroup);
    while c.status() != Status::Stopped {
        let now = stats::oom_kills(&c.record.cgroup);
        if now > ooms {
            writeln!(out, "{}", serde_json::json!({"type": "oom", "id": id}))
                .ctx(|| "write the event")?;
            ooms = now;
        }
        writeln!(out, "{}", stats_event(&c)).ctx(|| "write the event")?;
        out.flush().ctx(|| "flush events")?;
        std::thread::sleep(interval);
    }
    Ok(())
}

/// Resource changes given on the `update` command line.
#[derive(Clone, Debug, Default)]
pub struct UpdateFlags {
    /// A LinuxResources JSON file ("-" for stdin).
    pub resources: Option<std::path::PathBuf>,
    /// cpu.cfs_period_us.
    pub cpu_period: Option<u64>,
    /// cpu.cfs_quota_us.
    pub cpu_quota: Option<i64>,
    /// cpu.rt_period_us.
    pub cpu_rt_period: Option<u64>,
    /// cpu.rt_runtime_us.
    pub cpu_rt_runtime: Option<i64>,
    /// cpu.shares.
    pub cpu_share: Option<u64>,
    /// cpuset.cpus.
    pub cpuset_cpus: Option<String>,
    /// cpuset.mems.
    pub cpuset_mems: Option<String>,
    /// Memory limit.
    pub memory: Option<String>,
    /// Memory soft limit.
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit.
    pub memory_swap: Option<String>,
    /// Kernel memory limit.
    pub kernel_memory: Option<String>,
    /// Kernel TCP memory limit.
    pub kernel_memory_tcp: Option<String>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
    /// Block IO weight.
    pub blkio_weight: Option<u16>,
}

/// Parses a byte size like docker does: "1024", "512k", "64m", "2g", "-1".
pub fn parse_bytes(s: &str, flag: &str) -> Result<i64> {
    let bad = || Error::invalid(format!("{flag} {s:?}: expected a size like 512m, 2g or -1"));
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    if v < 0.0 {
        return Err(bad());
    }
    Ok((v * mult as f64) as i64)
}

fn read_resources(path: &Path) -> Result<LinuxResources> {
    let data = if path == Path::new("-") {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
            .ctx(|| "read resources from stdin")?;
        v
    } else {
        std::fs::read(path)
            .map_err(|e| Error::invalid(format!("--resources {}: {e}", path.display())))?
    };
    let de = &mut serde_json::Deserializer::from_slice(&data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        Error::invalid(format!(
            "--resources {}: field {}: {}",
            path.display(),
            e.path(),
            e.inner()
        ))
    })
}

/// `update`: applies new resource limits to a live container and records them.
pub fn update(root: &Root, id: &str, f: &UpdateFlags) -> Result<()> {
    let c = Container::load(root, id)?;
    let _lock = DirLock::take(&c.dir)?;
    if c.status_locked() == Status::Stopped {
        return Err(Error::State(format!(
            "cannot update container {id}: it is stopped"
        )));
    }
    let mut delta = match &f.resources {
        Some(p) => read_resources(p)?,
        None => LinuxResources::default(),
    };
    let mut mem = delta.memory().unwrap_or_default();
    let mut mem_set = delta.memory().is_some();
    for (flag, val, setter) in [
        (
            "--memory",
            &f.memory,
            LinuxMemory::set_limit as fn(&mut LinuxMemory, Option<i64>) -> &mut LinuxMemory,
        ),
        (
            "--memory-reservation",
            &f.memory_reservation,
            LinuxMemory::set_reservation,
        ),
        ("--memory-swap", &f.memory_swap, LinuxMemory::set_swap),
        ("--kernel-memory", &f.kernel_memory, LinuxMemory::set_kernel),
        (
            "--kernel-memory-tcp",
            &f.kernel_memory_tcp,
            LinuxMemory::set_kernel_tcp,
        ),
    ] {
        if let Some(v) = val {
            setter(&mut mem, Some(parse_bytes(v, flag)?));
            mem_set = true;
        }
    }
    if mem_set {
        delta.set_memory(Some(mem));
    }
    let mut cpu: LinuxCpu = delta.cpu().clone().unwrap_or_default();
    let mut cpu_set = delta.cpu().is_some();
    if let Some(v) = f.cpu_period {
        cpu.set_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = f.cpu_quota {
        cpu.set_quota(Some(v));
        cpu_set = true;
    }
    if let Some(v) = f.cpu_rt_period {
        cpu.set_realtime_period(Some(v));
        cpu_set = true;
    }
    if let Some(v) = f.cpu_rt_runtime {
        cpu.set_realtime_runtime(Some(v));
        cpu_set = true;
    }
    if let Some(v) = f.cpu_share {
        cpu.set_shares(Some(v));
        cpu_set = true;
    }
    if let Some(v) = &f.cpuset_cpus {
        cpu.set_cpus(Some(v.clone()));
        cpu_set = true;
    }
    if let Some(v) = &f.cpuset_mems {
        cpu.set_mems(Some(v.clone()));
        cpu_set = true;
    }
    if cpu_set {
        delta.set_cpu(Some(cpu));
    }
    if let Some(v) = f.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(v);
        delta.set_pids(Some(p));
    }
    if let Some(w) = f.blkio_weight {
        let mut b = delta.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        delta.set_block_io(Some(b));
    }
    crate::cgroups::apply(&c.record.cgroup, &delta, None)?;
    let mut spec = c.spec()?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let merged = merge(linux.resources().clone().unwrap_or_default(), &delta);
    linux.set_resources(Some(merged));
    spec.set_linux(Some(linux));
    Container::save_spec(&c.dir, &spec)
}

/// The recorded resources with the updated parts replaced.
fn merge(mut base: LinuxResources, d: &LinuxResources) -> LinuxResources {
    if let Some(m) = d.memory() {
        let mut cur = base.memory().unwrap_or_default();
        if m.limit().is_some() {
            cur.set_limit(m.limit());
        }
        if m.reservation().is_some() {
            cur.set_reservation(m.reservation());
        }
        if m.swap().is_some() {
            cur.set_swap(m.swap());
        }
        if m.kernel().is_some() {
            cur.set_kernel(m.kernel());
        }
        if m.kernel_tcp().is_some() {
            cur.set_kernel_tcp(m.kernel_tcp());
        }
        if m.swappiness().is_some() {
            cur.set_swappiness(m.swappiness());
        }
        base.set_memory(Some(cur));
    }
    if let Some(c) = d.cpu() {
        let mut cur = base.cpu().clone().unwrap_or_default();
        if c.shares().is_some() {
            cur.set_shares(c.shares());
        }
        if c.quota().is_some() {
            cur.set_quota(c.quota());
        }
        if c.period().is_some() {
            cur.set_period(c.period());
        }
        if c.realtime_period().is_some() {
            cur.set_realtime_period(c.realtime_period());
        }
        if c.realtime_runtime().is_some() {
            cur.set_realtime_runtime(c.realtime_runtime());
        }
        if c.cpus().is_some() {
            cur.set_cpus(c.cpus().clone());
        }
        if c.mems().is_some() {
            cur.set_mems(c.mems().clone());
        }
        base.set_cpu(Some(cur));
    }
    if d.pids().is_some() {
        base.set_pids(*d.pids());
    }
    if d.block_io().is_some() {
        base.set_block_io(d.block_io().clone());
    }
    if d.hugepage_limits().is_some() {
        base.set_hugepage_limits(d.hugepage_limits().clone());
    }
    if d.unified().is_some() {
        base.set_unified(d.unified().clone());
    }
    base
}

/// The host pids of the processes in the pid namespace of process `init`.
fn pid_namespace_members(init: i32) -> Vec<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns))
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("1024", "-m").unwrap(), 1024);
        assert_eq!(parse_bytes("512m", "-m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2G", "-m").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("1.5k", "-m").unwrap(), 1536);
        assert_eq!(parse_bytes("-1", "-m").unwrap(), -1);
        assert!(parse_bytes("lots", "-m").is_err());
    }
}
