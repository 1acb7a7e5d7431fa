//! Per-object locks: flock on `locks/ID`. Everything that changes a sandbox or a
//! container holds its lock, so that two callers (two CLIs, the CLI and the node agent)
//! never act on one object at once, and a lock held by nobody tells that whoever was
//! making an object died (see `recover`).

use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::error::{Context, Result};

/// A held lock; released when dropped.
pub struct Lock {
    _file: File,
    path: PathBuf,
}

fn open(dir: &Path, id: &str) -> Result<(File, PathBuf)> {
    let path = dir.join(id);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("open the lock {}", path.display()))?;
    Ok((f, path))
}

impl Lock {
    /// Waits for the lock of `id` in `dir`, exclusive (to change the object) or
    /// shared (to use it: a container being made holds its sandbox's shared).
    pub fn take(dir: &Path, id: &str, exclusive: bool) -> Result<Lock> {
        let (f, path) = open(dir, id)?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        rustix::fs::flock(&f, op).ctx(|| format!("lock {}", path.display()))?;
        Ok(Lock { _file: f, path })
    }

    /// Takes the lock of `id` exclusive if nobody holds it.
    pub fn try_take(dir: &Path, id: &str) -> Result<Option<Lock>> {
        let (f, path) = open(dir, id)?;
        match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Lock { _file: f, path })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(crate::Error::io(format!("lock {}", path.display()), e)),
        }
    }

    /// Removes the lock file (the object is gone); the lock stays held until drop.
    /// Whoever was waiting on it then finds the object gone.
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
