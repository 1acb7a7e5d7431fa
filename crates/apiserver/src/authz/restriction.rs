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
    let body = || serde_json::from_slice::<Value>(&req.body).unwrap_or(Value::Null);
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
