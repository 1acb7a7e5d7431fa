//! Writes the default roles and bindings of [`super::policy`] at start, and puts back
//! what a default lost since (a rule or a subject), unless its owner annotated it
//! `rbac.authorization.kubernetes.io/autoupdate: "false"` — kube-apiserver's
//! reconciliation of its bootstrap policy. What users added is kept.

use std::sync::Arc;

use berth_store::Store;
use serde_json::Value;

use super::policy;
use crate::objects;
use crate::resources::{self, Resource};
use crate::state::Api;
use crate::status::ApiError;

fn rbac(plural: &str) -> &'static Resource {
    resources::find("rbac.authorization.k8s.io", "v1", plural).expect("served")
}

/// The cluster-wide defaults (ClusterRoles and ClusterRoleBindings).
pub async fn cluster_defaults(api: &Arc<Api>) -> Result<(), ApiError> {
    for r in policy::cluster_roles() {
        ensure(api, rbac("clusterroles"), None, r, "rules").await?;
    }
    for b in policy::cluster_role_bindings() {
        ensure(api, rbac("clusterrolebindings"), None, b, "subjects").await?;
    }
    Ok(())
}

/// The namespaced defaults (Roles and RoleBindings in kube-system and kube-public), once the
/// namespaces exist.
pub async fn namespaced_defaults(api: &Arc<Api>) -> Result<(), ApiError> {
    for (ns, o) in policy::namespaced() {
        let (res, list) = if o["kind"] == "Role" {
            (rbac("roles"), "rules")
        } else {
            (rbac("rolebindings"), "subjects")
        };
        ensure(api, res, Some(ns), o, list).await?;
    }
    Ok(())
}

/// Creates `want`, or adds to the stored object the entries of `want[list]` it lacks.
async fn ensure(
    api: &Arc<Api>,
    res: &'static Resource,
    ns: Option<&str>,
    want: Value,
    list: &str,
) -> Result<(), ApiError> {
    let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(kv) = api.store.get(&res.key(ns, &name)).await? else {
        return objects::create_internal(api, res, ns, want).await;
    };
    let cur = crate::hub::decode(&kv.value, kv.mod_revision);
    let annotation = format!(
        "/metadata/annotations/{}",
        policy::AUTOUPDATE.replace('/', "~1")
    );
    if cur.pointer(&annotation).and_then(Value::as_str) == Some("false") {
        return Ok(());
    }
    let have = cur
        .get(list)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let missing: Vec<Value> = want[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| !have.contains(e))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!(
        "restoring {} {list} of the default {} {name}",
        missing.len(),
        res.kind
    );
    let mut new = cur.clone();
    new[list] = Value::Array(have.into_iter().chain(missing).collect());
    objects::replace_internal(api, res, ns, &name, (&cur, kv.mod_revision), new, None).await
}
