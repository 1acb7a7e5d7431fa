//! The embedded backend: one SQLite file holding the log of every write (the MVCC
//! history a revisioned store needs), WAL with synchronous=FULL so that an acknowledged
//! write survives a crash, and an in-process broadcast that feeds watchers after each
//! commit. [`maintenance`] keeps it small (compaction in short steps, space given
//! back, the WAL bounded); [`snapshot`] copies it while it runs and restores a copy.

pub mod maintenance;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{broadcast, mpsc};

use crate::{Error, Event, KeyValue, Page, Result, Store};

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Mutex<Db>>,
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
    c.query_row(
        "SELECT revision, value, create_revision FROM log WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
        [key],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
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
        Ok(SqliteStore {
            db: Arc::new(Mutex::new(Db {
                conn: c,
                _checkpointer: checkpointer,
                _lock: lock,
            })),
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
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            // A panicked writer rolled its transaction back when it unwound; the
            // connection is fine to use.
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut db.conn)
        })
        .await
        .map_err(|e| Error::Backend(e.to_string()))?
    }

    /// One write: checks `allow` against the key's newest row, appends a row (value
    /// None: a deletion) at the next revision, commits, then tells the watchers (in
    /// revision order: still holding the connection).
    async fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        allow: impl FnOnce(Option<&Row>) -> Result<()> + Send + 'static,
    ) -> Result<Event> {
        let key = key.to_string();
        let events = self.events.clone();
        let ev = self
            .with(move |c| {
                let tx = c
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let cur = newest(&tx, &key)?;
                allow(cur.as_ref())?;
                let rev = meta(&tx, "revision")? + 1;
                let live = cur.as_ref().filter(|(_, v, _)| v.is_some());
                let create = match (&value, live) {
                    (Some(_), Some((_, _, cr))) => *cr,
                    _ => rev,
                };
                tx.execute(
                    "INSERT INTO log VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![rev, key, value, create, cur.as_ref().map_or(0, |c| c.0)],
                )
                .map_err(backend)?;
                tx.execute("UPDATE meta SET value = ?1 WHERE name = 'revision'", [rev])
                    .map_err(backend)?;
                tx.commit().map_err(backend)?;
                let ev = match value {
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
                };
                // Told while the connection is still held, so watchers see the
                // writes in revision order.
                let _ = events.send(ev.clone());
                Ok(ev)
            })
            .await?;
        Ok(ev)
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
        self.with(|c| meta(c, "revision")).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.with(move |c| {
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
        self.with(move |c| {
            let current = meta(c, "revision")?;
            let compacted = meta(c, "compacted")?;
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
            .with(move |c| {
                let compacted = meta(c, "compacted")?;
                if revision < compacted {
                    return Err(Error::Compacted {
                        requested: revision,
                        compacted,
                    });
                }
                SqliteStore::history(c, &p, revision)
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
