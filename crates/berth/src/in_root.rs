//! Paths beneath a root filesystem (a container's, or an image's prepared for a
//! build), opened so that none of their symlinks leads out of it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Opens `path` beneath `rootfs` (RESOLVE_IN_ROOT: its symlinks resolve inside).
pub(crate) fn open_in_root(
    rootfs: &Path,
    path: &str,
    flags: rustix::fs::OFlags,
) -> anyhow::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open the root {}", rootfs.display()))?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(
        &root,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
    .with_context(|| format!("{path} in the root filesystem"))
}

/// A path that reaches what `fd` is open on (/proc/self/fd/N).
pub(crate) fn fd_path(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}
