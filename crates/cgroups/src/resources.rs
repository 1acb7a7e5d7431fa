//! Writing `linux.resources` into cgroup files, on v1 and v2. Every failure names the
//! OCI field, the file, and the value; a setting the host cannot apply is an error,
//! never skipped.

use std::fmt::Display;
use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use crate::devices::DeviceRules;
use crate::error::{Error, Result};
use crate::paths::{write_file, CgroupPaths};

/// Applies resources to a container's cgroups. `devices` is the full effective device
/// rule list (see [`DeviceRules::for_spec`]).
pub fn apply(
    paths: &CgroupPaths,
    res: &LinuxResources,
    devices: Option<&DeviceRules>,
) -> Result<()> {
    if paths.v2_only {
        let dir = paths
            .unified
            .as_deref()
            .ok_or_else(|| Error::unsupported("no cgroup2 directory for this container"))?;
        apply_v2(dir, res)?;
        if let Some(rules) = devices {
            crate::bpf_devices::install(dir, rules)?;
        }
    } else {
        apply_v1(paths, res)?;
        if let Some(rules) = devices {
            match paths.v1_dir("devices") {
                Some(d) => rules.write_v1(d)?,
                None => {
                    if let Some(u) = paths.unified.as_deref() {
                        crate::bpf_devices::install(u, rules)?;
                    }
                }
            }
        }
        if let Some(unified) = res.unified().as_ref().filter(|u| !u.is_empty()) {
            let dir = paths.unified.as_deref().ok_or_else(|| {
                Error::unsupported(
                    "linux.resources.unified: this host has no cgroup2 hierarchy (the keys are cgroup v2 files)",
                )
            })?;
            apply_unified(dir, unified)?;
        }
    }
    Ok(())
}

fn set(dir: &Path, file: &str, value: impl Display, field: &str) -> Result<()> {
    let path = dir.join(file);
    let value = value.to_string();
    write_file(&path, &value).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::unsupported(format!(
            "{field}: this kernel has no {} (the setting cannot be applied on this host; remove it)",
            path.display()
        )),
        _ => Error::invalid(format!(
            "{field}: the kernel rejected {value:?} for {}: {}",
            path.display(),
            e.raw_os_error()
                .map(|n| std::io::Error::from_raw_os_error(n).to_string())
                .unwrap_or_else(|| e.to_string())
        )),
    })
}

fn need<'a>(paths: &'a CgroupPaths, ctrl: &str, field: &str) -> Result<&'a Path> {
    paths.v1_dir(ctrl).ok_or_else(|| {
        Error::unsupported(format!(
            "{field}: the {ctrl} cgroup controller is not mounted on this host (mounted: {})",
            paths.v1.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

fn limit_str(v: i64) -> String {
    if v < 0 {
        "-1".to_string()
    } else {
        v.to_string()
    }
}

fn max_str(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

fn apply_v1(paths: &CgroupPaths, res: &LinuxResources) -> Result<()> {
    if let Some(mem) = res.memory() {
        memory_v1(paths, mem)?;
    }
    if let Some(cpu) = res.cpu() {
        cpu_v1(paths, cpu)?;
    }
    if let Some(pids) = res.pids() {
        let f = "linux.resources.pids.limit";
        let dir = need(paths, "pids", f)?;
        set(
            dir,
            "pids.max",
            max_str(if pids.limit() <= 0 { -1 } else { pids.limit() }),
            f,
        )?;
    }
    if let Some(blkio) = res.block_io() {
        blkio_v1(paths, blkio)?;
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let f = format!("linux.resources.hugepageLimits[{i}]");
        let size = hugetlb_size(h.page_size(), &f)?;
        // Hybrid hosts may have hugetlb on the cgroup2 hierarchy instead of a v1 one.
        match (paths.v1_dir("hugetlb"), paths.unified.as_deref()) {
            (Some(dir), _) => set(
                dir,
                &format!("hugetlb.{size}.limit_in_bytes"),
                h.limit(),
                &f,
            )?,
            (None, Some(u)) if has_controller(u, "hugetlb") => {
                set(u, &format!("hugetlb.{size}.max"), max_str(h.limit()), &f)?
            }
            _ => {
                need(paths, "hugetlb", &f)?;
            }
        }
    }
    if let Some(net) = res.network() {
        if let Some(id) = net.class_id() {
            let f = "linux.resources.network.classID";
            set(need(paths, "net_cls", f)?, "net_cls.classid", id, f)?;
        }
        for (i, p) in net.priorities().iter().flatten().enumerate() {
            let f = format!("linux.resources.network.priorities[{i}]");
            let dir = need(paths, "net_prio", &f)?;
            set(
                dir,
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
                &f,
            )?;
        }
    }
    for (dev, limits) in res.rdma().iter().flatten() {
        let f = format!("linux.resources.rdma[{dev:?}]");
        let dir = need(paths, "rdma", &f)?;
        set(
            dir,
            "rdma.max",
            rdma_line(dev, limits.hca_handles(), limits.hca_objects()),
            &f,
        )?;
    }
    Ok(())
}

fn memory_v1(paths: &CgroupPaths, mem: &LinuxMemory) -> Result<()> {
    let dir = need(paths, "memory", "linux.resources.memory")?;
    let limit = mem.limit();
    let swap = mem.swap();
    let lf = "linux.resources.memory.limit";
    let sf = "linux.resources.memory.swap";
    if swap.is_some() && !dir.join("memory.memsw.limit_in_bytes").exists() {
        return Err(Error::unsupported(format!(
            "{sf}: swap accounting is not enabled in this kernel (no memory.memsw.limit_in_bytes; boot with swapaccount=1 or remove the field)"
        )));
    }
    if let (Some(l), Some(s)) = (limit, swap) {
        if s >= 0 && l >= 0 && s < l {
            return Err(Error::invalid(format!(
                "{sf} ({s}) must be at least {lf} ({l}): swap is the limit of memory plus swap"
            )));
        }
    }
    match (limit, swap) {
        (Some(l), Some(s)) => {
            // memsw must stay >= limit at every step, so the order of writes depends on
            // whether the limits go up or down.
            let cur = std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            if s < 0 || cur < s {
                set(dir, "memory.memsw.limit_in_bytes", limit_str(s), sf)?;
                set(dir, "memory.limit_in_bytes", limit_str(l), lf)?;
            } else {
                set(dir, "memory.limit_in_bytes", limit_str(l), lf)?;
                set(dir, "memory.memsw.limit_in_bytes", limit_str(s), sf)?;
            }
        }
        (Some(l), None) => set(dir, "memory.limit_in_bytes", limit_str(l), lf)?,
        (None, Some(s)) => set(dir, "memory.memsw.limit_in_bytes", limit_str(s), sf)?,
        (None, None) => {}
    }
    if let Some(r) = mem.reservation() {
        set(
            dir,
            "memory.soft_limit_in_bytes",
            limit_str(r),
            "linux.resources.memory.reservation",
        )?;
    }
    if let Some(k) = mem.kernel() {
        set(
            dir,
            "memory.kmem.limit_in_bytes",
            limit_str(k),
            "linux.resources.memory.kernel",
        )?;
    }
    if let Some(k) = mem.kernel_tcp() {
        set(
            dir,
            "memory.kmem.tcp.limit_in_bytes",
            limit_str(k),
            "linux.resources.memory.kernelTCP",
        )?;
    }
    if let Some(s) = mem.swappiness() {
        if s > 100 {
            return Err(Error::invalid(format!(
                "linux.resources.memory.swappiness {s} is out of range (0 to 100)"
            )));
        }
        set(
            dir,
            "memory.swappiness",
            s,
            "linux.resources.memory.swappiness",
        )?;
    }
    if mem.disable_oom_killer() == Some(true) {
        set(
            dir,
            "memory.oom_control",
            1,
            "linux.resources.memory.disableOOMKiller",
        )?;
    }
    if let Some(h) = mem.use_hierarchy() {
        set(
            dir,
            "memory.use_hierarchy",
            u8::from(h),
            "linux.resources.memory.useHierarchy",
        )?;
    }
    Ok(())
}

fn cpu_v1(paths: &CgroupPaths, cpu: &LinuxCpu) -> Result<()> {
    let needs_cpu = cpu.shares().is_some()
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.burst().is_some()
        || cpu.realtime_period().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.idle().is_some();
    if needs_cpu {
        let dir = need(paths, "cpu", "linux.resources.cpu")?;
        if let Some(s) = cpu.shares() {
            set(dir, "cpu.shares", s, "linux.resources.cpu.shares")?;
        }
        if let Some(p) = cpu.period() {
            set(dir, "cpu.cfs_period_us", p, "linux.resources.cpu.period")?;
        }
        if let Some(q) = cpu.quota() {
            set(
                dir,
                "cpu.cfs_quota_us",
                limit_str(q),
                "linux.resources.cpu.quota",
            )?;
        }
        if let Some(b) = cpu.burst() {
            set(dir, "cpu.cfs_burst_us", b, "linux.resources.cpu.burst")?;
        }
        if let Some(p) = cpu.realtime_period() {
            set(
                dir,
                "cpu.rt_period_us",
                p,
                "linux.resources.cpu.realtimePeriod",
            )?;
        }
        if let Some(r) = cpu.realtime_runtime() {
            set(
                dir,
                "cpu.rt_runtime_us",
                r,
                "linux.resources.cpu.realtimeRuntime",
            )?;
        }
        if let Some(i) = cpu.idle() {
            set(dir, "cpu.idle", i, "linux.resources.cpu.idle")?;
        }
    }
    if let Some(c) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
        let f = "linux.resources.cpu.cpus";
        set(need(paths, "cpuset", f)?, "cpuset.cpus", c, f)?;
    }
    if let Some(m) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
        let f = "linux.resources.cpu.mems";
        set(need(paths, "cpuset", f)?, "cpuset.mems", m, f)?;
    }
    Ok(())
}

fn blkio_v1(paths: &CgroupPaths, b: &LinuxBlockIo) -> Result<()> {
    let base = "linux.resources.blockIO";
    let dir = need(paths, "blkio", base)?;
    let bfq = !dir.join("blkio.weight").exists() && dir.join("blkio.bfq.weight").exists();
    let (weight_file, weight_dev_file) = if bfq {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    } else {
        ("blkio.weight", "blkio.weight_device")
    };
    if let Some(w) = b.weight() {
        set(dir, weight_file, w, &format!("{base}.weight"))?;
    }
    if let Some(w) = b.leaf_weight() {
        set(dir, "blkio.leaf_weight", w, &format!("{base}.leafWeight"))?;
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        let f = format!("{base}.weightDevice[{i}]");
        if let Some(w) = d.weight() {
            set(
                dir,
                weight_dev_file,
                format!("{}:{} {w}", d.major(), d.minor()),
                &f,
            )?;
        }
        if let Some(w) = d.leaf_weight() {
            set(
                dir,
                "blkio.leaf_weight_device",
                format!("{}:{} {w}", d.major(), d.minor()),
                &f,
            )?;
        }
    }
    let throttles = [
        (
            "throttleReadBpsDevice",
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "throttleWriteBpsDevice",
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "throttleReadIOPSDevice",
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "throttleWriteIOPSDevice",
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ];
    for (name, file, list) in throttles {
        for (i, d) in list.iter().flatten().enumerate() {
            let f = format!("{base}.{name}[{i}]");
            set(
                dir,
                file,
                format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                &f,
            )?;
        }
    }
    Ok(())
}

/// cpu.shares (2..262144) to cpu.weight (1..10000), the conversion runc and the
/// kernel documentation use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262144) - 2) * 9999) / 262142
}

/// blkio.weight (10..1000) to io.weight (1..10000).
pub fn blkio_weight_to_io(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990
}

fn apply_v2(dir: &Path, res: &LinuxResources) -> Result<()> {
    if let Some(mem) = res.memory() {
        let limit = mem.limit();
        if let Some(l) = limit {
            set(
                dir,
                "memory.max",
                max_str(l),
                "linux.resources.memory.limit",
            )?;
        }
        if let Some(s) = mem.swap() {
            let f = "linux.resources.memory.swap";
            let v = match (s, limit) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(Error::invalid(format!(
                            "{f} ({s}) must be at least linux.resources.memory.limit ({l}): swap is the limit of memory plus swap"
                        )));
                    }
                    (s - l).to_string()
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "{f} is set without linux.resources.memory.limit; on cgroup v2 the swap limit is derived from both"
                    )))
                }
            };
            set(dir, "memory.swap.max", v, f)?;
        }
        if let Some(r) = mem.reservation() {
            set(
                dir,
                "memory.low",
                max_str(r),
                "linux.resources.memory.reservation",
            )?;
        }
        if mem.kernel().is_some() || mem.kernel_tcp().is_some() {
            return Err(Error::unsupported(
                "linux.resources.memory.kernel/kernelTCP: kernel memory limits do not exist on cgroup v2 (remove them)",
            ));
        }
        if mem.swappiness().is_some_and(|s| s != 60) {
            return Err(Error::unsupported(
                "linux.resources.memory.swappiness: cgroup v2 has no per-cgroup swappiness (remove the field)",
            ));
        }
        if mem.disable_oom_killer() == Some(true) {
            return Err(Error::unsupported(
                "linux.resources.memory.disableOOMKiller: cgroup v2 cannot disable the OOM killer (remove the field)",
            ));
        }
    }
    if let Some(cpu) = res.cpu() {
        if let Some(s) = cpu.shares().filter(|s| *s != 0) {
            set(
                dir,
                "cpu.weight",
                shares_to_weight(s),
                "linux.resources.cpu.shares",
            )?;
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let quota = match cpu.quota() {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let period = cpu.period().unwrap_or(100_000);
            set(
                dir,
                "cpu.max",
                format!("{quota} {period}"),
                "linux.resources.cpu.quota",
            )?;
        }
        if let Some(b) = cpu.burst() {
            set(dir, "cpu.max.burst", b, "linux.resources.cpu.burst")?;
        }
        if cpu.realtime_period().is_some() || cpu.realtime_runtime().is_some() {
            return Err(Error::unsupported(
                "linux.resources.cpu.realtimePeriod/realtimeRuntime: cgroup v2 has no realtime bandwidth control (remove them)",
            ));
        }
        if let Some(i) = cpu.idle() {
            set(dir, "cpu.idle", i, "linux.resources.cpu.idle")?;
        }
        if let Some(c) = cpu.cpus().as_ref().filter(|c| !c.is_empty()) {
            set(dir, "cpuset.cpus", c, "linux.resources.cpu.cpus")?;
        }
        if let Some(m) = cpu.mems().as_ref().filter(|m| !m.is_empty()) {
            set(dir, "cpuset.mems", m, "linux.resources.cpu.mems")?;
        }
    }
    if let Some(p) = res.pids() {
        let v = if p.limit() <= 0 { -1 } else { p.limit() };
        set(dir, "pids.max", max_str(v), "linux.resources.pids.limit")?;
    }
    if let Some(b) = res.block_io() {
        let base = "linux.resources.blockIO";
        if let Some(w) = b.weight() {
            if dir.join("io.bfq.weight").exists() {
                set(dir, "io.bfq.weight", w, &format!("{base}.weight"))?;
            } else {
                set(
                    dir,
                    "io.weight",
                    blkio_weight_to_io(w),
                    &format!("{base}.weight"),
                )?;
            }
        }
        if b.leaf_weight().is_some() {
            return Err(Error::unsupported(format!(
                "{base}.leafWeight: cgroup v2 has no leaf weights (remove the field)"
            )));
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            if let Some(w) = d.weight() {
                set(
                    dir,
                    "io.bfq.weight",
                    format!("{}:{} {w}", d.major(), d.minor()),
                    &format!("{base}.weightDevice[{i}]"),
                )?;
            }
        }
        let throttles = [
            (
                "throttleReadBpsDevice",
                "rbps",
                b.throttle_read_bps_device(),
            ),
            (
                "throttleWriteBpsDevice",
                "wbps",
                b.throttle_write_bps_device(),
            ),
            (
                "throttleReadIOPSDevice",
                "riops",
                b.throttle_read_iops_device(),
            ),
            (
                "throttleWriteIOPSDevice",
                "wiops",
                b.throttle_write_iops_device(),
            ),
        ];
        for (name, key, list) in throttles {
            for (i, d) in list.iter().flatten().enumerate() {
                let v = if d.rate() == 0 {
                    "max".to_string()
                } else {
                    d.rate().to_string()
                };
                set(
                    dir,
                    "io.max",
                    format!("{}:{} {key}={v}", d.major(), d.minor()),
                    &format!("{base}.{name}[{i}]"),
                )?;
            }
        }
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let f = format!("linux.resources.hugepageLimits[{i}]");
        let size = hugetlb_size(h.page_size(), &f)?;
        set(dir, &format!("hugetlb.{size}.max"), max_str(h.limit()), &f)?;
    }
    if let Some(net) = res.network() {
        if net.class_id().is_some() || net.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(Error::unsupported(
                "linux.resources.network: net_cls/net_prio do not exist on cgroup v2 (remove the field)",
            ));
        }
    }
    for (dev, limits) in res.rdma().iter().flatten() {
        let f = format!("linux.resources.rdma[{dev:?}]");
        set(
            dir,
            "rdma.max",
            rdma_line(dev, limits.hca_handles(), limits.hca_objects()),
            &f,
        )?;
    }
    if let Some(unified) = res.unified() {
        apply_unified(dir, unified)?;
    }
    Ok(())
}

fn apply_unified(dir: &Path, unified: &std::collections::HashMap<String, String>) -> Result<()> {
    let mut keys: Vec<_> = unified.keys().collect();
    keys.sort();
    for k in keys {
        let f = format!("linux.resources.unified[{k:?}]");
        if k.contains('/') || k.starts_with('.') || k.is_empty() {
            return Err(Error::invalid(format!("{f}: not a cgroup file name")));
        }
        if !dir.join(k).exists() {
            return Err(Error::unsupported(format!(
                "{f}: {} does not exist (is the controller enabled for this cgroup?)",
                dir.join(k).display()
            )));
        }
        set(dir, k, &unified[k], &f)?;
    }
    Ok(())
}

/// Whether a cgroup2 directory has a controller enabled (listed in cgroup.controllers).
fn has_controller(dir: &Path, name: &str) -> bool {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .is_ok_and(|s| s.split_whitespace().any(|c| c == name))
}

fn rdma_line(dev: &str, handles: Option<u32>, objects: Option<u32>) -> String {
    let mut line = dev.to_string();
    if let Some(h) = handles {
        line.push_str(&format!(" hca_handle={h}"));
    }
    if let Some(o) = objects {
        line.push_str(&format!(" hca_object={o}"));
    }
    line
}

/// "2MB" → "2MB", "1GB" → "1GB", validating the shape the hugetlb files use.
fn hugetlb_size(s: &str, field: &str) -> Result<String> {
    let ok = s
        .strip_suffix("KB")
        .or_else(|| s.strip_suffix("MB"))
        .or_else(|| s.strip_suffix("GB"))
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::invalid(format!(
            "{field}.pageSize {s:?} is not a page size like 2MB or 1GB"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262144), 10000);
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10000);
        assert_eq!(blkio_weight_to_io(500), 4950);
    }

    #[test]
    fn hugetlb_sizes() {
        assert!(hugetlb_size("2MB", "f").is_ok());
        assert!(hugetlb_size("1GB", "f").is_ok());
        assert!(hugetlb_size("2mb", "f").is_err());
        assert!(hugetlb_size("MB", "f").is_err());
        assert!(hugetlb_size("2ÅB", "f").is_err());
    }
}
