//! Which requests Pod Security admission checks, at which levels: a pod's create,
//! and its updates that change what runs (an image, the seccomp annotation), against
//! its namespace's `enforce` level (refused) and `warn` level (Warnings); workloads'
//! pod templates against both for Warnings; `audit` logged. A namespace's labels
//! override the cluster's defaults mode by mode; exempt users, namespaces and
//! runtime classes are not checked.

use serde_json::Value;

use super::config::{Config, MODES};
use super::standards::{containers, s, violations, Level};
use crate::request::User;
use crate::resources::{self, Resource};
use crate::status::ApiError;

/// A namespace's levels: (enforce, warn, audit), its labels over the defaults.
fn levels(ns: &Value, cfg: &Config) -> [Option<Level>; 3] {
    let mut out = cfg.defaults;
    for (i, mode) in MODES.iter().enumerate() {
        if let Some(l) = s(
            ns,
            &format!("/metadata/labels/pod-security.kubernetes.io~1{mode}"),
        )
        .and_then(Level::parse)
        {
            out[i] = Some(l);
        }
    }
    out
}

/// Whether a pod update changes what the standards look at that may change on a
/// pod: its containers' images or its seccomp annotation (as kube decides; the rest
/// of a pod spec is immutable, and labels or owners must stay writable on a pod
/// made before its namespace was labelled).
fn significant_update(new: &Value, old: &Value) -> bool {
    const SECCOMP: &str = "/metadata/annotations/seccomp.security.alpha.kubernetes.io~1pod";
    let images = |o: &Value| -> Vec<(String, Option<String>)> {
        o.get("spec")
            .map(containers)
            .unwrap_or_default()
            .into_iter()
            .map(|(n, c)| (n.to_string(), s(c, "/image").map(str::to_string)))
            .collect()
    };
    new.pointer(SECCOMP) != old.pointer(SECCOMP) || images(new) != images(old)
}

/// The pod spec a create or update of `res` carries: a pod's, or a workload's
/// template's (for which only warn and audit apply, as kube does).
fn pod_spec<'a>(res: &Resource, o: &'a Value) -> Option<(&'a Value, bool)> {
    match (res.group, res.kind) {
        ("", "Pod") => Some((o.get("spec")?, true)),
        ("batch", "CronJob") => Some((o.pointer("/spec/jobTemplate/spec/template/spec")?, false)),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job")
        | ("", "ReplicationController") => Some((o.pointer("/spec/template/spec")?, false)),
        _ => None,
    }
}

/// Admits `o` (of `res`, named `name`, in `ns`; `old` the object it replaces on an
/// update), asked for by `user`: Err(403) when a pod violates its namespace's
/// enforce level; Warning texts for its warn level.
pub async fn admit(
    api: &crate::state::Api,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    o: &Value,
    old: Option<&Value>,
    user: &User,
) -> Result<Vec<String>, ApiError> {
    let (Some(ns), Some((spec, is_pod))) = (ns, pod_spec(res, o)) else {
        return Ok(Vec::new());
    };
    if is_pod && old.is_some_and(|old| !significant_update(o, old)) {
        return Ok(Vec::new());
    }
    let cfg = &api.pod_security;
    if cfg.exempt_users.contains(&user.name)
        || cfg.exempt_namespaces.iter().any(|n| n == ns)
        || s(spec, "/runtimeClassName")
            .is_some_and(|rc| cfg.exempt_runtime_classes.iter().any(|x| x == rc))
    {
        return Ok(Vec::new());
    }
    let nsr = resources::find("", "v1", "namespaces").expect("served");
    let key = nsr.key(None, ns);
    // A namespace made a moment ago may not be in the hub yet: the store has it.
    let namespace = match api.hub.get(&key) {
        Some(n) => n,
        None => {
            use berth_store::Store;
            match api.store.get(&key).await? {
                Some(kv) => std::sync::Arc::new(crate::hub::decode(&kv.value, kv.mod_revision)),
                None => return Ok(Vec::new()),
            }
        }
    };
    let [enforce, warn, audit] = levels(&namespace, cfg);
    let mut warnings = Vec::new();
    if let Some(level) = enforce.filter(|_| is_pod) {
        let v = violations(spec, level);
        if !v.is_empty() {
            let mut e = ApiError::forbidden(format!(
                "pods {name:?} is forbidden: violates PodSecurity \"{}:latest\": {}",
                level.name(),
                v.join(", ")
            ));
            e.kind = Some("pods".into());
            e.name = Some(name.into());
            e.group = Some(String::new());
            return Err(e);
        }
    }
    // A workload whose pods its namespace would refuse hears of it now.
    let checks = [warn, enforce.filter(|_| !is_pod)];
    let mut seen: Vec<Level> = Vec::new();
    for level in checks.into_iter().flatten() {
        if seen.contains(&level) {
            continue;
        }
        seen.push(level);
        let v = violations(spec, level);
        if !v.is_empty() {
            let what = if is_pod {
                String::new()
            } else {
                format!("{} {name:?} ", res.singular())
            };
            warnings.push(format!(
                "{what}would violate PodSecurity \"{}:latest\": {}",
                level.name(),
                v.join(", ")
            ));
        }
    }
    if let Some(level) = audit {
        let v = violations(spec, level);
        if !v.is_empty() {
            tracing::info!(
                namespace = ns,
                name,
                kind = res.kind,
                "PodSecurity audit: violates \"{}:latest\": {}",
                level.name(),
                v.join(", ")
            );
        }
    }
    Ok(warnings)
}
