//! A Job's podFailurePolicy: what a failed pod means (fail the Job at once, not count
//! it, count it), by its containers' exit codes or its conditions, first rule wins.

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::Pod;

/// What a failed pod does to its Job.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fail the Job, with this message.
    FailJob(String),
    /// Do not count the failure toward backoffLimit.
    Ignore,
    /// Count it (also what no matching rule means).
    Count,
}

/// The verdict of `policy` on the failed pod `pod`.
pub fn judge(policy: &PodFailurePolicy, pod: &Pod) -> Verdict {
    for (i, rule) in policy.rules.iter().enumerate() {
        if let Some(why) = matches(rule, pod) {
            return match rule.action.as_str() {
                "FailJob" => Verdict::FailJob(format!("{why} matching FailJob rule at index {i}")),
                "Ignore" => Verdict::Ignore,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// Why the rule matches the pod ("Container main for pod ns/p failed with exit code
/// 42"), or None.
fn matches(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if let Some(req) = &rule.on_exit_codes {
        let st = pod.status.as_ref()?;
        let statuses = st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(st.container_statuses.iter().flatten());
        for c in statuses {
            if req.container_name.as_ref().is_some_and(|n| *n != c.name) {
                continue;
            }
            let Some(code) = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                continue;
            };
            // Exit code 0 is success, never a failure to judge.
            if code == 0 {
                continue;
            }
            let listed = req.values.contains(&code);
            let hit = match req.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if hit {
                return Some(format!(
                    "Container {} for pod {ns}/{name} failed with exit code {code}",
                    c.name
                ));
            }
        }
        return None;
    }
    let conds = pod.status.as_ref()?.conditions.as_ref()?;
    for pattern in rule.on_pod_conditions.iter().flatten() {
        let want = if pattern.status.is_empty() {
            "True"
        } else {
            pattern.status.as_str()
        };
        if conds
            .iter()
            .any(|c| c.type_ == pattern.type_ && c.status == want)
        {
            return Some(format!("Pod {ns}/{name} has condition {}", pattern.type_));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: i32) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed",
                "conditions": [{"type": "DisruptionTarget", "status": "True"}],
                "containerStatuses": [
                    {"name": "side", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0}}},
                    {"name": "main", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": code}}}]}
        }))
        .unwrap()
    }

    fn policy(json: serde_json::Value) -> PodFailurePolicy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = policy(serde_json::json!({"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}));
        assert_eq!(judge(&p, &failed(42)), Verdict::Ignore);
        let p = policy(serde_json::json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}}]}));
        assert_eq!(
            judge(&p, &failed(42)),
            Verdict::FailJob("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0".into())
        );
        assert_eq!(judge(&p, &failed(1)), Verdict::Count);
        let p = policy(serde_json::json!({"rules": [
            {"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [1]}}]}));
        // The sidecar's exit code 0 never matches NotIn.
        assert_eq!(judge(&p, &failed(1)), Verdict::Count);
        assert_eq!(judge(&p, &failed(3)), Verdict::Ignore);
    }
}
