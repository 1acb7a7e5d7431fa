//! The namespace controller, as kube-controller-manager's: a namespace being deleted
//! (the API server only marks it Terminating) is emptied, kind by kind as discovery
//! finds them, then its `kubernetes` finalizer is removed through the `finalize`
//! subresource and it is deleted. Level-triggered: a namespace whose deletion a
//! crash interrupted is finished on the first list after the restart. Its progress
//! is written as the namespace conditions kube writes (NamespaceContentRemaining,
//! NamespaceFinalizersRemaining, ...), which `kubectl describe ns` shows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use crate::informer::itself;
use crate::{Error, Shared};

/// The finalizer the API server's namespaces carry until this controller is done.
const FINALIZER: &str = "kubernetes";

/// How soon a namespace with content left is looked at again: pods on nodes take
/// their grace period, objects with finalizers wait for their owners.
const RECHECK: Duration = Duration::from_secs(2);

/// How long one discovery of the served kinds is used for.
const DISCOVERY_TTL: Duration = Duration::from_secs(30);

struct Ctx {
    client: kube::Client,
    /// The namespaced kinds that can be listed and deleted, and when they were found.
    kinds: tokio::sync::Mutex<Option<(std::time::Instant, Vec<ApiResource>)>>,
}

impl Ctx {
    /// The namespaced kinds, from a discovery at most [`DISCOVERY_TTL`] old.
    async fn kinds(&self) -> Result<Vec<ApiResource>, kube::Error> {
        let mut cached = self.kinds.lock().await;
        if let Some((at, kinds)) = cached.as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(kinds.clone());
            }
        }
        let kinds: Vec<ApiResource> = Discovery::new(self.client.clone())
            .run()
            .await?
            .groups()
            .flat_map(|g| g.recommended_resources())
            .filter(|(_, caps)| {
                caps.scope == Scope::Namespaced
                    && [verbs::LIST, verbs::DELETE]
                        .iter()
                        .all(|v| caps.supports_operation(v))
            })
            .map(|(ar, _)| ar)
            .collect();
        *cached = Some((std::time::Instant::now(), kinds.clone()));
        Ok(kinds)
    }
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::NAMESPACE_CONTROLLER),
        kinds: Default::default(),
    });
    crate::drive(
        "namespace",
        shared.namespaces.store(),
        shared.namespaces.trigger(itself),
        reconcile,
        ctx,
    )
}

/// What one pass over a namespace's content found.
#[derive(Default)]
struct Content {
    /// Discovery failed for these groups.
    discovery_failed: Vec<String>,
    /// Deletions or lists that failed, as "resource: error".
    failed: Vec<String>,
    /// Objects left, per resource.
    remaining: BTreeMap<String, usize>,
    /// Finalizers holding objects, with how many objects each holds.
    finalizers: BTreeMap<String, usize>,
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let content = empty(&ctx, &name).await;
    set_conditions(&ctx.client, &ns, &content).await?;
    if !content.remaining.is_empty()
        || !content.failed.is_empty()
        || !content.discovery_failed.is_empty()
    {
        return Ok(Action::requeue(RECHECK));
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let spec_finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if spec_finalizers.iter().any(|f| f == FINALIZER) {
        let mut finalized = (*ns).clone();
        finalized.metadata.managed_fields = None;
        // Unpinned: the conditions just written moved the resourceVersion on.
        finalized.metadata.resource_version = None;
        finalized
            .spec
            .get_or_insert_with(Default::default)
            .finalizers = Some(
            spec_finalizers
                .into_iter()
                .filter(|f| f != FINALIZER)
                .collect(),
        );
        namespaces
            .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
            .await?;
    }
    // With every finalizer gone, this delete removes it (others' finalizers, in spec
    // or metadata, keep it Terminating until they are removed too).
    let dp = berth_watch::delete_exactly(ns.metadata.uid.clone(), None, true);
    match namespaces.delete(&name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(namespace = %name, "namespace controller: namespace emptied; finalized and deleted (any other finalizers keep it until they go)");
    Ok(Action::await_change())
}

/// Deletes what is in the namespace, every namespaced kind that can be listed and
/// deleted; returns what is left.
async fn empty(ctx: &Ctx, ns: &str) -> Content {
    let client = &ctx.client;
    let mut content = Content::default();
    let resources = match ctx.kinds().await {
        Ok(r) => r,
        Err(e) => {
            content.discovery_failed.push(e.to_string());
            return content;
        }
    };
    for ar in resources {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let list = match api.list_metadata(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) => {
                content.failed.push(format!("{}: {e}", ar.plural));
                continue;
            }
        };
        if list.items.is_empty() {
            continue;
        }
        content.remaining.insert(qualified(&ar), list.items.len());
        for item in &list.items {
            for f in item.metadata.finalizers.iter().flatten() {
                *content.finalizers.entry(f.clone()).or_default() += 1;
            }
            if item.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = item.metadata.name.clone().unwrap_or_default();
            // Pods get their grace period: the node stops them (or, for a node that
            // is gone, the pod garbage collector removes them).
            let dp = berth_watch::delete_exactly(item.metadata.uid.clone(), None, true);
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => content
                    .failed
                    .push(format!("{} \"{name}\": {e}", ar.plural)),
            }
        }
    }
    content
}

/// A resource as kube's namespace conditions name it: `plural` for the core group,
/// `plural.group` for others.
fn qualified(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

/// Writes the deletion conditions kube's namespace controller writes, when they
/// changed.
async fn set_conditions(
    client: &kube::Client,
    ns: &Namespace,
    content: &Content,
) -> Result<(), Error> {
    let cond = |ty: &str, bad: bool, reason: &str, message: String| NamespaceCondition {
        type_: ty.into(),
        status: if bad { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
    };
    let wanted = vec![
        if content.discovery_failed.is_empty() {
            cond(
                "NamespaceDeletionDiscoveryFailure",
                false,
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            )
        } else {
            cond(
                "NamespaceDeletionDiscoveryFailure",
                true,
                "DiscoveryFailed",
                format!("Discovery failed: {}", content.discovery_failed.join(", ")),
            )
        },
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        if content.failed.is_empty() {
            cond(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            cond(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    content.failed.len(),
                    content.failed.join(", ")
                ),
            )
        },
        if content.remaining.is_empty() {
            cond(
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            let each: Vec<String> = content
                .remaining
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            cond(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", each.join(", ")),
            )
        },
        if content.finalizers.is_empty() {
            cond(
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            let each: Vec<String> = content
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            cond(
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    each.join(", ")
                ),
            )
        },
    ];
    let current = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let mut changed = false;
    let conditions: Vec<NamespaceCondition> = wanted
        .into_iter()
        .map(|mut c| {
            match current.iter().find(|o| o.type_ == c.type_) {
                Some(o)
                    if o.status == c.status && o.reason == c.reason && o.message == c.message =>
                {
                    c.last_transition_time = o.last_transition_time.clone();
                }
                Some(o) if o.status == c.status => {
                    changed = true;
                    c.last_transition_time = o.last_transition_time.clone();
                }
                _ => {
                    changed = true;
                    c.last_transition_time = Some(now.clone());
                }
            }
            c
        })
        .collect();
    if !changed {
        return Ok(());
    }
    let patch = serde_json::json!({"status": {"conditions": conditions}});
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces
        .patch_status(
            &ns.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone meanwhile: nothing to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
