//! Filters, as kube-scheduler's plugins of those names decide, each saying why a node
//! will not do in kube's words (FailedScheduling counts these per reason).

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

use crate::cache::{Needs, NodeInfo};
use crate::quantities::PODS;

/// Why a node was filtered out: kube's reason text.
pub type Reason = String;

/// The filters in kube's order; the first that fails names the reason.
pub fn fits(pod: &Pod, needs: &Needs, info: &NodeInfo) -> Result<(), Reason> {
    node_unschedulable(pod, &info.node)?;
    taint_toleration(pod, &info.node)?;
    node_affinity(pod, &info.node)?;
    node_ports(needs, info)?;
    resources_fit(needs, info)
}

fn node_unschedulable(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if !cordoned {
        return Ok(());
    }
    let tolerated = tolerations(pod).iter().any(|t| {
        tolerates(
            t,
            &Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            },
        )
    });
    if tolerated {
        Ok(())
    } else {
        Err("node(s) were unschedulable".into())
    }
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn matches_requirement(node: &Node, r: &NodeSelectorRequirement, field: bool) -> bool {
    let have = if field {
        node.metadata
            .name
            .as_deref()
            .filter(|_| r.key == "metadata.name")
    } else {
        label(node, &r.key)
    };
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => have.is_some_and(|h| values.iter().any(|v| v == h)),
        "NotIn" => !have.is_some_and(|h| values.iter().any(|v| v == h)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" => {
            matches!((have.and_then(int), values.first().and_then(|v| int(v))), (Some(h), Some(v)) if h > v)
        }
        "Lt" => {
            matches!((have.and_then(int), values.first().and_then(|v| int(v))), (Some(h), Some(v)) if h < v)
        }
        _ => false,
    }
}

/// A node selector term: every expression and field holds (an empty term matches none).
pub fn term_matches(node: &Node, t: &NodeSelectorTerm) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| matches_requirement(node, r, false))
        && fields.iter().all(|r| matches_requirement(node, r, true))
}

/// NodeAffinity: the pod's nodeSelector and required node affinity hold on the node.
pub fn node_affinity(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let spec = pod.spec.as_ref();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| sel.iter().all(|(k, v)| label(node, k) == Some(v)));
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok =
        required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(node, t)));
    if selector_ok && affinity_ok {
        Ok(())
    } else {
        Err("node(s) didn't match Pod's node affinity/selector".into())
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Whether toleration `t` tolerates `taint` (kube's rules: an empty key with Exists
/// tolerates everything; an empty effect matches every effect).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("Equal");
    let key_ok = if key.is_empty() {
        op == "Exists"
    } else {
        key == taint.key
    };
    let value_ok = match op {
        "Exists" => true,
        _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    };
    effect_ok && key_ok && value_ok
}

/// TaintToleration: the pod tolerates every NoSchedule and NoExecute taint of the node.
pub fn taint_toleration(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations(pod).iter().any(|tol| tolerates(tol, t)));
    match untolerated {
        Some(t) => Err(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )),
        None => Ok(()),
    }
}

fn node_ports(needs: &Needs, info: &NodeInfo) -> Result<(), Reason> {
    if needs
        .ports
        .iter()
        .any(|w| info.ports.iter().any(|t| w.conflicts(t)))
    {
        return Err("node(s) didn't have free ports for the requested pod ports".into());
    }
    Ok(())
}

fn resources_fit(needs: &Needs, info: &NodeInfo) -> Result<(), Reason> {
    let (requested, allocatable) = (info.requested_all(), info.allocatable_all());
    if info.pods + 1 > allocatable.fixed(PODS) {
        return Err("Too many pods".into());
    }
    for (name, slot, want) in needs.requests.iter() {
        if want > 0 && requested.at(slot) + want > allocatable.at(slot) {
            return Err(format!("Insufficient {name}"));
        }
    }
    Ok(())
}

/// kube-scheduler's message when the cluster has no node.
pub const NO_NODES: &str = "no nodes available to schedule pods";

/// kube's FailedScheduling message: "0/3 nodes are available: 1 Insufficient cpu, 2
/// node(s) didn't match Pod's node affinity/selector." (reasons sorted, each counted);
/// with no node at all, kube's "no nodes available to schedule pods".
pub fn failure_message(nodes: usize, reasons: &[Reason]) -> String {
    if nodes == 0 {
        return NO_NODES.into();
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in reasons {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    if parts.is_empty() {
        return format!("0/{nodes} nodes are available.");
    }
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toleration(json: &str) -> Toleration {
        serde_json::from_str(json).unwrap()
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn tolerations_match_as_kube_matches_them() {
        let t = taint("dedicated", "db", "NoSchedule");
        assert!(tolerates(
            &toleration(r#"{"key":"dedicated","value":"db","effect":"NoSchedule"}"#),
            &t
        ));
        assert!(tolerates(
            &toleration(r#"{"key":"dedicated","operator":"Exists"}"#),
            &t
        ));
        assert!(tolerates(&toleration(r#"{"operator":"Exists"}"#), &t));
        assert!(!tolerates(
            &toleration(r#"{"key":"dedicated","value":"web"}"#),
            &t
        ));
        assert!(!tolerates(
            &toleration(r#"{"key":"dedicated","value":"db","effect":"NoExecute"}"#),
            &t
        ));
        assert!(
            !tolerates(&toleration(r#"{"value":"db"}"#), &t),
            "an empty key needs Exists"
        );
    }

    #[test]
    fn node_selector_terms_and_operators() {
        let node: Node =
            serde_json::from_str(r#"{"metadata":{"name":"n1","labels":{"zone":"a","cores":"8"}}}"#)
                .unwrap();
        let term = |json: &str| -> NodeSelectorTerm { serde_json::from_str(json).unwrap() };
        assert!(term_matches(
            &node,
            &term(r#"{"matchExpressions":[{"key":"zone","operator":"In","values":["a","b"]}]}"#)
        ));
        assert!(!term_matches(
            &node,
            &term(r#"{"matchExpressions":[{"key":"zone","operator":"NotIn","values":["a"]}]}"#)
        ));
        assert!(term_matches(
            &node,
            &term(
                r#"{"matchExpressions":[{"key":"cores","operator":"Gt","values":["4"]},{"key":"gpu","operator":"DoesNotExist"}]}"#
            )
        ));
        assert!(term_matches(
            &node,
            &term(r#"{"matchFields":[{"key":"metadata.name","operator":"In","values":["n1"]}]}"#)
        ));
        assert!(
            !term_matches(&node, &term(r#"{}"#)),
            "an empty term matches nothing"
        );
    }

    #[test]
    fn the_failure_message_counts_reasons_in_kubes_order() {
        let reasons: Vec<Reason> = ["Insufficient cpu", "Too many pods", "Insufficient cpu"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            failure_message(4, &reasons),
            "0/4 nodes are available: 1 Too many pods, 2 Insufficient cpu."
        );
        assert_eq!(
            failure_message(0, &[]),
            "no nodes available to schedule pods"
        );
    }
}
