//! The engine's side of the /proc view (berth-procview): containers get its files
//! bind-mounted over /proc and /sys (unless `--procview=false`), and the one server per
//! host is started when a container needs it and none is serving.

use std::time::Duration;

use berth_procview::{is_served, mountpoint, TARGETS};

use crate::error::{Context, Result};

/// The view's files and where each is bound in a container (source, destination).
pub fn sources() -> Vec<(std::path::PathBuf, String)> {
    TARGETS
        .iter()
        .map(|(file, target)| (mountpoint().join(file), target.to_string()))
        .collect()
}

/// Holds the view for a container being started: the server does not retire while
/// any start holds this (see berth-procview's `serve`), and the container's cgroup —
/// which keeps the server alive after that — exists once the start is done.
pub struct Hold(#[allow(dead_code)] std::fs::File);

/// Makes sure a server is serving the view: if none is (or a dead one left its mount),
/// starts `berth system procview-serve` from the running berth binary, detached, and
/// waits until the view answers. Returns a hold to keep until the container started.
pub fn ensure() -> Result<Hold> {
    let mp = &mountpoint();
    let lock_path = berth_procview::lock_path(mp);
    if let Some(dir) = lock_path.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .ctx(|| format!("open {}", lock_path.display()))?;
    let flock = |op| rustix::fs::flock(&lock, op).ctx(|| format!("lock {}", lock_path.display()));
    flock(rustix::fs::FlockOperation::LockShared)?;
    if is_served(mp) {
        return Ok(Hold(lock));
    }
    flock(rustix::fs::FlockOperation::LockExclusive)?;
    if !is_served(mp) {
        start_server(mp)?;
    }
    flock(rustix::fs::FlockOperation::LockShared)?;
    Ok(Hold(lock))
}

fn start_server(mp: &std::path::Path) -> Result<()> {
    // A server that died leaves a mount answering ENOTCONN: clear it first.
    let _ = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH);
    crate::helper::start(
        "procview-serve",
        "the /proc view server",
        &format!(
            " (serving {}): is /dev/fuse available (modprobe fuse)? Or run with --procview=false",
            mp.display()
        ),
        Duration::from_secs(5),
        || is_served(mp),
    )
}
