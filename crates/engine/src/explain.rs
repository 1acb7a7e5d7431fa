//! `berth inspect --explain`: what a running container is made of, every fact read from
//! the kernel (/proc/PID/ns, /proc/PID/cgroup and the cgroup files, /proc/PID/mountinfo,
//! /proc/PID/status) rather than from berth's records — the answers to "what does
//! mount do here?", "which layer holds this file?" and "why does top show the host?".

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

/// Per-controller cgroup facts.
fn cgroups(pid: i32) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let dir = |mount: &str| PathBuf::from(format!("/sys/fs/cgroup/{mount}{path}"));
        let mut facts = serde_json::Map::new();
        let (name, base) = if ctrls.is_empty() {
            let base = if Path::new("/sys/fs/cgroup/unified").is_dir() {
                dir("unified")
            } else {
                dir("")
            };
            for (k, file) in [
                ("memory.max", "memory.max"),
                ("memory.current", "memory.current"),
                ("cpu.max", "cpu.max"),
                ("pids.max", "pids.max"),
                ("pids.current", "pids.current"),
                ("cpuset.cpus.effective", "cpuset.cpus.effective"),
            ] {
                if let Some(v) = read_trim(&base.join(file)) {
                    facts.insert(k.into(), json!(v));
                }
            }
            ("cgroup2".to_string(), base)
        } else {
            let base = dir(ctrls);
            for (k, file) in [
                ("memory.limit_in_bytes", "memory.limit_in_bytes"),
                ("memory.usage_in_bytes", "memory.usage_in_bytes"),
                ("cpu.cfs_quota_us", "cpu.cfs_quota_us"),
                ("cpu.cfs_period_us", "cpu.cfs_period_us"),
                ("cpu.shares", "cpu.shares"),
                ("pids.max", "pids.max"),
                ("pids.current", "pids.current"),
                ("cpuset.cpus", "cpuset.cpus"),
            ] {
                if let Some(v) = read_trim(&base.join(file)) {
                    facts.insert(k.into(), json!(v));
                }
            }
            (ctrls.to_string(), base)
        };
        if facts.is_empty() && name != "cgroup2" {
            continue;
        }
        out.push(json!({"controllers": name, "path": path, "directory": base, "files": facts}));
    }
    out
}

struct MountLine {
    mount_point: String,
    root: String,
    dev: String,
    fstype: String,
    source: String,
    options: String,
    super_options: String,
}

fn mountinfo(pid: &str) -> Vec<MountLine> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let p: Vec<&str> = pre.split(' ').collect();
            let q: Vec<&str> = post.split(' ').collect();
            Some(MountLine {
                root: unescape(p.get(3)?),
                dev: p.get(2)?.to_string(),
                mount_point: unescape(p.get(4)?),
                options: p.get(5)?.to_string(),
                fstype: q.first()?.to_string(),
                source: q.get(1).map(|s| unescape(s)).unwrap_or_default(),
                super_options: q.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Where a bind mount's content lives on the host: the host mount of the same device
/// whose root is a prefix of the bind's root.
fn host_path(host: &[MountLine], m: &MountLine) -> Option<String> {
    host.iter()
        .filter(|h| {
            h.dev == m.dev
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
            format!("{}{}", h.mount_point.trim_end_matches('/'), rest)
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

impl Engine {
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
        let root = own.iter().find(|m| m.mount_point == "/");
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
            .filter(|m| m.mount_point != "/")
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
            "mounts": mounts,
            "security": {
                "uid": status_field(pid, "Uid:").split_whitespace().next().unwrap_or("").to_string(),
                "gid": status_field(pid, "Gid:").split_whitespace().next().unwrap_or("").to_string(),
                "capabilities_effective": cap_names(&status_field(pid, "CapEff:")),
                "capabilities_bounding": cap_names(&status_field(pid, "CapBnd:")),
                "no_new_privs": status_field(pid, "NoNewPrivs:") == "1",
                "seccomp": seccomp,
                "seccomp_filters": status_field(pid, "Seccomp_filters:"),
            },
        }))
    }
}

/// The facts in plain words.
pub fn explain_text(v: &Value) -> String {
    let s = |x: &Value| x.as_str().unwrap_or("").to_string();
    let mut o = String::new();
    o += &format!(
        "Container {} ({}) is process {} on the host, running {:?}.\n\n",
        s(&v["name"]),
        &s(&v["id"])[..12.min(s(&v["id"]).len())],
        v["pid"],
        s(&v["command"])
    );
    o += &format!(
        "Namespaces (from /proc/{}/ns): what the container sees of its own\n",
        v["pid"]
    );
    for n in v["namespaces"].as_array().into_iter().flatten() {
        let shared = s(&n["shared_with"]);
        o += &format!(
            "  {:<7} {:<12} {:<32} {}\n",
            s(&n["type"]),
            n["inode"],
            s(&n["isolates"]),
            if shared.is_empty() {
                "its own".to_string()
            } else {
                format!("shared with {shared}")
            }
        );
    }
    o += &format!(
        "\nCgroups (from /proc/{}/cgroup): what the container may use\n",
        v["pid"]
    );
    for c in v["cgroups"].as_array().into_iter().flatten() {
        let files: Vec<String> = c["files"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, x)| format!("{k}={}", s(x)))
            .collect();
        o += &format!(
            "  {:<22} {}  {}\n",
            s(&c["controllers"]),
            s(&c["path"]),
            files.join(" ")
        );
    }
    o += &format!(
        "\nRoot filesystem (from /proc/{}/mountinfo): {}, top to bottom\n",
        v["pid"],
        s(&v["rootfs"]["type"])
    );
    let up = &v["rootfs"]["upper"];
    if !up.is_null() {
        o += &format!(
            "  upper (the container's own writes): {}  ({} entries)\n",
            s(&up["dir"]),
            up["entries"]
        );
        for w in up["whiteouts"].as_array().into_iter().flatten() {
            o += &format!(
                "    whiteout: {} is deleted (a 0:0 character device hides it below)\n",
                s(w)
            );
        }
        for d in up["opaque_dirs"].as_array().into_iter().flatten() {
            o += &format!("    opaque: {} hides everything below it\n", s(d));
        }
    }
    for l in v["rootfs"]["layers"].as_array().into_iter().flatten() {
        o += &format!(
            "  {}: {}{}\n",
            s(&l["role"]),
            s(&l["dir"]),
            l["diff_id"]
                .as_str()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default()
        );
    }
    o += "\nMounts inside the container\n";
    for m in v["mounts"].as_array().into_iter().flatten() {
        let bind = m["bind_of"]
            .as_str()
            .map(|b| format!("  bind mount of the host's {b}"))
            .unwrap_or_default();
        o += &format!(
            "  {:<24} {:<8} {}{}\n",
            s(&m["destination"]),
            s(&m["type"]),
            s(&m["options"]),
            bind
        );
    }
    let sec = &v["security"];
    o += "\nSecurity (from /proc/PID/status)\n";
    o += &format!("  uid {}  gid {}\n", s(&sec["uid"]), s(&sec["gid"]));
    let caps: Vec<String> = sec["capabilities_effective"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    o += &format!(
        "  effective capabilities ({}): {}\n",
        caps.len(),
        caps.join(", ")
    );
    o += &format!(
        "  seccomp: {} ({} filters), no_new_privs: {}\n",
        s(&sec["seccomp"]),
        s(&sec["seccomp_filters"]),
        sec["no_new_privs"]
    );
    o += "\n/proc inside is the kernel's own: top and free there show the host's CPUs and memory, not these limits.\n";
    o
}
