//! What a PodDisruptionBudget decides, as kube's eviction subresource and disruption
//! controller both read it: which pods a budget covers, which pods it does not
//! protect, which count as healthy, and how long an eviction stays "in flight".

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::{labels, readiness};

/// How long an eviction the API server granted is counted against a budget before
/// the pod is seen deleting (kube's DeletionTimeout, 2 minutes).
pub const DELETION_TIMEOUT_SECS: i64 = 120;

/// The most evictions a budget holds in flight (kube's MaxDisruptedPodSize).
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// Whether the budget covers `pod`: same namespace, and its selector matches (in
/// policy/v1 an empty selector covers every pod of the namespace, a missing one none).
pub fn covers(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    covers_labels(
        pdb,
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.labels.as_ref().unwrap_or(&Default::default()),
    )
}

/// [`covers`] for a pod known by its namespace and labels.
pub fn covers_labels(
    pdb: &PodDisruptionBudget,
    namespace: &str,
    pod_labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    pdb.metadata.namespace.as_deref().unwrap_or_default() == namespace
        && labels::matches(sel, pod_labels)
}

/// Whether an eviction of `pod` need not ask any budget: it is already being
/// deleted, finished, or not yet running (kube's canIgnorePDB).
pub fn budget_ignored(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed" | "Pending") | None
        )
}

/// Whether `pod` counts as healthy for a budget: Ready and not being deleted.
pub fn is_healthy(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && readiness::is_ready(pod)
}

/// Whether the eviction of `pod` at `since` (a disruptedPods entry) still counts
/// at `now`.
pub fn in_flight(since: Timestamp, now: Timestamp) -> bool {
    now.as_second() < since.as_second().saturating_add(DELETION_TIMEOUT_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, labels: &[(&str, &str)], phase: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": ns,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<std::collections::BTreeMap<_, _>>()},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn pdb(ns: &str, selector: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b", "namespace": ns},
            "spec": {"selector": selector},
        }))
        .unwrap()
    }

    #[test]
    fn a_budget_covers_its_namespace_by_selector() {
        let p = pod("a", &[("app", "web")], Some("Running"));
        assert!(covers(
            &pdb("a", serde_json::json!({"matchLabels": {"app": "web"}})),
            &p
        ));
        assert!(!covers(
            &pdb("a", serde_json::json!({"matchLabels": {"app": "db"}})),
            &p
        ));
        assert!(!covers(
            &pdb("b", serde_json::json!({"matchLabels": {"app": "web"}})),
            &p
        ));
        // policy/v1: an empty selector is every pod; none at all is no pod.
        assert!(covers(&pdb("a", serde_json::json!({})), &p));
        assert!(!covers(&pdb("a", serde_json::Value::Null), &p));
    }

    #[test]
    fn pending_and_finished_pods_are_evicted_without_a_budget() {
        for (phase, ignored) in [
            (Some("Pending"), true),
            (Some("Succeeded"), true),
            (Some("Failed"), true),
            (Some("Running"), false),
        ] {
            assert_eq!(budget_ignored(&pod("a", &[], phase)), ignored, "{phase:?}");
        }
    }

    #[test]
    fn an_eviction_counts_for_two_minutes() {
        let t = Timestamp::from_second(1000).unwrap();
        assert!(in_flight(t, Timestamp::from_second(1119).unwrap()));
        assert!(!in_flight(t, Timestamp::from_second(1120).unwrap()));
    }
}
