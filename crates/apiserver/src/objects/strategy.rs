//! What the object path does for each kind beyond the generic rules, chosen by the
//! resource table's [`Strategy`] (kube's per-resource strategies): what a new
//! object is given, what a write reserves and a deletion releases, and how a
//! delete proceeds.

use std::sync::Arc;

use serde_json::{json, Value};

use super::create::populate_namespace;
use super::delete::DeleteOpts;
use super::service_ips;
use crate::api::Api;
use crate::resources::{Resource, Strategy};
use crate::status::ApiError;
use crate::{admission, defaults, priority, storageclass};

/// Sets what the server owns on a new object before it is validated: admission and
/// the first status.
pub(super) async fn prepare_create(
    api: &Api,
    res: &Resource,
    o: &mut Value,
) -> Result<(), ApiError> {
    match res.strategy {
        Strategy::Pod => {
            admission::service_account(o);
            admission::default_toleration_seconds(o);
            priority::admit(api, o).await?;
            let qos = qos_class(o.get("spec").unwrap_or(&Value::Null));
            o["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        Strategy::Namespace => o["status"] = json!({"phase": "Active"}),
        // Until a volume binds it, as kube-apiserver writes a new claim.
        Strategy::PersistentVolumeClaim => {
            storageclass::admit(api, o).await?;
            o["status"] = json!({"phase": "Pending"});
        }
        Strategy::Service => o["status"] = json!({"loadBalancer": {}}),
        Strategy::Job => {
            defaults::job_selector(o);
            o["status"] = json!({});
        }
        Strategy::Plain => {
            if res.subresources.contains(&"status") {
                if let Some(m) = o.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    Ok(())
}

/// Reserves what a new object holds outside itself (a Service's cluster IP and node
/// ports), after validation and before the store write.
pub(super) async fn reserve(
    api: &Api,
    res: &Resource,
    o: &mut Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    match res.strategy {
        Strategy::Service => service_ips::allocate_service(api, o, dry_run).await,
        _ => Ok(()),
    }
}

/// Frees what [`reserve`] took: when the store refused the new object, and once an
/// object is deleted.
pub(super) async fn release(api: &Api, res: &Resource, o: &Value) {
    if res.strategy == Strategy::Service {
        service_ips::release_service(api, o).await;
    }
}

/// What follows a new object's store write (a namespace's default ServiceAccount
/// and CA bundle).
pub(super) fn after_create(api: &Arc<Api>, res: &Resource, name: &str) {
    if res.strategy == Strategy::Namespace {
        let (api, name) = (api.clone(), name.to_string());
        tokio::spawn(async move { populate_namespace(&api, &name).await });
    }
}

/// How a delete request proceeds for an object, beyond its finalizers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DeleteMode {
    /// Removed at once (unless finalizers hold it).
    Now,
    /// A pod on a node: given its grace period for the node to stop it.
    Graceful,
    /// A namespace: marked Terminating for the namespace controller to empty, then
    /// removed by a delete once its finalizers are gone.
    Terminate,
}

/// How deleting `cur` with `opts` proceeds.
pub(super) fn delete_mode(res: &Resource, cur: &Value, opts: &DeleteOpts) -> DeleteMode {
    match res.strategy {
        Strategy::Pod => {
            // As kube's pod strategy: a pod on a node gets its grace period for the
            // node to stop it, unless it has finished (Succeeded, Failed): nothing
            // runs to stop.
            let finished = matches!(
                cur.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
            let on_node = cur
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if on_node && !finished && opts.grace != Some(0) {
                DeleteMode::Graceful
            } else {
                DeleteMode::Now
            }
        }
        Strategy::Namespace => {
            // A namespace already Terminating whose finalizers (the namespace
            // controller's spec.finalizers and any in metadata) are all gone goes now:
            // the controller's last delete.
            let empty = |p: &str| {
                cur.pointer(p)
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
            };
            let terminating = cur.pointer("/metadata/deletionTimestamp").is_some();
            if terminating && empty("/spec/finalizers") && empty("/metadata/finalizers") {
                DeleteMode::Now
            } else {
                DeleteMode::Terminate
            }
        }
        _ => DeleteMode::Now,
    }
}

/// Whether an object being deleted whose finalizers are all gone is removed by the
/// write that took the last one: not a namespace (its controller deletes it once
/// empty), nor a pod on a node given grace (it waits for the node's zero-grace
/// delete).
pub(super) fn removed_when_finalized(res: &Resource, o: &Value) -> bool {
    match res.strategy {
        Strategy::Namespace => false,
        Strategy::Pod => {
            o.pointer("/spec/nodeName").is_none()
                || o.pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    == Some(0)
        }
        _ => true,
    }
}

/// Whether a delete of an already-deleting object is a node's confirmation (grace
/// 0) of a pod given grace, to be recorded so the pod goes once finalizers are gone.
pub(super) fn confirms_graceful_delete(res: &Resource, cur: &Value, opts: &DeleteOpts) -> bool {
    res.strategy == Strategy::Pod
        && opts.grace == Some(0)
        && cur
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| g != 0)
}

/// What a successful delete answers: the object for pods (as kube's pod storage
/// returns it), a Status for other kinds.
pub(super) fn answers_with_object(res: &Resource) -> bool {
    res.strategy == Strategy::Pod
}

fn qos_class(spec: &Value) -> &'static str {
    let cs = spec
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !cs.is_empty();
    for c in &cs {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
