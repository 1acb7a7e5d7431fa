//! Objects grouped by a key kept from an informer's changes: the pods (or
//! ReplicaSets, Jobs...) each owner controls, the pods on each node — so a controller
//! finds its objects without scanning every object in the cluster.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;

use crate::informer::{Change, Informer, Object};
use crate::owner::controller_ref;

/// Key → the keys of the objects that have it.
pub struct Index<K: Resource<DynamicType = ()> + 'static> {
    groups: Mutex<HashMap<String, HashSet<ObjectRef<K>>>>,
    store: Store<K>,
    key: fn(&K) -> Option<String>,
}

/// Objects by the UID of their controlling owner.
pub type OwnerIndex<K> = Index<K>;

fn controller_uid<K: Resource>(o: &K) -> Option<String> {
    controller_ref(o.meta()).map(|r| r.uid.clone())
}

impl<K: Object> Index<K> {
    /// An index by controlling owner, kept from `informer`'s changes.
    pub fn of(informer: &Informer<K>) -> Arc<Self> {
        Index::by(informer, controller_uid::<K>)
    }

    /// An index by `key`, kept from `informer`'s changes.
    pub fn by(informer: &Informer<K>, key: fn(&K) -> Option<String>) -> Arc<Self> {
        let idx = Arc::new(Index {
            groups: Mutex::new(HashMap::new()),
            store: informer.store(),
            key,
        });
        let i = idx.clone();
        informer.on(move |c| i.apply(c));
        idx
    }

    fn apply(&self, c: &Change<'_, K>) {
        let key = self.key;
        let mut m = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let mut remove = |group: String, obj: &ObjectRef<K>| {
            if let Some(set) = m.get_mut(&group) {
                set.remove(obj);
                if set.is_empty() {
                    m.remove(&group);
                }
            }
        };
        match c {
            Change::Applied { old, new } => {
                let obj = ObjectRef::from_obj(*new);
                let (before, after) = (old.as_deref().and_then(key), key(new));
                if before != after {
                    if let Some(b) = before {
                        remove(b, &obj);
                    }
                }
                if let Some(a) = after {
                    m.entry(a).or_default().insert(obj);
                }
            }
            Change::Deleted(o) => {
                if let Some(b) = key(o) {
                    remove(b, &ObjectRef::from_obj(*o));
                }
            }
        }
    }

    /// The objects with key `k`, as the store holds them now.
    pub fn get(&self, k: &str) -> Vec<Arc<K>> {
        let refs: Vec<ObjectRef<K>> = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(k)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let key = self.key;
        refs.iter()
            .filter_map(|r| self.store.get(r))
            .filter(|o| key(o).as_deref() == Some(k))
            .collect()
    }

    /// The keys that have objects now.
    pub fn keys(&self) -> Vec<String> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The objects `owner_uid` controls (for an index by owner).
    pub fn owned(&self, owner_uid: &str) -> Vec<Arc<K>> {
        self.get(owner_uid)
    }
}
