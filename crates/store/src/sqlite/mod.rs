//! The embedded backend: one SQLite file holding the log of every write (the MVCC
//! history a revisioned store needs), WAL with synchronous=FULL so that an acknowledged
//! write survives a crash (writes arriving together share one commit), reads on
//! connections of their own, and an in-process broadcast that feeds watchers after
//! each commit. [`maintenance`] keeps it small (compaction in short steps, space given
//! back, the WAL bounded); [`snapshot`] copies it while it runs and restores a copy.

pub mod maintenance;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{Error, Event, KeyValue, Page, Result, Store};

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Handle>,
    /// Writes waiting for the next commit (see `write`).
    pending: Arc<Mutex<Vec<PendingWrite>>>,
    readers: Arc<Readers>,
    events: broadcast::Sender<Event>,
    path: PathBuf,
    checkpoint_now: maintenance::Nudge,
}

/// The connection, and the lock that keeps any other process from opening the
/// store for writing (another server, a restore) while it is open.
struct Db {
    conn: Connection,
    // Dropped before the lock: the thread's connection closes first.
    _checkpointer: maintenance::Checkpointer,
    _lock: std::fs::File,
}

/// The most writes one transaction commits: a bound on how long the connection is
/// held, and so on how long compaction steps and the checkpointer's backstop wait.
const MAX_BATCH: usize = 512;

/// How many connections serve reads (the machines berth aims at have few cores).
const READERS: usize = 2;

/// A write's precondition, checked against the key's newest row at commit.
type Check = Box<dyn FnOnce(Option<&Row>) -> Result<()> + Send>;

/// A write waiting to be committed.
struct PendingWrite {
    key: String,
    value: Option<Vec<u8>>,
    allow: Check,
    reply: oneshot::Sender<Result<Event>>,
}

/// Locks `m`, also after a panic elsewhere: a panicked writer rolled its transaction
/// back when it unwound, so the connection (or the queue) is fine to use.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connections that serve reads, each used by one thread at a time.
struct Readers {
    conns: Vec<Mutex<Connection>>,
    /// Which one a read waits for when all are busy.
    turn: std::sync::atomic::AtomicUsize,
}

impl Readers {
    fn open(path: &Path) -> Result<Readers> {
        let mut conns = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let c = Connection::open(path).map_err(backend)?;
            c.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(backend)?;
            c.pragma_update(None, "query_only", true).map_err(backend)?;
            conns.push(Mutex::new(c));
        }
        Ok(Readers {
            conns,
            turn: Default::default(),
        })
    }

    /// Runs `f` on a free connection, or waits for one, in turn.
    fn run<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        for c in &self.conns {
            if let Ok(mut c) = c.try_lock() {
                return f(&mut c);
            }
        }
        let i = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.conns.len();
        f(&mut lock(&self.conns[i]))
    }
}

/// Commits `batch` in one transaction, then tells the watchers of each write in
/// revision order and answers each writer (the caller holds the connection, so no
/// other commit's events come between).
fn commit_batch(c: &mut Connection, batch: Vec<PendingWrite>, events: &broadcast::Sender<Event>) {
    let (writes, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|w| ((w.key, w.value, w.allow), w.reply))
        .unzip();
    let mut results = Vec::with_capacity(writes.len());
    let failed = apply_batch(c, writes, &mut results)
        .err()
        .map(|e| e.to_string());
    let mut results = results.into_iter();
    for reply in replies {
        let r = match results.next() {
            // Refused by its own check: the refusal stands, committed or not.
            Some(Err(refusal)) => Err(refusal),
            Some(Ok(ev)) if failed.is_none() => {
                let _ = events.send(ev.clone());
                Ok(ev)
            }
            // Nothing of the batch was committed: the writer hears why.
            _ => Err(Error::Backend(failed.clone().unwrap_or_default())),
        };
        let _ = reply.send(r);
    }
}

/// A write as `commit_batch` applies it: key, value (None: a deletion), check.
type Write = (String, Option<Vec<u8>>, Check);

/// The writes of one transaction, each checked against the rows the ones before
/// it left, its result pushed to `out`; a write its check refuses has the refusal
/// as its result and takes no revision. Err: the transaction failed as a whole
/// (nothing committed).
fn apply_batch(c: &mut Connection, writes: Vec<Write>, out: &mut Vec<Result<Event>>) -> Result<()> {
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    let start = meta(&tx, "revision")?;
    let mut rev = start;
    for (key, value, allow) in writes {
        let cur = newest(&tx, &key)?;
        if let Err(e) = allow(cur.as_ref()) {
            out.push(Err(e));
            continue;
        }
        rev += 1;
        let live = cur.as_ref().filter(|(_, v, _)| v.is_some());
        let create = match (&value, live) {
            (Some(_), Some((_, _, cr))) => *cr,
            _ => rev,
        };
        tx.prepare_cached("INSERT INTO log VALUES (?1, ?2, ?3, ?4, ?5)")
            .and_then(|mut st| {
                st.execute(params![
                    rev,
                    key,
                    value,
                    create,
                    cur.as_ref().map_or(0, |c| c.0)
                ])
            })
            .map_err(backend)?;
        out.push(Ok(match value {
            Some(v) => Event::Put(KeyValue {
                key,
                value: v,
                create_revision: create,
                mod_revision: rev,
            }),
            None => {
                let (prev_rev, prev_val, prev_create) = cur.expect("checked live");
                Event::Delete {
                    prev: KeyValue {
                        key,
                        value: prev_val.unwrap_or_default(),
                        create_revision: prev_create,
                        mod_revision: prev_rev,
                    },
                    revision: rev,
                }
            }
        }));
    }
    if rev == start {
        // Every write was refused: nothing to commit (or to fsync).
        return Ok(());
    }
    tx.execute("UPDATE meta SET value = ?1 WHERE name = 'revision'", [rev])
        .map_err(backend)?;
    tx.commit().map_err(backend)
}

/// The writer connection, as the store's handles share it: the last one dropped
/// waits for the tasks still using the connection (committers finding nothing left
/// to commit, a maintenance step whose caller went away), so that the store is
/// closed, and its lock released, when the last handle is gone: an
/// [`SqliteStore::open`] right after finds it free.
struct Handle(Arc<Mutex<Db>>);

impl Drop for Handle {
    fn drop(&mut self) {
        // Microseconds in practice (a task between finding work and the lock); the
        // bound keeps a wedged task from hanging the drop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&self.0) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

/// Runs `f` off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Backend(e.to_string()))?
}

/// The lock file of the store at `db`: `state.db.lock` next to `state.db`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes the store's lock (exclusive, not waiting), or says who holds it.
pub(crate) fn take_lock(db: &Path) -> Result<std::fs::File> {
    let path = lock_path(db);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Backend(format!("opening {}: {e}", path.display())))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Backend(format!(
            "{} is in use by another process (a berth server on this data directory?): stop it first",
            db.display()
        ))),
        Err(e) => Err(Error::Backend(format!("locking {}: {e}", path.display()))),
    }
}

fn backend(e: rusqlite::Error) -> Error {
    Error::Backend(e.to_string())
}

/// The upper bound of keys with `prefix` (every UTF-8 string with the prefix sorts
/// below it).
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    value BLOB,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key ON log (key, revision);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0), ('compacted_done', 0);
";

fn meta(c: &Connection, name: &str) -> Result<i64> {
    c.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .map_err(backend)
}

/// A key's row in the log: (revision, value or None for a deletion, create_revision).
type Row = (i64, Option<Vec<u8>>, i64);

/// The key's newest row.
fn newest(c: &Connection, key: &str) -> Result<Option<Row>> {
    c.prepare_cached(
        "SELECT revision, value, create_revision FROM log WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
    )
    .and_then(|mut st| {
        st.query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
    })
    .map_err(backend)
}

impl SqliteStore {
    /// Opens (or creates) the store in the file `path`, which no other process may
    /// have open for writing.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let lock = take_lock(path)?;
        let c = Connection::open(path).map_err(backend)?;
        c.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        maintenance::prepare(&c)?;
        c.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        c.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        c.execute_batch(SCHEMA).map_err(backend)?;
        // Checkpoints are the checkpointer's; a writer's commit checkpoints only past
        // the backstop (see `maintenance`), by then with little left to copy.
        c.pragma_update(None, "wal_autocheckpoint", maintenance::WAL_BACKSTOP_PAGES)
            .map_err(backend)?;
        let checkpointer = maintenance::Checkpointer::start(path)?;
        let (events, _) = broadcast::channel(4096);
        let checkpoint_now = checkpointer.nudge();
        let readers = Arc::new(Readers::open(path)?);
        Ok(SqliteStore {
            db: Arc::new(Handle(Arc::new(Mutex::new(Db {
                conn: c,
                _checkpointer: checkpointer,
                _lock: lock,
            })))),
            pending: Arc::default(),
            readers,
            events,
            path: path.to_path_buf(),
            checkpoint_now,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.0.clone();
        blocking(move || f(&mut lock(&db).conn)).await
    }

    /// Runs `f` on one of the reading connections, off the async threads. In WAL
    /// mode readers see the last commit and wait for no writer: a GET stuck behind
    /// another request's commit and its fsync made every read-modify-write wait for
    /// two of them.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        blocking(move || readers.run(f)).await
    }

    /// One write: checks `allow` against the key's newest row, appends a row (value
    /// None: a deletion) at the next revision, commits, then tells the watchers (in
    /// revision order: still holding the connection).
    ///
    /// Writes that arrive while a commit is under way are committed together in
    /// the next transaction (group commit): each is still checked and numbered on
    /// its own, but they share one fsync, which is what bounded the store at a few
    /// thousand writes a second, whatever the CPU.
    async fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        allow: impl FnOnce(Option<&Row>) -> Result<()> + Send + 'static,
    ) -> Result<Event> {
        let (reply, answer) = oneshot::channel();
        lock(&self.pending).push(PendingWrite {
            key: key.to_string(),
            value,
            allow: Box::new(allow),
            reply,
        });
        let (db, pending, events) = (
            Arc::downgrade(&self.db.0),
            self.pending.clone(),
            self.events.clone(),
        );
        // Every write starts a committer; the first to hold the connection takes
        // every write waiting, the rest find none (or the next batch) left, and go
        // without waiting for the connection or keeping a dropped store open. Not
        // awaited: this write may be in an earlier committer's batch, and waiting
        // for this one (busy with a later batch) would only add its commit.
        drop(tokio::task::spawn_blocking(move || {
            if lock(&pending).is_empty() {
                return;
            }
            let Some(db) = db.upgrade() else { return };
            let mut db = lock(&db);
            // One batch: there are always at least as many committers to come as
            // writes queued (each write brings one, and one leaves without a
            // batch only when none is queued), and maintenance gets the connection
            // between batches.
            let batch: Vec<PendingWrite> = {
                let mut p = lock(&pending);
                let n = p.len().min(MAX_BATCH);
                p.drain(..n).collect()
            };
            if !batch.is_empty() {
                commit_batch(&mut db.conn, batch, &events);
            }
        }));
        answer
            .await
            .map_err(|_| Error::Backend("the store's committer ended without an answer".into()))?
    }

    /// The changes after `revision` to keys with `prefix`, from the log.
    fn history(c: &Connection, prefix: &str, revision: i64) -> Result<Vec<Event>> {
        let mut st = c
            .prepare(
                "SELECT l.revision, l.key, l.value, l.create_revision, p.revision, p.value, p.create_revision
                 FROM log l LEFT JOIN log p ON p.revision = l.prev_revision
                 WHERE l.revision > ?1 AND l.key >= ?2 AND l.key < ?3 ORDER BY l.revision",
            )
            .map_err(backend)?;
        let rows = st
            .query_map(params![revision, prefix, prefix_end(prefix)], |r| {
                let key: String = r.get(1)?;
                let value: Option<Vec<u8>> = r.get(2)?;
                Ok(match value {
                    Some(v) => Event::Put(KeyValue {
                        key,
                        value: v,
                        create_revision: r.get(3)?,
                        mod_revision: r.get(0)?,
                    }),
                    None => Event::Delete {
                        prev: KeyValue {
                            key,
                            value: r.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default(),
                            create_revision: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                            mod_revision: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                        },
                        revision: r.get(0)?,
                    },
                })
            })
            .map_err(backend)?;
        rows.collect::<std::result::Result<_, _>>().map_err(backend)
    }
}

/// The precondition of update and delete: the key exists, at `expected` unless 0.
fn live_at(key: &str, expected: i64) -> impl FnOnce(Option<&Row>) -> Result<()> + Send + 'static {
    let k = key.to_string();
    move |cur| match cur {
        Some((rev, Some(_), _)) if expected == 0 || *rev == expected => Ok(()),
        Some((rev, Some(_), _)) => Err(Error::Conflict {
            key: k,
            expected,
            current: *rev,
        }),
        _ => Err(Error::NotFound(k)),
    }
}

impl Store for SqliteStore {
    async fn revision(&self) -> Result<i64> {
        self.read(|c| meta(c, "revision")).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |c| {
            Ok(newest(c, &key)?.and_then(|(rev, v, cr)| {
                v.map(|value| KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: cr,
                    mod_revision: rev,
                })
            }))
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        revision: i64,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page> {
        let (prefix, after) = (prefix.to_string(), after.unwrap_or("").to_string());
        self.read(move |c| {
            // One read transaction: the revision, the compaction mark and the rows
            // all as of one commit.
            let c = c.transaction().map_err(backend)?;
            let current = meta(&c, "revision")?;
            let compacted = meta(&c, "compacted")?;
            let at = if revision == 0 { current } else { revision };
            if at > current {
                return Err(Error::Future {
                    requested: at,
                    current,
                });
            }
            if at < compacted {
                return Err(Error::Compacted {
                    requested: at,
                    compacted,
                });
            }
            let lim = if limit == 0 {
                -1
            } else {
                i64::try_from(limit).unwrap_or(i64::MAX - 1).saturating_add(1)
            };
            let mut st = c
                .prepare(
                    "SELECT l.key, l.value, l.create_revision, l.revision FROM log l
                     WHERE l.key >= ?1 AND l.key < ?2 AND l.key > ?3 AND l.value IS NOT NULL
                       AND l.revision = (SELECT MAX(revision) FROM log m WHERE m.key = l.key AND m.revision <= ?4)
                     ORDER BY l.key LIMIT ?5",
                )
                .map_err(backend)?;
            let mut items: Vec<KeyValue> = st
                .query_map(params![prefix, prefix_end(&prefix), after, at, lim], |r| {
                    Ok(KeyValue {
                        key: r.get(0)?,
                        value: r.get(1)?,
                        create_revision: r.get(2)?,
                        mod_revision: r.get(3)?,
                    })
                })
                .map_err(backend)?
                .collect::<std::result::Result<_, _>>()
                .map_err(backend)?;
            let more_after = if limit > 0 && items.len() > limit {
                items.truncate(limit);
                items.last().map(|kv| kv.key.clone())
            } else {
                None
            };
            Ok(Page {
                items,
                revision: at,
                more_after,
            })
        })
        .await
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<KeyValue> {
        let k = key.to_string();
        match self
            .write(key, Some(value.to_vec()), move |cur| match cur {
                Some((_, Some(_), _)) => Err(Error::Exists(k)),
                _ => Ok(()),
            })
            .await?
        {
            Event::Put(kv) => Ok(kv),
            Event::Delete { .. } => unreachable!("a put"),
        }
    }

    async fn update(&self, key: &str, value: &[u8], expected: i64) -> Result<KeyValue> {
        match self
            .write(key, Some(value.to_vec()), live_at(key, expected))
            .await?
        {
            Event::Put(kv) => Ok(kv),
            Event::Delete { .. } => unreachable!("a put"),
        }
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<(KeyValue, i64)> {
        match self.write(key, None, live_at(key, expected)).await? {
            Event::Delete { prev, revision } => Ok((prev, revision)),
            Event::Put(_) => unreachable!("a deletion"),
        }
    }

    async fn watch(&self, prefix: &str, revision: i64) -> Result<mpsc::Receiver<Event>> {
        // Subscribed before reading the history, so nothing falls between the two.
        let mut live = self.events.subscribe();
        let p = prefix.to_string();
        let history = self
            .read(move |c| {
                let c = c.transaction().map_err(backend)?;
                let compacted = meta(&c, "compacted")?;
                if revision < compacted {
                    return Err(Error::Compacted {
                        requested: revision,
                        compacted,
                    });
                }
                SqliteStore::history(&c, &p, revision)
            })
            .await?;
        let (tx, rx) = mpsc::channel(1024);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut last = revision;
            for ev in history {
                last = ev.revision();
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(ev) if ev.revision() > last && ev.key().starts_with(&prefix) => {
                        last = ev.revision();
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // A watcher that fell behind ends; the client lists again, as
                    // with kube-apiserver.
                    Err(_) => return,
                }
            }
        });
        Ok(rx)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        // The history goes in short steps, each its own transaction, so writers wait
        // for one step at most (see `maintenance`).
        let (from, to) = self
            .with(move |c| maintenance::begin_compaction(c, revision))
            .await?;
        let mut lo = from;
        while lo < to {
            let hi = (lo + maintenance::COMPACTION_STEP).min(to);
            self.with(move |c| maintenance::compact_step(c, lo, hi, to))
                .await?;
            self.checkpoint_now.nudge();
            lo = hi;
            if lo < to {
                tokio::time::sleep(maintenance::STEP_PAUSE).await;
            }
        }
        Ok(())
    }
}
