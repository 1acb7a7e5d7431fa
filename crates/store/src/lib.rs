//! The API server's storage: one revisioned key-value [`Store`] trait — what
//! kube-apiserver asks of etcd — with its embedded SQLite backend ([`sqlite`]) and its etcd v3 backend ([`etcd`]).
//!
//! Every write gets the next revision of the whole store; a key remembers the revision
//! that created it and the one that last changed it; a reader can list as of an older
//! revision (until it is compacted away) and watch every change after a revision.

pub mod etcd;
pub mod sqlite;

use std::future::Future;

/// A stored value with its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    pub create_revision: i64,
    /// The revision of its last change.
    pub mod_revision: i64,
}

/// A change, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Created or updated: the new value (its `mod_revision` is the event's revision).
    Put(KeyValue),
    /// Deleted at `revision`: the value it had.
    Delete {
        /// The value before the deletion.
        prev: KeyValue,
        /// The revision of the deletion.
        revision: i64,
    },
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The values, in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: i64,
    /// The key to continue after, when more remain.
    pub more_after: Option<String>,
}

/// What a store refuses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create` of a key that exists.
    #[error("key {0} already exists")]
    Exists(String),
    /// A write conditioned on a revision that is no longer the key's.
    #[error("key {key} is at revision {current}, not {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the writer expected.
        expected: i64,
        /// The key's revision now (0: it is gone).
        current: i64,
    },
    /// No such key.
    #[error("key {0} not found")]
    NotFound(String),
    /// A read or watch at a revision older than the last compaction (kube's 410 Gone).
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The compaction revision.
        compacted: i64,
    },
    /// A revision newer than the store's.
    #[error("revision {requested} is in the future (current: {current})")]
    Future {
        /// The revision asked for.
        requested: i64,
        /// The store's revision.
        current: i64,
    },
    /// The backend failed.
    #[error("storage: {0}")]
    Backend(String),
}

/// Result alias of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A revisioned key-value store.
pub trait Store: Send + Sync {
    /// The newest revision.
    fn revision(&self) -> impl Future<Output = Result<i64>> + Send;
    /// The key's current value.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<KeyValue>>> + Send;
    /// Keys starting with `prefix`, in key order, as of `revision` (0: now), at most
    /// `limit` (0: all), after the key `after`.
    fn list(
        &self,
        prefix: &str,
        revision: i64,
        limit: usize,
        after: Option<&str>,
    ) -> impl Future<Output = Result<Page>> + Send;
    /// Creates `key`; fails with [`Error::Exists`].
    fn create(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<KeyValue>> + Send;
    /// Replaces `key`'s value if its `mod_revision` is `expected` (0: whatever it is).
    fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: i64,
    ) -> impl Future<Output = Result<KeyValue>> + Send;
    /// Deletes `key` if its `mod_revision` is `expected` (0: whatever it is); returns
    /// what it held and the revision of the deletion.
    fn delete(
        &self,
        key: &str,
        expected: i64,
    ) -> impl Future<Output = Result<(KeyValue, i64)>> + Send;
    /// Every change to keys starting with `prefix` after `revision` (the history first,
    /// then live), in revision order.
    fn watch(
        &self,
        prefix: &str,
        revision: i64,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<Event>>> + Send;
    /// Forgets the history up to `revision`: older values and deletions.
    fn compact(&self, revision: i64) -> impl Future<Output = Result<()>> + Send;
}

/// Either backend, chosen at run time (`berth server --datastore-endpoint`): the trait's
/// async methods make it unusable as a trait object, so the choice is an enum.
#[derive(Clone)]
pub enum Backend {
    /// The embedded SQLite file.
    Sqlite(sqlite::SqliteStore),
    /// An etcd cluster.
    Etcd(Box<etcd::EtcdStore>),
}

impl Backend {
    /// Compacts the store every `every` to the revision it had one interval before
    /// (kube-apiserver's --etcd-compaction-interval: watches can resume from anywhere
    /// in the last interval); on SQLite the space freed is then given back. Runs for
    /// as long as the task does.
    pub async fn compact_periodically(self, every: std::time::Duration) {
        let mut last = 0;
        loop {
            tokio::time::sleep(every).await;
            if last > 0 {
                let t = std::time::Instant::now();
                match self.compact(last).await {
                    Ok(()) => tracing::debug!(revision = last, took = ?t.elapsed(), "compacted"),
                    Err(e) => tracing::warn!(revision = last, "compaction: {e}"),
                }
                if let Backend::Sqlite(s) = &self {
                    if let Err(e) = s.reclaim().await {
                        tracing::warn!("giving back the space compaction freed: {e}");
                    }
                }
            }
            last = self.revision().await.unwrap_or(0);
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Backend::Sqlite($s) => $e,
            Backend::Etcd($s) => $e,
        }
    };
}

impl Store for Backend {
    async fn revision(&self) -> Result<i64> {
        dispatch!(self, s => s.revision().await)
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        dispatch!(self, s => s.get(key).await)
    }
    async fn list(
        &self,
        prefix: &str,
        revision: i64,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page> {
        dispatch!(self, s => s.list(prefix, revision, limit, after).await)
    }
    async fn create(&self, key: &str, value: &[u8]) -> Result<KeyValue> {
        dispatch!(self, s => s.create(key, value).await)
    }
    async fn update(&self, key: &str, value: &[u8], expected: i64) -> Result<KeyValue> {
        dispatch!(self, s => s.update(key, value, expected).await)
    }
    async fn delete(&self, key: &str, expected: i64) -> Result<(KeyValue, i64)> {
        dispatch!(self, s => s.delete(key, expected).await)
    }
    async fn watch(
        &self,
        prefix: &str,
        revision: i64,
    ) -> Result<tokio::sync::mpsc::Receiver<Event>> {
        dispatch!(self, s => s.watch(prefix, revision).await)
    }
    async fn compact(&self, revision: i64) -> Result<()> {
        dispatch!(self, s => s.compact(revision).await)
    }
}
