//! Creation: the generic rules (names, uid, timestamps, namespace checks, defaulting,
//! validation, managedFields), the kind's strategy, and the store write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use berth_store::{Error as StoreError, Store};
use serde_json::{json, Value};

use super::body::{answer, check_body, parse_body, with_warnings, write_opts, WriteOpts};
use super::meta::{encode, meta_mut, meta_str, now, set_managed, set_rv};
use super::strategy;
use crate::request::{Request, Response};
use crate::resources::{self, Resource};
use crate::state::Api;
use crate::status::ApiError;
use crate::{defaults, ssa, validate};

/// Checks the namespace exists and is not being deleted.
pub(super) async fn check_namespace(api: &Api, ns: &str) -> Result<(), ApiError> {
    let nsr = resources::find("", "v1", "namespaces").expect("namespaces are served");
    let key = nsr.key(None, ns);
    // The hub's copy answers for namespaces it knows (as kube's admission reads its
    // informer cache); one it does not know yet may have just been created: ask the
    // store.
    let terminating = match api.hub.get(&key) {
        Some(o) => Some(o.pointer("/metadata/deletionTimestamp").is_some()),
        None => api.store.get(&key).await?.map(|kv| {
            serde_json::from_slice::<Value>(&kv.value)
                .unwrap_or(Value::Null)
                .pointer("/metadata/deletionTimestamp")
                .is_some()
        }),
    };
    match terminating {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(terminating) => {
            if terminating {
                let mut e = ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ));
                e.reason = "Forbidden";
                return Err(e);
            }
            Ok(())
        }
    }
}

/// Whether definition `name` (of a custom resource) is still there — the one with
/// uid `uid` the request was served by, not one made again under its name — and not
/// being deleted, read from the store rather than the hub: the store is
/// linearizable, so a create that commits after the definition's cleanup last
/// listed its objects (and so would be left behind) finds the deletion here. A read
/// that fails answers yes: the object is written, and saying otherwise would be a
/// guess.
async fn definition_live(api: &Api, name: &str, uid: &str) -> bool {
    let crds =
        resources::find("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("served");
    match api.store.get(&crds.key(None, name)).await {
        Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value)
            .map(|d| {
                d.pointer("/metadata/deletionTimestamp").is_none()
                    && d.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid)
            })
            .unwrap_or(true),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(definition = name, "reading a definition: {e}");
            true
        }
    }
}

/// Deletes the object this create wrote (`written`), changed since or not; one made
/// anew under the same name is another's and left alone.
async fn take_back(api: &Api, written: &berth_store::KeyValue) {
    let key = written.key.as_str();
    let mut rev = written.mod_revision;
    let warn = |why: &dyn std::fmt::Display| {
        tracing::warn!(
            key,
            "taking back a create that raced its definition's deletion: {why}"
        )
    };
    for _ in 0..super::patching::CONFLICT_RETRIES {
        match api.store.delete(key, rev).await {
            Ok(_) | Err(StoreError::NotFound(_)) => return,
            Err(StoreError::Conflict { .. }) => match api.store.get(key).await {
                Ok(Some(now)) if now.create_revision == written.create_revision => {
                    rev = now.mod_revision
                }
                Ok(_) => return,
                Err(e) => return warn(&e),
            },
            Err(e) => return warn(&e),
        }
    }
    warn(&"it kept changing");
}

fn definition_terminating() -> ApiError {
    ApiError::method_not_allowed(
        "create not allowed while custom resource definition is terminating",
    )
}

/// Creates an object (the body already parsed): the shared path of POST and
/// create-by-apply.
pub(super) async fn create_object(
    api: &Arc<Api>,
    res: &'static Resource,
    ns: Option<&str>,
    mut o: Value,
    opts: &WriteOpts,
    managed: Option<Value>,
) -> Result<Value, ApiError> {
    {
        let m = meta_mut(&mut o);
        if let Some(rv) = m.get("resourceVersion").and_then(Value::as_str) {
            if !rv.is_empty() {
                return Err(ApiError::bad_request(
                    "resourceVersion should not be set on objects to be created",
                ));
            }
        }
        match (res.namespaced, ns, m.get("namespace").and_then(Value::as_str)) {
            (true, Some(u), Some(b)) if !b.is_empty() && b != u => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({b}) does not match the namespace sent on the request ({u})"
                )))
            }
            (true, Some(u), _) => {
                m.insert("namespace".into(), json!(u));
            }
            _ => {
                m.remove("namespace");
            }
        }
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "resourceVersion",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        if res.has_generation() {
            m.insert("generation".into(), json!(1));
        }
    }
    if res.custom.is_some_and(|c| c.terminating) {
        return Err(definition_terminating());
    }
    if let Some(ns) = ns.filter(|_| res.namespaced) {
        check_namespace(api, ns).await?;
    }
    let generate = meta_str(&o, "name").is_none_or(str::is_empty)
        && meta_str(&o, "generateName").is_some_and(|g| !g.is_empty());
    if generate {
        let g = meta_str(&o, "generateName").unwrap_or("").to_string();
        meta_mut(&mut o).insert("name".into(), json!(crate::names::generate(&g)));
    }
    defaults::apply(res, &mut o);
    strategy::prepare_create(api, res, &mut o, opts.user.as_ref()).await?;
    let name = meta_str(&o, "name").unwrap_or("").to_string();
    let causes = validate::validate(res, &o, None);
    if !causes.is_empty() {
        return Err(ApiError::invalid(res.group, res.kind, &name, causes));
    }
    if let Some(user) = &opts.user {
        crate::authz::escalation::check(&api.authz, user, res, ns, &o)?;
        if res.group.is_empty() && res.plural == "nodes" {
            crate::authz::restriction::check_node_labels(user, None, &o)?;
        }
        opts.warn(crate::podsecurity::admit(api, res, ns, &name, &o, None, user).await?);
    }
    // Quotas: this create, checked and written before the namespace's next.
    let mut quota_held = None;
    if let (Some(ns), Some(_)) = (ns.filter(|_| res.namespaced), &opts.user) {
        if !crate::quota::quotas(&api.hub, ns).is_empty() {
            quota_held = Some(api.quota_gate.of(ns).lock_owned().await);
            crate::quota::admit(&api.hub, res, ns, &name, &o, None)?;
        }
    }
    let before = Value::Null;
    let mf = managed.unwrap_or_else(|| ssa::record_update(res, &before, &o, &opts.manager, None));
    set_managed(&mut o, mf);
    strategy::reserve(api, res, &mut o, opts.dry_run).await?;
    if opts.dry_run {
        return Ok(o);
    }
    for attempt in 0..3 {
        let key = res.key(ns, meta_str(&o, "name").unwrap_or(""));
        match api.store.create(&key, &encode(&o)).await {
            Ok(kv) => {
                if let Some(c) = res.custom {
                    if !definition_live(api, &c.definition, &c.definition_uid).await {
                        // The definition's deletion began while this was written: its
                        // cleanup may already have listed the objects, so this one is
                        // taken back rather than left behind it.
                        take_back(api, &kv).await;
                        strategy::release(api, res, &o).await;
                        return Err(definition_terminating());
                    }
                }
                set_rv(&mut o, kv.mod_revision);
                if let Some(held) = quota_held.take() {
                    // Counted by the next create's admission once the hub has it: the
                    // gate opens only then.
                    let _ = api.hub.wait_for(kv.mod_revision).await;
                    drop(held);
                }
                if strategy::has_namespace_defaults(res) {
                    let (api, name) = (api.clone(), name.clone());
                    tokio::spawn(async move { populate_namespace(&api, &name).await });
                }
                return Ok(o);
            }
            Err(StoreError::Exists(_)) if generate && attempt < 2 => {
                let g = meta_str(&o, "generateName").unwrap_or("").to_string();
                meta_mut(&mut o).insert("name".into(), json!(crate::names::generate(&g)));
            }
            Err(StoreError::Exists(_)) => {
                strategy::release(api, res, &o).await;
                return Err(ApiError::already_exists(
                    res.group,
                    res.plural,
                    meta_str(&o, "name").unwrap_or(""),
                ));
            }
            Err(e) => {
                strategy::release(api, res, &o).await;
                return Err(e.into());
            }
        }
    }
    unreachable!("the loop returns")
}

/// What every namespace has: the `default` ServiceAccount and the cluster CA bundle.
pub fn populate_namespace<'a>(
    api: &'a Arc<Api>,
    ns: &'a str,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(populate(api, ns))
}

/// Makes what every namespace has wherever it is missing: run at start, since a crash
/// between a namespace's creation and the task that makes them leaves none.
pub async fn populate_all(api: &Arc<Api>) {
    let nsr = resources::find("", "v1", "namespaces").expect("served");
    for (_, o) in api.hub.under(&nsr.prefix()) {
        if o.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        if let Some(name) = meta_str(&o, "name") {
            populate(api, name).await;
        }
    }
}

pub(super) async fn populate(api: &Arc<Api>, ns: &str) {
    let opts = WriteOpts::internal("berth-controller-manager");
    let sa = resources::find("", "v1", "serviceaccounts").expect("served");
    let _ = create_object(
        api,
        sa,
        Some(ns),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
        &opts,
        None,
    )
    .await;
    let cm = resources::find("", "v1", "configmaps").expect("served");
    let ca = api.ca_bundle.clone();
    {
        let _ = create_object(
            api,
            cm,
            Some(ns),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                   "data": {"ca.crt": ca}}),
            &opts,
            None,
        )
        .await;
    }
}

pub(super) async fn create(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
) -> Result<Response, ApiError> {
    let opts = write_opts(req, "unknown")?;
    let mut o = parse_body(req)?;
    let mut warnings = Vec::new();
    check_body(res, &mut o, &opts, &mut warnings)?;
    let out = create_object(api, res, ns, o, &opts, None).await?;
    warnings.extend(opts.take_warnings());
    Ok(with_warnings(answer(req, res, 201, &out), &warnings))
}

/// Creates an object on the server's own behalf (bootstrap); an existing one is fine.
pub async fn create_internal(
    api: &Arc<Api>,
    res: &'static Resource,
    ns: Option<&str>,
    body: Value,
) -> Result<(), ApiError> {
    let opts = WriteOpts::internal("berth-apiserver");
    match create_object(api, res, ns, body, &opts, None).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == "AlreadyExists" => Ok(()),
        Err(e) => Err(e),
    }
}
