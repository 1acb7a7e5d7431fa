//! The entries of `mounts` in config.json, mounted in order into the container's root.
//!
//! Each destination is resolved beneath the rootfs with pathrs (no symlink can lead out),
//! created if missing, and the mount is attached onto that resolved handle.

use std::fs::Permissions;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;
use pathrs::Root;

use super::mountapi;
use super::options::MountOptions;
use crate::cgroups::{CgroupPaths, Layout, Mode};
use crate::error::{Context, Error, Result};

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// Files inside /proc that may be mounted over, for /proc views such as lxcfs (and
/// berth's own); any other destination on procfs is refused (CVE-2019-16884 class).
const PROC_OVERMOUNT_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/sys/kernel/ns_last_pid",
];

/// What mounting needs to know about the container.
pub struct MountCtx<'a> {
    /// The rootfs, for resolving destinations.
    pub root: &'a Root,
    /// The bundle (relative bind sources are relative to it).
    pub bundle: &'a Path,
    /// The container's cgroup directories.
    pub cgroup: &'a CgroupPaths,
    /// The host's cgroup layout.
    pub layout: &'a Layout,
    /// Whether the container has its own cgroup namespace.
    pub cgroupns: bool,
    /// The SELinux context of the filesystems made for the container (only when
    /// SELinux is enabled).
    pub mount_label: Option<String>,
}

/// The kinds of filesystem labelled with `linux.mountLabel` (those made for the
/// container, as runc labels them).
const LABELLED: &[&str] = &["tmpfs", "mqueue", "devpts", "shm"];

/// Resolves (creating if needed) a destination inside the root: a directory, or an
/// empty file when `file` is set.
pub fn ensure_dest(root: &Root, dest: &Path, file: bool) -> Result<pathrs::Handle> {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    if rel.as_os_str().is_empty() {
        return root.resolve("/").ctx(|| "resolve the rootfs");
    }
    if let Ok(h) = root.resolve(rel) {
        return Ok(h);
    }
    let perm = Permissions::from_mode(0o755);
    if file {
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            root.mkdir_all(parent, &perm)
                .ctx(|| format!("create directory {} in the rootfs", parent.display()))?;
        }
        match root.create_file(
            rel,
            pathrs::flags::OpenFlags::O_CREAT | pathrs::flags::OpenFlags::O_RDONLY,
            &Permissions::from_mode(0o644),
        ) {
            Ok(_) => {}
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::EEXIST)) => {}
            Err(e) => {
                return Err(e).ctx(|| format!("create file {} in the rootfs", dest.display()))
            }
        }
        root.resolve(rel)
            .ctx(|| format!("resolve {} in the rootfs", dest.display()))
    } else {
        root.mkdir_all(rel, &perm)
            .ctx(|| format!("create directory {} in the rootfs", dest.display()))
    }
}

fn on_procfs(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|s| s.f_type == PROC_SUPER_MAGIC)
}

/// Mounts one entry of `mounts`.
pub fn mount_entry(ctx: &MountCtx<'_>, i: usize, m: &Mount) -> Result<()> {
    let field = format!("mounts[{i}]");
    let dest = m.destination();
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or(&[]), &field)?;
    let typ = m.typ().as_deref().unwrap_or("");
    let wrap = |e: Error| -> Error {
        let msg = e.to_string();
        match e {
            Error::Io { source, .. } => {
                Error::io(format!("{field} ({}): {msg}", dest.display()), source)
            }
            _ => Error::invalid(format!("{field} ({}): {msg}", dest.display())),
        }
    };
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroups(ctx, dest, &opts).map_err(wrap);
    }
    if opts.bind || typ == "bind" {
        bind_entry(ctx, &field, m, &opts).map_err(wrap)
    } else {
        fs_entry(ctx, &field, m, typ, &opts).map_err(wrap)
    }
}

fn check_proc_dest(handle: &pathrs::Handle, dest: &Path, field: &str) -> Result<()> {
    if on_procfs(handle.as_fd()) && !PROC_OVERMOUNT_ALLOWED.iter().any(|p| Path::new(p) == dest) {
        return Err(Error::invalid(format!(
            "{field}: refusing to mount over {} because it lies inside /proc (only {} may be overmounted)",
            dest.display(),
            PROC_OVERMOUNT_ALLOWED.join(", ")
        )));
    }
    Ok(())
}

fn bind_entry(ctx: &MountCtx<'_>, field: &str, m: &Mount, opts: &MountOptions) -> Result<()> {
    let src = m
        .source()
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("{field}: a bind mount needs a source")))?;
    let src: PathBuf = if src.is_absolute() {
        src.clone()
    } else {
        ctx.bundle.join(src)
    };
    let meta = std::fs::metadata(&src)
        .map_err(|e| Error::invalid(format!("{field}.source {}: {e}", src.display())))?;
    let dest = ensure_dest(ctx.root, m.destination(), !meta.is_dir())?;
    check_proc_dest(&dest, m.destination(), field)?;
    let tree = mountapi::clone_tree(&src, opts.recursive)?;
    let (set, clear) = opts.attrs();
    mountapi::set_attrs(tree.as_fd(), false, set, clear)?;
    mountapi::set_attrs(tree.as_fd(), true, opts.rec_set, opts.rec_clear)?;
    mountapi::attach(&tree, dest.as_fd())?;
    for p in &opts.propagation {
        mountapi::set_propagation(tree.as_fd(), *p)?;
    }
    Ok(())
}

fn fs_entry(
    ctx: &MountCtx<'_>,
    field: &str,
    m: &Mount,
    typ: &str,
    opts: &MountOptions,
) -> Result<()> {
    if typ.is_empty() {
        return Err(Error::invalid(format!(
            "{field}: type is required unless the options contain bind or rbind"
        )));
    }
    if opts.flags & libc::MS_REMOUNT != 0 {
        return Err(Error::unsupported(format!(
            "{field}: the remount option is only supported together with bind"
        )));
    }
    let dest = ensure_dest(ctx.root, m.destination(), false)?;
    check_proc_dest(&dest, m.destination(), field)?;
    let (set, _) = opts.attrs();
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned());
    let mut data = opts.data.clone();
    if let Some(label) = ctx.mount_label.as_ref().filter(|_| LABELLED.contains(&typ)) {
        // Unquoted: fsconfig(2) takes the value as it is (only mount(2)'s option
        // string parser strips quotes).
        data.push(format!("context={label}"));
    }
    let tree = mountapi::new_fs(typ, source.as_deref(), &data, opts.flags, set)?;
    if opts.tmpcopyup {
        copy_up(dest.as_fd(), tree.as_fd())
            .map_err(|e| Error::invalid(format!("{field}: tmpcopyup: {e}")))?;
    }
    mountapi::set_attrs(tree.as_fd(), true, opts.rec_set, opts.rec_clear)?;
    mountapi::attach(&tree, dest.as_fd())?;
    for p in &opts.propagation {
        mountapi::set_propagation(tree.as_fd(), *p)?;
    }
    Ok(())
}

/// Copies the contents of directory `from` (the destination before the mount) into the
/// root of the new filesystem `to`, keeping modes, owners and symlinks.
fn copy_up(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags};
    let src = rustix::fs::openat(
        from,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open the directory to copy up")?;
    let dst = rustix::fs::openat(
        to,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open the new tmpfs")?;
    let st = rustix::fs::fstat(&src).ctx(|| "stat the directory to copy up")?;
    let _ = rustix::fs::fchmod(&dst, Mode::from_raw_mode(st.st_mode & 0o7777));
    let _ = rustix::fs::fchown(
        &dst,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    );
    let mut dir = rustix::fs::Dir::read_from(&src).ctx(|| "read the directory to copy up")?;
    for entry in dir.by_ref() {
        let entry = entry.ctx(|| "read the directory to copy up")?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let st = rustix::fs::statat(&src, name, AtFlags::SYMLINK_NOFOLLOW)
            .ctx(|| "stat an entry to copy up")?;
        let uid = Some(rustix::fs::Uid::from_raw(st.st_uid));
        let gid = Some(rustix::fs::Gid::from_raw(st.st_gid));
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                rustix::fs::mkdirat(&dst, name, mode).ctx(|| "copy up a directory")?;
                let s = rustix::fs::openat(
                    &src,
                    name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| "open a directory to copy up")?;
                let d = rustix::fs::openat(
                    &dst,
                    name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| "open a copied directory")?;
                copy_up(s.as_fd(), d.as_fd())?;
            }
            libc::S_IFREG => {
                let s = rustix::fs::openat(
                    &src,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| "open a file to copy up")?;
                let d = rustix::fs::openat(
                    &dst,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    mode,
                )
                .ctx(|| "create a copied file")?;
                let mut s = std::fs::File::from(s);
                let mut d = std::fs::File::from(d);
                std::io::copy(&mut s, &mut d).ctx(|| "copy a file up")?;
                let _ = rustix::fs::fchmod(&d, mode);
                let _ = rustix::fs::fchown(&d, uid, gid);
            }
            libc::S_IFLNK => {
                let target = rustix::fs::readlinkat(&src, name, Vec::new())
                    .ctx(|| "read a symlink to copy up")?;
                rustix::fs::symlinkat(target.as_c_str(), &dst, name).ctx(|| "copy up a symlink")?;
                let _ = rustix::fs::chownat(&dst, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW);
            }
            _ => continue,
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            let _ = rustix::fs::chownat(&dst, name, uid, gid, AtFlags::empty());
        }
    }
    Ok(())
}

/// The directory of this process's own cgroup on the hierarchy of v1 controller
/// `ctrl` (None: cgroup2).
fn current_cgroup_dir(layout: &crate::cgroups::Layout, ctrl: Option<&str>) -> Option<PathBuf> {
    let lines = crate::cgroups::proc::read(None).ok()?;
    lines.iter().find_map(|line| match ctrl {
        None if line.is_unified() => layout
            .unified
            .as_ref()
            .map(|m| layout.dir_on(m, "", Path::new(&line.path))),
        Some(c) if line.controllers.iter().any(|x| x == c) => layout
            .v1
            .get(c)
            .map(|m| layout.dir_on(m, c, Path::new(&line.path))),
        _ => None,
    })
}

/// A `cgroup` mount: the container sees its own cgroup as the root of each hierarchy.
/// With a cgroup namespace, fresh cgroup filesystems are mounted (the kernel roots them
/// at the namespace); without one, the container's cgroup directories are bind-mounted.
fn mount_cgroups(ctx: &MountCtx<'_>, dest: &Path, opts: &MountOptions) -> Result<()> {
    let (set, clear) = opts.attrs();
    let attach_at = |at: &Path, tree: std::os::fd::OwnedFd, with_attrs: bool| -> Result<()> {
        let h = ensure_dest(ctx.root, at, false)?;
        mountapi::attach(&tree, h.as_fd())?;
        if with_attrs {
            mountapi::set_attrs(tree.as_fd(), false, set, clear)?;
        }
        Ok(())
    };
    let unified_tree = || -> Result<std::os::fd::OwnedFd> {
        if ctx.cgroupns {
            mountapi::new_fs("cgroup2", Some("cgroup2"), &[], 0, set)
        } else {
            let dir = match ctx.cgroup.unified.as_deref() {
                Some(d) => d.to_path_buf(),
                None => current_cgroup_dir(ctx.layout, None).ok_or_else(|| {
                    Error::unsupported("no cgroup2 directory to bind for the cgroup mount")
                })?,
            };
            mountapi::clone_tree(&dir, false)
        }
    };
    if ctx.layout.mode() == Mode::Unified {
        return attach_at(dest, unified_tree()?, true);
    }
    // v1 and hybrid: a tmpfs with one directory per hierarchy.
    let tmpfs = mountapi::new_fs(
        "tmpfs",
        Some("tmpfs"),
        &["mode=755".to_string()],
        0,
        set & !crate::sys::mount_attr::RDONLY,
    )?;
    attach_at(dest, tmpfs, false)?;
    let mut seen: Vec<PathBuf> = Vec::new();
    for (ctrl, mount) in &ctx.layout.v1 {
        if seen.contains(&mount.mountpoint) {
            continue;
        }
        seen.push(mount.mountpoint.clone());
        let name = mount
            .mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ctrl.clone());
        let at = dest.join(&name);
        let tree = if ctx.cgroupns {
            mountapi::new_fs("cgroup", Some("cgroup"), &mount.controllers, 0, set)?
        } else {
            let dir = match ctx.cgroup.v1_dir(ctrl) {
                Some(d) => d.to_path_buf(),
                // Without root and without a cgroup of its own there: the one the
                // container runs in, as runc's rootless mode shows it.
                None => current_cgroup_dir(ctx.layout, Some(ctrl)).ok_or_else(|| {
                    Error::unsupported(format!("no cgroup directory for controller {ctrl}"))
                })?,
            };
            mountapi::clone_tree(&dir, false)?
        };
        attach_at(&at, tree, true)?;
        // Co-mounted hierarchies ("cpu,cpuacct") are also reachable by each name.
        if name.contains(',') {
            for part in name.split(',') {
                let link = dest
                    .join(part)
                    .strip_prefix("/")
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                let _ = ctx
                    .root
                    .create(&link, &pathrs::InodeType::Symlink(PathBuf::from(&name)));
            }
        }
    }
    if ctx.layout.unified.is_some() {
        attach_at(&dest.join("unified"), unified_tree()?, true)?;
    }
    if set & crate::sys::mount_attr::RDONLY != 0 {
        // The tmpfs was mounted writable so the hierarchies could be placed in it.
        let top = ensure_dest(ctx.root, dest, false)?;
        mountapi::set_attrs(top.as_fd(), false, crate::sys::mount_attr::RDONLY, 0)?;
    }
    Ok(())
}
