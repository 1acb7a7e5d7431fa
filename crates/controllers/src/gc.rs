//! The garbage collector, as kube-controller-manager's: every object of every kind
//! served (found by discovery) is watched for its metadata, and an object whose
//! owners are all gone — each owner reference's UID no longer in the cluster, as a
//! live read confirms — is deleted, its own dependents after it. The API server
//! cascades a deletion itself when it can (background propagation from the delete
//! request); this catches what that misses: an owner deleted just before a crash,
//! a dependent created with an owner that never existed or was already gone. It acts
//! only once every kind has been listed, so an owner not yet seen is never taken for
//! gone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, PartialObjectMeta, Preconditions, PropagationPolicy,
};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;

/// What the collector knows of one object.
#[derive(Clone, Debug)]
struct Object {
    resource: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
}

#[derive(Default)]
struct Graph {
    objects: HashMap<String, Object>,
    /// Owner UID → the UIDs of its dependents.
    dependents: HashMap<String, HashSet<String>>,
    /// Kinds whose first list is in.
    listed: HashSet<usize>,
}

impl Graph {
    fn set(&mut self, uid: String, o: Object) {
        self.remove(&uid);
        for r in &o.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.objects.insert(uid, o);
    }

    fn remove(&mut self, uid: &str) -> Option<Object> {
        let old = self.objects.remove(uid)?;
        for r in &old.owners {
            if let Some(d) = self.dependents.get_mut(&r.uid) {
                d.remove(uid);
                if d.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
        Some(old)
    }
}

struct Ctx {
    client: kube::Client,
    resources: Vec<(ApiResource, bool)>,
    graph: Mutex<Graph>,
    queue: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Ctx {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The served resource of an owner reference's apiVersion and kind.
    fn resource_of(&self, r: &OwnerReference) -> Option<usize> {
        self.resources
            .iter()
            .position(|(ar, _)| ar.api_version == r.api_version && ar.kind == r.kind)
    }

    fn api(&self, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let (ar, namespaced) = &self.resources[resource];
        match namespace.filter(|_| *namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }
}

/// Every served kind that can be listed, watched and deleted.
async fn discover(client: &kube::Client) -> Vec<(ApiResource, bool)> {
    loop {
        match Discovery::new(client.clone()).run().await {
            Ok(d) => {
                return d
                    .groups()
                    .flat_map(|g| g.recommended_resources())
                    .filter(|(_, caps)| {
                        [verbs::LIST, verbs::WATCH, verbs::DELETE]
                            .iter()
                            .all(|v| caps.supports_operation(v))
                    })
                    .map(|(ar, caps)| (ar, caps.scope == Scope::Namespaced))
                    .collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: discovery; trying again in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Runs the collector until the task is dropped.
pub async fn run(client: kube::Client) {
    let resources = discover(&client).await;
    let (queue, mut work) = tokio::sync::mpsc::unbounded_channel::<String>();
    let ctx = Arc::new(Ctx {
        client,
        resources,
        graph: Default::default(),
        queue,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..ctx.resources.len() {
        tasks.spawn(watch(ctx.clone(), i));
    }
    // One check per object at a time; a UID asked for again while queued is checked once.
    let pending: Arc<Mutex<HashSet<String>>> = Default::default();
    let checker = {
        let ctx = ctx.clone();
        async move {
            let mut running = tokio::task::JoinSet::new();
            while let Some(uid) = work.recv().await {
                if !pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(uid.clone())
                {
                    continue;
                }
                while running.len() >= 16 {
                    running.join_next().await;
                }
                let (ctx, pending) = (ctx.clone(), pending.clone());
                running.spawn(async move {
                    check(&ctx, &uid).await;
                    pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&uid);
                });
            }
        }
    };
    tasks.spawn(checker);
    while tasks.join_next().await.is_some() {}
}

/// Keeps the graph's objects of resource `i` from a metadata watch.
async fn watch(ctx: Arc<Ctx>, i: usize) {
    // Metadata only: the collector needs nothing else of an object.
    let api: Api<PartialObjectMeta<DynamicObject>> =
        Api::all_with(ctx.client.clone(), &ctx.resources[i].0);
    let mut seen: HashSet<String> = HashSet::new();
    let mut events = watcher(api, watcher::Config::default())
        .backoff(berth_watch::backoff())
        .boxed();
    while let Some(ev) = events.next().await {
        let object = |m: &kube::api::ObjectMeta| Object {
            resource: i,
            namespace: m.namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
            owners: m.owner_references.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
        };
        match ev {
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(o)) => {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                seen.insert(uid.clone());
                ctx.graph().set(uid, object(&o.metadata));
            }
            Ok(Event::InitDone) => {
                let (gone, all_listed, check): (Vec<String>, bool, Vec<String>) = {
                    let mut g = ctx.graph();
                    let gone: Vec<String> = g
                        .objects
                        .iter()
                        .filter(|(u, o)| o.resource == i && !seen.contains(*u))
                        .map(|(u, _)| u.clone())
                        .collect();
                    let first = g.listed.insert(i);
                    let all = g.listed.len() == ctx.resources.len();
                    // Every kind listed for the first time: look at every dependent.
                    let check = if first && all {
                        g.objects
                            .iter()
                            .filter(|(_, o)| !o.owners.is_empty())
                            .map(|(u, _)| u.clone())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (gone, all, check)
                };
                for u in &gone {
                    removed(&ctx, u);
                }
                if all_listed {
                    tracing::debug!(kind = %ctx.resources[i].0.kind, "garbage collector: listed");
                }
                for u in check {
                    let _ = ctx.queue.send(u);
                }
            }
            Ok(Event::Apply(o)) => {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                let has_owners = o
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|r| !r.is_empty());
                ctx.graph().set(uid.clone(), object(&o.metadata));
                if has_owners {
                    let _ = ctx.queue.send(uid);
                }
            }
            Ok(Event::Delete(o)) => {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                removed(&ctx, &uid);
            }
            Err(e) => {
                tracing::debug!(kind = %ctx.resources[i].0.kind, error = %e, "garbage collector: watching")
            }
        }
    }
}

/// An object gone: its dependents are looked at.
fn removed(ctx: &Ctx, uid: &str) {
    let dependents: Vec<String> = {
        let mut g = ctx.graph();
        g.remove(uid);
        g.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    };
    for d in dependents {
        let _ = ctx.queue.send(d);
    }
}

/// Whether the owner an owner reference names still exists (a live read, so that
/// a watch lagging behind never gets a dependent deleted).
async fn owner_exists(ctx: &Ctx, dependent: &Object, r: &OwnerReference) -> bool {
    if ctx.graph().objects.contains_key(&r.uid) {
        return true;
    }
    // A kind not served cannot be checked: left alone, as kube leaves it.
    let Some(i) = ctx.resource_of(r) else {
        return true;
    };
    match ctx
        .api(i, dependent.namespace.as_deref())
        .get_metadata_opt(&r.name)
        .await
    {
        Ok(Some(o)) => o.metadata.uid.as_deref() == Some(r.uid.as_str()),
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(owner = %r.name, error = %e, "garbage collector: reading an owner");
            true
        }
    }
}

/// Deletes the object if every one of its owners is gone.
async fn check(ctx: &Ctx, uid: &str) {
    let listed = {
        let g = ctx.graph();
        g.listed.len() == ctx.resources.len()
    };
    if !listed {
        return;
    }
    let Some(o) = ctx.graph().objects.get(uid).cloned() else {
        return;
    };
    if o.owners.is_empty() || o.deleting {
        return;
    }
    for r in &o.owners {
        if owner_exists(ctx, &o, r).await {
            return;
        }
    }
    let kind = ctx.resources[o.resource].0.kind.clone();
    tracing::info!(kind, name = %o.name, namespace = ?o.namespace, "garbage collector: deleting an object whose owners are gone");
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match ctx
        .api(o.resource, o.namespace.as_deref())
        .delete(&o.name, &dp)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => {
            tracing::warn!(kind, name = %o.name, error = %e, "garbage collector: deleting");
            // Tried again on the next change or relist.
        }
    }
}
