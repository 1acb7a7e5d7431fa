//! Running without root: as an unprivileged user (whose containers get a user
//! namespace mapping the user's own id, and subordinate ids through the setuid
//! newuidmap and newgidmap), or as root in a user namespace an unprivileged user made
//! (how podman's rootless mode calls its runtime). What needs host root is done
//! another way or left out, as runc and crun do: no cgroup where none may be created
//! (a warning when the spec asks for limits), device nodes bind-mounted, an
//! oom_score_adj the kernel refuses left as it is.

use std::path::PathBuf;

use oci_spec::runtime::LinuxIdMapping;

use crate::error::{Error, Result};

/// `--rootless`: None for auto.
static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();

/// Sets what `--rootless` said (true or false; None: detect). Call once, first.
pub fn set_mode(forced: Option<bool>) {
    let _ = FORCED.set(forced);
}

/// Whether this process lacks root on the host: not uid 0, or uid 0 of a user namespace
/// other than the host's (unless `--rootless` said otherwise).
pub fn detect() -> bool {
    match FORCED.get().copied().flatten() {
        Some(forced) => forced,
        None => !rustix::process::geteuid().is_root() || in_user_namespace(),
    }
}

/// Whether `res` asks for limits (what a container without a cgroup cannot have).
pub fn limits_asked(res: &oci_spec::runtime::LinuxResources) -> bool {
    res.memory().is_some()
        || res.cpu().is_some()
        || res.pids().is_some()
        || res.block_io().is_some()
        || res
            .hugepage_limits()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
        || res.unified().as_ref().is_some_and(|u| !u.is_empty())
        || res.network().is_some()
        || res.rdma().as_ref().is_some_and(|r| !r.is_empty())
}

/// Whether this process is root on the host: uid 0 of the initial user namespace
/// (whatever `--rootless` says: what needs host root is decided by this).
pub fn is_host_root() -> bool {
    rustix::process::geteuid().is_root() && !in_user_namespace()
}

/// Whether this process runs in a user namespace other than the initial one (whose
/// uid_map maps all 2^32 ids to themselves).
pub fn in_user_namespace() -> bool {
    berth_hostdirs::in_user_namespace()
}

/// The state root when `--root` is not given: `$XDG_RUNTIME_DIR/berth-runtime` for a
/// user other than host root — including root of a user namespace that a user other
/// than root made, as podman's rootless mode runs its runtime (it passes no `--root`) —
/// and `/run/berth-runtime` otherwise. runc decides its own root the same way.
pub fn default_root() -> PathBuf {
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty());
    let honour = !rustix::process::geteuid().is_root()
        || (in_user_namespace() && std::env::var("USER").map_or(true, |u| u != "root"));
    match xdg {
        Some(d) if honour => PathBuf::from(d).join("berth-runtime"),
        _ => PathBuf::from(crate::state::DEFAULT_ROOT),
    }
}

/// Whether an unprivileged process may write `maps` itself: one range, its own id
/// (the kernel's rule for a writer without CAP_SETUID over the parent namespace).
fn writable_by_self(maps: &[LinuxIdMapping], own: u32) -> bool {
    matches!(maps, [m] if m.size() == 1 && m.host_id() == own)
}

/// How the id maps of process `pid` are written. Root writes them; an unprivileged
/// user writes a map of its own id (denying setgroups first, as the kernel requires
/// for gid_map) and has newuidmap and newgidmap (shadow's setuid helpers, which check
/// /etc/subuid and /etc/subgid) write anything else.
pub fn write_id_maps(pid: i32, uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        return crate::namespaces::write_id_maps(pid, uid, gid);
    }
    let own_uid = rustix::process::getuid().as_raw();
    let own_gid = rustix::process::getgid().as_raw();
    let (uid_self, gid_self) = (
        writable_by_self(uid, own_uid),
        writable_by_self(gid, own_gid),
    );
    if uid_self && gid_self {
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").map_err(|e| {
            Error::io(
                format!("write /proc/{pid}/setgroups (needed before gid_map)"),
                e,
            )
        })?;
        return crate::namespaces::write_id_maps(pid, uid, gid);
    }
    for (helper, maps, own, file) in [
        ("newuidmap", uid, own_uid, "subuid"),
        ("newgidmap", gid, own_gid, "subgid"),
    ] {
        let mut cmd = std::process::Command::new(helper);
        cmd.arg(pid.to_string());
        for m in maps {
            cmd.args([
                m.container_id().to_string(),
                m.host_id().to_string(),
                m.size().to_string(),
            ]);
        }
        let out = cmd.output().map_err(|e| {
            Error::invalid(format!(
                "linux.{}Mappings map more than your own id {own}: that needs {helper}, which could not run ({e}); install the uidmap package",
                &helper[3..6]
            ))
        })?;
        if !out.status.success() {
            let user = std::env::var("USER").unwrap_or_else(|_| own.to_string());
            return Err(Error::invalid(format!(
                "linux.{}Mappings: {helper} refused them: {} (are they within your ranges in /etc/{file}? add a line such as \"{user}:100000:65536\")",
                &helper[3..6],
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        serde_json::from_value(serde_json::json!({"containerID": c, "hostID": h, "size": s}))
            .unwrap()
    }

    #[test]
    fn only_ones_own_id_is_writable_without_help() {
        assert!(writable_by_self(&[map(0, 1000, 1)], 1000));
        assert!(!writable_by_self(&[map(0, 1000, 2)], 1000));
        assert!(!writable_by_self(&[map(0, 1001, 1)], 1000));
        assert!(!writable_by_self(
            &[map(0, 1000, 1), map(1, 100000, 65536)],
            1000
        ));
    }
}
