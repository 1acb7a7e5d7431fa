//! Opening paths beneath a root directory — an image layer being unpacked, a
//! container's root filesystem — with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS):
//! `..` and absolute symlinks stay inside the root, so a file planted in an image can
//! never lead a host-side open out of it. The one opener the image store, the engine
//! and the CLI use.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Opens `root` itself, as the anchor of [`open_at`].
pub fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `rel` beneath the root `root` was opened as (a leading `/` is the root;
/// empty is the root itself), with `flags` (close-on-exec is added) and `mode` for a
/// file created.
pub fn open_at(root: impl AsFd, rel: &Path, flags: OFlags, mode: Mode) -> std::io::Result<OwnedFd> {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    Ok(rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC,
        mode,
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Opens `rel` beneath directory `root`.
pub fn open(root: &Path, rel: &Path, flags: OFlags) -> std::io::Result<OwnedFd> {
    open_at(open_root(root)?, rel, flags, Mode::empty())
}

/// Reads the text of `rel` beneath `root`; None if it cannot be read.
pub fn read_to_string(root: &Path, rel: &str) -> Option<String> {
    let fd = open(root, Path::new(rel), OFlags::RDONLY).ok()?;
    std::io::read_to_string(std::fs::File::from(fd)).ok()
}
