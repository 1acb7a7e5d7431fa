//! What the object path does for each kind beyond the generic rules, chosen by the
//! resource table's [`Strategy`] (kube's per-resource strategies): what a new
//! object is given, what a write reserves and a deletion releases, and how a
//! delete proceeds.

use serde_json::{json, Value};

use super::delete_opts::DeleteOpts;
use super::service_ips;
use crate::resources::{Resource, Strategy};
use crate::state::Api;
use crate::status::ApiError;
use crate::{admission, defaults, priority, storageclass};

/// The finalizer the namespace controller removes once a namespace is empty.
pub(super) const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Sets what the server owns on a new object before it is validated: admission and
/// the first status.
pub(super) async fn prepare_create(
    api: &Api,
    res: &Resource,
    o: &mut Value,
    user: Option<&crate::request::User>,
) -> Result<(), ApiError> {
    match res.strategy {
        Strategy::Pod => {
            admission::service_account(o);
            admission::default_toleration_seconds(o);
            priority::admit(api, o).await?;
            crate::limitranger::admit(&api.hub, "pods", o)?;
            let qos = qos_class(o.get("spec").unwrap_or(&Value::Null));
            o["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        Strategy::Namespace => {
            // The namespace controller's finalizer, always: it empties the namespace
            // before the namespace goes.
            let spec = &mut o["spec"];
            if !spec.is_object() {
                *spec = json!({});
            }
            let finalizers = &mut spec["finalizers"];
            if !finalizers.is_array() {
                *finalizers = json!([]);
            }
            if let Some(f) = finalizers.as_array_mut() {
                if !f.iter().any(|x| x == NAMESPACE_FINALIZER) {
                    f.push(json!(NAMESPACE_FINALIZER));
                }
            }
            o["status"] = json!({"phase": "Active"});
        }
        // Until a volume binds it, as kube-apiserver writes a new claim.
        Strategy::PersistentVolumeClaim => {
            storageclass::admit(api, o).await?;
            crate::limitranger::admit(&api.hub, "persistentvolumeclaims", o)?;
            o["status"] = json!({"phase": "Pending"});
        }
        Strategy::Service => o["status"] = json!({"loadBalancer": {}}),
        Strategy::Job => {
            defaults::job_selector(o);
            o["status"] = json!({});
        }
        Strategy::CertificateSigningRequest => crate::certificates::csr::prepare_create(o, user),
        Strategy::CustomResourceDefinition => crate::crd::definition::prepare_create(o),
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

/// Keeps on an update what only the system changes: a namespace's finalizers, which
/// only its `finalize` subresource writes (as kube's namespace strategy keeps them).
pub(super) fn prepare_update(res: &Resource, cur: &Value, o: &mut Value, sub: Option<&str>) {
    if res.strategy == Strategy::Namespace && sub.is_none() {
        match cur.pointer("/spec/finalizers") {
            Some(f) => o["spec"]["finalizers"] = f.clone(),
            None => {
                if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("finalizers");
                }
            }
        }
    }
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

/// Whether a new object of the kind gets defaults made beside it (a namespace's
/// default ServiceAccount and CA bundle).
pub(super) fn has_namespace_defaults(res: &Resource) -> bool {
    res.strategy == Strategy::Namespace
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    fn opts(grace: Option<i64>) -> DeleteOpts {
        DeleteOpts {
            grace,
            propagation: "Background".into(),
            uid: None,
            rv: None,
            dry_run: false,
        }
    }

    #[test]
    fn pods_on_nodes_get_their_grace_unless_finished_or_forced() {
        let pods = find("", "v1", "pods").unwrap();
        let on_node = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert_eq!(
            delete_mode(pods, &on_node, &opts(None)),
            DeleteMode::Graceful
        );
        assert_eq!(delete_mode(pods, &on_node, &opts(Some(0))), DeleteMode::Now);
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(delete_mode(pods, &done, &opts(None)), DeleteMode::Now);
        let pending = json!({"spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(delete_mode(pods, &pending, &opts(None)), DeleteMode::Now);
        // Given grace, a pod waits for its node's zero-grace delete, even with its
        // finalizers gone; confirmed, it goes.
        let graced = json!({"spec": {"nodeName": "n1"},
                            "metadata": {"deletionGracePeriodSeconds": 30}});
        assert!(!removed_when_finalized(pods, &graced));
        assert!(confirms_graceful_delete(pods, &graced, &opts(Some(0))));
        let confirmed = json!({"spec": {"nodeName": "n1"},
                               "metadata": {"deletionGracePeriodSeconds": 0}});
        assert!(removed_when_finalized(pods, &confirmed));
        assert!(answers_with_object(pods));
    }

    #[test]
    fn namespaces_terminate_first_and_go_once_their_finalizers_are_gone() {
        let nss = find("", "v1", "namespaces").unwrap();
        let active = json!({"spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(
            delete_mode(nss, &active, &opts(None)),
            DeleteMode::Terminate
        );
        // Even without the finalizer (an older namespace), the first delete only
        // marks it, so its content is never left behind.
        assert_eq!(
            delete_mode(nss, &json!({}), &opts(None)),
            DeleteMode::Terminate
        );
        let held = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
                          "spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(delete_mode(nss, &held, &opts(None)), DeleteMode::Terminate);
        let done = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
                          "spec": {"finalizers": []}});
        assert_eq!(delete_mode(nss, &done, &opts(None)), DeleteMode::Now);
        assert!(!removed_when_finalized(nss, &done));
        let cms = find("", "v1", "configmaps").unwrap();
        assert_eq!(delete_mode(cms, &json!({}), &opts(None)), DeleteMode::Now);
        assert!(removed_when_finalized(cms, &json!({})));
        assert!(!answers_with_object(cms));
    }

    #[test]
    fn updates_keep_a_namespaces_finalizers() {
        let nss = find("", "v1", "namespaces").unwrap();
        let cur = json!({"spec": {"finalizers": ["kubernetes"]}});
        let mut o = json!({"spec": {"finalizers": []}});
        prepare_update(nss, &cur, &mut o, None);
        assert_eq!(o["spec"]["finalizers"], json!(["kubernetes"]));
        // The finalize subresource is how they change.
        let mut o = json!({"spec": {"finalizers": []}});
        prepare_update(nss, &cur, &mut o, Some("finalize"));
        assert_eq!(o["spec"]["finalizers"], json!([]));
        // Other kinds' specs are theirs to change.
        let cms = find("", "v1", "configmaps").unwrap();
        let mut o = json!({"spec": {"finalizers": []}});
        prepare_update(cms, &cur, &mut o, None);
        assert_eq!(o["spec"]["finalizers"], json!([]));
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        let c = |r: Value| json!({"containers": [{"name": "c", "resources": r}]});
        assert_eq!(qos_class(&c(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&c(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        let both = json!({"cpu": "1", "memory": "1Gi"});
        assert_eq!(
            qos_class(&c(json!({"requests": both, "limits": both}))),
            "Guaranteed"
        );
        // Limits alone: requests default to them.
        assert_eq!(qos_class(&c(json!({"limits": both}))), "Guaranteed");
    }

    #[test]
    fn the_table_gives_the_kinds_their_strategies() {
        for (plural, s) in [
            ("pods", Strategy::Pod),
            ("namespaces", Strategy::Namespace),
            ("services", Strategy::Service),
            ("persistentvolumeclaims", Strategy::PersistentVolumeClaim),
            ("configmaps", Strategy::Plain),
        ] {
            assert_eq!(find("", "v1", plural).unwrap().strategy, s, "{plural}");
        }
        assert_eq!(find("batch", "v1", "jobs").unwrap().strategy, Strategy::Job);
        assert!(has_namespace_defaults(
            find("", "v1", "namespaces").unwrap()
        ));
    }
}
