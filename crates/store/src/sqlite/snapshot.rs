//! Snapshots of the SQLite store: a consistent copy taken while a server writes (a
//! second connection's read transaction sees one revision; in WAL mode it holds
//! no writer up), and the copy restored into a data directory no server uses.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{backend, meta, take_lock};
use crate::{Error, Result};

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// The store's revision when it was taken.
    pub revision: i64,
    /// The keys it holds.
    pub keys: i64,
    /// Its size in bytes.
    pub bytes: u64,
}

fn read_only(path: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| Error::Backend(format!("opening {}: {e}", path.display())))?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(backend)?;
    Ok(c)
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::Backend(format!("syncing {}: {e}", path.display())))
}

/// Copies the store at `db` into `out` (made anew; its directory must exist),
/// consistent at one revision, while a server may go on writing.
pub fn save(db: &Path, out: &Path) -> Result<Info> {
    if !db.exists() {
        return Err(Error::Backend(format!(
            "there is no store at {} (is this the server's data directory?)",
            db.display()
        )));
    }
    // Made empty, private and locked first: the copy holds Secrets, and SQLite
    // writes into the file as it is.
    let (tmp, _held) = partial(out)?;
    let copied = (|| {
        let c = read_only(db)?;
        c.execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
            .map_err(|e| Error::Backend(format!("copying {}: {e}", db.display())))?;
        drop(c);
        sync_file(&tmp)?;
        std::fs::rename(&tmp, out)
            .map_err(|e| Error::Backend(format!("renaming {}: {e}", tmp.display())))
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        let mut journal = tmp.into_os_string();
        journal.push("-journal");
        let _ = std::fs::remove_file(journal);
        return Err(e);
    }
    inspect(out)
}

/// The file a snapshot for `out` is written into before it is renamed into place,
/// made private and locked (an advisory flock, held while the returned file is
/// open): what snapshots cut short left in the directory — partial files no one
/// holds, and SQLite's journals of them — is removed first.
pub fn partial(out: &Path) -> Result<(PathBuf, std::fs::File)> {
    let tmp = out.with_extension("partial");
    let dir = out.parent().unwrap_or(Path::new("."));
    // One snapshot at a time between looking for leftovers and holding its own
    // partial file: another's cleaning cannot take a file just made.
    let dir_lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".snapshots.lock"))
        .map_err(|e| Error::Backend(format!("opening {}: {e}", dir.display())))?;
    rustix::fs::flock(&dir_lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::Backend(format!("locking {}: {e}", dir.display())))?;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // X.partial and what SQLite made beside it (X.partial-journal...).
        let Some(at) = name.find(".partial") else {
            continue;
        };
        let base = dir.join(&name[..at + ".partial".len()]);
        let held = std::fs::OpenOptions::new()
            .write(true)
            .open(&base)
            .is_ok_and(|f| {
                rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
            });
        if !held {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let f = private_file(&tmp)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| Error::Backend(format!("locking {}: {e}", tmp.display())))?;
    drop(dir_lock);
    Ok((tmp, f))
}

/// Creates `path` empty, readable by its owner only.
pub fn private_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Backend(format!("creating {}: {e}", path.display())))
}

/// What the snapshot at `path` holds, after checking it is a sound berth store.
pub fn inspect(path: &Path) -> Result<Info> {
    let c = read_only(path)?;
    let check: String = c
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| Error::Backend(format!("{} is not a SQLite database: {e}", path.display())))?;
    if check != "ok" {
        return Err(Error::Backend(format!(
            "{} is damaged: {check}",
            path.display()
        )));
    }
    let revision = meta(&c, "revision")
        .map_err(|_| Error::Backend(format!("{} is not a berth store snapshot", path.display())))?;
    let keys: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM log l WHERE l.value IS NOT NULL
               AND l.revision = (SELECT MAX(revision) FROM log m WHERE m.key = l.key)",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(Info {
        revision,
        keys,
        bytes,
    })
}

/// Restores `snapshot` as the store at `db`. No server may be using `db`. An
/// existing store is refused unless `force`, which sets it aside (returned) rather
/// than deleting it.
pub fn restore(snapshot: &Path, db: &Path, force: bool) -> Result<(Info, Option<PathBuf>)> {
    let info = inspect(snapshot)?;
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Backend(format!("creating {}: {e}", dir.display())))?;
    }
    let _lock = take_lock(db)?;
    let with_suffix = |p: &Path, s: &str| {
        let mut o = p.as_os_str().to_owned();
        o.push(s);
        PathBuf::from(o)
    };
    let mut aside = None;
    if db.exists() {
        if !force {
            return Err(Error::Backend(format!(
                "{} exists: restore into a fresh data directory, or add --force to set the current store aside",
                db.display()
            )));
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let to = with_suffix(db, &format!(".before-restore-{stamp}"));
        for s in ["", "-wal", "-shm"] {
            let from = with_suffix(db, s);
            if from.exists() {
                std::fs::rename(&from, with_suffix(&to, s)).map_err(|e| {
                    Error::Backend(format!("setting {} aside: {e}", from.display()))
                })?;
            }
        }
        aside = Some(to);
    }
    for s in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(db, s));
    }
    let tmp = with_suffix(db, ".restoring");
    std::fs::copy(snapshot, &tmp)
        .map_err(|e| Error::Backend(format!("copying {}: {e}", snapshot.display())))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, db)
        .map_err(|e| Error::Backend(format!("renaming {}: {e}", tmp.display())))?;
    Ok((info, aside))
}
