//! One watch per kind, shared by every controller that reads the kind (as client-go's
//! shared informers are): a kube reflector store the controllers read, and handlers
//! called on each change, which turn it into the keys of the objects to reconcile.
//!
//! Written over kube's watcher and reflector store rather than with kube's shared
//! streams, because those do not pass deletions on, and a ReplicaSet must hear that
//! its pod went.

use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;

/// What an informer watches: a typed Kubernetes object.
pub trait Object:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Object for K where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// What happened to one object.
pub enum Change<'a, K> {
    /// Added (`old` is None) or modified.
    Applied { old: Option<Arc<K>>, new: &'a K },
    /// Deleted (or found gone by a relist).
    Deleted(&'a K),
}

/// A boxed task (an informer's run, or its first list awaited).
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

type Handler<K> = Box<dyn Fn(&Change<'_, K>) + Send + Sync>;

/// A change to hand to the handlers once the store has it.
enum Owned<K> {
    Applied(Option<Arc<K>>, K),
    Deleted(K),
}

/// A watched kind: its store and the handlers its changes go to.
pub struct Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    api: Api<K>,
    config: watcher::Config,
    store: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
    handlers: Mutex<Vec<Handler<K>>>,
}

impl<K: Object> Informer<K> {
    /// An informer of `api`'s objects; nothing is watched until [`Informer::run`].
    pub fn new(api: Api<K>, config: watcher::Config) -> Arc<Self> {
        let (store, writer) = reflector::store();
        Arc::new(Informer {
            api,
            config,
            store,
            writer: Mutex::new(Some(writer)),
            handlers: Mutex::new(Vec::new()),
        })
    }

    /// The objects as last seen.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Calls `f` on every change from now on (after the store has it).
    pub fn on(&self, f: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        self.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
    }

    /// A stream of the keys `map` finds for each change (the object itself, its
    /// owner, every DaemonSet for a node...), for a controller's queue.
    pub fn trigger<O>(
        &self,
        map: impl Fn(&Change<'_, K>) -> Vec<ObjectRef<O>> + Send + Sync + 'static,
    ) -> impl Stream<Item = ObjectRef<O>> + Send + 'static
    where
        O: Resource<DynamicType = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.on(move |c| {
            for r in map(c) {
                let _ = tx.send(r);
            }
        });
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
    }

    /// The informer's run (watching until dropped) and a future done once its first
    /// list is in the store.
    pub fn parts(self: Arc<Self>) -> (Task, Task) {
        let store = self.store.clone();
        let ready = async move {
            let _ = store.wait_until_ready().await;
        };
        (Box::pin(self.run()), Box::pin(ready))
    }

    /// Watches until dropped. Called once.
    pub async fn run(self: Arc<Self>) {
        let Some(mut writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        // No controller reads managedFields, and their decoded trees are most of a
        // small object's memory: every object the store keeps is without them (an
        // update without them keeps the server's, as with kube-apiserver).
        let mut events = watcher(self.api.clone(), self.config.clone())
            .modify(|o| o.meta_mut().managed_fields = None)
            .backoff(berth_watch::backoff())
            .boxed();
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::debug!(error = %e, kind = %K::kind(&()), "watch failed; watching again");
                    continue;
                }
            };
            let mut changes: Vec<Owned<K>> = Vec::new();
            match &ev {
                Event::Apply(o) => {
                    let old = self.store.get(&ObjectRef::from_obj(o));
                    changes.push(Owned::Applied(old, o.clone()));
                }
                Event::Delete(o) => changes.push(Owned::Deleted(o.clone())),
                Event::InitDone => {
                    // The list just done replaces the store: what it lacks was
                    // deleted while the watch was away.
                    let before = self.store.state();
                    writer.apply_watcher_event(&ev);
                    for o in &before {
                        if self.store.get(&ObjectRef::from_obj(o.as_ref())).is_none() {
                            changes.push(Owned::Deleted(o.as_ref().clone()));
                        }
                    }
                    let before: std::collections::HashMap<ObjectRef<K>, Arc<K>> = before
                        .into_iter()
                        .map(|b| (ObjectRef::from_obj(b.as_ref()), b))
                        .collect();
                    for o in self.store.state() {
                        let old = before.get(&ObjectRef::from_obj(o.as_ref())).cloned();
                        // Unchanged across the relist: nothing to tell.
                        if old.as_ref().is_some_and(|b| {
                            b.meta().resource_version.is_some()
                                && b.meta().resource_version == o.meta().resource_version
                        }) {
                            continue;
                        }
                        changes.push(Owned::Applied(old, o.as_ref().clone()));
                    }
                }
                Event::Init | Event::InitApply(_) => {}
            }
            if !matches!(ev, Event::InitDone) {
                writer.apply_watcher_event(&ev);
            }
            let handlers = self.handlers.lock().unwrap_or_else(|e| e.into_inner());
            for c in &changes {
                let change = match c {
                    Owned::Applied(old, new) => Change::Applied {
                        old: old.clone(),
                        new,
                    },
                    Owned::Deleted(o) => Change::Deleted(o),
                };
                for h in handlers.iter() {
                    h(&change);
                }
            }
        }
    }
}

/// The object's own key, for a controller of the kind itself.
pub fn itself<K: Resource<DynamicType = ()>>(c: &Change<'_, K>) -> Vec<ObjectRef<K>> {
    match c {
        Change::Applied { new, .. } => vec![ObjectRef::from_obj(*new)],
        Change::Deleted(o) => vec![ObjectRef::from_obj(*o)],
    }
}

/// The keys of the object's controlling owner of kind `O`, before and after the
/// change (an adopted or released object wakes both).
pub fn controller_owner<K, O>(c: &Change<'_, K>) -> Vec<ObjectRef<O>>
where
    K: Resource<DynamicType = ()>,
    O: Resource<DynamicType = ()>,
{
    let of = |o: &K| -> Option<ObjectRef<O>> {
        let r = crate::owner::controller_ref(o.meta())?;
        (r.kind == O::kind(&()) && r.api_version == O::api_version(&()))
            .then(|| ObjectRef::new(&r.name).within(o.meta().namespace.as_deref().unwrap_or("")))
    };
    let mut out = Vec::new();
    match c {
        Change::Applied { old, new } => {
            out.extend(of(new));
            if let Some(o) = old.as_deref().and_then(of) {
                if !out.contains(&o) {
                    out.push(o);
                }
            }
        }
        Change::Deleted(o) => out.extend(of(o)),
    }
    out
}
