//! Mounts made with the kernel's file-descriptor mount API (Linux 5.2+, mount_setattr
//! 5.12+): a mount is built detached, given its flags, and attached onto a destination
//! *handle*, so no path is ever re-resolved between checking and mounting.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};

use crate::error::{Context, Error, Result};
use crate::sys;

/// A detached copy of the mount (tree) at `source` (a bind mount not yet attached).
pub fn clone_tree(source: &Path, recursive: bool) -> Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(rustix::fs::CWD, source, flags)
        .ctx(|| format!("bind {}", source.display()))
}

/// A detached bind mount of the file or directory behind an open descriptor.
pub fn clone_fd(fd: BorrowedFd<'_>, recursive: bool) -> Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(fd, "", flags).ctx(|| "clone a mount from a descriptor")
}

/// Superblock flags of mount(2) that fsconfig takes by name.
const SB_FLAGS: &[(u64, &str)] = &[
    (libc::MS_RDONLY, "ro"),
    (libc::MS_SYNCHRONOUS, "sync"),
    (libc::MS_DIRSYNC, "dirsync"),
    (libc::MS_LAZYTIME, "lazytime"),
    (libc::MS_MANDLOCK, "mand"),
    (libc::MS_SILENT, "silent"),
    (libc::MS_I_VERSION, "iversion"),
];

/// A new, detached filesystem mount: `fstype` with `source` and `data` options, the
/// superblock flags from `ms_flags`, and the mount attributes `attr`.
pub fn new_fs(
    fstype: &str,
    source: Option<&str>,
    data: &[String],
    ms_flags: u64,
    attr: u64,
) -> Result<OwnedFd> {
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| {
        if e == rustix::io::Errno::NODEV {
            Error::invalid(format!(
                "filesystem type {fstype:?} is not known to this kernel"
            ))
        } else {
            Error::io(format!("open a {fstype} filesystem context"), e)
        }
    })?;
    let fail = |what: String, e: rustix::io::Errno| {
        let log = kernel_log(fs.as_fd());
        let msg = if log.is_empty() {
            std::io::Error::from(e).to_string()
        } else {
            log
        };
        Error::invalid(format!("{what}: {msg}"))
    };
    if let Some(src) = source.filter(|s| !s.is_empty()) {
        rustix::mount::fsconfig_set_string(&fs, "source", src)
            .map_err(|e| fail(format!("{fstype} source {src:?}"), e))?;
    }
    for opt in data {
        let r = match opt.split_once('=') {
            Some((k, v)) => rustix::mount::fsconfig_set_string(&fs, k, v),
            None => rustix::mount::fsconfig_set_flag(&fs, opt.as_str()),
        };
        r.map_err(|e| fail(format!("{fstype} option {opt:?}"), e))?;
    }
    for &(flag, name) in SB_FLAGS {
        if ms_flags & flag != 0 {
            rustix::mount::fsconfig_set_flag(&fs, name)
                .map_err(|e| fail(format!("{fstype} flag {name:?}"), e))?;
        }
    }
    rustix::mount::fsconfig_create(&fs)
        .map_err(|e| fail(format!("create the {fstype} filesystem"), e))?;
    rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::from_bits_retain(attr as u32),
    )
    .map_err(|e| fail(format!("mount the {fstype} filesystem"), e))
}

/// Messages the kernel queued on a filesystem context ("e tmpfs: Bad value for 'mode'").
fn kernel_log(fs: BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        out.push(
            line.trim_start_matches(['e', 'w', 'i', ' '])
                .trim()
                .to_string(),
        );
    }
    out.join("; ")
}

/// Sets or clears per-mount attributes (recursively if asked).
pub fn set_attrs(tree: BorrowedFd<'_>, recursive: bool, set: u64, clear: u64) -> Result<()> {
    if set == 0 && clear == 0 {
        return Ok(());
    }
    sys::mount_setattr(tree, recursive, set, clear, 0).ctx(|| "set mount attributes")
}

/// Sets propagation (MS_SHARED/SLAVE/PRIVATE/UNBINDABLE, with MS_REC for recursive).
pub fn set_propagation(tree: BorrowedFd<'_>, prop: u64) -> Result<()> {
    let recursive = prop & libc::MS_REC != 0;
    sys::mount_setattr(tree, recursive, 0, 0, prop & !libc::MS_REC).ctx(|| "set mount propagation")
}

/// Attaches a detached mount onto the destination handle.
pub fn attach(tree: &OwnedFd, dest: BorrowedFd<'_>) -> Result<()> {
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        dest,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .ctx(|| "attach the mount")
}
