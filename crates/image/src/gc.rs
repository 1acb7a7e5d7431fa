//! Garbage collection (mark and sweep) and disk usage.
//!
//! Roots are the named images (every blob an image's manifests reach, every snapshot of
//! the chain of an unpacked image) and the containers (their image and its snapshots).
//! It runs under the store's exclusive lock, which every writer holds shared for the
//! whole of its work, so nothing being pulled, unpacked or committed is ever collected.

use std::collections::HashSet;

use crate::digest::Digest;
use crate::error::{Context, Result};
use crate::oci::Platform;
use crate::store::Store;
use crate::unpack::remove_tree;

/// What a prune removed.
#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs: Vec<Digest>,
    /// Snapshot directories deleted.
    pub snapshots: Vec<i64>,
    /// Bytes freed.
    pub bytes: u64,
}

/// Space used, as `system df` shows it.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Named images.
    pub images: usize,
    /// Images used by a container.
    pub images_active: usize,
    /// Bytes of blobs and snapshots.
    pub images_bytes: u64,
    /// Bytes that a prune would free.
    pub images_reclaimable: u64,
    /// Container rootfs count.
    pub containers: usize,
    /// Bytes in container upper layers.
    pub containers_bytes: u64,
}

/// Total bytes of the files below a directory (not following symlinks; hard links once).
pub fn dir_size(path: &std::path::Path) -> u64 {
    fn walk(p: &std::path::Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        let mut total = 0;
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                total += walk(&e.path(), seen);
            } else if seen.insert((m.dev(), m.ino())) {
                total += m.blocks() * 512;
            }
        }
        total
    }
    walk(path, &mut HashSet::new())
}

/// Distinct inodes (files, directories, links) below `path`, not crossing into other
/// filesystems (a container's mounted root), each hard link counted once.
pub fn inodes_below(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &std::path::Path, dev: u64, seen: &mut HashSet<u64>) {
        let Ok(rd) = std::fs::read_dir(p) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev || !seen.insert(m.ino()) {
                continue;
            }
            if m.is_dir() {
                walk(&e.path(), dev, seen);
            }
        }
    }
    let Ok(root) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut seen = HashSet::from([root.ino()]);
    walk(path, root.dev(), &mut seen);
    seen.len() as u64
}

impl Store {
    fn live_sets(&self) -> Result<(HashSet<Digest>, HashSet<Digest>)> {
        let mut blobs = HashSet::new();
        let mut chains = HashSet::new();
        let host = Platform::host();
        let add_image = |top: &Digest,
                         blobs: &mut HashSet<Digest>,
                         chains: &mut HashSet<Digest>|
         -> Result<()> {
            blobs.extend(self.referenced_blobs(top)?);
            if let Ok(img) = self
                .resolve_digest(top, &host)
                .or_else(|_| self.resolve_stored_digest(top))
            {
                chains.extend(img.chain_ids);
            }
            Ok(())
        };
        for rec in self.images()? {
            add_image(&rec.digest, &mut blobs, &mut chains)?;
        }
        for c in self.containers()? {
            add_image(&c.image, &mut blobs, &mut chains)?;
            // The container's own chain, even if its image was removed meanwhile.
            let mut cur = c.chain_id;
            while let Some(ch) = cur {
                chains.insert(ch.clone());
                cur = self.snapshot(&ch)?.and_then(|s| s.parent);
            }
        }
        Ok((blobs, chains))
    }

    /// Removes every blob and snapshot no image or container needs, and what interrupted
    /// pulls and unpacks left behind.
    pub fn prune(&self) -> Result<PruneReport> {
        let _lock = self.exclusive_lock()?;
        self.prune_locked()
    }

    /// [`Store::prune`] if the store is idle; `None` when a pull, load or unpack holds
    /// it (what they would leave is collected by a later prune).
    pub fn try_prune(&self) -> Result<Option<PruneReport>> {
        match self.try_exclusive_lock()? {
            Some(_lock) => self.prune_locked().map(Some),
            None => Ok(None),
        }
    }

    fn prune_locked(&self) -> Result<PruneReport> {
        self.forget_stale_containers()?;
        let (live_blobs, live_chains) = self.live_sets()?;
        let mut report = PruneReport::default();
        let blob_dir = self.root().join("blobs/sha256");
        for e in std::fs::read_dir(&blob_dir).ctx(|| format!("read {}", blob_dir.display()))? {
            let e = e.ctx(|| "read the blob directory")?;
            let Ok(d) = format!("sha256:{}", e.file_name().to_string_lossy()).parse::<Digest>()
            else {
                continue;
            };
            if !live_blobs.contains(&d) {
                report.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(e.path()).ctx(|| format!("remove blob {d}"))?;
                report.blobs.push(d);
            }
        }
        for s in self.snapshots()? {
            if !live_chains.contains(&s.chain_id) {
                let dir = self.snapshot_dir(s.id);
                report.bytes += dir_size(&dir);
                remove_tree(&dir)?;
                self.delete_snapshot(s.id)?;
                report.snapshots.push(s.id);
            }
        }
        // Leftovers of interrupted work: nobody else holds the lock, so none is running.
        for dir in [self.root().join("ingest"), self.root().join("s")] {
            for e in std::fs::read_dir(&dir)
                .ctx(|| format!("read {}", dir.display()))?
                .flatten()
            {
                let name = e.file_name();
                let n = name.to_string_lossy();
                if dir.ends_with("ingest") || n.starts_with(".tmp-") {
                    report.bytes +=
                        dir_size(&e.path()).max(e.metadata().map(|m| m.len()).unwrap_or(0));
                    remove_tree(&e.path())?;
                }
            }
        }
        Ok(report)
    }

    /// Disk usage of images and container layers.
    pub fn usage(&self) -> Result<Usage> {
        let images = self.images()?;
        let containers = self.containers()?;
        let (live_blobs, live_chains) = self.live_sets()?;
        let mut u = Usage {
            images: images.len(),
            containers: containers.len(),
            ..Default::default()
        };
        let used: HashSet<Digest> = containers.iter().map(|c| c.image.clone()).collect();
        let host = Platform::host();
        u.images_active = images
            .iter()
            .filter(|i| {
                self.resolve_digest(&i.digest, &host)
                    .is_ok_and(|r| used.contains(&r.manifest_digest))
            })
            .count();
        let blob_dir = self.root().join("blobs/sha256");
        for e in std::fs::read_dir(&blob_dir)
            .ctx(|| "read the blob directory")?
            .flatten()
        {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            u.images_bytes += len;
            let live = format!("sha256:{}", e.file_name().to_string_lossy())
                .parse::<Digest>()
                .is_ok_and(|d| live_blobs.contains(&d));
            if !live {
                u.images_reclaimable += len;
            }
        }
        for s in self.snapshots()? {
            u.images_bytes += s.size;
            if !live_chains.contains(&s.chain_id) {
                u.images_reclaimable += s.size;
            }
        }
        for c in &containers {
            u.containers_bytes += dir_size(&self.container_paths(&c.id).0);
        }
        Ok(u)
    }
}

/// What `image rm` did.
#[derive(Clone, Debug, Default)]
pub struct Removed {
    /// Names removed.
    pub untagged: Vec<String>,
    /// The image ID, when no name is left for it.
    pub deleted: Option<Digest>,
}

impl Store {
    /// The containers whose rootfs comes from the image `top` points to.
    fn users_of(&self, top: &Digest) -> Result<Vec<String>> {
        let mut manifests = vec![top.clone()];
        if let Ok(img) = self.resolve_stored_digest(top) {
            manifests.push(img.manifest_digest);
        }
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| manifests.contains(&c.image))
            .map(|c| c.id)
            .collect())
    }

    /// Removes an image name (`busybox:1`), or every name of an image given by ID
    /// (refused when there are several, unless `force`). An image a container uses keeps
    /// its last name unless `force`. Blobs go at the next [`Store::prune`].
    pub fn remove_image(&self, what: &str, force: bool) -> Result<Removed> {
        let rec = self.find_image(what)?;
        let exact = what
            .parse::<crate::Reference>()
            .is_ok_and(|r| r.to_string() == rec.name)
            || what == rec.name;
        let same: Vec<String> = self
            .images()?
            .into_iter()
            .filter(|i| i.digest == rec.digest)
            .map(|i| i.name)
            .collect();
        let names = if exact {
            vec![rec.name.clone()]
        } else {
            same.clone()
        };
        if !exact && names.len() > 1 && !force {
            return Err(crate::Error::InUse(format!(
                "unable to delete {what} (must be forced): the image is referenced by several names ({}); remove them by name or use -f",
                names.join(", ")
            )));
        }
        let last = names.len() == same.len();
        if last && !force {
            let users = self.users_of(&rec.digest)?;
            if !users.is_empty() {
                return Err(crate::Error::InUse(format!(
                    "unable to remove image {what}: container {} uses it (remove the container first, or use -f)",
                    users.join(", ")
                )));
            }
        }
        let id = self
            .resolve_record(&rec, &Platform::host())
            .ok()
            .map(|i| i.config_digest);
        let mut out = Removed::default();
        for n in names {
            if self.remove_image_name(&n)? {
                out.untagged.push(n);
            }
        }
        if last {
            out.deleted = id.or(Some(rec.digest));
        }
        Ok(out)
    }

    /// Removes an image with every name it has, given any of them or its ID, as CRI's
    /// RemoveImage does (the kubelet removes images by ID, crictl by any name);
    /// refused while a container uses it. Blobs go at the next [`Store::prune`].
    pub fn remove_image_with_all_names(&self, what: &str) -> Result<Removed> {
        let rec = self.find_image(what)?;
        let users = self.users_of(&rec.digest)?;
        if !users.is_empty() {
            return Err(crate::Error::InUse(format!(
                "unable to remove image {what}: container {} uses it (remove the container first)",
                users.join(", ")
            )));
        }
        self.remove_image(&rec.digest.to_string(), true)
    }

    /// Removes the names of unused images: untagged ones, or with `all` every image no
    /// container uses. Returns the names removed; run [`Store::prune`] afterwards.
    pub fn prune_images(&self, all: bool) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for rec in self.images()? {
            let dangling = rec.name.starts_with("sha256:");
            if (dangling || all)
                && self.users_of(&rec.digest)?.is_empty()
                && self.remove_image_name(&rec.name)?
            {
                removed.push(rec.name);
            }
        }
        Ok(removed)
    }
}
