//! The garbage collector, as kube-controller-manager's: every object of every kind
//! served (found by discovery) is watched for its metadata, and an object whose
//! owners are all gone — each owner reference's UID no longer in the cluster, as a
//! live read confirms — is deleted, its own dependents after it. That is all of
//! background propagation: the API server only deletes the owner. Orphan and
//! foreground propagation arrive as the owner's `orphan` and `foregroundDeletion`
//! finalizers: the collector frees the dependents (removes their references to the
//! owner) or deletes them and waits until they are gone, then removes the finalizer.
//! Being level-triggered, it also finishes what a crash interrupted: an owner
//! deleted just before it, a dependent created with an owner that never existed or
//! was already gone, a propagation half done. It acts only once every kind has been
//! listed, so an owner not yet seen is never taken for gone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
    PropagationPolicy,
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
    finalizers: Vec<String>,
}

/// The finalizer of orphan propagation.
const ORPHAN: &str = "orphan";
/// The finalizer of foreground propagation.
const FOREGROUND: &str = "foregroundDeletion";

impl Object {
    /// The propagation this object's deletion waits on the collector for.
    fn propagation(&self) -> Option<&'static str> {
        if !self.deleting {
            return None;
        }
        [ORPHAN, FOREGROUND]
            .into_iter()
            .find(|f| self.finalizers.iter().any(|x| x == f))
    }
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
    /// Records an object; returns what it replaced.
    fn set(&mut self, uid: String, o: Object) -> Option<Object> {
        let old = self.remove(&uid);
        for r in &o.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.objects.insert(uid, o);
        old
    }

    /// Of these owner UIDs, those whose deletion waits for the collector.
    fn propagating<'a>(&self, owners: impl Iterator<Item = &'a OwnerReference>) -> Vec<String> {
        owners
            .filter(|r| {
                self.objects
                    .get(&r.uid)
                    .is_some_and(|o| o.propagation().is_some())
            })
            .map(|r| r.uid.clone())
            .collect()
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
    /// The kinds watched, by index (append-only: an index names one kind for good).
    resources: std::sync::RwLock<Vec<(ApiResource, bool)>>,
    /// Kinds no longer served (their custom resource definition deleted): not
    /// watched, not waited for, not listed for dependents.
    gone: std::sync::RwLock<HashSet<usize>>,
    graph: Mutex<Graph>,
    queue: tokio::sync::mpsc::UnboundedSender<String>,
}

/// How soon a propagation not yet finished is looked at again (dependents being
/// deleted take their grace period; a write may have met a conflict).
const RECHECK: Duration = Duration::from_secs(2);

impl Ctx {
    /// Looks at `uid` again after `after`.
    fn later(&self, uid: &str, after: Duration) {
        let (queue, uid) = (self.queue.clone(), uid.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = queue.send(uid);
        });
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kinds(&self) -> std::sync::RwLockReadGuard<'_, Vec<(ApiResource, bool)>> {
        self.resources.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Resource `i` and whether it is namespaced.
    fn resource(&self, i: usize) -> (ApiResource, bool) {
        self.kinds()[i].clone()
    }

    /// How many kinds are watched.
    fn count(&self) -> usize {
        self.kinds().len()
    }

    fn is_gone(&self, i: usize) -> bool {
        self.gone
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&i)
    }

    /// Whether every kind still served has had its first list.
    fn all_listed(&self, g: &Graph) -> bool {
        (0..self.count()).all(|i| g.listed.contains(&i) || self.is_gone(i))
    }

    /// The served resource of an owner reference's group and kind (any version: an
    /// owner named at another version than the preferred one is the same object).
    fn resource_of(&self, r: &OwnerReference) -> Option<usize> {
        let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.kinds()
            .iter()
            .enumerate()
            .position(|(i, (ar, _))| ar.group == group && ar.kind == r.kind && !self.is_gone(i))
    }

    fn api(&self, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let (ar, namespaced) = self.resource(resource);
        match namespace.filter(|_| namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Takes in the kinds served now: those not watched yet (custom resources
    /// defined since, or defined again) are returned to be watched; those no longer
    /// served are marked gone and returned to stop watching.
    fn update_kinds(&self, found: Vec<(ApiResource, bool)>) -> (Vec<usize>, Vec<usize>) {
        let mut kinds = self.resources.write().unwrap_or_else(|e| e.into_inner());
        let mut gone = self.gone.write().unwrap_or_else(|e| e.into_inner());
        let same = |a: &ApiResource, b: &ApiResource| {
            a.group == b.group && a.version == b.version && a.plural == b.plural
        };
        let mut start = Vec::new();
        for k in &found {
            match kinds.iter().position(|(ar, _)| same(ar, &k.0)) {
                Some(i) => {
                    if gone.remove(&i) {
                        start.push(i);
                    }
                }
                None => {
                    kinds.push(k.clone());
                    start.push(kinds.len() - 1);
                }
            }
        }
        let mut stop = Vec::new();
        for (i, (ar, _)) in kinds.iter().enumerate() {
            if !found.iter().any(|(f, _)| same(f, ar)) && gone.insert(i) {
                stop.push(i);
            }
        }
        (start, stop)
    }
}

/// How often the served kinds are discovered again (as kube's collector resyncs its
/// monitors): custom resources defined since are watched from then on.
const REDISCOVER: Duration = Duration::from_secs(30);

/// Kinds the collector does not watch, as kube-controller-manager's by default (its
/// GCIgnoredResources): Events, in both groups that serve them — (group, plural,
/// kind). They are the cluster's most written objects and rarely own anything;
/// watching them cost every write of one a decode, twice. An object an Event owns
/// is still judged by a live read of its owner.
const IGNORED: [(&str, &str, &str); 2] = [
    ("", "events", "Event"),
    ("events.k8s.io", "events", "Event"),
];

/// The resource to read an owner of an ignored kind through (both Event groups
/// serve the same objects: the core one).
fn ignored_owner(r: &OwnerReference) -> Option<ApiResource> {
    let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    IGNORED
        .iter()
        .any(|(g, _, k)| *g == group && *k == r.kind)
        .then(|| ApiResource::erase::<k8s_openapi::api::core::v1::Event>(&()))
}

/// Every served kind that can be listed, watched and deleted, once.
async fn discover_once(client: &kube::Client) -> Result<Vec<(ApiResource, bool)>, kube::Error> {
    let d = Discovery::new(client.clone()).run().await?;
    Ok(d.groups()
        .flat_map(|g| g.recommended_resources())
        .filter(|(ar, _)| {
            !IGNORED
                .iter()
                .any(|(g, plural, _)| ar.group == *g && ar.plural == *plural)
        })
        .filter(|(_, caps)| {
            [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v))
        })
        .map(|(ar, caps)| (ar, caps.scope == Scope::Namespaced))
        .collect())
}

/// Every served kind that can be listed, watched and deleted.
async fn discover(client: &kube::Client) -> Vec<(ApiResource, bool)> {
    loop {
        match discover_once(client).await {
            Ok(found) => return found,
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
        resources: std::sync::RwLock::new(resources),
        gone: Default::default(),
        graph: Default::default(),
        queue,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut watches = HashMap::new();
    for i in 0..ctx.count() {
        watches.insert(i, tasks.spawn(watch(ctx.clone(), i)));
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
    let mut rediscover = tokio::time::interval(REDISCOVER);
    rediscover.tick().await;
    loop {
        tokio::select! {
            done = tasks.join_next() => if done.is_none() { return },
            _ = rediscover.tick() => {
                if let Ok(found) = discover_once(&ctx.client).await {
                    let (start, stop) = ctx.update_kinds(found);
                    for i in stop {
                        tracing::debug!(kind = %ctx.resource(i).0.kind, "garbage collector: a kind no longer served");
                        if let Some(w) = watches.remove(&i) {
                            w.abort();
                        }
                        ctx.graph().listed.remove(&i);
                    }
                    for i in start {
                        tracing::debug!(kind = %ctx.resource(i).0.kind, "garbage collector: watching a new kind");
                        watches.insert(i, tasks.spawn(watch(ctx.clone(), i)));
                    }
                }
            }
        }
    }
}

/// Keeps the graph's objects of resource `i` from a metadata watch.
async fn watch(ctx: Arc<Ctx>, i: usize) {
    // Metadata only: the collector needs nothing else of an object.
    let api: Api<PartialObjectMeta<DynamicObject>> =
        Api::all_with(ctx.client.clone(), &ctx.resource(i).0);
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
            finalizers: m.finalizers.clone().unwrap_or_default(),
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
                    let all = ctx.all_listed(&g);
                    // Every kind listed for the first time: look at every dependent
                    // and every propagation.
                    let check = if first && all {
                        g.objects
                            .iter()
                            .filter(|(_, o)| !o.owners.is_empty() || o.propagation().is_some())
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
                    tracing::debug!(kind = %ctx.resource(i).0.kind, "garbage collector: listed");
                }
                for u in check {
                    let _ = ctx.queue.send(u);
                }
            }
            Ok(Event::Apply(o)) => {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                let new = object(&o.metadata);
                let look = !new.owners.is_empty() || new.propagation().is_some();
                // Owners waiting on their dependents hear of each change to one.
                let owners = {
                    let mut g = ctx.graph();
                    let old = g.set(uid.clone(), new.clone());
                    g.propagating(
                        new.owners
                            .iter()
                            .chain(old.iter().flat_map(|o| o.owners.iter())),
                    )
                };
                if look {
                    let _ = ctx.queue.send(uid);
                }
                for u in owners {
                    let _ = ctx.queue.send(u);
                }
            }
            Ok(Event::Delete(o)) => {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                removed(&ctx, &uid);
            }
            Err(e) => {
                tracing::debug!(kind = %ctx.resource(i).0.kind, error = %e, "garbage collector: watching")
            }
        }
    }
}

/// An object gone: its dependents are looked at, and its owners if they wait on it.
fn removed(ctx: &Ctx, uid: &str) {
    let look: Vec<String> = {
        let mut g = ctx.graph();
        let old = g.remove(uid);
        let owners = g.propagating(old.iter().flat_map(|o| o.owners.iter()));
        g.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .cloned()
            .chain(owners)
            .collect()
    };
    for d in look {
        let _ = ctx.queue.send(d);
    }
}

/// Whether the owner an owner reference names still exists (a live read, so that
/// a watch lagging behind never gets a dependent deleted).
async fn owner_exists(ctx: &Ctx, dependent: &Object, r: &OwnerReference) -> bool {
    if ctx.graph().objects.contains_key(&r.uid) {
        return true;
    }
    let api = match (ctx.resource_of(r), ignored_owner(r)) {
        (Some(i), _) => ctx.api(i, dependent.namespace.as_deref()),
        // Events are namespaced: only a namespaced dependent can name one.
        (None, Some(ar)) => match dependent.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
            None => return true,
        },
        // A kind not served cannot be checked: left alone, as kube leaves it.
        (None, None) => return true,
    };
    match api.get_metadata_opt(&r.name).await {
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
        ctx.all_listed(&g)
    };
    if !listed {
        return;
    }
    let Some(o) = ctx.graph().objects.get(uid).cloned() else {
        return;
    };
    if let Some(finalizer) = o.propagation() {
        propagate(ctx, uid, &o, finalizer).await;
        return;
    }
    if o.owners.is_empty() || o.deleting {
        return;
    }
    for r in &o.owners {
        if owner_exists(ctx, &o, r).await {
            return;
        }
    }
    let kind = ctx.resource(o.resource).0.kind;
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

/// Carries out an orphan or foreground deletion of `owner`: frees or deletes its
/// dependents, and once none is left to wait for, removes the finalizer (which lets
/// the API server remove the owner).
async fn propagate(ctx: &Ctx, uid: &str, owner: &Object, finalizer: &'static str) {
    let dependents: Vec<(String, Object)> = {
        let g = ctx.graph();
        g.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|d| *d != uid)
            .filter_map(|d| g.objects.get(d).map(|o| (d.clone(), o.clone())))
            .collect()
    };
    let mut waiting = 0;
    for (duid, d) in &dependents {
        let result = if finalizer == ORPHAN || has_other_live_owner(ctx, d, uid) {
            waiting += 1;
            free(ctx, d, uid).await
        } else {
            // As kube: only a reference with blockOwnerDeletion holds the owner, and a
            // dependent that itself waits on this owner (a cycle) does not.
            let cycle =
                d.propagation() == Some(FOREGROUND) && owner.owners.iter().any(|r| r.uid == *duid);
            if blocks(d, uid) && !cycle {
                waiting += 1;
            }
            if d.deleting {
                Ok(())
            } else {
                delete_dependent(ctx, duid, d).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(name = %d.name, error = %e, "garbage collector: propagating the deletion of {}", owner.name);
        }
    }
    if waiting > 0 {
        // Each dependent's change brings the owner back; this catches a write that
        // failed and dependents that take their grace period.
        ctx.later(uid, RECHECK);
        return;
    }
    // The graph's watches may lag behind the API server, which saw dependents when it
    // recorded the finalizer: a live look decides.
    match live_dependents(ctx, owner, uid, finalizer == FOREGROUND).await {
        Ok(0) => {}
        Ok(_) => {
            ctx.later(uid, RECHECK);
            return;
        }
        Err(e) => {
            tracing::warn!(name = %owner.name, error = %e, "garbage collector: listing dependents");
            ctx.later(uid, RECHECK);
            return;
        }
    }
    if let Err(e) = remove_finalizer(ctx, owner, uid, finalizer).await {
        tracing::warn!(name = %owner.name, error = %e, "garbage collector: removing {finalizer}");
        ctx.later(uid, RECHECK);
    }
}

/// Whether dependent `d`'s reference to `uid` blocks the owner's foreground deletion.
fn blocks(d: &Object, uid: &str) -> bool {
    d.owners
        .iter()
        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
}

/// How many objects the API server holds that still reference owner `uid` (with
/// blockOwnerDeletion, when `blocking_only`), by a metadata list of every kind where
/// they can be: the owner's namespace, or everywhere for a cluster-scoped owner.
async fn live_dependents(
    ctx: &Ctx,
    owner: &Object,
    uid: &str,
    blocking_only: bool,
) -> Result<usize, kube::Error> {
    let mut n = 0;
    let kinds = ctx.kinds().clone();
    for (i, (_, namespaced)) in kinds.iter().enumerate() {
        if (owner.namespace.is_some() && !namespaced) || ctx.is_gone(i) {
            continue;
        }
        let list = match ctx
            .api(i, owner.namespace.as_deref())
            .list_metadata(&Default::default())
            .await
        {
            Ok(l) => l,
            // Its definition deleted since the last discovery: none of it is left.
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e),
        };
        n += list
            .items
            .iter()
            .filter(|o| o.metadata.uid.as_deref() != Some(uid))
            .filter(|o| {
                o.metadata.owner_references.iter().flatten().any(|r| {
                    r.uid == uid && (!blocking_only || r.block_owner_deletion == Some(true))
                })
            })
            .count();
    }
    Ok(n)
}

/// Whether a dependent has an owner other than `uid` that holds it: one that exists
/// and is not being deleted in the foreground (such a dependent is freed of this
/// owner rather than deleted).
fn has_other_live_owner(ctx: &Ctx, d: &Object, uid: &str) -> bool {
    let g = ctx.graph();
    d.owners.iter().filter(|r| r.uid != uid).any(|r| {
        g.objects
            .get(&r.uid)
            .is_some_and(|o| o.propagation() != Some(FOREGROUND))
    })
}

/// Removes the reference to owner `uid` from a dependent (a merge patch pinned to
/// the resourceVersion read, so a concurrent write is never lost).
async fn free(ctx: &Ctx, d: &Object, uid: &str) -> Result<(), kube::Error> {
    let api = ctx.api(d.resource, d.namespace.as_deref());
    let Some(cur) = api.get_metadata_opt(&d.name).await? else {
        return Ok(());
    };
    let refs = cur.metadata.owner_references.unwrap_or_default();
    if !refs.iter().any(|r| r.uid == uid) {
        return Ok(());
    }
    let keep: Vec<OwnerReference> = refs.into_iter().filter(|r| r.uid != uid).collect();
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": cur.metadata.resource_version,
        "ownerReferences": if keep.is_empty() { serde_json::Value::Null } else { serde_json::json!(keep) },
    }});
    api.patch(&d.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Deletes a dependent of an owner deleted in the foreground, in the foreground too
/// (so the chain below it is waited for as well).
async fn delete_dependent(ctx: &Ctx, uid: &str, d: &Object) -> Result<(), kube::Error> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match ctx
        .api(d.resource, d.namespace.as_deref())
        .delete(&d.name, &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes `finalizer` from the owner (pinned to the resourceVersion read).
async fn remove_finalizer(
    ctx: &Ctx,
    owner: &Object,
    uid: &str,
    finalizer: &str,
) -> Result<(), kube::Error> {
    let api = ctx.api(owner.resource, owner.namespace.as_deref());
    let Some(cur) = api.get_metadata_opt(&owner.name).await? else {
        return Ok(());
    };
    if cur.metadata.uid.as_deref() != Some(uid) {
        return Ok(());
    }
    let finalizers: Vec<String> = cur.metadata.finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let keep: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": cur.metadata.resource_version,
        "finalizers": keep,
    }});
    match api
        .patch(&owner.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
