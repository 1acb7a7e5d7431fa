//! NodeRestriction (kube's admission plugin): what a node's user may change, beyond
//! what it may do at all — its own Node and Lease, the status and deletion of pods
//! bound to it, evictions of those pods, and mirror pods of its static pods. Asked
//! after authorization, with the object as the hub has it.

use serde_json::Value;

use super::node::node_of;
use crate::api::Target;
use crate::hub::Hub;
use crate::request::{Request, User};
use crate::status::ApiError;

const MIRROR: &str = "kubernetes.io/config.mirror";

fn refuse(msg: String) -> ApiError {
    ApiError::forbidden(msg)
}

/// Ok, or why node `user` may not make this write. Reads and other users pass.
pub fn admit(
    hub: &Hub,
    user: &User,
    req: &Request,
    verb: &str,
    target: &Target<'_>,
) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    if matches!(verb, "get" | "list" | "watch") {
        return Ok(());
    }
    let Target::Resource { res, ns, name, sub } = target else {
        return Ok(());
    };
    // JSON, YAML or protobuf, as the handlers read it.
    let body = || crate::objects::parse_body(req).unwrap_or(Value::Null);
    let deny = || {
        refuse(format!(
            "node {node:?} is not allowed to {verb} {}",
            res.plural
        ))
    };
    match (res.group, res.plural) {
        ("", "nodes") => {
            let target = match name {
                Some(n) => n.to_string(),
                None => body()
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            };
            if target != node || verb == "deletecollection" {
                return Err(refuse(format!(
                    "node {node:?} is not allowed to modify node {target:?}"
                )));
            }
            Ok(())
        }
        ("", "pods") => {
            let bound_here =
                |pod: &Value| pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node);
            match (verb, name, sub) {
                ("create", None, None) => {
                    let pod = body();
                    if pod
                        .pointer(&format!(
                            "/metadata/annotations/{}",
                            MIRROR.replace('/', "~1")
                        ))
                        .is_none()
                    {
                        return Err(refuse(format!(
                            "pod does not have \"{MIRROR}\" annotation, node {node:?} can only create mirror pods"
                        )));
                    }
                    if !bound_here(&pod) {
                        return Err(refuse(format!(
                            "node {node:?} can only create pods with spec.nodeName set to itself"
                        )));
                    }
                    if let Some(why) = mirror_references(&pod) {
                        return Err(refuse(format!(
                            "node {node:?} can not create pods that {why}"
                        )));
                    }
                    mirror_owner(hub, node, &pod)
                }
                (_, Some(n), _) => {
                    let key = res.key(*ns, n);
                    // Gone already: the write answers 404 as it would for anyone.
                    let Some(pod) = hub.stored(&key) else {
                        return Ok(());
                    };
                    if pod.field("spec.nodeName") != Some(node) {
                        return Err(refuse(format!(
                            "node {node:?} can only {verb} pods bound to itself; pod {n:?} is not"
                        )));
                    }
                    Ok(())
                }
                _ => Err(deny()),
            }
        }
        ("", "serviceaccounts") if *sub == Some("token") => {
            // A node's tokens are for its own pods, each bound to one (kube's
            // NodeRestriction): never an unbound token for any pod's account.
            let want = body();
            let bound = want.pointer("/spec/boundObjectRef");
            let kind = bound.and_then(|b| b.get("kind")).and_then(Value::as_str);
            let pod_name = bound.and_then(|b| b.get("name")).and_then(Value::as_str);
            let (Some("Pod"), Some(pod_name)) = (kind, pod_name) else {
                return Err(refuse(format!(
                    "node {node:?} requested a token not bound to a pod"
                )));
            };
            let pods = crate::resources::find("", "v1", "pods").expect("served");
            let pod = hub.stored(&pods.key(*ns, pod_name));
            let on_node = pod.as_ref().is_some_and(|p| {
                p.field("spec.nodeName") == Some(node)
                    && p.field("spec.serviceAccountName") == *name
            });
            if !on_node {
                return Err(refuse(format!(
                    "node {node:?} requested a token bound to pod {pod_name:?}, which is not its pod of that ServiceAccount"
                )));
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") => {
            if *ns != Some("kube-node-lease")
                || name.is_some_and(|n| n != node)
                || verb == "deletecollection"
            {
                return Err(refuse(
                    "can only access node lease with the same name as the requesting node".into(),
                ));
            }
            if name.is_none() {
                let want = body();
                if want.pointer("/metadata/name").and_then(Value::as_str) != Some(node) {
                    return Err(refuse(
                        "can only access node lease with the same name as the requesting node"
                            .into(),
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A mirror pod may name one owner only, its own Node, as its controller (kube's
/// rule: a node could otherwise make its pods dependents of anything, and have the
/// garbage collector delete them with it).
fn mirror_owner(hub: &Hub, node: &str, pod: &Value) -> Result<(), ApiError> {
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let Some(r) = owners.first() else {
        return Ok(());
    };
    if owners.len() > 1 {
        return Err(refuse(format!(
            "node {node:?} can only create pods with a single owner reference set to itself"
        )));
    }
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
    if s("apiVersion") != "v1" || s("kind") != "Node" || s("name") != node {
        return Err(refuse(format!(
            "node {node:?} can only create pods with an owner reference set to itself"
        )));
    }
    if r.get("controller") != Some(&Value::Bool(true)) {
        return Err(refuse(format!(
            "node {node:?} can only create pods with a controller owner reference set to itself"
        )));
    }
    if r.get("blockOwnerDeletion") == Some(&Value::Bool(true)) {
        return Err(refuse(format!(
            "node {node:?} must not set blockOwnerDeletion on an owner reference"
        )));
    }
    let nodes = crate::resources::find("", "v1", "nodes").expect("served");
    let uid = hub.get(&nodes.key(None, node)).and_then(|n| {
        n.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if uid.as_deref() != Some(s("uid")) {
        return Err(refuse(format!(
            "the UID in the owner reference ({}) does not match the UID of node {node:?}",
            s("uid")
        )));
    }
    Ok(())
}

/// Labels a node may set on its own Node (kube's kubelet labels): outside the
/// kubernetes.io and k8s.io namespaces anything; inside, only these and the
/// kubelet.kubernetes.io and node.kubernetes.io namespaces; never the
/// node-restriction.kubernetes.io namespace, kept for what admins set to choose
/// nodes by.
fn node_may_set_label(key: &str) -> bool {
    const KUBELET_LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
    ];
    let Some((domain, _)) = key.split_once('/') else {
        return true;
    };
    let in_ns = |ns: &str| domain == ns || domain.ends_with(&format!(".{ns}"));
    if in_ns("node-restriction.kubernetes.io") {
        return false;
    }
    if !in_ns("kubernetes.io") && !in_ns("k8s.io") {
        return true;
    }
    KUBELET_LABELS.contains(&key) || in_ns("kubelet.kubernetes.io") || in_ns("node.kubernetes.io")
}

/// Ok, or why node `user` may not write Node `new` (`old`: what it replaces): the
/// labels it sets on create, or changes on update, must be ones a node may set.
pub fn check_node_labels(user: &User, old: Option<&Value>, new: &Value) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    let labels = |o: Option<&Value>| -> std::collections::BTreeMap<String, Value> {
        o.and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let (before, after) = (labels(old), labels(Some(new)));
    let mut bad: Vec<&str> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(String::as_str),
        )
        .filter(|k| !node_may_set_label(k))
        .collect();
    bad.sort();
    bad.dedup();
    if bad.is_empty() {
        return Ok(());
    }
    Err(refuse(if old.is_none() {
        format!(
            "node {node:?} is not allowed to set the following labels: {}",
            bad.join(", ")
        )
    } else {
        format!(
            "node {node:?} is not allowed to modify labels: {}",
            bad.join(", ")
        )
    }))
}

/// What a mirror pod may not hold, kube's list: a ServiceAccount, or any Secret,
/// ConfigMap, claim or projected token it would make its node able to read.
fn mirror_references(pod: &Value) -> Option<&'static str> {
    let spec = pod.get("spec")?;
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Some("reference a service account");
    }
    let volumes = spec.get("volumes").and_then(Value::as_array);
    for v in volumes.into_iter().flatten() {
        for (key, why) in [
            ("secret", "reference secrets"),
            ("configMap", "reference configmaps"),
            ("persistentVolumeClaim", "reference persistentvolumeclaims"),
            ("ephemeral", "use ephemeral volumes"),
            ("projected", "use projected volumes"),
        ] {
            if v.get(key).is_some() {
                return Some(why);
            }
        }
    }
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let env = c.get("env").and_then(Value::as_array).into_iter().flatten();
        for e in env {
            if e.pointer("/valueFrom/secretKeyRef").is_some() {
                return Some("reference secrets");
            }
            if e.pointer("/valueFrom/configMapKeyRef").is_some() {
                return Some("reference configmaps");
            }
        }
        let env_from = c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for e in env_from {
            if e.get("secretRef").is_some() {
                return Some("reference secrets");
            }
            if e.get("configMapRef").is_some() {
                return Some("reference configmaps");
            }
        }
    }
    if spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Some("reference secrets");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nodes_set_their_own_labels_but_not_the_restricted_ones() {
        for ok in [
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
            "kubelet.kubernetes.io/x",
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "node.berth.dev/ingress-proxy",
            "team",
        ] {
            assert!(node_may_set_label(ok), "{ok}");
        }
        for bad in [
            "node-restriction.kubernetes.io/pci",
            "node-role.kubernetes.io/control-plane",
            "example.k8s.io/x",
        ] {
            assert!(!node_may_set_label(bad), "{bad}");
        }
        let node = User::new("system:node:n1", "", vec!["system:nodes".into()]);
        let admin = User::new("admin", "", vec!["system:masters".into()]);
        let old = json!({"metadata": {"name": "n1", "labels": {
            "node-restriction.kubernetes.io/pci": "true", "kubernetes.io/hostname": "n1"}}});
        // Labels an admin set stay untouched by the node's own updates.
        let same = old.clone();
        assert!(check_node_labels(&node, Some(&old), &same).is_ok());
        let mut raised = old.clone();
        raised["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = json!("");
        let e = check_node_labels(&node, Some(&old), &raised).unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            e.message
                .contains("is not allowed to modify labels: node-role.kubernetes.io/control-plane"),
            "{}",
            e.message
        );
        let mut dropped = old.clone();
        dropped["metadata"]["labels"] = json!({"kubernetes.io/hostname": "n1"});
        assert!(check_node_labels(&node, Some(&old), &dropped).is_err());
        assert!(check_node_labels(&admin, Some(&old), &raised).is_ok());
        let e = check_node_labels(&node, None, &raised).unwrap_err();
        assert!(e.message.contains("is not allowed to set the following labels: node-restriction.kubernetes.io/pci, node-role.kubernetes.io/control-plane"), "{}", e.message);
    }
}
