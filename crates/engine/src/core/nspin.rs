//! A sandbox's IPC and UTS namespaces, made before any of its processes and kept by
//! bind mounts of their nsfs files (as `ip netns add` keeps a network namespace), so
//! that they outlive every process in them: a container that restarts rejoins the
//! same hostname and IPC objects, and one container can join another's by path.

use std::path::Path;

use berth_monitor::sandbox::{pin_dir, pin_path};

use crate::error::{Context, Error, Result};

/// Makes new IPC and/or UTS namespaces for sandbox `id`, the UTS one with `hostname`,
/// pinned at [`pin_path`]. Done in a thread of its own, which ends afterwards: the
/// namespaces are the mounts' now.
pub fn make(id: &str, ipc: bool, uts: Option<&str>) -> Result<()> {
    if !ipc && uts.is_none() {
        return Ok(());
    }
    let dir = pin_dir(id);
    std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
    let mut kinds = Vec::new();
    if ipc {
        kinds.push("ipc");
    }
    if uts.is_some() {
        kinds.push("uts");
    }
    for k in &kinds {
        let p = pin_path(id, k);
        std::fs::File::create(&p).ctx(|| format!("create {}", p.display()))?;
    }
    let id = id.to_string();
    let hostname = uts.map(str::to_string);
    std::thread::spawn(move || -> Result<()> {
        super::sys::unshare_ipc_uts(ipc, hostname.is_some())
            .map_err(|e| Error::io("unshare the sandbox's IPC and UTS namespaces", e))?;
        if let Some(h) = &hostname {
            rustix::system::sethostname(h.as_bytes())
                .ctx(|| format!("set the sandbox's hostname {h:?}"))?;
        }
        for k in kinds {
            let p = pin_path(&id, k);
            rustix::mount::mount_bind(format!("/proc/thread-self/ns/{k}"), &p)
                .ctx(|| format!("pin the {k} namespace at {}", p.display()))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| Error::Runtime("the namespace thread panicked".into()))?
}

/// Pins the PID namespace of process `pid` (a sandbox's infra process) for sandbox
/// `id`, so that containers join it by path rather than through a pid that could be
/// reused.
pub fn pin_pid(id: &str, pid: i32) -> Result<()> {
    let p = pin_path(id, "pid");
    std::fs::create_dir_all(pin_dir(id)).ctx(|| format!("create {}", pin_dir(id).display()))?;
    std::fs::File::create(&p).ctx(|| format!("create {}", p.display()))?;
    rustix::mount::mount_bind(format!("/proc/{pid}/ns/pid"), &p)
        .ctx(|| format!("pin the PID namespace of {pid} at {}", p.display()))
}

/// Whether a pin exists and still holds a namespace.
pub fn is_pinned(path: &Path) -> bool {
    // A mounted nsfs file has a different device than the tmpfs it is on.
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(f), Some(Ok(d))) => f.dev() != d.dev(),
        _ => false,
    }
}
