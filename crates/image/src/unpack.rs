//! Applying a layer (a tar stream) to a directory, safely.
//!
//! Every path is resolved beneath the directory (openat2 RESOLVE_IN_ROOT for parents,
//! never following the final component), so no entry can write outside it: not with
//! `..`, not through a symlink or hardlink made by an earlier entry. Whiteouts become
//! overlayfs whiteouts (a 0:0 character device, `trusted.overlay.opaque`) when the
//! directory is an overlay lower layer, or are applied (deleted) when layers are
//! flattened into one tree.
//!
//! Written on top of the `tar` crate's parser rather than its `unpack`: that one resolves
//! paths by name, knows nothing of whiteouts, and cannot be told to stay beneath a root.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use crate::error::{Context, Error, Result};

/// What to do with whiteout entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// Keep them as overlayfs whiteouts: the directory is one lower layer.
    Overlay,
    /// Apply them: delete what they hide (the directory holds all layers flattened).
    Apply,
}

/// Counts of what a layer held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries applied.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Metadata applied to directories after their contents (writing into a directory
/// changes its mtime).
struct DirMeta {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Applies tar layers to one directory.
pub struct Unpacker {
    root: OwnedFd,
    mode: Whiteouts,
    dirs: HashMap<PathBuf, OwnedFd>,
    written: HashSet<PathBuf>,
    deferred: Vec<DirMeta>,
    stats: Stats,
}

/// Cleans a tar entry path into a relative path with no `..` (an error names the entry).
pub fn clean_path(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(Error::invalid(format!(
                    "layer entry {:?}: '..' is not allowed in layer paths",
                    raw.display()
                )))
            }
            Component::Prefix(_) => {
                return Err(Error::invalid(format!(
                    "layer entry {:?}: bad path",
                    raw.display()
                )))
            }
        }
    }
    Ok(out)
}

fn ts(secs: u64, nanos: u32) -> Timespec {
    Timespec {
        tv_sec: secs.min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(nanos),
    }
}

impl Unpacker {
    /// An unpacker writing into `dir` (which must exist and be a directory).
    pub fn new(dir: &Path, mode: Whiteouts) -> Result<Unpacker> {
        let root = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open {}", dir.display()))?;
        Ok(Unpacker {
            root,
            mode,
            dirs: HashMap::new(),
            written: HashSet::new(),
            deferred: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// Applies one layer (an uncompressed tar stream). Call once per layer, in order.
    pub fn apply<R: Read>(&mut self, layer: R) -> Result<Stats> {
        self.written.clear();
        self.stats = Stats::default();
        let mut archive = tar::Archive::new(layer);
        let entries = archive
            .entries()
            .map_err(|e| Error::invalid(format!("read layer: {e}")))?;
        for entry in entries {
            let mut entry = match entry {
                Ok(e) => e,
                // umoci 0.4 ends layers right after the last file's data, without its
                // padding and the end-of-archive blocks (GNU tar and Go accept them).
                // Every entry read so far was complete (file content is checked against
                // its size), so only padding is missing: the layer is whole.
                Err(e)
                    if self.stats.entries > 0
                        && e.to_string().contains("unexpected EOF during skip") =>
                {
                    break
                }
                Err(e) => {
                    return Err(Error::invalid(format!(
                        "read layer: {e} (truncated or corrupt tar?)"
                    )))
                }
            };
            let raw = entry
                .path()
                .map_err(|e| Error::invalid(format!("layer entry name: {e}")))?
                .into_owned();
            self.apply_entry(&mut entry, &raw).map_err(|e| match e {
                Error::Invalid(m) if m.starts_with("layer entry") => Error::Invalid(m),
                Error::Io { context, source } => Error::Io {
                    context: format!("layer entry {:?}: {context}", raw.display()),
                    source,
                },
                other => Error::invalid(format!("layer entry {:?}: {other}", raw.display())),
            })?;
            self.stats.entries += 1;
        }
        self.finish_dirs()?;
        Ok(self.stats)
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &Path) -> Result<()> {
        let path = clean_path(raw)?;
        let kind = entry.header().entry_type();
        let name = path.file_name().map(OsStr::to_os_string);
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let Some(name) = name else {
            // The layer root itself ("./"): only its metadata applies.
            if kind.is_dir() {
                self.defer_dir(entry, PathBuf::new())?;
            }
            return Ok(());
        };
        // Metadata entries (a `pax_global_header` is named like a file) carry no file.
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE.as_bytes() {
            return self.opaque(&parent, raw);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.contains(&b'/') {
                return Err(Error::invalid(format!(
                    "layer entry {:?}: a whiteout of {:?} is not allowed",
                    raw.display(),
                    OsStr::from_bytes(hidden)
                )));
            }
            return self.whiteout(&parent, OsStr::from_bytes(hidden));
        }
        let header = entry.header().clone();
        let (uid, gid) = owner(&header)?;
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = entry_mtime(entry);
        let xattrs = entry_xattrs(entry);
        if kind.is_dir() {
            let dir = self.dir(&parent)?;
            self.replace_unless_dir(dir.as_fd(), &name, &path)?;
            match rustix::fs::mkdirat(dir.as_fd(), name.as_os_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(Error::io("mkdir", e)),
            }
            self.written.insert(path.clone());
            return self.defer_dir(entry, path);
        }
        let dir = self.dir(&parent)?;
        self.replace(dir.as_fd(), &name, &path)?;
        self.written.insert(path.clone());
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    dir.as_fd(),
                    name.as_os_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .ctx(|| "create file")?;
                let mut file = std::fs::File::from(fd);
                let size = entry.size();
                // A GNU sparse entry declares its size apart from the data it carries,
                // and its holes are read as zeros: bound them, or a tiny layer could
                // keep the unpacker busy for hours.
                let stored = entry.header().entry_size().unwrap_or(0);
                if kind == tar::EntryType::GNUSparse
                    && size.saturating_sub(stored) > MAX_SPARSE_HOLES
                {
                    return Err(Error::invalid(format!(
                        "layer entry {:?}: a sparse file of {size} bytes with {stored} bytes of data; holes over {} GiB are refused",
                        path.display(),
                        MAX_SPARSE_HOLES >> 30
                    )));
                }
                self.stats.bytes += write_sparse(entry, &mut file, size)?;
                rustix::fs::fchown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )
                .map_err(|e| chown_failed(e, uid, gid))?;
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).ctx(|| "chmod")?;
                for (k, v) in &xattrs {
                    set_xattr_fd(file.as_fd(), k, v)?;
                }
                rustix::fs::futimens(
                    &file,
                    &Timestamps {
                        last_access: mtime,
                        last_modification: mtime,
                    },
                )
                .ctx(|| "set times")?;
                return Ok(());
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::invalid(format!("symlink target: {e}")))?
                    .ok_or_else(|| Error::invalid("symlink without a target"))?;
                rustix::fs::symlinkat(target.as_os_str(), dir.as_fd(), name.as_os_str())
                    .ctx(|| "symlink")?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::invalid(format!("hardlink target: {e}")))?
                    .ok_or_else(|| Error::invalid("hardlink without a target"))?;
                let target = clean_path(&target).map_err(|_| {
                    Error::invalid(format!(
                        "layer entry {:?}: hardlink target {:?}: '..' is not allowed in layer paths",
                        raw.display(),
                        target.display()
                    ))
                })?;
                let tparent = target.parent().map(Path::to_path_buf).unwrap_or_default();
                let tname = target
                    .file_name()
                    .ok_or_else(|| Error::invalid("hardlink to the layer root"))?;
                let tdir = self.open_existing_dir(&tparent).map_err(|_| {
                    Error::invalid(format!(
                        "hardlink target {:?} is not in this layer",
                        target.display()
                    ))
                })?;
                rustix::fs::linkat(
                    tdir.as_fd(),
                    tname,
                    dir.as_fd(),
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| {
                    if e == rustix::io::Errno::NOENT {
                        Error::invalid(format!(
                            "hardlink target {:?} is not in this layer",
                            target.display()
                        ))
                    } else {
                        Error::io(format!("link to {}", target.display()), e)
                    }
                })?;
                // A hard link shares the target's inode and metadata: nothing more to set.
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                match rustix::fs::mknodat(
                    dir.as_fd(),
                    name.as_os_str(),
                    ft,
                    Mode::from_raw_mode(mode),
                    dev,
                ) {
                    // A user namespace may not make device nodes (rootless berth): the
                    // layer's /dev entries are left out, as the runtime gives a container
                    // its devices anyway.
                    Err(rustix::io::Errno::PERM)
                        if ft != FileType::Fifo && berth_hostdirs::in_user_namespace() =>
                    {
                        return Ok(());
                    }
                    r => r.ctx(|| "mknod")?,
                }
                rustix::fs::chmodat(
                    dir.as_fd(),
                    name.as_os_str(),
                    Mode::from_raw_mode(mode),
                    AtFlags::empty(),
                )
                .ctx(|| "chmod")?;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => return Ok(()),
            other => {
                return Err(Error::invalid(format!(
                    "layer entry {:?}: unsupported tar entry type {:?}",
                    path.display(),
                    other
                )))
            }
        }
        rustix::fs::chownat(
            dir.as_fd(),
            name.as_os_str(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            nofollow,
        )
        .map_err(|e| chown_failed(e, uid, gid))?;
        if !xattrs.is_empty() {
            let p = proc_path(dir.as_fd(), &name);
            for (k, v) in &xattrs {
                rustix::fs::lsetxattr(&p, k.as_os_str(), v, rustix::fs::XattrFlags::empty())
                    .ctx(|| format!("set xattr {}", k.to_string_lossy()))?;
            }
        }
        rustix::fs::utimensat(
            dir.as_fd(),
            name.as_os_str(),
            &Timestamps {
                last_access: mtime,
                last_modification: mtime,
            },
            nofollow,
        )
        .ctx(|| "set times")?;
        Ok(())
    }

    /// A handle on directory `rel` (created, with its parents, if missing), resolved
    /// beneath the root; cached, since tar entries come grouped by directory.
    fn dir(&mut self, rel: &Path) -> Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&self.root, 0).ctx(|| "dup");
        }
        if let Some(fd) = self.dirs.get(rel) {
            return rustix::io::fcntl_dupfd_cloexec(fd, 0).ctx(|| "dup");
        }
        let fd = match self.open_existing_dir(rel) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
                let name = rel
                    .file_name()
                    .expect("a non-empty relative path has a name");
                let pfd = self.dir(&parent)?;
                match rustix::fs::mkdirat(pfd.as_fd(), name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => {
                        return Err(Error::io(format!("create directory {}", rel.display()), e))
                    }
                }
                self.open_existing_dir(rel)?
            }
            Err(e) => return Err(e),
        };
        if self.dirs.len() > 4096 {
            self.dirs.clear();
        }
        let dup = rustix::io::fcntl_dupfd_cloexec(&fd, 0).ctx(|| "dup")?;
        self.dirs.insert(rel.to_path_buf(), fd);
        Ok(dup)
    }

    fn open_existing_dir(&self, rel: &Path) -> Result<OwnedFd> {
        if rel.as_os_str().is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&self.root, 0).ctx(|| "dup");
        }
        crate::inroot::open_at(
            &self.root,
            rel,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) {
                Error::invalid(format!("{} is not a directory", rel.display()))
            } else {
                Error::io(format!("open directory {}", rel.display()), e)
            }
        })
    }

    /// Removes whatever is at `dir/name` before something else is created there.
    fn replace(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<()> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io("stat", e)),
            Ok(st) => {
                self.forget_dirs(path);
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    remove_all_at(dir, name)
                } else {
                    rustix::fs::unlinkat(dir, name, AtFlags::empty()).ctx(|| "replace")
                }
            }
        }
    }

    /// Like [`Self::replace`], but an existing directory is kept (its entries merge).
    fn replace_unless_dir(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<()> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Ok(()),
            _ => self.replace(dir, name, path),
        }
    }

    fn forget_dirs(&mut self, path: &Path) {
        self.dirs.retain(|k, _| !k.starts_with(path));
    }

    fn whiteout(&mut self, parent: &Path, hidden: &OsStr) -> Result<()> {
        let dir = self.dir(parent)?;
        let path = parent.join(hidden);
        match self.mode {
            Whiteouts::Overlay => {
                self.replace(dir.as_fd(), hidden, &path)?;
                rustix::fs::mknodat(
                    dir.as_fd(),
                    hidden,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                )
                .ctx(|| "create an overlay whiteout")
            }
            Whiteouts::Apply => {
                self.forget_dirs(&path);
                match rustix::fs::statat(dir.as_fd(), hidden, AtFlags::SYMLINK_NOFOLLOW) {
                    Err(rustix::io::Errno::NOENT) => Ok(()),
                    Err(e) => Err(Error::io("stat", e)),
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        remove_all_at(dir.as_fd(), hidden)
                    }
                    Ok(_) => rustix::fs::unlinkat(dir.as_fd(), hidden, AtFlags::empty())
                        .ctx(|| "apply whiteout"),
                }
            }
        }
    }

    fn opaque(&mut self, parent: &Path, raw: &Path) -> Result<()> {
        let dir = self.dir(parent)?;
        if self.mode == Whiteouts::Overlay {
            // An opaque root would hide every lower layer; overlayfs does not allow it.
            // Compared by inode: a symlink (`l -> /`) can name the root too.
            let root = self.dir(Path::new(""))?;
            let (a, b) = (
                rustix::fs::fstat(dir.as_fd()).ctx(|| "stat directory")?,
                rustix::fs::fstat(root.as_fd()).ctx(|| "stat the layer root")?,
            );
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) {
                return Err(Error::invalid(format!(
                    "layer entry {:?}: the layer root cannot be opaque",
                    raw.display()
                )));
            }
        }
        match self.mode {
            Whiteouts::Overlay => {
                let d = rustix::fs::openat(
                    dir.as_fd(),
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| "open directory")?;
                rustix::fs::fsetxattr(
                    &d,
                    crate::overlay::opaque_xattr(),
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .ctx(|| "mark the directory opaque")
            }
            Whiteouts::Apply => {
                // Hide what lower layers put here, not what this layer wrote.
                let d = rustix::fs::openat(
                    dir.as_fd(),
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ctx(|| "open directory")?;
                let mut it = rustix::fs::Dir::read_from(&d).ctx(|| "read directory")?;
                let mut victims = Vec::new();
                for e in it.by_ref() {
                    let e = e.ctx(|| "read directory")?;
                    let n = OsStr::from_bytes(e.file_name().to_bytes()).to_os_string();
                    if n == "." || n == ".." || self.written.contains(&parent.join(&n)) {
                        continue;
                    }
                    victims.push(n);
                }
                for n in victims {
                    let p = parent.join(&n);
                    self.forget_dirs(&p);
                    self.replace(dir.as_fd(), &n, &p)?;
                }
                Ok(())
            }
        }
    }

    fn defer_dir<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: PathBuf) -> Result<()> {
        let h = entry.header().clone();
        let (uid, gid) = owner(&h)?;
        self.deferred.push(DirMeta {
            path,
            mode: h.mode().unwrap_or(0o755) & 0o7777,
            uid,
            gid,
            mtime: entry_mtime(entry),
            xattrs: entry_xattrs(entry),
        });
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        let mut deferred = std::mem::take(&mut self.deferred);
        // Deepest first, so setting a parent's mtime comes after its children's.
        deferred.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
        for d in deferred {
            let fd = match self.open_existing_dir(&d.path) {
                Ok(fd) => fd,
                // Removed again by a later entry of the layer.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(_) => continue,
            };
            let f = rustix::fs::openat(
                &fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| format!("open directory {}", d.path.display()))?;
            let ctx = |what: &str| format!("layer entry {:?}: {what}", d.path.display());
            rustix::fs::fchown(
                &f,
                Some(rustix::fs::Uid::from_raw(d.uid)),
                Some(rustix::fs::Gid::from_raw(d.gid)),
            )
            .map_err(|e| chown_failed(e, d.uid, d.gid))
            .map_err(|e| Error::invalid(ctx(&e.to_string())))?;
            rustix::fs::fchmod(&f, Mode::from_raw_mode(d.mode)).ctx(|| ctx("chmod"))?;
            for (k, v) in &d.xattrs {
                set_xattr_fd(f.as_fd(), k, v)?;
            }
            rustix::fs::futimens(
                &f,
                &Timestamps {
                    last_access: d.mtime,
                    last_modification: d.mtime,
                },
            )
            .ctx(|| ctx("set times"))?;
        }
        Ok(())
    }
}

/// A failed chown, said plainly when the owner is beyond what a rootless store's user
/// namespace maps (the kernel's EINVAL).
fn chown_failed(e: rustix::io::Errno, uid: u32, gid: u32) -> Error {
    if e == rustix::io::Errno::INVAL && berth_hostdirs::in_user_namespace() {
        return Error::invalid(format!(
            "owned by {uid}:{gid}, beyond the ids this user namespace maps: rootless berth \
             maps the user's range in /etc/subuid and /etc/subgid; give the user a larger one \
             (usermod --add-subuids / --add-subgids), remove the user's containers, and end its \
             session (the pause process in $XDG_RUNTIME_DIR/berth/pause.pid)"
        ));
    }
    Error::io("chown", e)
}

/// An entry's owner as chown takes it: 32-bit ids, and not -1, which chown reads as
/// "leave unchanged" (and rustix's `Uid::from_raw` asserts against).
fn owner(h: &tar::Header) -> Result<(u32, u32)> {
    let id = |what: &str, v: u64| {
        u32::try_from(v)
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or_else(|| Error::invalid(format!("{what} {v} is out of range")))
    };
    Ok((
        id("uid", h.uid().unwrap_or(0))?,
        id("gid", h.gid().unwrap_or(0))?,
    ))
}

fn entry_mtime<R: Read>(entry: &mut tar::Entry<'_, R>) -> Timespec {
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            if ext.key() == Ok("mtime") {
                if let Ok(v) = ext.value() {
                    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
                    if let Ok(secs) = s.parse::<u64>() {
                        let digits: String = frac
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .take(9)
                            .collect();
                        let nanos = if digits.is_empty() {
                            0
                        } else {
                            digits.parse::<u32>().unwrap_or(0) * 10u32.pow(9 - digits.len() as u32)
                        };
                        return ts(secs, nanos);
                    }
                }
            }
        }
    }
    ts(entry.header().mtime().unwrap_or(0), 0)
}

fn entry_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(OsString, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            if let Ok(key) = ext.key() {
                // overlayfs's own attributes (opaque, redirect, origin, metacopy) are
                // never taken from a layer: whiteouts and opaque markers are tar
                // entries, and forged redirects could point overlayfs elsewhere.
                if let Some(name) = key
                    .strip_prefix("SCHILY.xattr.")
                    .filter(|n| !crate::overlay::is_overlay_xattr(n))
                {
                    out.push((OsString::from(name), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

fn set_xattr_fd(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8]) -> Result<()> {
    rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty())
        .ctx(|| format!("set xattr {}", name.to_string_lossy()))
}

/// `/proc/self/fd/<dir>/<name>`: names a directory entry by handle for the path-only
/// calls (lsetxattr on a symlink).
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

/// The most hole bytes a sparse entry may declare (they are read as zeros).
const MAX_SPARSE_HOLES: u64 = 16 << 30;

/// Copies a file's content, leaving holes where whole blocks are zero (sparse files).
fn write_sparse<R: Read>(src: &mut R, dst: &mut std::fs::File, size: u64) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut pending_hole = false;
    loop {
        let n = src
            .read(&mut buf)
            .ctx(|| "read file content from the layer")?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if n == buf.len() && chunk.iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64)).ctx(|| "seek")?;
            pending_hole = true;
        } else {
            dst.write_all(chunk).ctx(|| "write file")?;
            pending_hole = false;
        }
        total += n as u64;
    }
    if total < size {
        return Err(Error::invalid(format!(
            "the content ends after {total} of its {size} bytes (truncated layer?)"
        )));
    }
    if pending_hole {
        dst.set_len(total.max(size)).ctx(|| "set file size")?;
    }
    Ok(total)
}

/// Removes `dir/name` and everything below it, without following symlinks.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(Error::io(format!("remove {}", name.to_string_lossy()), e)),
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open {}", name.to_string_lossy()))?;
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&sub).ctx(|| "read directory")? {
        let e = e.ctx(|| "read directory")?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    for n in names {
        remove_all_at(sub.as_fd(), &n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
        .ctx(|| format!("remove {}", name.to_string_lossy()))
}

/// Removes a whole tree by path (for snapshot and container directories).
pub fn remove_tree(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::invalid(format!(
            "refusing to remove {}",
            path.display()
        )));
    };
    let dir = match rustix::fs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Error::io(format!("open {}", parent.display()), e)),
    };
    remove_all_at(dir.as_fd(), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert_eq!(
            clean_path(Path::new("/etc/passwd")).unwrap(),
            Path::new("etc/passwd")
        );
        assert!(clean_path(Path::new("a/../../b")).is_err());
        assert!(clean_path(Path::new("..")).is_err());
    }
}
