//! Protection of the runtime binary against being overwritten from inside a container
//! (CVE-2019-5736): before a command that enters a container, the runtime makes sure
//! it runs from a copy nobody can write — a sealed memfd — unless its binary already
//! lives on a read-only mount.
//!
//! The attack: a container replaces its program with `#!/proc/self/exe`; when the
//! runtime execs it, the kernel runs the runtime's own binary inside the container,
//! which can then open /proc/<pid>/exe and write to the host's runtime binary.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;

use rustix::fs::{MemfdFlags, OFlags, SealFlags, StatVfsMountFlags};

use crate::error::{Context, Result};

/// Whether the running binary is already protected (sealed memfd, or read-only mount).
pub fn is_protected() -> bool {
    let Ok(exe) = rustix::fs::open(
        "/proc/self/exe",
        OFlags::RDONLY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return false;
    };
    if rustix::fs::fcntl_get_seals(&exe).is_ok_and(|s| s.contains(SealFlags::WRITE)) {
        return true;
    }
    rustix::fs::fstatvfs(&exe).is_ok_and(|s| s.f_flag.contains(StatVfsMountFlags::RDONLY))
}

/// Re-executes the runtime from a protected binary, unless it already runs from one.
/// Returns only if no re-exec was needed.
///
/// The cheap way first: a detached, read-only bind mount of the binary itself (made with
/// open_tree and mount_setattr, attached nowhere) is executed by descriptor, so the
/// process's executable lives on a read-only mount that nothing can remount. Where the
/// kernel lacks that API, a sealed memfd copy is executed instead.
pub fn ensure_protected() -> Result<()> {
    if is_protected() {
        return Ok(());
    }
    if let Ok(tree) = readonly_self() {
        let err = crate::sys::execveat_fd(tree.as_fd(), &args(), &env());
        crate::logging::debug(format!(
            "exec from a read-only bind of the binary failed: {err}"
        ));
    }
    let exe = rustix::fs::open(
        "/proc/self/exe",
        OFlags::RDONLY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| "open /proc/self/exe")?;
    let memfd = rustix::fs::memfd_create(
        "berth-runtime",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .ctx(|| "create a memfd for the runtime copy")?;
    let size = rustix::fs::fstat(&exe)
        .ctx(|| "stat /proc/self/exe")?
        .st_size as u64;
    let mut copied = 0u64;
    while copied < size {
        let n = rustix::fs::sendfile(&memfd, &exe, None, (size - copied) as usize)
            .ctx(|| "copy the runtime binary")?;
        if n == 0 {
            return Err(crate::error::Error::invalid(
                "copy the runtime binary: /proc/self/exe ended early",
            ));
        }
        copied += n as u64;
    }
    rustix::fs::fcntl_add_seals(
        &memfd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )
    .ctx(|| "seal the runtime copy")?;
    let err = crate::sys::execveat_fd(memfd.as_fd(), &args(), &env());
    Err(crate::error::Error::io(
        "re-execute the runtime from its sealed copy",
        err,
    ))
}

/// A detached read-only mount of our own executable.
fn readonly_self() -> Result<std::os::fd::OwnedFd> {
    let tree = crate::rootfs::mountapi::clone_tree(std::path::Path::new("/proc/self/exe"), false)?;
    crate::sys::mount_setattr(tree.as_fd(), false, crate::sys::mount_attr::RDONLY, 0, 0)
        .ctx(|| "make the binary's bind mount read-only")?;
    Ok(tree)
}

fn args() -> Vec<CString> {
    std::env::args_os()
        .map(|a| CString::new(a.into_vec()).expect("arguments have no NUL"))
        .collect()
}

fn env() -> Vec<CString> {
    std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).expect("environment has no NUL")
        })
        .collect()
}
