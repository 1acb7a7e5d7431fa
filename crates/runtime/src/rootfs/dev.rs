//! /dev inside the container: the default device nodes, the standard symlinks, the
//! devpts ptmx link, and the devices listed in `linux.devices`.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use pathrs::Root;
use rustix::fs::{FileType, Mode};

use super::mounts::ensure_dest;
use crate::error::{Context, Error, Result};

/// The devices every container gets: (path, major, minor).
const DEFAULT_DEVICES: &[(&str, u32, u32)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

const SYMLINKS: &[(&str, &str)] = &[
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
];

/// How device nodes are made: mknod, or (in a user namespace, where mknod is not
/// allowed) a bind mount of the host's node.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum NodeMethod {
    /// mknod(2).
    Mknod,
    /// Bind-mount the host device file.
    Bind,
}

fn split(path: &Path) -> Result<(PathBuf, std::ffi::OsString)> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let name = rel
        .file_name()
        .ok_or_else(|| Error::invalid(format!("device path {} has no file name", path.display())))?
        .to_os_string();
    Ok((
        rel.parent().map(Path::to_path_buf).unwrap_or_default(),
        name,
    ))
}

fn parent_dir(root: &Root, parent: &Path) -> Result<pathrs::Handle> {
    root.mkdir_all(parent, &std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .ctx(|| {
            format!(
                "create {} in the rootfs",
                Path::new("/").join(parent).display()
            )
        })
}

/// Creates one device node (or bind-mounts the host's), replacing whatever non-directory
/// was at the path if it is not already the same device.
#[allow(clippy::too_many_arguments)]
fn make_node(
    root: &Root,
    path: &Path,
    kind: FileType,
    major: u32,
    minor: u32,
    mode: u32,
    owner: Option<(u32, u32)>,
    method: NodeMethod,
) -> Result<()> {
    let (parent, name) = split(path)?;
    let dir = parent_dir(root, &parent)?;
    let dir = rustix::fs::openat(
        dir.as_fd(),
        ".",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open the parent of {}", path.display()))?;
    let dev = rustix::fs::makedev(major, minor);
    if let Ok(st) = rustix::fs::statat(
        &dir,
        name.as_os_str(),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    ) {
        let existing = FileType::from_raw_mode(st.st_mode);
        let same = existing == kind && (kind == FileType::Fifo || st.st_rdev == dev);
        if same && method == NodeMethod::Mknod {
            return Ok(());
        }
        if existing == FileType::Directory {
            return Err(Error::invalid(format!(
                "cannot create device {}: a directory is in the way",
                path.display()
            )));
        }
        if method == NodeMethod::Mknod {
            rustix::fs::unlinkat(&dir, name.as_os_str(), rustix::fs::AtFlags::empty())
                .ctx(|| format!("replace {}", path.display()))?;
        }
    }
    match method {
        NodeMethod::Mknod => {
            rustix::fs::mknodat(
                &dir,
                name.as_os_str(),
                kind,
                Mode::from_raw_mode(mode & 0o7777),
                dev,
            )
            .ctx(|| format!("mknod {} ({major}:{minor})", path.display()))?;
            if let Some((uid, gid)) = owner {
                rustix::fs::chownat(
                    &dir,
                    name.as_os_str(),
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .ctx(|| format!("chown {}", path.display()))?;
            }
        }
        NodeMethod::Bind => {
            let target = ensure_dest(root, path, true)?;
            let tree = super::mountapi::clone_tree(path, false)?;
            super::mountapi::attach(&tree, target.as_fd())?;
        }
    }
    Ok(())
}

/// Creates the default devices, symlinks and the /dev/ptmx link.
pub fn setup_default_dev(root: &Root, method: NodeMethod) -> Result<()> {
    for &(path, major, minor) in DEFAULT_DEVICES {
        make_node(
            root,
            Path::new(path),
            FileType::CharacterDevice,
            major,
            minor,
            0o666,
            Some((0, 0)),
            method,
        )?;
    }
    let mut links: Vec<(&str, &str)> = SYMLINKS.to_vec();
    if Path::new("/proc/kcore").exists() {
        links.push(("/dev/core", "/proc/kcore"));
    }
    for (link, target) in links {
        let rel = link.trim_start_matches('/');
        match root.create(rel, &pathrs::InodeType::Symlink(PathBuf::from(target))) {
            Ok(()) => {}
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::EEXIST)) => {}
            Err(e) => return Err(e).ctx(|| format!("create symlink {link}")),
        }
    }
    // /dev/ptmx must be the devpts instance's own ptmx, so ptys belong to the container.
    let (parent, name) = split(Path::new("/dev/ptmx"))?;
    let dir = parent_dir(root, &parent)?;
    match rustix::fs::unlinkat(&dir, name.as_os_str(), rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(Error::io("remove /dev/ptmx", e)),
    }
    rustix::fs::symlinkat("pts/ptmx", &dir, name.as_os_str())
        .ctx(|| "create /dev/ptmx -> pts/ptmx")?;
    Ok(())
}

/// Creates the devices of `linux.devices`.
pub fn create_devices(root: &Root, devices: &[LinuxDevice], method: NodeMethod) -> Result<()> {
    for (i, d) in devices.iter().enumerate() {
        let field = format!("linux.devices[{i}]");
        let path = d.path();
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::invalid(format!(
                "{field}.path {} must be an absolute path without '..'",
                path.display()
            )));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => FileType::CharacterDevice,
            LinuxDeviceType::B => FileType::BlockDevice,
            LinuxDeviceType::P => FileType::Fifo,
            LinuxDeviceType::A => {
                return Err(Error::invalid(format!(
                    "{field}.type \"a\" is not a device type"
                )))
            }
        };
        let (major, minor) = (d.major(), d.minor());
        if major < 0 || minor < 0 || major > u32::MAX as i64 || minor > u32::MAX as i64 {
            return Err(Error::invalid(format!(
                "{field}: major/minor {major}:{minor} out of range"
            )));
        }
        let mode = d.file_mode().unwrap_or(0o666);
        let owner = Some((d.uid().unwrap_or(0), d.gid().unwrap_or(0)));
        let m = if kind == FileType::Fifo {
            NodeMethod::Mknod
        } else {
            method
        };
        make_node(root, path, kind, major as u32, minor as u32, mode, owner, m)
            .map_err(|e| Error::invalid(format!("{field}: {e}")))?;
    }
    Ok(())
}
