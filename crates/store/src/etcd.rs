//! The etcd v3 backend: the [`Store`] trait over a real etcd cluster, for users who
//! outgrow one machine. Revisions are etcd's own, so the API server's resourceVersions
//! are etcd revisions as with kube-apiserver; conditional writes are etcd transactions
//! comparing a key's create or mod revision.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::sync::mpsc;

use crate::{Error, Event, KeyValue, Page, Result, Store};

/// A store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

fn backend(e: etcd_client::Error) -> Error {
    Error::Backend(format!("etcd: {e}"))
}

fn kv_of(k: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: k.value().to_vec(),
        create_revision: k.create_revision(),
        mod_revision: k.mod_revision(),
    }
}

/// Whether an error means the request was never taken up (a connection to a dead
/// member, or a member cut off from its leader refusing it before proposing
/// anything), so sending it again — to another member — cannot apply it twice.
fn not_sent(e: &etcd_client::Error) -> bool {
    let m = e.to_string();
    m.contains("tcp connect error")
        || m.contains("Connection refused")
        || m.contains("error trying to connect")
        || m.contains("etcdserver: no leader")
}

/// Runs `f` on a fresh KV client, again (up to 8 times, 50 ms apart) while the request
/// could not reach a member: the client balances over every endpoint, dead ones
/// included, and a cluster with a quorum must keep answering.
async fn kv<T, F, Fut>(client: &Client, f: F) -> std::result::Result<T, etcd_client::Error>
where
    F: Fn(etcd_client::KvClient) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let mut attempt = 0;
    loop {
        match f(client.kv_client()).await {
            Err(e) if not_sent(&e) && attempt < 8 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
}

/// The first key after every key starting with `prefix` (etcd's range end).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:port`, comma-separated
    /// lists are split); fails when none answers within a few seconds.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let eps: Vec<String> = endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if eps.is_empty() {
            return Err(Error::Backend(
                "etcd: no endpoint given (expected http://HOST:PORT)".into(),
            ));
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            // A member that has lost its leader (quorum gone) refuses at once rather
            // than holding every request until the timeout: the API answers 503 fast.
            .with_require_leader(true);
        let client = Client::connect(&eps, Some(opts))
            .await
            .map_err(|e| Error::Backend(format!("etcd at {}: {e}", eps.join(","))))?;
        let s = EtcdStore { client };
        // One round trip, so a wrong address fails here and not at the first request.
        s.revision()
            .await
            .map_err(|e| Error::Backend(format!("{e} (endpoints {})", eps.join(","))))?;
        Ok(s)
    }

    /// Streams a snapshot of the etcd member this client reaches (its whole
    /// database, through etcd's snapshot API, as `etcdctl snapshot save` does) into
    /// `out`; returns its size in bytes.
    pub async fn snapshot(&self, out: &std::path::Path) -> Result<u64> {
        use std::io::Write;
        // Private and locked while written: the snapshot holds Secrets.
        let (tmp, mut file) = crate::sqlite::snapshot::partial(out)?;
        let copied = async {
            let mut stream = self
                .client
                .maintenance_client()
                .snapshot()
                .await
                .map_err(backend)?;
            let mut bytes = 0u64;
            while let Some(part) = stream.message().await.map_err(backend)? {
                file.write_all(part.blob())
                    .map_err(|e| Error::Backend(format!("writing {}: {e}", tmp.display())))?;
                bytes += part.blob().len() as u64;
            }
            file.sync_all()
                .map_err(|e| Error::Backend(format!("syncing {}: {e}", tmp.display())))?;
            if bytes == 0 {
                return Err(Error::Backend("etcd sent an empty snapshot".into()));
            }
            std::fs::rename(&tmp, out)
                .map_err(|e| Error::Backend(format!("renaming {}: {e}", tmp.display())))?;
            Ok(bytes)
        }
        .await;
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied
    }

    /// Maps an error from a read at `revision` to the store's own kinds.
    async fn read_error(&self, e: etcd_client::Error, revision: i64) -> Error {
        let msg = e.to_string();
        if msg.contains("required revision has been compacted") {
            return Error::Compacted {
                requested: revision,
                compacted: self.compacted().await.unwrap_or(0),
            };
        }
        if msg.contains("future revision") {
            return Error::Future {
                requested: revision,
                current: self.revision().await.unwrap_or(0),
            };
        }
        backend(e)
    }

    /// The revision of the last compaction: etcd does not say it except to a watch
    /// started before it, so one is started at revision 1 and cancelled.
    async fn compacted(&self) -> Result<i64> {
        let mut w = self.client.watch_client();
        let mut stream = w
            .watch("\0", Some(WatchOptions::new().with_start_revision(1)))
            .await
            .map_err(backend)?;
        while let Some(resp) = stream.message().await.map_err(backend)? {
            if resp.compact_revision() > 0 || resp.canceled() {
                return Ok(resp.compact_revision());
            }
            if resp.created() {
                // Not cancelled at creation: nothing is compacted yet. etcd sends the
                // cancellation right after the creation when it is.
                match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                    Ok(Ok(Some(r))) if r.compact_revision() > 0 => {
                        return Ok(r.compact_revision());
                    }
                    _ => return Ok(0),
                }
            }
        }
        Ok(0)
    }

    /// The key's current revision (0: gone), to explain a failed condition.
    async fn current(&self, key: &str) -> Result<i64> {
        Ok(self.get(key).await?.map(|k| k.mod_revision).unwrap_or(0))
    }
}

impl Store for EtcdStore {
    async fn revision(&self) -> Result<i64> {
        let r = kv(&self.client, |mut c| async move {
            c.get("\0", Some(GetOptions::new().with_count_only())).await
        })
        .await
        .map_err(backend)?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let r = kv(&self.client, |mut c| async move { c.get(key, None).await })
            .await
            .map_err(backend)?;
        Ok(r.kvs().first().map(kv_of))
    }

    async fn list(
        &self,
        prefix: &str,
        revision: i64,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page> {
        let start: Vec<u8> = match after {
            // The first key after `after`.
            Some(a) => {
                let mut k = a.as_bytes().to_vec();
                k.push(0);
                k
            }
            None => prefix.as_bytes().to_vec(),
        };
        let opts = GetOptions::new()
            .with_range(prefix_end(prefix))
            .with_revision(revision)
            .with_limit(limit as i64);
        let r = match kv(&self.client, |mut c| {
            let (start, opts) = (start.clone(), opts.clone());
            async move { c.get(start, Some(opts)).await }
        })
        .await
        {
            Ok(r) => r,
            Err(e) => return Err(self.read_error(e, revision).await),
        };
        let items: Vec<KeyValue> = r.kvs().iter().map(kv_of).collect();
        let more_after = if r.more() {
            items.last().map(|k| k.key.clone())
        } else {
            None
        };
        let read_at = if revision > 0 {
            revision
        } else {
            r.header().map(|h| h.revision()).unwrap_or(0)
        };
        Ok(Page {
            items,
            revision: read_at,
            more_after,
        })
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        let r = kv(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map_err(backend)?;
        if !r.succeeded() {
            return Err(Error::Exists(key.to_string()));
        }
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        Ok(KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(&self, key: &str, value: &[u8], expected: i64) -> Result<KeyValue> {
        let cond = if expected == 0 {
            Compare::create_revision(key, CompareOp::Greater, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, expected)
        };
        let txn = Txn::new()
            .when([cond])
            .and_then([
                TxnOp::put(key, value, None),
                // The put's response carries no create revision: read it back in the
                // same transaction.
                TxnOp::get(key, None),
            ])
            .or_else([TxnOp::get(key, None)]);
        let r = kv(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map_err(backend)?;
        let got = r.op_responses().into_iter().find_map(|o| match o {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(kv_of)),
            _ => None,
        });
        match (r.succeeded(), got.flatten()) {
            (true, Some(k)) => Ok(k),
            (true, None) => Err(Error::Backend(format!(
                "etcd: {key} vanished inside its own transaction"
            ))),
            (false, None) => Err(Error::NotFound(key.to_string())),
            (false, Some(k)) => Err(Error::Conflict {
                key: key.to_string(),
                expected,
                current: k.mod_revision,
            }),
        }
    }

    async fn delete(&self, key: &str, expected: i64) -> Result<(KeyValue, i64)> {
        let cond = if expected == 0 {
            Compare::create_revision(key, CompareOp::Greater, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, expected)
        };
        let txn = Txn::new().when([cond]).and_then([TxnOp::delete(
            key,
            Some(etcd_client::DeleteOptions::new().with_prev_key()),
        )]);
        let r = kv(&self.client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map_err(backend)?;
        if !r.succeeded() {
            let current = self.current(key).await?;
            if current == 0 {
                return Err(Error::NotFound(key.to_string()));
            }
            return Err(Error::Conflict {
                key: key.to_string(),
                expected,
                current,
            });
        }
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        let prev = r.op_responses().into_iter().find_map(|o| match o {
            TxnOpResponse::Delete(d) => d.prev_kvs().first().map(kv_of),
            _ => None,
        });
        match prev {
            Some(p) => Ok((p, rev)),
            None => Err(Error::NotFound(key.to_string())),
        }
    }

    async fn watch(&self, prefix: &str, revision: i64) -> Result<mpsc::Receiver<Event>> {
        if revision > 0 {
            // etcd answers a watch from a compacted revision with a creation and then a
            // cancellation; a read at the revision says so at once.
            let opts = GetOptions::new()
                .with_range(prefix_end(prefix))
                .with_revision(revision)
                .with_count_only();
            let r = kv(&self.client, |mut c| {
                let opts = opts.clone();
                async move { c.get(prefix, Some(opts)).await }
            })
            .await;
            if let Err(e) = r {
                return Err(self.read_error(e, revision).await);
            }
        }
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix))
            .with_start_revision(revision + 1)
            .with_prev_key();
        // A watch is a stream to one member: opened again while that member is dead.
        let mut attempt = 0;
        let (mut stream, first) = loop {
            let r = async {
                let mut st = self
                    .client
                    .watch_client()
                    .watch(prefix, Some(opts.clone()))
                    .await?;
                // The creation answer says whether the start revision is still there.
                let first = st.message().await?;
                Ok::<_, etcd_client::Error>((st, first))
            }
            .await;
            match r {
                Err(e) if not_sent(&e) && attempt < 8 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                r => break r.map_err(backend)?,
            }
        };
        let mut pending = Vec::new();
        if let Some(resp) = first {
            if resp.compact_revision() > 0 {
                return Err(Error::Compacted {
                    requested: revision,
                    compacted: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                return Err(Error::Backend(format!(
                    "etcd refused the watch: {}",
                    resp.cancel_reason()
                )));
            }
            pending.push(resp);
        }
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut next = pending.pop();
            loop {
                let resp = match next.take() {
                    Some(r) => r,
                    None => match stream.message().await {
                        Ok(Some(r)) => r,
                        // The receiver sees the channel close: the watch ended.
                        _ => return,
                    },
                };
                if resp.canceled() {
                    return;
                }
                for e in resp.events() {
                    let ev = match (e.event_type(), e.kv()) {
                        (EventType::Put, Some(k)) => Event::Put(kv_of(k)),
                        (EventType::Delete, Some(k)) => Event::Delete {
                            prev: e.prev_kv().map(kv_of).unwrap_or_else(|| KeyValue {
                                key: String::from_utf8_lossy(k.key()).into_owned(),
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: 0,
                            }),
                            revision: k.mod_revision(),
                        },
                        _ => continue,
                    };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.compact_with(revision, false).await
    }
}

impl EtcdStore {
    /// Compacts to `revision` and answers only once etcd's backend has dropped the
    /// history (etcd's `physical` compaction, what `etcdctl compact --physical`
    /// waits for); the API server's compactions do not wait. Benchmarks time it.
    pub async fn compact_physically(&self, revision: i64) -> Result<()> {
        self.compact_with(revision, true).await
    }

    /// Gives the space compaction freed back to the file system (etcd's defragment,
    /// what `etcdctl defrag` does): the member rewrites its database and serves no
    /// request meanwhile. Benchmarks weigh it against SQLite's stepped reclaim.
    pub async fn defragment(&self) -> Result<()> {
        self.client
            .maintenance_client()
            .defragment()
            .await
            .map(|_| ())
            .map_err(backend)
    }

    async fn compact_with(&self, revision: i64, physical: bool) -> Result<()> {
        let options = physical.then(|| etcd_client::CompactionOptions::new().with_physical());
        match kv(&self.client, |mut c| {
            let options = options.clone();
            async move { c.compact(revision, options).await }
        })
        .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.to_string()
                    .contains("required revision has been compacted") =>
            {
                Ok(())
            }
            Err(e) => Err(self.read_error(e, revision).await),
        }
    }
}
