//! `berth inspect --explain`: what a running container is made of, every fact read from
//! the kernel (/proc/PID/ns, /proc/PID/cgroup and the cgroup files, /proc/PID/mountinfo,
//! /proc/PID/status) rather than from berth's records — the answers to "what does
//! mount do here?", "which layer holds this file?", "why does top show the host (or
//! not)?", "how is this different from chroot?" and "what does seccomp refuse?".

mod text;

pub use text::explain_text;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::docker::{Container as ContainerRecord, Engine, State};
use crate::error::{Error, Result};

const NAMESPACES: &[(&str, &str)] = &[
    ("mnt", "mounts"),
    ("pid", "process IDs"),
    ("net", "network stack"),
    ("ipc", "System V IPC and POSIX queues"),
    ("uts", "hostname"),
    ("user", "user and group IDs"),
    ("cgroup", "cgroup tree view"),
    ("time", "boot and monotonic clocks"),
];

fn ns_inode(pid: &str, ns: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok()?;
    let s = link.to_string_lossy();
    s[s.find('[')? + 1..s.find(']')?].parse().ok()
}

fn status_field(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn cap_names(hex: &str) -> Vec<String> {
    let bits = u64::from_str_radix(hex, 16).unwrap_or(0);
    crate::core::security::CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Per-controller cgroup facts, from /proc/PID/cgroup and the host's cgroup mounts.
fn cgroups(pid: i32) -> Vec<Value> {
    let layout = berth_cgroups::Layout::host();
    let mut out = Vec::new();
    for line in berth_cgroups::proc::read(Some(pid)).unwrap_or_default() {
        let path = Path::new(&line.path);
        let mut facts = serde_json::Map::new();
        let (name, base, files): (String, PathBuf, &[&str]) = if line.is_unified() {
            let Some(m) = &layout.unified else { continue };
            (
                "cgroup2".into(),
                layout.dir_on(m, "", path),
                &[
                    "memory.max",
                    "memory.current",
                    "cpu.max",
                    "pids.max",
                    "pids.current",
                    "cpuset.cpus.effective",
                ],
            )
        } else {
            let Some(m) = line.controllers.first().and_then(|c| layout.v1.get(c)) else {
                continue;
            };
            (
                line.controllers.join(","),
                layout.dir_on(m, &line.controllers[0], path),
                &[
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                    "cpu.cfs_quota_us",
                    "cpu.cfs_period_us",
                    "cpu.shares",
                    "pids.max",
                    "pids.current",
                    "cpuset.cpus",
                ],
            )
        };
        for f in files {
            if let Some(v) = read_trim(&base.join(f)) {
                facts.insert(f.to_string(), json!(v));
            }
        }
        if facts.is_empty() && name != "cgroup2" {
            continue;
        }
        out.push(
            json!({"controllers": name, "path": line.path, "directory": base, "files": facts}),
        );
    }
    out
}

type MountLine = berth_cgroups::mountinfo::MountInfo;

fn mountinfo(pid: &str) -> Vec<MountLine> {
    let pid = pid.parse().ok();
    berth_cgroups::mountinfo::read(pid).unwrap_or_default()
}

/// Where a bind mount's content lives on the host: the host mount of the same device
/// whose root is a prefix of the bind's root.
fn host_path(host: &[MountLine], m: &MountLine) -> Option<String> {
    host.iter()
        .filter(|h| {
            h.device == m.device
                && (m.root == h.root
                    || m.root
                        .starts_with(&format!("{}/", h.root.trim_end_matches('/'))))
        })
        .max_by_key(|h| h.root.len())
        .map(|h| {
            let rest = m
                .root
                .strip_prefix(h.root.trim_end_matches('/'))
                .unwrap_or("");
            format!(
                "{}{}",
                h.mount_point.to_string_lossy().trim_end_matches('/'),
                rest
            )
        })
}

/// Whiteouts and opaque directories in an upper directory (relative paths).
fn whiteouts(upper: &Path) -> (Vec<String>, Vec<String>, usize) {
    fn walk(dir: &Path, rel: &Path, w: &mut Vec<String>, o: &mut Vec<String>, n: &mut usize) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            *n += 1;
            if m.file_type().is_char_device() && m.rdev() == 0 {
                w.push(format!("/{}", r.display()));
            } else if m.is_dir() {
                if rustix::fs::lgetxattr(e.path(), "trusted.overlay.opaque", &mut [0u8; 4])
                    .is_ok_and(|k| k > 0)
                {
                    o.push(format!("/{}", r.display()));
                }
                walk(&e.path(), &r, w, o, n);
            }
        }
    }
    let (mut w, mut o, mut n) = (Vec::new(), Vec::new(), 0);
    walk(upper, Path::new(""), &mut w, &mut o, &mut n);
    (w, o, n)
}

/// The inode of the namespace pinned at `path` (a bind mount of an nsfs file has the
/// namespace's inode).
fn pinned_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let dir = std::fs::metadata(path.parent()?).ok()?;
    (m.dev() != dir.dev()).then(|| m.ino())
}

/// Which files of the container's /proc and /sys berth's /proc view serves (FUSE over
/// the kernel's), from its mount table.
fn procview_facts(own: &[MountLine]) -> Value {
    let served: Vec<String> = own
        .iter()
        .filter(|m| {
            m.fstype.starts_with("fuse") && m.source.contains("berth-procview")
                || m.fstype == "fuse.berth-procview"
        })
        .map(|m| m.mount_point.display().to_string())
        .collect();
    json!({"served": served})
}

/// How the container's root was switched: pivot_root(2), unless the host's own root
/// is an initramfs (ramfs or tmpfs), where berth-runtime must move the root filesystem
/// over / and chroot into it — read from the host's root (statfs) and the container's
/// mount table.
fn root_switch_facts(own: &[MountLine]) -> Value {
    let host_root = berth_cgroups::mountinfo::read(None)
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.mount_point == Path::new("/"))
        .map(|m| m.fstype)
        .unwrap_or_default();
    let initramfs = matches!(host_root.as_str(), "rootfs" | "ramfs" | "tmpfs");
    let roots = own
        .iter()
        .filter(|m| m.mount_point == Path::new("/"))
        .count();
    json!({
        "method": if initramfs { "move+chroot" } else { "pivot_root" },
        "host_root_fstype": host_root,
        "root_mounts": roots,
    })
}

/// What the container's seccomp profile (its config.json) refuses, grouped by the
/// error each call gets, and how many calls it allows.
fn seccomp_profile(config: &Path) -> Value {
    let Ok(text) = std::fs::read(config) else {
        return Value::Null;
    };
    let Ok(spec) = serde_json::from_slice::<Value>(&text) else {
        return Value::Null;
    };
    let Some(p) = spec.pointer("/linux/seccomp") else {
        return Value::Null;
    };
    let mut refused: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut allowed = 0;
    for rule in p["syscalls"].as_array().into_iter().flatten() {
        let names: Vec<String> = rule["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(String::from))
            .collect();
        match rule["action"].as_str() {
            Some("SCMP_ACT_ALLOW") => allowed += names.len(),
            Some("SCMP_ACT_ERRNO") => refused
                .entry(rule["errnoRet"].as_u64().unwrap_or(1))
                .or_default()
                .extend(names),
            _ => {}
        }
    }
    let default_errno = p["defaultErrnoRet"].as_u64();
    json!({
        "default_action": p["defaultAction"],
        "default_errno": default_errno,
        "default_error": default_errno.map(errno_text),
        "allowed": allowed,
        "refused": refused.into_iter().map(|(errno, calls)| json!({
            "errno": errno,
            "error": errno_text(errno),
            "calls": calls,
        })).collect::<Vec<_>>(),
    })
}

fn errno_text(n: u64) -> String {
    let name = match n {
        1 => "EPERM",
        38 => "ENOSYS",
        13 => "EACCES",
        22 => "EINVAL",
        _ => "",
    };
    let text = std::io::Error::from_raw_os_error(n as i32).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    if name.is_empty() {
        text
    } else {
        format!("{name} ({text})")
    }
}

impl Engine {
    /// Which sandbox the container is in, and which of its namespaces are the
    /// sandbox's (by inode: the sandbox's pins and its infra process).
    fn sandbox_facts(&self, rec: &ContainerRecord, namespaces: &[Value]) -> Value {
        let Ok(sb) = self.core().sandbox(&rec.sandbox_id) else {
            return Value::Null;
        };
        let mut pins: Vec<(&str, PathBuf)> = berth_monitor::sandbox::PINNED_KINDS
            .iter()
            .map(|k| (*k, berth_monitor::sandbox::pin_path(&sb.id, k)))
            .collect();
        pins.push(("net", berth_net::netns::path_of(&sb.id)));
        let infra = sb.infra.map(|(p, _)| p.to_string());
        let shared: Vec<String> = namespaces
            .iter()
            .filter_map(|n| {
                let kind = n["type"].as_str()?;
                let ino = n["inode"].as_u64()?;
                let by_pin = pins
                    .iter()
                    .any(|(k, p)| *k == kind && pinned_inode(p) == Some(ino));
                let by_infra = infra
                    .as_deref()
                    .is_some_and(|p| ns_inode(p, kind) == Some(ino));
                (by_pin || by_infra).then(|| kind.to_string())
            })
            .collect();
        json!({
            "id": sb.id,
            "kind": if sb.lean() { "the container's own" } else { "pod" },
            "name": if sb.lean() { String::new() } else {
                format!("{}/{}", sb.config.metadata.namespace, sb.config.metadata.name)
            },
            "infra_pid": sb.infra.map(|(p, _)| p),
            "shares": shared,
            "network": sb.network,
        })
    }

    /// The facts of a running container, as JSON.
    pub fn explain(&self, rec: &ContainerRecord) -> Result<Value> {
        let pid = match self.state(rec) {
            State::Running(p) | State::Paused(p) | State::Orphaned(p) => p,
            s => {
                return Err(Error::Conflict(format!(
                    "container {} is {}: --explain reads a running container's process",
                    rec.name,
                    s.word()
                )))
            }
        };
        // Which other containers' inits run, to name shared namespaces.
        let others: Vec<(String, i32)> = self
            .list()?
            .into_iter()
            .filter(|r| r.id != rec.id)
            .filter_map(|r| match self.state(&r) {
                State::Running(p) | State::Paused(p) | State::Orphaned(p) => Some((r.name, p)),
                _ => None,
            })
            .collect();
        let mut namespaces = Vec::new();
        for (ns, what) in NAMESPACES {
            let Some(ino) = ns_inode(&pid.to_string(), ns) else {
                continue;
            };
            // "The host" is where berth itself runs.
            let shared = if ns_inode("self", ns) == Some(ino) {
                "the host".to_string()
            } else if let Some((n, _)) = others
                .iter()
                .find(|(_, p)| ns_inode(&p.to_string(), ns) == Some(ino))
            {
                format!("container {n}")
            } else {
                String::new()
            };
            namespaces
                .push(json!({"type": ns, "isolates": what, "inode": ino, "shared_with": shared}));
        }
        let own = mountinfo(&pid.to_string());
        let host = mountinfo("self");
        let root = own.iter().find(|m| m.mount_point == Path::new("/"));
        let store = self.images().root().to_path_buf();
        let mut layers = Vec::new();
        let mut upper_facts = Value::Null;
        if let Some(r) = root.filter(|r| r.fstype == "overlay") {
            let opt = |k: &str| {
                r.super_options
                    .split(',')
                    .find_map(|o| o.strip_prefix(&format!("{k}=")))
                    .map(String::from)
            };
            let abs = |p: &str| {
                if p.starts_with('/') {
                    PathBuf::from(p)
                } else {
                    store.join(p)
                }
            };
            let by_dir: BTreeMap<PathBuf, String> = self
                .images()
                .snapshots()?
                .into_iter()
                .map(|s| (self.images().snapshot_dir(s.id), s.diff_id.to_string()))
                .collect();
            let lowers: Vec<String> = opt("lowerdir")
                .map(|l| l.split(':').map(String::from).collect())
                .unwrap_or_default();
            let n = lowers.len();
            for (i, l) in lowers.iter().enumerate() {
                let p = abs(l);
                let role = if p.ends_with("init") {
                    "init layer: /etc/hosts, /etc/hostname, /etc/resolv.conf (left out of commit)"
                        .to_string()
                } else {
                    format!("image layer {} of {}", n - i, n - 1)
                };
                layers.push(json!({"dir": p, "role": role, "diff_id": by_dir.get(&p)}));
            }
            if let Some(u) = opt("upperdir") {
                let up = abs(&u);
                let (w, o, count) = whiteouts(&up);
                upper_facts = json!({"dir": up, "entries": count, "whiteouts": w, "opaque_dirs": o, "workdir": opt("workdir").map(|x| abs(&x))});
            }
        }
        let mounts: Vec<Value> = own
            .iter()
            .filter(|m| m.mount_point != Path::new("/"))
            .map(|m| {
                let bind = m.root != "/" && !matches!(m.fstype.as_str(), "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" | "cgroup" | "cgroup2");
                json!({
                    "destination": m.mount_point,
                    "type": m.fstype,
                    "source": m.source,
                    "options": m.options,
                    "bind_of": if bind { host_path(&host, m).map(Value::from).unwrap_or(Value::Null) } else { Value::Null },
                })
            })
            .collect();
        let sandbox = self.sandbox_facts(rec, &namespaces);
        let procview = procview_facts(&own);
        let root_switch = root_switch_facts(&own);
        let profile = seccomp_profile(&self.paths(&rec.id).config());
        let seccomp = match status_field(pid, "Seccomp:").as_str() {
            "0" => "disabled",
            "1" => "strict",
            "2" => "filter",
            _ => "unknown",
        };
        Ok(json!({
            "id": rec.id,
            "name": rec.name,
            "pid": pid,
            "command": String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ").trim().to_string(),
            "namespaces": namespaces,
            "cgroups": cgroups(pid),
            "rootfs": {"type": root.map(|r| r.fstype.clone()), "layers": layers, "upper": upper_facts},
            "root_switch": root_switch,
            "sandbox": sandbox,
            "proc_view": procview,
            "mounts": mounts,
            "security": {
                "uid": status_field(pid, "Uid:").split_whitespace().next().unwrap_or("").to_string(),
                "gid": status_field(pid, "Gid:").split_whitespace().next().unwrap_or("").to_string(),
                "capabilities_effective": cap_names(&status_field(pid, "CapEff:")),
                "capabilities_bounding": cap_names(&status_field(pid, "CapBnd:")),
                "no_new_privs": status_field(pid, "NoNewPrivs:") == "1",
                "seccomp": seccomp,
                "seccomp_filters": status_field(pid, "Seccomp_filters:"),
                "seccomp_profile": profile,
            },
        }))
    }
}
