//! Which objects each owner controls, kept from an informer's changes, so a
//! ReplicaSet finds its pods without scanning every pod in the cluster.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;

use crate::informer::{Change, Informer};
use crate::owner::controller_ref;

/// Owner UID → the keys of the objects it controls.
pub struct OwnerIndex<K: Resource<DynamicType = ()> + 'static> {
    by_owner: Mutex<HashMap<String, HashSet<ObjectRef<K>>>>,
    store: Store<K>,
}

impl<K: crate::informer::Object> OwnerIndex<K> {
    /// An index kept from `informer`'s changes.
    pub fn of(informer: &Informer<K>) -> Arc<Self> {
        let idx = Arc::new(OwnerIndex {
            by_owner: Mutex::new(HashMap::new()),
            store: informer.store(),
        });
        let i = idx.clone();
        informer.on(move |c| i.apply(c));
        idx
    }

    fn apply(&self, c: &Change<'_, K>) {
        let uid = |o: &K| controller_ref(o.meta()).map(|r| r.uid.clone());
        let mut m = self.by_owner.lock().unwrap_or_else(|e| e.into_inner());
        let mut remove = |owner: String, key: &ObjectRef<K>| {
            if let Some(set) = m.get_mut(&owner) {
                set.remove(key);
                if set.is_empty() {
                    m.remove(&owner);
                }
            }
        };
        match c {
            Change::Applied { old, new } => {
                let key = ObjectRef::from_obj(*new);
                let (before, after) = (old.as_deref().and_then(uid), uid(new));
                if before != after {
                    if let Some(b) = before {
                        remove(b, &key);
                    }
                }
                if let Some(a) = after {
                    m.entry(a).or_default().insert(key);
                }
            }
            Change::Deleted(o) => {
                if let Some(b) = uid(o) {
                    remove(b, &ObjectRef::from_obj(*o));
                }
            }
        }
    }

    /// The objects `owner_uid` controls, as the store holds them now.
    pub fn owned(&self, owner_uid: &str) -> Vec<Arc<K>> {
        let keys: Vec<ObjectRef<K>> = self
            .by_owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        keys.iter()
            .filter_map(|k| self.store.get(k))
            .filter(|o| controller_ref(o.meta()).is_some_and(|r| r.uid == owner_uid))
            .collect()
    }
}
