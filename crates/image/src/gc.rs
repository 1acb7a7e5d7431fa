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
        let Ok(rd) = std::fs::read_dir(p) else { return 0 };
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

impl Store {
    fn live_sets(&self) -> Result<(HashSet<Digest>, HashSet<Digest>)> {
        let mut blobs = HashSet::new();
        let mut chains = HashSet::new();
        let host = Platform::host();
        let add_image = |top: &Digest, blobs: &mut HashSet<Digest>, chains: &mut HashSet<Digest>| -> Result<()> {
            blobs.extend(self.referenced_blobs(top)?);
            if let Ok(img) = self.resolve_digest(top, &host) {
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
        let (live_blobs, live_chains) = self.live_sets()?;
        let mut report = PruneReport::default();
        let blob_dir = self.root().join("blobs/sha256");
        for e in std::fs::read_dir(&blob_dir).ctx(|| format!("read {}", blob_dir.display()))? {
            let e = e.ctx(|| "read the blob directory")?;
            let Ok(d) = format!("sha256:{}", e.file_name().to_string_lossy()).parse::<Digest>() else {
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
            for e in std::fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))?.flatten() {
                let name = e.file_name();
                let n = name.to_string_lossy();
                if dir.ends_with("ingest") || n.starts_with(".tmp-") {
                    report.bytes += dir_size(&e.path()).max(e.metadata().map(|m| m.len()).unwrap_or(0));
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
        for e in std::fs::read_dir(&blob_dir).ctx(|| "read the blob directory")?.flatten() {
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
