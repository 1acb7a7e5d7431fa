//! ControllerRevisions: the template history of DaemonSets and StatefulSets (what
//! `kubectl rollout history` lists and `kubectl rollout undo` applies back). Each
//! revision holds a patch that puts its template back, is named after its owner and
//! the template's hash, and is numbered; a template that comes back (a rollback) takes
//! the next number again rather than a new revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::deployment::util::template_hash;
use crate::Error;

/// The label on pods (and revisions) naming the revision they come from.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The revision data for a template: a patch that restores it whole.
pub fn data(template: &PodTemplateSpec) -> serde_json::Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), "replace".into());
    }
    serde_json::json!({"spec": {"template": t}})
}

/// The template a revision restores, if its data holds one.
pub fn template_of(cr: &ControllerRevision) -> Option<serde_json::Value> {
    let mut t = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    Some(t)
}

/// The current revision of an owner: found among `existing` by its data (renumbered
/// to come last if it is not), or made. Returns it and the hash naming it.
pub async fn current(
    client: &kube::Client,
    owner: OwnerReference,
    namespace: &str,
    template: &PodTemplateSpec,
    labels: BTreeMap<String, String>,
    collision_count: Option<i32>,
    existing: &[Arc<ControllerRevision>],
) -> Result<ControllerRevision, Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    let want = data(template);
    let max = existing.iter().map(|r| r.revision).max().unwrap_or(0);
    let same = |r: &ControllerRevision| {
        r.data
            .as_ref()
            .is_some_and(|d| templates_equal(&d.0, &want))
    };
    if let Some(found) = existing
        .iter()
        .filter(|r| same(r))
        .max_by_key(|r| r.revision)
    {
        if found.revision == max {
            return Ok((**found).clone());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": found.metadata.resource_version},
            "revision": max + 1,
        });
        let name = found.metadata.name.clone().unwrap_or_default();
        return Ok(api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?);
    }
    let hash = template_hash(template, collision_count);
    let name = format!("{}-{hash}", owner.name);
    let mut labels = labels;
    labels.insert(HASH_LABEL.into(), hash);
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(RawExtension(want)),
        revision: max + 1,
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(made) => Ok(made),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get(&name).await?),
        Err(e) => Err(e.into()),
    }
}

/// Whether two revision data hold the same template (Go's zero values aside).
fn templates_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let t = |v: &serde_json::Value| -> Option<PodTemplateSpec> {
        let mut t = v.pointer("/spec/template")?.clone();
        t.as_object_mut()?.remove("$patch");
        serde_json::from_value(t).ok()
    };
    match (t(a), t(b)) {
        (Some(x), Some(y)) => crate::deployment::util::equal_ignoring_hash(&x, &y),
        _ => false,
    }
}

/// Deletes the oldest revisions beyond `limit`, sparing `current` and those whose
/// hash a live pod still carries.
pub async fn trim(
    client: &kube::Client,
    existing: &[Arc<ControllerRevision>],
    current: &str,
    in_use: &std::collections::HashSet<String>,
    limit: i32,
) -> Result<(), Error> {
    let mut old: Vec<&Arc<ControllerRevision>> = existing
        .iter()
        .filter(|r| r.metadata.name.as_deref() != Some(current))
        .filter(|r| {
            let h = r.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL));
            !h.is_some_and(|h| in_use.contains(h))
                && !in_use.contains(r.metadata.name.as_deref().unwrap_or(""))
        })
        .collect();
    let extra = old.len().saturating_sub(limit.max(0) as usize);
    old.sort_by_key(|r| r.revision);
    for r in old.into_iter().take(extra) {
        let ns = r.metadata.namespace.as_deref().unwrap_or("default");
        let dp = berth_watch::delete_exactly(r.metadata.uid.clone(), None, false);
        match Api::<ControllerRevision>::namespaced(client.clone(), ns)
            .delete(r.metadata.name.as_deref().unwrap_or_default(), &dp)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
