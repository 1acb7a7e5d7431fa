//! Persistent network namespaces: a namespace kept alive by a bind mount of its nsfs
//! file (as `ip netns add` does), so it can be set up before the container exists, be
//! joined by the runtime by path, and outlive restarts of the container.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

/// The path of container `id`'s network namespace, in `berth_hostdirs::netns_dir()`
/// (tmpfs: gone after a reboot, like the namespaces).
pub fn path_of(id: &str) -> PathBuf {
    berth_hostdirs::netns_dir().join(id)
}

/// Makes the file a namespace will be bound to (see [`crate::link::in_new_netns`]).
pub fn prepare_path(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    std::fs::File::create(path).ctx(|| format!("create {}", path.display()))?;
    Ok(())
}

/// Keeps the calling thread's network namespace at `path` (a bind mount of its nsfs
/// file, as `ip netns add` does).
pub fn bind_current(path: &Path) -> Result<()> {
    rustix::mount::mount_bind("/proc/thread-self/ns/net", path)
        .ctx(|| format!("bind the network namespace to {}", path.display()))
}

/// Opens the namespace kept at `path`.
pub fn open(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| format!("open the network namespace {}", path.display()))
}

/// Releases the namespace kept at `path` (it ends with its last process, and its
/// interfaces with it: a veth's host end goes too). Missing is fine. Returns whether a
/// namespace was kept there.
pub fn remove(path: &Path) -> bool {
    let unpinned = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).is_ok();
    let _ = std::fs::remove_file(path);
    unpinned
}
