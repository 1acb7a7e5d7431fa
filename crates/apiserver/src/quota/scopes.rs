//! Quota scopes: which pods a scoped ResourceQuota tracks (`spec.scopes` and
//! `spec.scopeSelector`), as kube decides — Terminating (an activeDeadlineSeconds)
//! and NotTerminating, BestEffort (no requests or limits anywhere) and NotBestEffort,
//! PriorityClass (by the pod's priorityClassName, with In, NotIn, Exists and
//! DoesNotExist), CrossNamespacePodAffinity. A scoped quota tracks pods only.

use serde_json::Value;

/// One condition a tracked pod must meet.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    /// The scope name (Terminating, PriorityClass...).
    pub name: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: String,
    /// For In and NotIn.
    pub values: Vec<String>,
}

/// The scope names kube defines.
pub const NAMES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
];

/// A quota's scopes: `spec.scopes` (each as Exists) and `spec.scopeSelector`'s
/// match expressions.
pub fn of(quota: &Value) -> Vec<Scope> {
    let names = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| Scope {
            name: n.to_string(),
            operator: "Exists".into(),
            values: Vec::new(),
        });
    let selected = quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Scope {
            name: e
                .get("scopeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            operator: e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            values: e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        });
    names.chain(selected).collect()
}

/// Whether `pod` meets every scope (an object of another kind never does).
pub fn tracks(scopes: &[Scope], pod: &Value) -> bool {
    scopes.iter().all(|s| holds(s, pod))
}

fn holds(s: &Scope, pod: &Value) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let condition = match s.name.as_str() {
        "Terminating" => spec
            .get("activeDeadlineSeconds")
            .is_some_and(|v| !v.is_null()),
        "NotTerminating" => spec.get("activeDeadlineSeconds").is_none_or(Value::is_null),
        "BestEffort" => best_effort(spec),
        "NotBestEffort" => !best_effort(spec),
        "CrossNamespacePodAffinity" => cross_namespace_affinity(spec),
        "PriorityClass" => {
            let class = spec
                .get("priorityClassName")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty());
            return match s.operator.as_str() {
                "In" => class.is_some_and(|c| s.values.iter().any(|v| v == c)),
                "NotIn" => class.is_none_or(|c| !s.values.iter().any(|v| v == c)),
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                _ => false,
            };
        }
        _ => return false,
    };
    match s.operator.as_str() {
        "Exists" => condition,
        "DoesNotExist" => !condition,
        _ => false,
    }
}

/// BestEffort QoS: no container, init container included, requests or limits
/// anything.
fn best_effort(spec: &Value) -> bool {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec.get(*k).and_then(Value::as_array).into_iter().flatten())
        .all(|c| {
            ["requests", "limits"].iter().all(|k| {
                c.pointer(&format!("/resources/{k}"))
                    .and_then(Value::as_object)
                    .is_none_or(|m| m.is_empty())
            })
        })
}

/// Whether a pod's (anti-)affinity terms reach other namespaces (`namespaces` or a
/// `namespaceSelector`).
fn cross_namespace_affinity(spec: &Value) -> bool {
    let terms = ["podAffinity", "podAntiAffinity"]
        .into_iter()
        .flat_map(|a| {
            let required = spec
                .pointer(&format!(
                    "/affinity/{a}/requiredDuringSchedulingIgnoredDuringExecution"
                ))
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            let preferred = spec
                .pointer(&format!(
                    "/affinity/{a}/preferredDuringSchedulingIgnoredDuringExecution"
                ))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|w| w.get("podAffinityTerm"));
            required.chain(preferred)
        });
    let mut terms = terms;
    terms.any(|t| {
        t.get("namespaces")
            .and_then(Value::as_array)
            .is_some_and(|n| !n.is_empty())
            || t.get("namespaceSelector").is_some_and(|s| !s.is_null())
    })
}

/// What a scoped quota may not cap (kube refuses it): BestEffort quotas track only
/// the count of pods; the others, pods and compute resources.
pub fn allows(scopes: &[Scope], resource: &str) -> bool {
    if scopes.is_empty() {
        return true;
    }
    let compute = |r: &str| {
        matches!(r, "cpu" | "memory" | "ephemeral-storage")
            || r.starts_with("requests.")
            || r.starts_with("limits.")
    };
    let best_effort = scopes
        .iter()
        .any(|s| s.name == "BestEffort" && s.operator == "Exists");
    match resource {
        "pods" | "count/pods" => true,
        r if compute(r) => !best_effort,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn scopes_select_pods_as_kube_does() {
        let q = json!({"spec": {"scopes": ["NotTerminating", "BestEffort"],
            "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let scopes = of(&q);
        assert_eq!(scopes.len(), 3);
        let plain = pod(json!({"containers": [{"name": "c"}], "priorityClassName": "high"}));
        assert!(tracks(&scopes, &plain));
        let sized = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}], "priorityClassName": "high"}),
        );
        assert!(!tracks(&scopes, &sized), "not BestEffort");
        let deadline = pod(
            json!({"containers": [{"name": "c"}], "activeDeadlineSeconds": 30, "priorityClassName": "high"}),
        );
        assert!(!tracks(&scopes, &deadline), "Terminating");
        let low = pod(json!({"containers": [{"name": "c"}], "priorityClassName": "low"}));
        assert!(!tracks(&scopes, &low));
        let not_in = vec![Scope {
            name: "PriorityClass".into(),
            operator: "NotIn".into(),
            values: vec!["high".into()],
        }];
        assert!(tracks(&not_in, &low) && !tracks(&not_in, &plain));
        let cross = pod(
            json!({"containers": [{"name": "c"}], "affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "k", "namespaceSelector": {}}]}}}),
        );
        let x = of(&json!({"spec": {"scopes": ["CrossNamespacePodAffinity"]}}));
        assert!(tracks(&x, &cross) && !tracks(&x, &plain));
        assert!(allows(
            &of(&json!({"spec": {"scopes": ["BestEffort"]}})),
            "pods"
        ));
        assert!(!allows(
            &of(&json!({"spec": {"scopes": ["BestEffort"]}})),
            "requests.cpu"
        ));
        assert!(allows(
            &of(&json!({"spec": {"scopes": ["Terminating"]}})),
            "limits.memory"
        ));
        assert!(!allows(
            &of(&json!({"spec": {"scopes": ["Terminating"]}})),
            "services"
        ));
    }
}
