//! The store's metadata in SQLite: image names, unpacked snapshots, container rootfs.
//! WAL with synchronous=FULL: an acknowledged change survives a crash or kill -9.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, OptionalExtension};

use super::Store;
use crate::digest::Digest;
use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain_id TEXT NOT NULL UNIQUE,
    parent TEXT,
    diff_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    chain_id TEXT,
    mode TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_sources (
    digest TEXT NOT NULL,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    PRIMARY KEY (digest, registry, repository)
);
";

pub(super) fn open(path: &Path) -> Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open(path)?;
    db.busy_timeout(std::time::Duration::from_secs(30))?;
    // Two processes opening a new store at once: switching to WAL takes an exclusive
    // lock that SQLite does not wait for (no busy handler), so wait here.
    let mut tries = 0;
    loop {
        let r = db
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| db.pragma_update(None, "synchronous", "FULL"))
            .and_then(|()| db.execute_batch(SCHEMA));
        match r {
            Ok(()) => return Ok(db),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && tries < 500 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn parse_digest(s: String) -> Result<Digest> {
    s.parse()
        .map_err(|e: Error| Error::invalid(format!("metadata holds a bad digest: {e}")))
}

/// A named image: name → top-level manifest (or index) digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// Full reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Digest of the manifest or index the name points to.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// When the name was set (unix seconds).
    pub created: i64,
}

/// An unpacked layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Short id (the directory name under s/).
    pub id: i64,
    /// Chain ID of the layer stack ending with this layer.
    pub chain_id: Digest,
    /// Chain ID of the stack below, if any.
    pub parent: Option<Digest>,
    /// Digest of the uncompressed layer.
    pub diff_id: Digest,
    /// Bytes on disk.
    pub size: u64,
}

/// A container's rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    /// Container id.
    pub id: String,
    /// The image manifest digest it was made from.
    pub image: Digest,
    /// Top snapshot of the image (None for an image without layers).
    pub chain_id: Option<Digest>,
    /// "overlay" or "copy".
    pub mode: String,
}

impl Store {
    /// Points `name` at a manifest or index.
    pub fn set_image(&self, name: &str, digest: &Digest, media_type: &str) -> Result<()> {
        self.db().execute(
            "INSERT INTO images (name, digest, media_type, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, media_type = excluded.media_type, created = excluded.created",
            params![name, digest.to_string(), media_type, now()],
        )?;
        Ok(())
    }

    /// The image a name points to.
    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let row = self
            .db()
            .query_row(
                "SELECT name, digest, media_type, created FROM images WHERE name = ?1",
                params![name],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(name, d, media_type, created)| {
            Ok(ImageRecord {
                name,
                digest: parse_digest(d)?,
                media_type,
                created,
            })
        })
        .transpose()
    }

    /// All named images, by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let db = self.db();
        let mut st =
            db.prepare("SELECT name, digest, media_type, created FROM images ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, d, media_type, created) = row?;
            out.push(ImageRecord {
                name,
                digest: parse_digest(d)?,
                media_type,
                created,
            });
        }
        Ok(out)
    }

    /// Removes a name (the content stays until garbage collection).
    pub fn remove_image_name(&self, name: &str) -> Result<bool> {
        Ok(self
            .db()
            .execute("DELETE FROM images WHERE name = ?1", params![name])?
            > 0)
    }

    /// The snapshot of a chain ID, if unpacked.
    pub fn snapshot(&self, chain_id: &Digest) -> Result<Option<SnapshotRecord>> {
        let row = self
            .db()
            .query_row(
                "SELECT id, chain_id, parent, diff_id, size FROM snapshots WHERE chain_id = ?1",
                params![chain_id.to_string()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        row.map(snapshot_from_row).transpose()
    }

    /// All snapshots.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        let db = self.db();
        let mut st =
            db.prepare("SELECT id, chain_id, parent, diff_id, size FROM snapshots ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(snapshot_from_row(row?)?);
        }
        Ok(out)
    }

    /// Reserves a snapshot id for a chain ID about to be unpacked (the row is only
    /// visible as complete once [`Store::complete_snapshot`] ran). Returns the id and
    /// whether this call created it.
    pub(crate) fn reserve_snapshot(
        &self,
        chain_id: &Digest,
        parent: Option<&Digest>,
        diff_id: &Digest,
    ) -> Result<i64> {
        let db = self.db();
        db.execute(
            "INSERT INTO snapshots (chain_id, parent, diff_id, size, created) VALUES (?1, ?2, ?3, -1, ?4)
             ON CONFLICT(chain_id) DO NOTHING",
            params![chain_id.to_string(), parent.map(|p| p.to_string()), diff_id.to_string(), now()],
        )?;
        Ok(db.query_row(
            "SELECT id FROM snapshots WHERE chain_id = ?1",
            params![chain_id.to_string()],
            |r| r.get(0),
        )?)
    }

    /// Marks a snapshot complete with its size.
    pub(crate) fn complete_snapshot(&self, id: i64, size: u64) -> Result<()> {
        self.db().execute(
            "UPDATE snapshots SET size = ?1 WHERE id = ?2",
            params![size as i64, id],
        )?;
        Ok(())
    }

    /// Remembers that a registry repository holds a blob (for cross-repository mounts
    /// on push).
    pub fn add_blob_source(&self, digest: &Digest, registry: &str, repository: &str) -> Result<()> {
        self.db().execute(
            "INSERT OR IGNORE INTO blob_sources (digest, registry, repository) VALUES (?1, ?2, ?3)",
            params![digest.to_string(), registry, repository],
        )?;
        Ok(())
    }

    /// Repositories of `registry` known to hold a blob.
    pub fn blob_sources(&self, digest: &Digest, registry: &str) -> Result<Vec<String>> {
        let db = self.db();
        let mut st =
            db.prepare("SELECT repository FROM blob_sources WHERE digest = ?1 AND registry = ?2")?;
        let rows = st.query_map(params![digest.to_string(), registry], |r| {
            r.get::<_, String>(0)
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Forgets a snapshot (its directory must be gone).
    pub(crate) fn delete_snapshot(&self, id: i64) -> Result<()> {
        self.db()
            .execute("DELETE FROM snapshots WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Records a container rootfs.
    pub(crate) fn add_container(&self, c: &ContainerRecord) -> Result<()> {
        let n = self.db().execute(
            "INSERT INTO containers (id, image, chain_id, mode, created) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO NOTHING",
            params![c.id, c.image.to_string(), c.chain_id.as_ref().map(|d| d.to_string()), c.mode, now()],
        )?;
        if n == 0 {
            return Err(Error::InUse(format!(
                "a rootfs for container {} exists already",
                c.id
            )));
        }
        Ok(())
    }

    /// The container rootfs record.
    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>> {
        let row = self
            .db()
            .query_row(
                "SELECT id, image, chain_id, mode FROM containers WHERE id = ?1",
                params![id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        // A container whose directory is gone was removed (a monitor may remove an
        // ended `--rm` container's files without the database): its row is stale.
        Ok(row
            .map(container_from_row)
            .transpose()?
            .filter(|c| self.container_dir(&c.id).exists()))
    }

    /// All container rootfs records (whose directory still exists).
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        Ok(self
            .all_container_rows()?
            .into_iter()
            .filter(|c| self.container_dir(&c.id).exists())
            .collect())
    }

    /// Forgets container rows whose directory is gone; returns how many.
    pub(crate) fn forget_stale_containers(&self) -> Result<usize> {
        let mut n = 0;
        for c in self.all_container_rows()? {
            if !self.container_dir(&c.id).exists() {
                self.delete_container(&c.id)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn all_container_rows(&self) -> Result<Vec<ContainerRecord>> {
        let db = self.db();
        let mut st = db.prepare("SELECT id, image, chain_id, mode FROM containers ORDER BY id")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(container_from_row(row?)?);
        }
        Ok(out)
    }

    /// Forgets a container rootfs.
    pub(crate) fn delete_container(&self, id: &str) -> Result<()> {
        self.db()
            .execute("DELETE FROM containers WHERE id = ?1", params![id])?;
        Ok(())
    }
}

type SnapshotRow = (i64, String, Option<String>, String, i64);

fn snapshot_from_row((id, chain, parent, diff, size): SnapshotRow) -> Result<SnapshotRecord> {
    Ok(SnapshotRecord {
        id,
        chain_id: parse_digest(chain)?,
        parent: parent.map(parse_digest).transpose()?,
        diff_id: parse_digest(diff)?,
        size: size.max(0) as u64,
    })
}

fn container_from_row(
    (id, image, chain, mode): (String, String, Option<String>, String),
) -> Result<ContainerRecord> {
    Ok(ContainerRecord {
        id,
        image: parse_digest(image)?,
        chain_id: chain.map(parse_digest).transpose()?,
        mode,
    })
}
