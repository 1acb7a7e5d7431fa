//! Snapshots and container root filesystems.
//!
//! Each layer is unpacked once into its own directory (keyed by chain ID, named by a
//! short number) and shared by every image that has it. A container's rootfs is an
//! overlay of those directories (read-only), an init layer (/etc/hosts, /etc/hostname,
//! /etc/resolv.conf) above them, and the container's own upper and work directories.
//! Where overlayfs cannot be mounted, the layers are copied into a plain directory.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::compress;
use crate::digest::{Digest, HashingReader};
use crate::error::{Context, Error, Result};
use crate::image::ResolvedImage;
use crate::store::{ContainerRecord, Store};
use crate::unpack::{remove_tree, Unpacker, Whiteouts};

/// Files of the init layer, which `commit` leaves out.
pub const INIT_FILES: &[&str] = &["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// How a container rootfs is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshotter {
    /// Overlay if it can be mounted here, else copy (with a message).
    Auto,
    /// Always overlay.
    Overlay,
    /// Always copy.
    Copy,
}

/// A layer unpacked into a temporary directory, waiting for its checks (removed if
/// dropped).
pub struct PendingSnapshot {
    tmp: tempfile::TempDir,
    bytes: u64,
    diff_id: Digest,
}

/// A prepared container rootfs.
#[derive(Clone, Debug)]
pub struct Rootfs {
    /// The directory to use as the container's root.
    pub path: PathBuf,
    /// "overlay" or "copy".
    pub mode: String,
    /// Why the copy fallback was chosen, when it was.
    pub note: Option<String>,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

impl Store {
    /// Unpacks every layer of an image that is not unpacked yet; returns the snapshot
    /// ids, bottom layer first. `progress` is called per layer unpacked.
    pub fn unpack_image(
        &self,
        img: &ResolvedImage,
        mut progress: impl FnMut(&Digest, u64),
    ) -> Result<Vec<i64>> {
        let _lock = self.shared_lock()?;
        let mut ids = Vec::new();
        for i in 0..img.layers()?.len() {
            let (id, unpacked) = self.unpack_layer_at_inner(img, i)?;
            if let Some(size) = unpacked {
                progress(&img.layers()?[i].0, size);
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// Unpacks layer `i` of an image (if not unpacked yet); returns its snapshot id.
    /// Layers are independent directories, so they can be unpacked in any order.
    pub fn unpack_layer_at(&self, img: &ResolvedImage, i: usize) -> Result<i64> {
        let _lock = self.shared_lock()?;
        Ok(self.unpack_layer_at_inner(img, i)?.0)
    }

    fn unpack_layer_at_inner(&self, img: &ResolvedImage, i: usize) -> Result<(i64, Option<u64>)> {
        let layers = img.layers()?;
        let (blob, media_type, _size, diff_id) = layers.get(i).ok_or_else(|| {
            Error::invalid(format!("image {} has no layer {i}", img.manifest_digest))
        })?;
        let chain = &img.chain_ids[i];
        let parent = i.checked_sub(1).map(|p| &img.chain_ids[p]);
        let id = self.reserve_snapshot(chain, parent, diff_id)?;
        let dir = self.snapshot_dir(id);
        if dir.exists() {
            return Ok((id, None));
        }
        compress::Compression::from_media_type(media_type)?;
        let size = match self.unpack_layer(blob, diff_id, &dir) {
            Ok(s) => s,
            // A layer that does not unpack may be a blob damaged on disk since it was
            // verified: check, and if so drop it so that a pull can fetch it again.
            Err(e @ (Error::Invalid(_) | Error::DigestMismatch(_))) => {
                self.verify_blob(blob)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.complete_snapshot(id, size)?;
        Ok((id, Some(size)))
    }

    /// Unpacks one layer blob into `dest` (via a temporary directory renamed into place,
    /// so a failure or crash never leaves a partial snapshot), checking its diff ID.
    fn unpack_layer(&self, blob: &Digest, diff_id: &Digest, dest: &Path) -> Result<u64> {
        let file = self.open_blob(blob)?;
        let pending = self.unpack_to_tmp(blob, std::io::BufReader::with_capacity(1 << 20, file))?;
        self.install(pending, blob, diff_id, dest)
    }

    /// Unpacks a (compressed) layer stream into a temporary snapshot directory; nothing
    /// is in place until [`Store::install_layer_at`] has checked it. A pull feeds this
    /// while the blob is still arriving.
    pub(crate) fn unpack_to_tmp(
        &self,
        blob: &Digest,
        compressed: impl std::io::Read + Send,
    ) -> Result<PendingSnapshot> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(self.root().join("s"))
            .ctx(|| "create a temporary snapshot directory")?;
        let mut unpacker = Unpacker::new(tmp.path(), Whiteouts::Overlay)?;
        // Decompressed and hashed on one thread, written out on this one.
        let (stats, (diff_id, _)) = compress::read_ahead(
            || Ok(HashingReader::new(compress::decompress(compressed)?)),
            HashingReader::finish,
            |tar| {
                let stats = unpacker.apply(&mut *tar)?;
                // The tar end-of-archive blocks (and any padding) belong to the diff
                // ID too.
                std::io::copy(tar, &mut std::io::sink()).map_err(|e| Error::io("read", e))?;
                Ok(stats)
            },
        )
        .map_err(|e| Error::invalid(format!("layer {blob}: {e}")))?;
        Ok(PendingSnapshot {
            tmp,
            bytes: stats.bytes,
            diff_id,
        })
    }

    /// Checks a pending snapshot against the diff ID and moves it to `dest`.
    fn install(
        &self,
        pending: PendingSnapshot,
        blob: &Digest,
        diff_id: &Digest,
        dest: &Path,
    ) -> Result<u64> {
        if &pending.diff_id != diff_id {
            return Err(Error::DigestMismatch(format!(
                "layer {blob}: its uncompressed content hashes to {}, but the image config says {diff_id}",
                pending.diff_id
            )));
        }
        let tmp_path = pending.tmp.keep();
        match std::fs::rename(&tmp_path, dest) {
            Ok(()) => {}
            // Another unpack of the same layer finished first.
            Err(_) if dest.exists() => remove_tree(&tmp_path)?,
            Err(e) => {
                let _ = remove_tree(&tmp_path);
                return Err(Error::io(
                    format!("move snapshot into {}", dest.display()),
                    e,
                ));
            }
        }
        Ok(pending.bytes)
    }

    /// Whether layer `i` of an image still has to be unpacked.
    pub(crate) fn layer_missing(&self, img: &ResolvedImage, i: usize) -> Result<bool> {
        Ok(match self.snapshot(&img.chain_ids[i])? {
            Some(s) => !self.snapshot_dir(s.id).exists(),
            None => true,
        })
    }

    /// Puts a layer unpacked by [`Store::unpack_to_tmp`] in place as layer `i` of an
    /// image (after checking its diff ID); returns the snapshot id.
    pub(crate) fn install_layer_at(
        &self,
        img: &ResolvedImage,
        i: usize,
        pending: PendingSnapshot,
    ) -> Result<i64> {
        let _lock = self.shared_lock()?;
        let layers = img.layers()?;
        let (blob, _, _, diff_id) = layers.get(i).ok_or_else(|| {
            Error::invalid(format!("image {} has no layer {i}", img.manifest_digest))
        })?;
        let parent = i.checked_sub(1).map(|p| &img.chain_ids[p]);
        let id = self.reserve_snapshot(&img.chain_ids[i], parent, diff_id)?;
        let dir = self.snapshot_dir(id);
        if !dir.exists() {
            let size = self.install(pending, blob, diff_id, &dir)?;
            self.complete_snapshot(id, size)?;
        }
        Ok(id)
    }

    /// Prepares the rootfs of a new container from an image: unpacks what is missing,
    /// writes the init layer (`init_files`: path relative to / and content), and mounts
    /// the overlay (or copies, where overlay cannot be used).
    pub fn prepare(
        &self,
        container: &str,
        img: &ResolvedImage,
        init_files: &[(&str, &[u8])],
        snapshotter: Snapshotter,
    ) -> Result<Rootfs> {
        valid_container_id(container)?;
        // One lock from unpack to the container's record: a prune in between would
        // find the new snapshots unreferenced.
        let _lock = self.shared_lock()?;
        let ids = self.unpack_image(img, |_, _| {})?;
        let dir = self.container_dir(container);
        let rec = ContainerRecord {
            id: container.to_string(),
            image: img.manifest_digest.clone(),
            chain_id: img.chain_ids.last().cloned(),
            mode: "overlay".into(),
        };
        self.add_container(&rec)?;
        let result = self.build_rootfs(container, &dir, &ids, img, init_files, snapshotter);
        if result.is_err() {
            let _ = unmount(&dir.join("rootfs"));
            let _ = remove_tree(&dir);
            let _ = self.delete_container(container);
        }
        result
    }

    fn build_rootfs(
        &self,
        container: &str,
        dir: &Path,
        ids: &[i64],
        img: &ResolvedImage,
        init_files: &[(&str, &[u8])],
        snapshotter: Snapshotter,
    ) -> Result<Rootfs> {
        for d in ["upper", "work", "init", "rootfs"] {
            std::fs::create_dir_all(dir.join(d))
                .ctx(|| format!("create {}", dir.join(d).display()))?;
        }
        write_init_layer(&dir.join("init"), init_files)?;
        let rootfs = dir.join("rootfs");
        let overlay_err = match snapshotter {
            Snapshotter::Copy => Some("copy was asked for".to_string()),
            Snapshotter::Overlay | Snapshotter::Auto => match self.mount_overlay(container, ids) {
                Ok(()) => None,
                Err(e) if snapshotter == Snapshotter::Auto => Some(e.to_string()),
                Err(e) => return Err(e),
            },
        };
        let Some(why) = overlay_err else {
            return Ok(Rootfs {
                path: rootfs,
                mode: "overlay".into(),
                note: None,
            });
        };
        // The copy fallback: every layer applied into one directory, then the init layer.
        let mut unpacker = Unpacker::new(&rootfs, Whiteouts::Apply)?;
        for (blob, _, _, _) in img.layers()? {
            let file = self.open_blob(&blob)?;
            compress::unpack_ahead(std::io::BufReader::new(file), |tar| unpacker.apply(tar))
                .map_err(|e| Error::invalid(format!("layer {blob}: {e}")))?;
        }
        // The init files go in through the unpacker too: resolved beneath the rootfs, so
        // an image whose /etc is a symlink to the host's cannot make this write there.
        unpacker
            .apply(&init_tar(&rootfs, init_files)?[..])
            .map_err(|e| Error::invalid(format!("init layer: {e}")))?;
        self.db().execute(
            "UPDATE containers SET mode = 'copy' WHERE id = ?1",
            [container],
        )?;
        Ok(Rootfs {
            path: rootfs,
            mode: "copy".into(),
            note: Some(format!(
                "overlayfs could not be used ({why}); the image was copied instead"
            )),
        })
    }

    /// Mounts (again, e.g. after a reboot) the overlay of a prepared container.
    pub fn mount_container(&self, container: &str) -> Result<PathBuf> {
        let rec = self
            .container(container)?
            .ok_or_else(|| Error::not_found(format!("no rootfs for container {container}")))?;
        let rootfs = self.container_dir(container).join("rootfs");
        if rec.mode != "overlay" || is_mountpoint(&rootfs) {
            return Ok(rootfs);
        }
        let mut ids = Vec::new();
        let mut cur = rec.chain_id.clone();
        while let Some(c) = cur {
            let s = self.snapshot(&c)?.ok_or_else(|| {
                Error::not_found(format!("snapshot {c} of container {container} is gone"))
            })?;
            ids.push(s.id);
            cur = s.parent;
        }
        ids.reverse();
        self.mount_overlay(container, &ids)?;
        Ok(rootfs)
    }

    /// The overlay mount: lower directories given relative to the store root from a
    /// thread with its own working directory, which keeps the option string short
    /// (128 layers fit in the kernel's one page).
    fn mount_overlay(&self, container: &str, ids: &[i64]) -> Result<()> {
        let mut lowers = vec![format!("c/{container}/init")];
        lowers.extend(ids.iter().rev().map(|id| format!("s/{id}")));
        let opts = format!(
            "lowerdir={},upperdir=c/{container}/upper,workdir=c/{container}/work,index=off{}",
            lowers.join(":"),
            crate::overlay::mount_option()
        );
        if opts.len() >= 4096 {
            return Err(Error::Unsupported(format!(
                "{} layers do not fit in one overlay mount's options",
                ids.len()
            )));
        }
        let root = self.root().to_path_buf();
        let target = root.join("c").join(container).join("rootfs");
        std::thread::spawn(move || -> Result<()> {
            crate::sys::private_cwd_for_this_thread().ctx(|| "unshare the working directory")?;
            rustix::process::chdir(&root).ctx(|| format!("chdir {}", root.display()))?;
            let data = CString::new(opts).expect("no NUL");
            mount_raw(c"overlay", &cstr(&target), c"overlay", &data)
                .ctx(|| format!("mount overlay on {}", target.display()))
        })
        .join()
        .map_err(|_| Error::invalid("the overlay mount thread panicked"))?
    }

    /// Unmounts and removes a container's rootfs (upper layer included).
    pub fn remove_container(&self, container: &str) -> Result<()> {
        valid_container_id(container)?;
        let dir = self.container_dir(container);
        unmount(&dir.join("rootfs"))?;
        remove_tree(&dir)?;
        self.delete_container(container)
    }

    /// The directories of a container: (upper, init, rootfs).
    pub fn container_paths(&self, container: &str) -> (PathBuf, PathBuf, PathBuf) {
        let d = self.container_dir(container);
        (d.join("upper"), d.join("init"), d.join("rootfs"))
    }
}

fn valid_container_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 128
        || id.starts_with('.')
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(Error::invalid(format!(
            "container id {id:?}: use up to 128 letters, digits, '_', '-', '.'"
        )));
    }
    Ok(())
}

fn write_init_layer(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    for (path, content) in files {
        let rel = Path::new(path.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::invalid(format!(
                "init layer file {path:?} must be a plain relative path"
            )));
        }
        let full = dir.join(rel);
        if let Some(p) = full.parent() {
            std::fs::create_dir_all(p).ctx(|| format!("create {}", p.display()))?;
        }
        std::fs::write(&full, content).ctx(|| format!("write {}", full.display()))?;
    }
    Ok(())
}

/// The init files as a tar (with the parent directories the rootfs lacks).
fn init_tar(rootfs: &Path, files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _) in files {
        let rel = Path::new(path.trim_start_matches('/'));
        let mut parents: Vec<&Path> = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .collect();
        parents.reverse();
        // As in the overlay, where the init layer's directories cover what is below:
        // a parent that is not a real directory (missing, or a symlink) becomes one,
        // and so does everything under it.
        let mut replace = false;
        for a in parents {
            replace = replace || !rootfs.join(a).symlink_metadata().is_ok_and(|m| m.is_dir());
            if replace {
                dirs.insert(a.to_path_buf());
            }
        }
    }
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h
    };
    for d in &dirs {
        b.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), d, &[][..])
            .ctx(|| "build the init layer")?;
    }
    for (path, content) in files {
        let rel = path.trim_start_matches('/');
        b.append_data(
            &mut header(tar::EntryType::Regular, 0o644, content.len() as u64),
            rel,
            *content,
        )
        .ctx(|| "build the init layer")?;
    }
    b.into_inner().ctx(|| "build the init layer")
}

fn mount_raw(
    source: &std::ffi::CStr,
    target: &std::ffi::CStr,
    fstype: &std::ffi::CStr,
    data: &std::ffi::CStr,
) -> std::io::Result<()> {
    rustix::mount::mount(
        source,
        target,
        fstype,
        rustix::mount::MountFlags::empty(),
        data,
    )
    .map_err(Into::into)
}

/// Whether `p` is a mount point (its device differs from its parent's, or it is an
/// overlay root).
pub fn is_mountpoint(p: &Path) -> bool {
    let (Ok(a), Some(parent)) = (std::fs::metadata(p), p.parent()) else {
        return false;
    };
    let Ok(b) = std::fs::metadata(parent) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    a.dev() != b.dev()
}

fn unmount(p: &Path) -> Result<()> {
    if !is_mountpoint(p) {
        return Ok(());
    }
    match rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io(format!("unmount {}", p.display()), e)),
    }
}
