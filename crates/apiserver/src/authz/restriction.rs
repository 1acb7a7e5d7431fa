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
                    Ok(())
                }
                (_, Some(n), _) => {
                    let key = res.key(*ns, n);
                    // Gone already: the write answers 404 as it would for anyone.
                    let Some(pod) = hub.get(&key) else {
                        return Ok(());
                    };
                    if !bound_here(&pod) {
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
            let pod = hub.get(&pods.key(*ns, pod_name));
            let on_node = pod.as_ref().is_some_and(|p| {
                p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                    && p.pointer("/spec/serviceAccountName")
                        .and_then(Value::as_str)
                        == *name
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
