//! The image store on disk:
//!
//! ```text
//! <root>/meta.db               image names, snapshots, containers (SQLite, WAL, fsync)
//! <root>/lock                  shared by every writer, exclusive for garbage collection
//! <root>/blobs/sha256/<hex>    content-addressed blobs, verified on ingest
//! <root>/ingest/               blobs being written (renamed into blobs/ when complete)
//! <root>/s/<n>/                unpacked layer n (an overlay lower directory)
//! <root>/c/<id>/               a container: upper/, work/, init/, rootfs/ (the mount)
//! ```
//!
//! Snapshot and container directories have short names so that an overlay mount of a
//! deep image still fits the kernel's one-page limit on mount options.

mod blobs;
mod meta;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use blobs::Ingest;
pub use meta::{ContainerRecord, ImageRecord, SnapshotRecord};

use crate::digest::Digest;
use crate::error::{Context, Error, Result};

/// Where the store lives when not told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/berth/image";

/// An open image store.
pub struct Store {
    root: PathBuf,
    db: Mutex<rusqlite::Connection>,
}

/// A lock on the store (shared by writers, exclusive for garbage collection); released
/// when dropped or when the process dies.
pub struct StoreLock(#[allow(dead_code)] File);

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for d in ["blobs/sha256", "ingest", "s", "c"] {
            std::fs::create_dir_all(root.join(d))
                .ctx(|| format!("create {}", root.join(d).display()))?;
        }
        let db = meta::open(&root.join("meta.db"))?;
        Ok(Store {
            root,
            db: Mutex::new(db),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self, op: rustix::fs::FlockOperation) -> Result<StoreLock> {
        let p = self.root.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx(|| format!("open {}", p.display()))?;
        rustix::fs::flock(f.as_fd(), op).ctx(|| format!("lock {}", p.display()))?;
        Ok(StoreLock(f))
    }

    /// Taken by every operation that adds content (pull, load, unpack, commit), so that
    /// garbage collection never removes what it is about to reference.
    pub fn shared_lock(&self) -> Result<StoreLock> {
        self.lock(rustix::fs::FlockOperation::LockShared)
    }

    /// The exclusive lock if nobody holds the store, else `None` (no waiting).
    pub fn try_exclusive_lock(&self) -> Result<Option<StoreLock>> {
        match self.lock(rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Taken by garbage collection.
    pub fn exclusive_lock(&self) -> Result<StoreLock> {
        self.lock(rustix::fs::FlockOperation::LockExclusive)
    }

    pub(crate) fn db(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of a blob (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.blob_path(d)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(format!("blob {d} is not in the store"))
            } else {
                Error::io(format!("open blob {d}"), e)
            }
        })
    }

    /// Reads a whole blob and checks it against its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let data = std::fs::read(self.blob_path(d)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found(format!("blob {d} is not in the store"))
            } else {
                Error::io(format!("read blob {d}"), e)
            }
        })?;
        let got = Digest::of(&data);
        if &got != d {
            return Err(self.drop_corrupt_blob(d, &got));
        }
        Ok(data)
    }

    /// Verifies a blob on disk against its digest by streaming it.
    pub fn verify_blob(&self, d: &Digest) -> Result<()> {
        let f = self.open_blob(d)?;
        let mut r = crate::digest::HashingReader::new(std::io::BufReader::new(f));
        std::io::copy(&mut r, &mut std::io::sink()).ctx(|| format!("read blob {d}"))?;
        let (got, _) = r.finish();
        if &got != d {
            return Err(self.drop_corrupt_blob(d, &got));
        }
        Ok(())
    }

    /// Removes a blob found corrupt, so that the next pull or load fetches it again
    /// (everything else skips blobs that are present); returns the error to report.
    fn drop_corrupt_blob(&self, d: &Digest, got: &Digest) -> Error {
        let removed = std::fs::remove_file(self.blob_path(d)).is_ok();
        Error::DigestMismatch(format!(
            "blob {d} in the store is corrupt (its content hashes to {got}){}; pull or load the image again",
            if removed { " and was removed" } else { "" }
        ))
    }

    /// Starts writing a new blob.
    pub fn ingest(&self) -> Result<Ingest> {
        Ingest::new(self)
    }

    /// Stores bytes as a blob; returns their digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::of(data);
        if self.has_blob(&d) {
            return Ok(d);
        }
        let mut w = self.ingest()?;
        std::io::Write::write_all(&mut w, data).ctx(|| "write blob")?;
        w.commit(Some(&d))?;
        Ok(d)
    }

    /// The directory of snapshot `id`.
    pub fn snapshot_dir(&self, id: i64) -> PathBuf {
        self.root.join("s").join(id.to_string())
    }

    /// The directory of container `id`.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("c").join(id)
    }
}
