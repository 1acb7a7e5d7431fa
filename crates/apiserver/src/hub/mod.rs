//! The watch hub: one watch on the store feeds every API watcher. It keeps the current
//! objects (so a changed object's previous state is known for selector transitions and
//! a watch can start with the current state) and a ring of recent changes (so a watch
//! can resume from a recent resourceVersion). Each change is decoded once and kept as
//! its JSON with what selectors read ([`Stored`]), however many watchers receive it;
//! watchers share it through an `Arc` in a broadcast channel, and one that falls too
//! far behind is cut off (its client re-watches) rather than buffering without bound.

mod stored;

pub use stored::Stored;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_store::{Backend, Event, Store};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::status::ApiError;

/// How many recent changes a watch can resume from.
const RING: usize = 20_000;
/// How far a watcher may fall behind the newest change before it is cut off.
const LAG: usize = 16_384;

/// A watch event's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted.
    Deleted,
}

impl Kind {
    /// kube's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "ADDED",
            Kind::Modified => "MODIFIED",
            Kind::Deleted => "DELETED",
        }
    }
}

/// One change of one object.
pub struct Change {
    /// The store revision of the change.
    pub revision: i64,
    /// The storage key.
    pub key: String,
    /// What happened.
    pub kind: Kind,
    /// The object after the change (before it, for a deletion), resourceVersion set.
    pub object: Arc<Stored>,
    /// The object before the change, when known.
    pub prev: Option<Arc<Stored>>,
}

/// A watch event as serialized: borrowed, because `json!` would copy the whole
/// object into a new tree first (and drop it after), for every change.
#[derive(serde::Serialize)]
struct EventRef<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

/// One JSON watch line (newline-terminated) of an event of type `kind` about `object`.
pub fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&EventRef { kind, object }).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct State {
    objects: BTreeMap<String, Arc<Stored>>,
    /// Owner uid → keys of the objects whose ownerReferences name it: deletions ask
    /// for an owner's dependents, and a scan of every object under the lock made each
    /// delete cost as much as the whole cluster.
    dependents: Dependents,
    ring: VecDeque<Arc<Change>>,
    /// Every change after this revision is in the ring.
    first: i64,
    revision: i64,
    tx: broadcast::Sender<Arc<Change>>,
    /// Told of every change under their prefix, in order, before any watcher.
    observers: Vec<(String, Arc<dyn Observer>)>,
}

/// Something inside the server that keeps its own view of some objects (the RBAC
/// index): told of each change as the hub applies it, so its view is current as soon
/// as the hub's is, and it is not a watcher that can fall behind.
pub trait Observer: Send + Sync {
    /// Starts over from these objects (at registration, and after the hub reloaded);
    /// each is decoded as it is pulled, so an observer that reads none costs nothing.
    fn reset(&self, objects: &mut dyn Iterator<Item = (&str, Value)>);
    /// One object changed (None: deleted).
    fn changed(&self, key: &str, object: Option<&Value>);
}

impl State {
    fn reset_observers(&self) {
        for (prefix, o) in &self.observers {
            reset_observer(&self.objects, prefix, o.as_ref());
        }
    }
}

/// The objects whose keys start with `prefix`.
fn prefixed<'a>(
    objects: &'a BTreeMap<String, Arc<Stored>>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Arc<Stored>)> {
    objects
        .range(prefix.to_string()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// Starts `o` over from the objects under `prefix`.
fn reset_observer(objects: &BTreeMap<String, Arc<Stored>>, prefix: &str, o: &dyn Observer) {
    let mut decoded = prefixed(objects, prefix).map(|(k, v)| (k.as_str(), v.value()));
    o.reset(&mut decoded);
}

/// The hub.
pub struct Hub {
    state: Mutex<State>,
    revision: watch::Sender<i64>,
    store: Backend,
}

/// What a new watcher starts with.
pub struct Subscription {
    /// Changes after the requested revision that happened before the subscription.
    pub history: Vec<Arc<Change>>,
    /// The current objects under the prefix (for watches that start from "now").
    pub snapshot: Vec<Arc<Stored>>,
    /// The revision the history or snapshot ends at.
    pub revision: i64,
    /// Live changes.
    pub live: broadcast::Receiver<Arc<Change>>,
}

impl State {
    /// Moves `key` in the dependents index from `before`'s owners to `after`'s.
    fn reindex(&mut self, key: &str, before: Option<&Stored>, after: Option<&Stored>) {
        let old: BTreeSet<&str> = before.map(|b| b.owners().collect()).unwrap_or_default();
        let new: BTreeSet<&str> = after.map(|a| a.owners().collect()).unwrap_or_default();
        for uid in old.difference(&new) {
            if let Some(keys) = self.dependents.get_mut(*uid) {
                keys.remove(key);
                if keys.is_empty() {
                    self.dependents.remove(*uid);
                }
            }
        }
        for uid in new.difference(&old) {
            self.dependents
                .entry(uid.to_string())
                .or_default()
                .insert(key.to_string());
        }
    }
}

/// The dependents index of a freshly loaded set of objects.
fn index_dependents(objects: &BTreeMap<String, Arc<Stored>>) -> Dependents {
    let mut index: Dependents = HashMap::new();
    for (key, o) in objects {
        for uid in o.owners() {
            index
                .entry(uid.to_string())
                .or_default()
                .insert(key.clone());
        }
    }
    index
}

/// Decodes a stored value, setting its resourceVersion.
pub fn decode(value: &[u8], rv: i64) -> Value {
    let mut v: Value = serde_json::from_slice(value).unwrap_or(Value::Null);
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    v
}

impl Hub {
    /// Loads the current objects and starts following the store.
    pub async fn start(store: Backend) -> Result<Arc<Hub>, ApiError> {
        let (objects, dependents, revision) = load(&store).await?;
        let (tx, _) = broadcast::channel(LAG);
        let hub = Arc::new(Hub {
            state: Mutex::new(State {
                dependents,
                objects,
                ring: VecDeque::new(),
                first: revision,
                revision,
                tx,
                observers: Vec::new(),
            }),
            revision: watch::channel(revision).0,
            store,
        });
        let h = hub.clone();
        tokio::spawn(async move { h.follow(revision).await });
        Ok(hub)
    }

    async fn follow(self: Arc<Hub>, mut from: i64) {
        loop {
            match self.store.watch("/registry/", from).await {
                Ok(mut rx) => {
                    while let Some(ev) = rx.recv().await {
                        from = ev.revision();
                        self.apply(ev);
                    }
                }
                Err(berth_store::Error::Compacted { .. }) => {
                    // Missed changes are gone: reload, and cut every watcher off so its
                    // client relists.
                    if let Ok((objects, dependents, rev)) = load(&self.store).await {
                        let mut st = self.state.lock().unwrap();
                        st.dependents = dependents;
                        st.objects = objects;
                        st.ring.clear();
                        st.first = rev;
                        st.revision = rev;
                        st.tx = broadcast::channel(LAG).0;
                        st.reset_observers();
                        from = rev;
                        self.revision.send_replace(rev);
                    }
                }
                Err(e) => tracing::warn!("watch on the store failed: {e}; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn apply(&self, ev: Event) {
        // Decoded before the lock is taken: lists and watch starts, which take it
        // too, wait for none of the JSON work.
        let value = match &ev {
            Event::Put(kv) => decode(&kv.value, kv.mod_revision),
            Event::Delete { prev, revision } => decode(&prev.value, *revision),
        };
        let obj = Arc::new(Stored::new(&value));
        let mut st = self.state.lock().unwrap();
        let change = match ev {
            Event::Put(kv) => {
                let prev = st.objects.insert(kv.key.clone(), obj.clone());
                st.reindex(&kv.key, prev.as_deref(), Some(&obj));
                Change {
                    revision: kv.mod_revision,
                    kind: if prev.is_none() || kv.create_revision == kv.mod_revision {
                        Kind::Added
                    } else {
                        Kind::Modified
                    },
                    key: kv.key,
                    object: obj,
                    prev,
                }
            }
            Event::Delete { prev, revision } => {
                let before = st.objects.remove(&prev.key);
                st.reindex(&prev.key, before.as_deref(), None);
                Change {
                    revision,
                    key: prev.key,
                    kind: Kind::Deleted,
                    object: obj,
                    prev: before,
                }
            }
        };
        for (prefix, o) in &st.observers {
            if change.key.starts_with(prefix.as_str()) {
                let obj = (change.kind != Kind::Deleted).then_some(&value);
                o.changed(&change.key, obj);
            }
        }
        let change = Arc::new(change);
        let revision = change.revision;
        st.revision = revision;
        st.ring.push_back(change.clone());
        // Freed after the lock is let go: the last copy of an old version of an
        // object may go with a change that leaves the ring.
        let mut retired = Vec::new();
        while st.ring.len() > RING {
            if let Some(old) = st.ring.pop_front() {
                st.first = old.revision;
                retired.push(old);
            }
        }
        let _ = st.tx.send(change);
        drop(st);
        drop(retired);
        self.revision.send_replace(revision);
    }

    /// Registers `o` for the changes under `prefix`, starting it from the current
    /// objects there.
    pub fn observe(&self, prefix: &str, o: Arc<dyn Observer>) {
        let mut st = self.state.lock().unwrap();
        reset_observer(&st.objects, prefix, o.as_ref());
        st.observers.push((prefix.to_string(), o));
    }

    /// The newest revision the hub has seen.
    pub fn current(&self) -> i64 {
        self.state.lock().unwrap().revision
    }

    /// Waits until the hub has seen `rev` (a write this server acknowledged reaches
    /// the hub a moment later); kube answers 504 when it does not within 3 s.
    pub async fn wait_for(&self, rev: i64) -> Result<(), ApiError> {
        let mut rx = self.revision.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(3), async {
            rx.wait_for(|r| *r >= rev).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            _ => {
                let mut e = ApiError::new(
                    504,
                    "Timeout",
                    format!(
                        "Too large resource version: {rev}, current: {}",
                        self.current()
                    ),
                );
                e.retry_after = Some(1);
                Err(e)
            }
        }
    }

    /// Subscribes to changes under `prefix`: after revision `since`, or (None) from
    /// the current state, which is then returned as a snapshot.
    pub async fn subscribe(
        &self,
        prefix: &str,
        since: Option<i64>,
    ) -> Result<Subscription, ApiError> {
        let target = match since {
            Some(rv) => rv,
            // "Now" is the store's revision: the snapshot must include every write
            // acknowledged before the watch started.
            None => self.store.revision().await?,
        };
        self.wait_for(target).await?;
        let st = self.state.lock().unwrap();
        match since {
            Some(rv) => {
                if rv < st.first {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        st.first
                    )));
                }
                let history = st
                    .ring
                    .iter()
                    .filter(|c| c.revision > rv && c.key.starts_with(prefix))
                    .cloned()
                    .collect();
                Ok(Subscription {
                    history,
                    snapshot: Vec::new(),
                    revision: st.revision,
                    live: st.tx.subscribe(),
                })
            }
            None => {
                let snapshot = prefixed(&st.objects, prefix)
                    .map(|(_, v)| v.clone())
                    .collect();
                Ok(Subscription {
                    history: Vec::new(),
                    snapshot,
                    revision: st.revision,
                    live: st.tx.subscribe(),
                })
            }
        }
    }

    /// The object at `key` as the hub last saw it.
    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.stored(key).map(|o| Arc::new(o.value()))
    }

    /// The object at `key` as the hub keeps it (its JSON and selectable fields),
    /// for a look at a field without decoding the object.
    pub fn stored(&self, key: &str) -> Option<Arc<Stored>> {
        self.state.lock().unwrap().objects.get(key).cloned()
    }

    /// Whether some object's ownerReferences name `uid`.
    pub fn has_dependents(&self, uid: &str) -> bool {
        self.state.lock().unwrap().dependents.contains_key(uid)
    }

    /// The objects under a key prefix, from the hub's current state.
    pub fn under(&self, prefix: &str) -> Vec<(String, Arc<Value>)> {
        let found: Vec<(String, Arc<Stored>)> = {
            let st = self.state.lock().unwrap();
            prefixed(&st.objects, prefix)
                .map(|(k, o)| (k.clone(), o.clone()))
                .collect()
        };
        // Decoded outside the hub's lock.
        found
            .into_iter()
            .map(|(k, o)| (k, Arc::new(o.value())))
            .collect()
    }

    /// How many watchers are subscribed.
    pub fn watchers(&self) -> usize {
        self.state.lock().unwrap().tx.receiver_count()
    }
}

/// Owner uid → keys of the objects whose ownerReferences name it.
type Dependents = HashMap<String, BTreeSet<String>>;

/// Every object in the store, with their dependents index and the revision read at.
async fn load(
    store: &Backend,
) -> Result<(BTreeMap<String, Arc<Stored>>, Dependents, i64), ApiError> {
    let mut objects = BTreeMap::new();
    let mut after: Option<String> = None;
    let mut rev = 0;
    loop {
        let page = store
            .list("/registry/", rev, 1000, after.as_deref())
            .await?;
        rev = page.revision;
        for kv in page.items {
            let value = decode(&kv.value, kv.mod_revision);
            objects.insert(kv.key, Arc::new(Stored::new(&value)));
        }
        match page.more_after {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    let dependents = index_dependents(&objects);
    Ok((objects, dependents, rev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owned(name: &str, owners: &[&str]) -> Value {
        let refs: Vec<Value> = owners
            .iter()
            .map(|u| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": u}))
            .collect();
        json!({"metadata": {"name": name, "ownerReferences": refs}})
    }

    #[test]
    fn the_dependents_index_follows_puts_owner_changes_and_deletes() {
        let mut st = State {
            objects: BTreeMap::new(),
            dependents: HashMap::new(),
            ring: VecDeque::new(),
            first: 0,
            revision: 0,
            tx: broadcast::channel(1).0,
            observers: Vec::new(),
        };
        let put = |st: &mut State, key: &str, o: Value| {
            let o = Arc::new(Stored::new(&o));
            let prev = st.objects.insert(key.into(), o.clone());
            st.reindex(key, prev.as_deref(), Some(&o));
        };
        let keys = |st: &State, uid: &str| -> Vec<String> {
            st.dependents
                .get(uid)
                .map(|k| k.iter().cloned().collect())
                .unwrap_or_default()
        };
        put(&mut st, "/a", owned("a", &["u1"]));
        put(&mut st, "/b", owned("b", &["u1", "u2"]));
        assert_eq!(keys(&st, "u1"), ["/a", "/b"]);
        assert_eq!(keys(&st, "u2"), ["/b"]);
        // An owner reference removed, another added.
        put(&mut st, "/b", owned("b", &["u3"]));
        assert_eq!(keys(&st, "u1"), ["/a"]);
        assert!(!st.dependents.contains_key("u2"));
        assert_eq!(keys(&st, "u3"), ["/b"]);
        // Deleted: no owner keeps an empty entry.
        let before = st.objects.remove("/a");
        st.reindex("/a", before.as_deref(), None);
        assert!(!st.dependents.contains_key("u1"));
        // A reload builds the same index from scratch.
        assert_eq!(index_dependents(&st.objects), st.dependents);
    }
}
