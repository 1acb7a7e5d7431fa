//! Keeping the SQLite store small while it runs, where k3s's kine lets it grow and
//! stall (locked databases during compaction, WALs of hundreds of MB, files that never
//! shrink):
//!
//! - compaction in short steps, each its own transaction of at most
//!   [`COMPACTION_STEP`] revisions, so a writer waits for one step at most, never for
//!   the whole compaction;
//! - space given back: the file is in incremental auto-vacuum mode, and the pages a
//!   compaction frees are returned a few at a time;
//! - the WAL bounded: checkpointed after each reclaim and truncated to
//!   [`WAL_LIMIT`] (`journal_size_limit`).

use rusqlite::Connection;

use super::{backend, meta, SqliteStore};
use crate::{Error, Result};

/// Revisions of history removed per compaction step.
pub const COMPACTION_STEP: i64 = 1000;

/// Pages given back per reclaim step.
const VACUUM_STEP: i64 = 512;

/// The size the WAL is truncated to after a checkpoint, in bytes.
pub const WAL_LIMIT: i64 = 64 << 20;

/// Sets up a connection before its tables are made: incremental auto-vacuum (a
/// store made before berth set it is rewritten once, at this start) and the WAL's
/// bound.
pub(super) fn prepare(c: &Connection) -> Result<()> {
    let mode: i64 = c
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(backend)?;
    if mode != 2 {
        c.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(backend)?;
        let tables: i64 = c
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(backend)?;
        if tables > 0 {
            // Only a rewrite changes an existing file's mode.
            c.execute_batch("VACUUM").map_err(backend)?;
        }
    }
    c.pragma_update(None, "journal_size_limit", WAL_LIMIT)
        .map_err(backend)?;
    Ok(())
}

/// Starts a compaction to `revision`: from now on reads before it are refused.
/// Returns the revisions whose history is still to go: from where the last
/// compaction's steps got to (one interrupted by a crash resumes) to `revision` (or
/// the last compaction's, when that is further).
pub(super) fn begin_compaction(c: &mut Connection, revision: i64) -> Result<(i64, i64)> {
    let current = meta(c, "revision")?;
    if revision > current {
        return Err(Error::Future {
            requested: revision,
            current,
        });
    }
    let compacted = meta(c, "compacted")?;
    let done = meta(c, "compacted_done")?;
    if revision > compacted {
        c.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            [revision],
        )
        .map_err(backend)?;
    }
    let target = revision.max(compacted);
    Ok((done.min(target), target))
}

/// One step of a compaction to `target`: the rows the writes in (lo, hi] superseded
/// (each row names the one it replaced), and the deletions among them; the progress
/// recorded with them. Rows superseded by earlier writes went in earlier steps.
pub(super) fn compact_step(c: &mut Connection, lo: i64, hi: i64, target: i64) -> Result<()> {
    debug_assert!(hi <= target);
    let tx = c.transaction().map_err(backend)?;
    tx.execute(
        "DELETE FROM log WHERE revision IN (
           SELECT prev_revision FROM log WHERE revision > ?1 AND revision <= ?2 AND prev_revision > 0)",
        [lo, hi],
    )
    .map_err(backend)?;
    tx.execute(
        "DELETE FROM log WHERE revision > ?1 AND revision <= ?2 AND value IS NULL",
        [lo, hi],
    )
    .map_err(backend)?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'compacted_done'",
        [hi],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)
}

/// Sizes of the store's files and what is free inside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// The database file, in bytes.
    pub db: u64,
    /// The WAL file, in bytes.
    pub wal: u64,
    /// Bytes of free pages inside the database file.
    pub free: u64,
}

impl SqliteStore {
    /// Gives back the space compaction freed, a few pages per step, then checkpoints
    /// the WAL (which truncates it to [`WAL_LIMIT`]).
    pub async fn reclaim(&self) -> Result<()> {
        loop {
            let left = self
                .with(|c| {
                    let free: i64 = c
                        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                        .map_err(backend)?;
                    if free > 0 {
                        // The pragma frees one page per row stepped through.
                        let mut st = c
                            .prepare(&format!("PRAGMA incremental_vacuum({VACUUM_STEP})"))
                            .map_err(backend)?;
                        let mut rows = st.query([]).map_err(backend)?;
                        while rows.next().map_err(backend)?.is_some() {}
                    }
                    Ok(free - VACUUM_STEP)
                })
                .await?;
            if left <= 0 {
                break;
            }
        }
        self.with(|c| {
            // Busy (a snapshot reading) is no failure: the next pass checkpoints.
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(backend)
        })
        .await
    }

    /// The sizes of the store's files now.
    pub async fn sizes(&self) -> Result<Sizes> {
        let path = self.path.clone();
        let free = self
            .with(|c| {
                let pages: i64 = c
                    .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                    .map_err(backend)?;
                let size: i64 = c
                    .query_row("PRAGMA page_size", [], |r| r.get(0))
                    .map_err(backend)?;
                Ok((pages * size) as u64)
            })
            .await?;
        let len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Sizes {
            db: len(&path),
            wal: len(std::path::Path::new(&wal)),
            free,
        })
    }
}
