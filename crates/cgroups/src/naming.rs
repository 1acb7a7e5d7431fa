//! Where berth's containers and pods get their cgroups: one naming for the engine, the
//! monitor and the node agent, so that no caller works a cgroup path out again.
//!
//! A container's `linux.cgroupsPath` is always `PARENT/ID`. berth's own containers
//! (`berth run`) have the parent [`ENGINE_PARENT`]; pods follow the kubelet's cgroupfs
//! layout: `/kubepods/pod<UID>` for Guaranteed pods, `/kubepods/burstable/pod<UID>` and
//! `/kubepods/besteffort/pod<UID>` for the others, with the pod's infra process and
//! each container in a child of the pod's cgroup.

use std::path::Path;

use crate::error::Result;
use crate::layout::Layout;
use crate::paths::CgroupPaths;

/// The cgroup parent of the containers `berth run` makes.
pub const ENGINE_PARENT: &str = "/berth";

/// The root of the pods' cgroups (the kubelet's `--cgroup-root` default, cgroupfs).
pub const KUBEPODS: &str = "/kubepods";

/// A pod's quality of service class (Kubernetes' `status.qosClass`), which decides
/// where its cgroup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum QosClass {
    /// Every container has equal requests and limits for CPU and memory.
    Guaranteed,
    /// Some requests or limits, not Guaranteed.
    Burstable,
    /// No requests or limits at all.
    BestEffort,
}

impl QosClass {
    /// Kubernetes' name of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// The cgroup of pod `uid` in class `qos` (kubelet's cgroupfs layout).
pub fn pod_parent(qos: QosClass, uid: &str) -> String {
    pod_parent_in("/", qos, uid)
}

/// The cgroup of pod `uid` in class `qos` under `root` (the kubelet's `--cgroup-root`:
/// "/" for `/kubepods/...`; nodes sharing a machine each have their own).
pub fn pod_parent_in(root: &str, qos: QosClass, uid: &str) -> String {
    let root = root.trim_end_matches('/');
    match qos {
        QosClass::Guaranteed => format!("{root}{KUBEPODS}/pod{uid}"),
        QosClass::Burstable => format!("{root}{KUBEPODS}/burstable/pod{uid}"),
        QosClass::BestEffort => format!("{root}{KUBEPODS}/besteffort/pod{uid}"),
    }
}

/// The cgroup path of container (or infra process) `id` under `parent`.
pub fn child(parent: &str, id: &str) -> String {
    format!("{}/{id}", parent.trim_end_matches('/'))
}

/// Checks a cgroup parent given by a caller: absolute, no `..`, cgroupfs form.
pub fn check_parent(parent: &str) -> Result<()> {
    let p = Path::new(parent);
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        || parent.split(':').count() == 3
    {
        return Err(crate::Error::invalid(format!(
            "cgroup parent {parent:?}: give an absolute cgroupfs path without '..', such as {KUBEPODS}/burstable/pod<UID> (the systemd slice form is not supported)"
        )));
    }
    Ok(())
}

/// The host directories of cgroup path `path` on this host's hierarchies.
pub fn paths_of(layout: &Layout, path: &str) -> Result<CgroupPaths> {
    CgroupPaths::resolve(layout, Some(Path::new(path)), "")
}

/// Removes the directories of cgroup `path` and then of its parents up to, not
/// including, `keep` (an ancestor such as [`KUBEPODS`] or "/"), on every hierarchy —
/// as far as they are empty: a busy one and everything above it stay.
pub fn remove_empty(layout: &Layout, path: &str, keep: &str) {
    let keep = Path::new(keep);
    let mut cur = Path::new(path);
    while cur != keep && cur.starts_with(keep) && cur.parent().is_some() {
        let Ok(paths) = paths_of(layout, &cur.to_string_lossy()) else {
            return;
        };
        let mut all_gone = true;
        for d in paths.dirs() {
            match std::fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => all_gone = false,
            }
        }
        if !all_gone {
            return;
        }
        cur = cur.parent().unwrap_or(keep);
    }
}

/// The last per-host helper to retire (the /proc view, the network helper) takes the
/// engine's parent cgroup with it when no container is left under it: while containers
/// come and go it stays, as docker's /docker does (making it again on a dozen v1
/// hierarchies per `run --rm` cost milliseconds), but nothing of berth outlives its
/// last container. A start racing with this finds the parent gone and makes it again
/// (see `CgroupPaths::create`).
pub fn retire_engine_parent(layout: &Layout) {
    if count_containers(layout) == 0 {
        remove_empty(layout, ENGINE_PARENT, "/");
    }
}

/// How many containers (and pod infra processes) berth has cgroups for on this host:
/// the children of [`ENGINE_PARENT`] and of every pod cgroup under [`KUBEPODS`], on the
/// first hierarchy that has either parent. Per-host helpers (the /proc view, the
/// network helper) retire when it is zero.
pub fn count_containers(layout: &Layout) -> usize {
    let roots: Vec<std::path::PathBuf> = ["memory", "pids", "cpu"]
        .iter()
        .filter_map(|c| layout.v1.get(*c).map(|m| m.mountpoint.clone()))
        .chain(layout.unified.as_ref().map(|u| u.mountpoint.clone()))
        .collect();
    let subdirs = |d: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    for root in roots {
        let engine = root.join(ENGINE_PARENT.trim_start_matches('/'));
        let pods_root = root.join(KUBEPODS.trim_start_matches('/'));
        if !engine.is_dir() && !pods_root.is_dir() {
            continue;
        }
        let mut n = subdirs(&engine).len();
        let mut pods = Vec::new();
        for d in subdirs(&pods_root) {
            match d.file_name().and_then(|n| n.to_str()) {
                Some("burstable" | "besteffort") => pods.extend(subdirs(&d)),
                Some(name) if name.starts_with("pod") => pods.push(d),
                _ => {}
            }
        }
        n += pods.iter().map(|p| subdirs(p).len()).sum::<usize>();
        return n;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(pod_parent(QosClass::Guaranteed, "u1"), "/kubepods/podu1");
        assert_eq!(
            pod_parent(QosClass::Burstable, "u1"),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(child("/berth/", "abc"), "/berth/abc");
        assert!(check_parent("/kubepods/besteffort/podx").is_ok());
        assert!(check_parent("kubepods").is_err());
        assert!(check_parent("/a/../b").is_err());
        assert!(check_parent("system.slice:berth:x").is_err());
    }
}
