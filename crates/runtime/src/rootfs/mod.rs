//! The container's root filesystem: mounts, /dev, pivot_root (or MS_MOVE + chroot), and
//! the masked and read-only paths, all inside the container's mount namespace.

pub mod dev;
pub mod mountapi;
pub mod mounts;
pub mod options;

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use rustix::fs::{Mode, OFlags};

use crate::error::{Context, Error, Result};
use crate::sys;

const RAMFS_MAGIC: i64 = 0x858458f6;
const TMPFS_MAGIC: i64 = 0x01021994;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

/// The propagation flags named by `linux.rootfsPropagation`.
pub fn propagation_flag(name: Option<&str>) -> Result<Option<u64>> {
    Ok(match name.unwrap_or("") {
        "" => None,
        "private" => Some(libc::MS_PRIVATE),
        "rprivate" => Some(libc::MS_PRIVATE | libc::MS_REC),
        "slave" => Some(libc::MS_SLAVE),
        "rslave" => Some(libc::MS_SLAVE | libc::MS_REC),
        "shared" => Some(libc::MS_SHARED),
        "rshared" => Some(libc::MS_SHARED | libc::MS_REC),
        "unbindable" => Some(libc::MS_UNBINDABLE),
        "runbindable" => Some(libc::MS_UNBINDABLE | libc::MS_REC),
        other => {
            return Err(Error::invalid(format!(
                "linux.rootfsPropagation {other:?} is not one of private, rprivate, slave, rslave, shared, rshared, unbindable, runbindable"
            )))
        }
    })
}

/// First step in a new mount namespace: stop mount events from reaching the host, and
/// make the rootfs a mount of its own (pivot_root needs that).
pub fn prepare_root(rootfs: &Path, propagation: Option<u64>) -> Result<()> {
    // Slave by default so host mounts still show up but nothing flows back. A private
    // rootfs is private from the start; an unbindable one starts as slave here (an
    // unbindable root cannot be bind-mounted) and gets its propagation after
    // pivot_root. A shared one is shared from the start, as runc does it: the copies
    // of the host's shared mounts stay their peers, so that a bidirectional volume
    // bound from one joins the host's peer group and the container's mounts under it
    // reach the host.
    let shared = propagation.is_some_and(|p| p & libc::MS_SHARED != 0);
    let flag = match propagation {
        Some(p) if p & libc::MS_PRIVATE != 0 => p | libc::MS_REC,
        Some(p) if shared => p,
        _ => libc::MS_SLAVE | libc::MS_REC,
    };
    sys::mount(None, c"/", None, flag as libc::c_ulong, None)
        .ctx(|| "set the propagation of / in the container's mount namespace")?;
    if shared {
        // pivot_root refuses a new root whose parent mount is shared: that one
        // mount (not what is under it) becomes private here.
        let parent = parent_mount(rootfs)?;
        sys::mount(
            None,
            &cstr(&parent),
            None,
            libc::MS_PRIVATE as libc::c_ulong,
            None,
        )
        .ctx(|| format!("make {} (the rootfs's mount) private", parent.display()))?;
    }
    let r = cstr(rootfs);
    sys::mount(
        Some(&r),
        &r,
        None,
        (libc::MS_BIND | libc::MS_REC) as libc::c_ulong,
        None,
    )
    .ctx(|| format!("bind-mount the rootfs {} onto itself", rootfs.display()))?;
    Ok(())
}

/// The mount point of the mount that holds `path` (the longest mount point above it).
fn parent_mount(path: &Path) -> Result<std::path::PathBuf> {
    let path = std::fs::canonicalize(path)
        .map_err(|e| Error::io(format!("resolve rootfs {}", path.display()), e))?;
    let mounts = berth_cgroups::mountinfo::read(None)
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    Ok(mounts
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|mp| path.starts_with(mp))
        .max_by_key(|mp| mp.components().count())
        .unwrap_or_else(|| "/".into()))
}

/// Makes `rootfs` the root with pivot_root(2), detaching the old root. Falls back to
/// [`move_root`] when the current root cannot be pivoted away from (initramfs).
pub fn pivot(rootfs: &Path) -> Result<()> {
    let newroot = rustix::fs::open(
        rootfs,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open rootfs {}", rootfs.display()))?;
    let oldroot = rustix::fs::open(
        "/",
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open the old root")?;
    rustix::process::fchdir(&newroot).ctx(|| "enter the rootfs")?;
    match rustix::process::pivot_root(".", ".") {
        Ok(()) => {}
        Err(rustix::io::Errno::INVAL) if root_is_ramfs() => {
            crate::logging::debug(
                "the root is an initramfs: using MS_MOVE and chroot instead of pivot_root",
            );
            return move_root(rootfs);
        }
        Err(e) => return Err(Error::io("pivot_root into the rootfs", e)),
    }
    // The old root is now stacked on the new one. "." must name the old root's mount
    // (entered through its descriptor): as the new root's, the slave step below
    // would cut the container's bidirectional volumes off from the host's peer
    // groups. Its unmount must not propagate to the host; then it is detached.
    rustix::process::fchdir(&oldroot).ctx(|| "enter the old root")?;
    sys::mount(
        None,
        c".",
        None,
        (libc::MS_SLAVE | libc::MS_REC) as libc::c_ulong,
        None,
    )
    .ctx(|| "make the old root a slave")?;
    sys::umount2(c".", libc::MNT_DETACH).ctx(|| "detach the old root")?;
    rustix::process::chdir("/").ctx(|| "chdir to the new root")?;
    Ok(())
}

fn root_is_ramfs() -> bool {
    rustix::fs::statfs("/").is_ok_and(|s| {
        let t = s.f_type;
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    })
}

/// The `--no-pivot` way: move the rootfs mount over / and chroot into it. Weaker than
/// pivot_root (the old root stays in the namespace, hidden), as with runc.
pub fn move_root(rootfs: &Path) -> Result<()> {
    rustix::process::chdir(rootfs).ctx(|| format!("enter rootfs {}", rootfs.display()))?;
    sys::mount(
        Some(&cstr(rootfs)),
        c"/",
        None,
        libc::MS_MOVE as libc::c_ulong,
        None,
    )
    .ctx(|| "move the rootfs onto /")?;
    rustix::process::chroot(".").ctx(|| "chroot into the rootfs")?;
    rustix::process::chdir("/").ctx(|| "chdir to the new root")?;
    Ok(())
}

/// Jails the process in `rootfs` without a mount namespace of its own, as runc and
/// crun do for a spec that lists none: the container shares the caller's mount
/// table, so what is mounted for it lies in that table under `rootfs`, and
/// [`unmount_under`] removes it when the container goes.
pub fn chroot_into(rootfs: &Path) -> Result<()> {
    rustix::process::chdir(rootfs).ctx(|| format!("enter rootfs {}", rootfs.display()))?;
    rustix::process::chroot(".").ctx(|| "chroot into the rootfs")?;
    rustix::process::chdir("/").ctx(|| "chdir to the new root")?;
    Ok(())
}

/// The mounts below `rootfs` in this mount namespace (not `rootfs` itself): their
/// mount IDs and mount points, from /proc/self/mountinfo.
pub fn mounts_under(rootfs: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "read mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let id = f.next()?.parse().ok()?;
            let point = PathBuf::from(unescape_mountinfo(f.nth(3)?));
            Some((id, point))
        })
        .filter(|(_, p)| p.starts_with(rootfs) && p != rootfs)
        .collect())
}

/// Unmounts (lazily, deepest first, never following a symlink) everything mounted
/// below `rootfs` in this mount namespace except the mounts `keep` (their IDs: what
/// was there before the container), leaving `rootfs` itself alone: the mounts a
/// container without a mount namespace of its own left behind. Stacked mounts are
/// taken off one by one until none is left.
pub fn unmount_under(rootfs: &Path, keep: &[u64]) -> Result<()> {
    for _ in 0..64 {
        let mut points: Vec<(u64, PathBuf)> = mounts_under(rootfs)?
            .into_iter()
            .filter(|(id, _)| !keep.contains(id))
            .collect();
        if points.is_empty() {
            return Ok(());
        }
        points.sort_by_key(|(_, p)| std::cmp::Reverse(p.as_os_str().len()));
        for (_, p) in points {
            match sys::umount2(&cstr(&p), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) {
                Ok(()) => {}
                // Gone with its parent already.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
                Err(e) => return Err(Error::io(format!("unmount {}", p.display()), e)),
            }
        }
    }
    Err(Error::invalid(format!(
        "mounts below {} keep coming back; unmount them by hand",
        rootfs.display()
    )))
}

/// Where a container records the mounts below its rootfs that predate it.
const KEPT_MOUNTS: &str = "kept-mounts";

/// Records the IDs of the mounts below the rootfs that predate the container.
pub fn save_kept_mounts(dir: &Path, ids: &[u64]) -> Result<()> {
    let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
    std::fs::write(dir.join(KEPT_MOUNTS), text).ctx(|| "record the mounts below the rootfs")
}

/// The IDs [`save_kept_mounts`] recorded (none when there is no record).
pub fn load_kept_mounts(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join(KEPT_MOUNTS))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// A mountinfo path field with its octal escapes (`\040` for a space) decoded.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens the container's /dev/null (after pivoting) without following a symlink, and
/// checks that it is the null device, so masking never bind-mounts an impostor such as
/// a link to /proc/sys/kernel/core_pattern (CVE-2025-31133 class).
pub fn open_verified_null(root: &pathrs::Root) -> Result<pathrs::Handle> {
    let h = root
        .resolve_nofollow("dev/null")
        .ctx(|| "open /dev/null in the container")?;
    let st = rustix::fs::fstat(&h).ctx(|| "stat /dev/null")?;
    let is_chr = (st.st_mode & libc::S_IFMT) == libc::S_IFCHR;
    if !is_chr || rustix::fs::major(st.st_rdev) != 1 || rustix::fs::minor(st.st_rdev) != 3 {
        return Err(Error::invalid(
            "the container's /dev/null is not the null device (1:3); refusing to use it to mask paths",
        ));
    }
    Ok(h)
}

/// Hides `linux.maskedPaths` (after pivot): /dev/null over files, an empty read-only
/// tmpfs over directories. Paths that do not exist are skipped.
pub fn mask_paths(root: &pathrs::Root, paths: &[String]) -> Result<()> {
    let mut null = None;
    for (i, p) in paths.iter().enumerate() {
        let rel = p.trim_start_matches('/');
        let Some(h) = resolve_existing(root, rel, &format!("linux.maskedPaths[{i}] {p}"))? else {
            continue;
        };
        let st = rustix::fs::fstat(&h).ctx(|| format!("stat masked path {p}"))?;
        let tree = if (st.st_mode & libc::S_IFMT) == libc::S_IFDIR {
            mountapi::new_fs(
                "tmpfs",
                Some("tmpfs"),
                &[],
                libc::MS_RDONLY,
                sys::mount_attr::RDONLY,
            )?
        } else {
            if null.is_none() {
                null = Some(open_verified_null(root)?);
            }
            mountapi::clone_fd(null.as_ref().expect("opened above").as_fd(), false)?
        };
        mountapi::attach(&tree, h.as_fd())
            .map_err(|e| Error::invalid(format!("linux.maskedPaths[{i}] {p}: {e}")))?;
    }
    Ok(())
}

/// Resolves a path inside the root; Ok(None) when it does not exist (which masked and
/// read-only paths allow), an error for anything else.
fn resolve_existing(root: &pathrs::Root, rel: &str, what: &str) -> Result<Option<pathrs::Handle>> {
    match root.resolve(rel) {
        Ok(h) => Ok(Some(h)),
        Err(e)
            if matches!(
                e.kind(),
                pathrs::error::ErrorKind::OsError(Some(libc::ENOENT | libc::ENOTDIR))
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).ctx(|| format!("{what}: resolve")),
    }
}

/// Makes `linux.readonlyPaths` read-only (recursively), after pivot.
pub fn readonly_paths(root: &pathrs::Root, paths: &[String]) -> Result<()> {
    for (i, p) in paths.iter().enumerate() {
        let rel = p.trim_start_matches('/');
        let Some(h) = resolve_existing(root, rel, &format!("linux.readonlyPaths[{i}] {p}"))? else {
            continue;
        };
        let tree = mountapi::clone_fd(h.as_fd(), true)?;
        mountapi::set_attrs(tree.as_fd(), true, sys::mount_attr::RDONLY, 0)
            .map_err(|e| Error::invalid(format!("linux.readonlyPaths[{i}] {p}: {e}")))?;
        mountapi::attach(&tree, h.as_fd())
            .map_err(|e| Error::invalid(format!("linux.readonlyPaths[{i}] {p}: {e}")))?;
    }
    Ok(())
}

/// After pivot: root.readonly and the final rootfs propagation.
pub fn finish_root(spec: &Spec, propagation: Option<u64>) -> Result<()> {
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /")?;
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly() == Some(true))
    {
        sys::mount_setattr(root.as_fd(), false, sys::mount_attr::RDONLY, 0, 0)
            .ctx(|| "root.readonly: remount / read-only")?;
    }
    if let Some(p) = propagation {
        sys::mount(None, c"/", None, p as libc::c_ulong, None)
            .ctx(|| "linux.rootfsPropagation: set the propagation of /")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::unescape_mountinfo;

    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape_mountinfo("/a\\040b/c\\134d"), "/a b/c\\d");
        assert_eq!(unescape_mountinfo("/plain\\"), "/plain\\");
    }
}
