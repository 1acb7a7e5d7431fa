//! Label selectors (metav1.LabelSelector) as Kubernetes evaluates them: what a
//! ReplicaSet's, a Job's or a PodDisruptionBudget's selector picks, and pod affinity
//! terms. Evaluated on typed values: parsing the string form (`a=b,c in (d)`) is the
//! API server's job.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `sel`. An empty selector matches everything (as in
/// Deployments and Jobs); a requirement with an unknown operator matches nothing, as
/// kube's conversion of an invalid selector yields one that selects nothing.
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && sel.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            let have = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// Whether the selector is empty (selects every object).
pub fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(json: &str) -> LabelSelector {
        serde_json::from_str(json).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let s = sel(r#"{"matchLabels":{"app":"web"},"matchExpressions":[
                {"key":"tier","operator":"In","values":["a","b"]},
                {"key":"canary","operator":"DoesNotExist"},
                {"key":"zone","operator":"NotIn","values":["x"]}]}"#);
        assert!(matches(&s, &labels(&[("app", "web"), ("tier", "a")])));
        assert!(!matches(&s, &labels(&[("app", "web"), ("tier", "c")])));
        assert!(!matches(&s, &labels(&[("app", "db"), ("tier", "a")])));
        assert!(!matches(
            &s,
            &labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])
        ));
        assert!(!matches(
            &s,
            &labels(&[("app", "web"), ("tier", "a"), ("zone", "x")])
        ));
        assert!(matches(&sel(r#"{}"#), &labels(&[])));
        assert!(is_empty(&sel(r#"{}"#)));
        let bad = sel(r#"{"matchExpressions":[{"key":"a","operator":"Near"}]}"#);
        assert!(!matches(&bad, &labels(&[("a", "1")])));
    }
}
