//! Discovery of the host's cgroup layout: which v1 hierarchies are mounted where, whether
//! a cgroup2 hierarchy exists, and which cgroup this process is in on each.
//!
//! Hosts come in three shapes: legacy (v1 only), hybrid (v1 controllers plus a cgroup2
//! mount without controllers, like this project's CI machine) and unified (v2 only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

/// The v1 controllers the runtime knows how to place a container in.
pub const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "hugetlb",
    "perf_event",
    "rdma",
    "misc",
];

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The cgroup path that the mount's root shows (not "/" inside a cgroup namespace
    /// or for a bind mount of a sub-cgroup).
    pub root: String,
    /// Controllers attached (v1), or `name=...` for named hierarchies.
    pub controllers: Vec<String>,
}

/// Which generation of cgroups the host uses for resource control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 mount (usually without controllers).
    Hybrid,
    /// Only cgroup2.
    Unified,
}

/// The host's cgroup layout as seen by this process.
#[derive(Clone, Debug)]
pub struct Layout {
    /// v1 hierarchies, keyed by each controller (co-mounted controllers share a Mount).
    pub v1: BTreeMap<String, Mount>,
    /// The cgroup2 hierarchy, if mounted.
    pub unified: Option<Mount>,
    /// This process's cgroup path per v1 controller, and "" for the unified hierarchy.
    pub own: BTreeMap<String, String>,
}

impl Layout {
    /// Reads the layout from /proc/self/mountinfo and /proc/self/cgroup.
    pub fn detect() -> Result<Layout> {
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "read /proc/self/mountinfo")?;
        let cgroup =
            std::fs::read_to_string("/proc/self/cgroup").ctx(|| "read /proc/self/cgroup")?;
        Ok(Self::parse(&mountinfo, &cgroup))
    }

    /// [`Layout::host`] read once per process, for readers on hot paths (a
    /// container's state, its stats): the hierarchies are mounted at boot, and reading
    /// mountinfo on a host with hundreds of mounts costs more than all else they do.
    pub fn shared() -> &'static Layout {
        static L: std::sync::OnceLock<Layout> = std::sync::OnceLock::new();
        L.get_or_init(Layout::host)
    }

    /// This process's layout, empty (no hierarchies) if /proc cannot be read: for
    /// readers that only look, where no cgroup is as good as an unreadable one.
    pub fn host() -> Layout {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Self::parse(&read("/proc/self/mountinfo"), &read("/proc/self/cgroup"))
    }

    /// Builds a layout from the text of mountinfo and /proc/self/cgroup.
    pub fn parse(mountinfo: &str, cgroup: &str) -> Layout {
        let mut v1 = BTreeMap::new();
        let mut unified = None;
        for m in crate::mountinfo::parse(mountinfo) {
            match m.fstype.as_str() {
                // Prefer the first cgroup2 mount (the host's), ignore later ones.
                "cgroup2" if unified.is_none() => {
                    unified = Some(Mount {
                        mountpoint: m.mount_point,
                        root: m.root,
                        controllers: Vec::new(),
                    });
                }
                "cgroup" => {
                    let controllers: Vec<String> = m
                        .super_options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    let mount = Mount {
                        mountpoint: m.mount_point,
                        root: m.root,
                        controllers: controllers.clone(),
                    };
                    for c in controllers {
                        v1.entry(c).or_insert_with(|| mount.clone());
                    }
                }
                _ => {}
            }
        }
        let mut own = BTreeMap::new();
        for line in crate::proc::parse(cgroup) {
            if line.is_unified() {
                own.insert(String::new(), line.path);
            } else {
                for c in line.controllers {
                    own.insert(c, line.path.clone());
                }
            }
        }
        Layout { v1, unified, own }
    }

    /// The host's mode.
    pub fn mode(&self) -> Mode {
        match (
            self.v1.keys().any(|k| !k.starts_with("name=")),
            &self.unified,
        ) {
            (true, Some(_)) => Mode::Hybrid,
            (true, None) => Mode::Legacy,
            (false, _) => Mode::Unified,
        }
    }

    /// Controllers available on the unified hierarchy (its root's cgroup.controllers).
    pub fn unified_controllers(&self) -> Vec<String> {
        let Some(u) = &self.unified else {
            return Vec::new();
        };
        std::fs::read_to_string(u.mountpoint.join("cgroup.controllers"))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The directory for cgroup `path` (absolute from the hierarchy root, or relative to
    /// this process's own cgroup) on the given mount.
    pub fn dir_on(&self, mount: &Mount, own_key: &str, path: &Path) -> PathBuf {
        let rel = if path.is_absolute() {
            let p = path.to_string_lossy();
            let stripped = if mount.root != "/" {
                p.strip_prefix(&mount.root).unwrap_or(&p).to_string()
            } else {
                p.to_string()
            };
            stripped
        } else {
            let own = self.own.get(own_key).map(String::as_str).unwrap_or("/");
            let own = if mount.root != "/" {
                own.strip_prefix(&mount.root).unwrap_or(own)
            } else {
                own
            };
            format!("{}/{}", own.trim_end_matches('/'), path.to_string_lossy())
        };
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            mount.mountpoint.clone()
        } else {
            mount.mountpoint.join(rel)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn hybrid_layout() {
        let l = Layout::parse(HYBRID, "4:memory:/a/b\n1:cpu:/\n0::/\n");
        assert_eq!(l.mode(), Mode::Hybrid);
        assert_eq!(l.v1["cpu"].mountpoint, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(
            l.v1["cpuacct"].mountpoint,
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(l.v1.contains_key("name=systemd"));
        let mem = l.v1["memory"].clone();
        assert_eq!(
            l.dir_on(&mem, "memory", Path::new("/x/y")),
            Path::new("/sys/fs/cgroup/memory/x/y")
        );
        assert_eq!(
            l.dir_on(&mem, "memory", Path::new("x")),
            Path::new("/sys/fs/cgroup/memory/a/b/x")
        );
    }

    #[test]
    fn unified_layout() {
        let l = Layout::parse(
            "1 0 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/user.slice\n",
        );
        assert_eq!(l.mode(), Mode::Unified);
        let u = l.unified.clone().unwrap();
        assert_eq!(
            l.dir_on(&u, "", Path::new("c1")),
            Path::new("/sys/fs/cgroup/user.slice/c1")
        );
    }
}
