//! Keeping the SQLite store small while it runs, where k3s's kine lets it grow and
//! stall (locked databases during compaction, WALs of hundreds of MB, files that never
//! shrink):
//!
//! - compaction in short steps, each its own transaction of at most
//!   [`COMPACTION_STEP`] revisions, so a writer waits for one step at most, never for
//!   the whole compaction;
//! - space given back: the file is in incremental auto-vacuum mode, and the pages a
//!   compaction frees are returned a few at a time;
//! - the WAL bounded and checkpointed off the writers' path: SQLite's own
//!   checkpoints run inside the commit that crosses its threshold (a write held up
//!   for the copy of megabytes); here a thread of its own checkpoints every
//!   half second, and after every maintenance step, on its own connection, which
//!   in WAL mode holds no writer up (but for the disk: see [`Checkpointer`]). A
//!   checkpoint from aside never catches up with writes that go on while it runs,
//!   and only a checkpoint that has copied all lets the WAL start over, so writers
//!   still checkpoint past [`WAL_BACKSTOP_PAGES`] (quickly: the thread has copied
//!   nearly all by then); the WAL is truncated to [`WAL_LIMIT`] when it starts over
//!   (`journal_size_limit`).

use rusqlite::Connection;

use super::{backend, meta, SqliteStore};
use crate::{Error, Result};

/// Revisions of history removed per compaction step. A step's cost is mostly I/O:
/// each removed revision dirties a page of the key index of its own (a key's
/// entries lie apart from other keys'), so a step of 250 wrote and checkpointed
/// a MB or more, and at 70 steps a second the writers' fsyncs queued behind that
/// I/O (p99 8–14 ms, worst 18–28 ms at 500 writes/s; 1000 held them up for tens of
/// ms). At 50, writes during compaction stay as fast as outside it (p99 2.7–3.5 ms,
/// below etcd's 6.1–6.7; the rare slower one waits for a file-system flush that a
/// plain-file fsync beside it waits for too, more often while compaction writes:
/// see `berth-bench compaction-stall`), and 100,000 revisions take 30 s, a pace
/// (3,300 a second) above what a server writes.
pub const COMPACTION_STEP: i64 = 50;

/// The pause after each compaction or reclaim step, in which writers go first (as
/// etcd sleeps between its compaction batches): back to back, steps took most of
/// the writer's time and writes queued behind them.
pub const STEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Pages given back per reclaim step: moving a page costs about as much as
/// writing it, and writers wait for a step (512 held them up for tens of ms).
const VACUUM_STEP: i64 = 64;

/// How often the WAL is checkpointed, by a connection of its own (see
/// [`Checkpointer`]).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The WAL's length (in pages) past which a writer's commit checkpoints (SQLite's
/// `wal_autocheckpoint`; its default is 1,000).
pub const WAL_BACKSTOP_PAGES: i64 = 8192;

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

/// Copies what the WAL holds into the database, as far as readers allow (PASSIVE:
/// it waits for no one, and in WAL mode no writer waits for it). Returns false when
/// another connection was checkpointing (SQLite answers busy at once in this mode),
/// which is no failure: that one, or the next pass, goes further.
fn checkpoint(c: &Connection) -> Result<bool> {
    c.busy_timeout(std::time::Duration::from_millis(100))
        .map_err(backend)?;
    match c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
        Ok(busy) => Ok(busy == 0),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Ok(false)
        }
        Err(e) => Err(backend(e)),
    }
}

/// What wakes the checkpoint thread before its interval is up.
enum Wake {
    /// A maintenance step wrote: checkpoint now.
    Nudge,
    /// The store is closing.
    Stop,
}

/// The thread that checkpoints the store's WAL every [`CHECKPOINT_EVERY`], and
/// after every compaction and reclaim step, on its own connection, for as long as
/// the store is open (it stops and is joined when this is dropped).
///
/// After every step because a checkpoint ends with an fsync of the database file,
/// and a writer's fsync of the WAL waits behind it on the same disk: half a
/// second of compaction is tens of MB of scattered pages, whose fsync held writers
/// up for 20–40 ms, where one step's MB or so does not show.
pub(super) struct Checkpointer {
    wake: std::sync::mpsc::SyncSender<Wake>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Asks the checkpoint thread to checkpoint now (after a maintenance step).
#[derive(Clone)]
pub(super) struct Nudge(std::sync::mpsc::SyncSender<Wake>);

impl Nudge {
    /// Checkpoint soon; a nudge already waiting covers this one.
    pub(super) fn nudge(&self) {
        let _ = self.0.try_send(Wake::Nudge);
    }
}

impl Checkpointer {
    /// Starts checkpointing the store at `path` (the writer's connection checkpoints
    /// only past the backstop).
    pub(super) fn start(path: &std::path::Path) -> Result<Checkpointer> {
        let c = Connection::open(path).map_err(backend)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<Wake>(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || loop {
                use std::sync::mpsc::RecvTimeoutError;
                match woken.recv_timeout(CHECKPOINT_EVERY) {
                    Ok(Wake::Nudge) | Err(RecvTimeoutError::Timeout) => {
                        // Busy (false) is left be: the checkpoint under way
                        // (reclaim's last) copies what this one would have.
                        if let Err(e) = checkpoint(&c) {
                            tracing::warn!("checkpointing the store's WAL: {e}");
                        }
                    }
                    Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .map_err(|e| Error::Backend(format!("starting the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            wake,
            thread: Some(thread),
        })
    }

    /// What maintenance steps nudge the thread with.
    pub(super) fn nudge(&self) -> Nudge {
        Nudge(self.wake.clone())
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Waits for room if a nudge is queued: the thread takes it, then this.
        let _ = self.wake.send(Wake::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
    /// the WAL (which truncates it to [`WAL_LIMIT`]) from a connection of its own.
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
            self.checkpoint_now.nudge();
            tokio::time::sleep(STEP_PAUSE).await;
        }
        // The last checkpoint is this one's own, so that what was given back has
        // left the file when this returns; the thread's may be under way (then
        // this one is refused at once), so it is tried again for up to 2 s.
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let c = Connection::open(&path).map_err(backend)?;
            for _ in 0..200 {
                if checkpoint(&c)? {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Backend(e.to_string()))?
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
