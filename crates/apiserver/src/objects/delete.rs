//! Deletion as kube-apiserver does it: preconditions, finalizers, graceful deletion
//! of pods on nodes, orphan and foreground propagation recorded as finalizers, and
//! delete-collection. What follows a deletion (dependents collected, a namespace
//! emptied, the finalizers of propagation removed) is the controllers' work, so it
//! survives a crash: see `berth_controllers::gc` and `berth_controllers::namespace`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use berth_store::{Error as StoreError, Store};
use serde_json::{json, Value};

use super::delete_opts::{delete_opts, DeleteOpts};
use super::meta::{encode, meta_mut, meta_str, set_rv};
use super::read::read;
use super::strategy::{self, DeleteMode};
use crate::request::{Request, Response};
use crate::resources::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::Api;
use crate::status::ApiError;

pub(super) fn success_status(res: &Resource, o: &Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": meta_str(o, "name"), "group": res.group, "kind": res.plural, "uid": meta_str(o, "uid")},
    })
}

/// Deletes an object as kube does; returns what the client is answered.
pub fn delete<'a>(
    api: &'a Arc<Api>,
    res: &'static Resource,
    ns: Option<&'a str>,
    name: &'a str,
    opts: &'a DeleteOpts,
) -> Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send + 'a>> {
    Box::pin(async move {
        for attempt in 0.. {
            let (cur, rev) = read(api, res, ns, name).await?;
            check_preconditions(res, name, &cur, rev, opts)?;
            let mut finalizers: Vec<Value> = cur
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            // Propagation other than Background is recorded as a finalizer that the
            // garbage collector acts on and removes.
            let has_dependents = api.hub.has_dependents(meta_str(&cur, "uid").unwrap_or(""));
            match opts.propagation.as_str() {
                "Orphan" if has_dependents => finalizers.push(json!("orphan")),
                "Foreground" if has_dependents => finalizers.push(json!("foregroundDeletion")),
                _ => {}
            }
            finalizers.dedup();
            let mode = strategy::delete_mode(res, &cur, opts);
            if opts.dry_run {
                return Ok(cur);
            }
            if !finalizers.is_empty() || mode != DeleteMode::Now {
                let confirmed_now = strategy::confirms_graceful_delete(res, &cur, opts);
                if mode == DeleteMode::Terminate
                    && cur.pointer("/metadata/deletionTimestamp").is_some()
                    && cur
                        .pointer("/spec/finalizers")
                        .and_then(Value::as_array)
                        .is_some_and(|f| !f.is_empty())
                {
                    // As kube answers a second delete of a namespace being emptied.
                    let mut e = ApiError::conflict(res.group, res.plural, name);
                    e.message = format!("Operation cannot be fulfilled on namespaces \"{name}\": The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system.");
                    return Err(e);
                }
                if cur.pointer("/metadata/deletionTimestamp").is_some()
                    && mode != DeleteMode::Graceful
                    && !confirmed_now
                {
                    // Already being deleted: nothing more to record.
                    return Ok(cur);
                }
                let mut o = cur.clone();
                let grace = if mode == DeleteMode::Graceful {
                    opts.grace.unwrap_or_else(|| {
                        cur.pointer("/spec/terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                            .unwrap_or(30)
                    })
                } else {
                    0
                };
                let at = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(grace))
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                {
                    let m = meta_mut(&mut o);
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    if !finalizers.is_empty() {
                        m.insert("finalizers".into(), Value::Array(finalizers.clone()));
                    }
                    m.remove("resourceVersion");
                }
                if mode == DeleteMode::Terminate {
                    o["status"]["phase"] = json!("Terminating");
                }
                let key = res.key(ns, name);
                match api.store.update(&key, &encode(&o), rev).await {
                    Ok(kv) => set_rv(&mut o, kv.mod_revision),
                    Err(StoreError::Conflict { .. }) if attempt < 5 => continue,
                    Err(StoreError::Conflict { .. }) => {
                        return Err(ApiError::conflict(res.group, res.plural, name))
                    }
                    Err(e) => return Err(e.into()),
                }
                return Ok(o);
            }
            let key = res.key(ns, name);
            match api.store.delete(&key, rev).await {
                Ok((_, del_rev)) => {
                    let mut o = cur.clone();
                    set_rv(&mut o, del_rev);
                    // Its dependents are the garbage collector's: it sees the
                    // deletion in its watch, or on its first list after a crash.
                    strategy::release(api, res, &o).await;
                    return Ok(if strategy::answers_with_object(res) {
                        o
                    } else {
                        success_status(res, &o)
                    });
                }
                Err(StoreError::Conflict { .. }) if attempt < 5 => continue,
                Err(StoreError::Conflict { .. }) => {
                    return Err(ApiError::conflict(res.group, res.plural, name))
                }
                Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(res.group, res.plural, name))
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!()
    })
}

/// The uid and resourceVersion preconditions of a delete.
fn check_preconditions(
    res: &Resource,
    name: &str,
    cur: &Value,
    rev: i64,
    opts: &DeleteOpts,
) -> Result<(), ApiError> {
    if let Some(uid) = &opts.uid {
        if Some(uid.as_str()) != meta_str(cur, "uid") {
            let have = meta_str(cur, "uid").unwrap_or("");
            return Err(ApiError::uid_precondition(
                res.group, res.plural, name, uid, have,
            ));
        }
    }
    if let Some(rv) = &opts.rv {
        if *rv != rev.to_string() {
            return Err(ApiError::conflict(res.group, res.plural, name));
        }
    }
    Ok(())
}

pub(super) async fn delete_collection(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
) -> Result<Response, ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or(""), res.kind)?;
    let opts = delete_opts(req)?;
    let page = api.store.list(&res.ns_prefix(ns), 0, 0, None).await?;
    let mut items = Vec::new();
    for kv in page.items {
        let mut o = crate::hub::decode(&kv.value, kv.mod_revision);
        res.as_served(&mut o);
        if !(labels.matches(&o) && fields.matches(&o)) {
            continue;
        }
        let Some((_, ons, name)) = resources::from_key(&kv.key) else {
            continue;
        };
        match delete(api, res, ons, name, &opts).await {
            Ok(_) => items.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Response::json(
        200,
        &json!({
            "kind": res.list_kind(), "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": page.revision.to_string()}, "items": items,
        }),
    ))
}
