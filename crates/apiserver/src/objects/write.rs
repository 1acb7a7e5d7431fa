//! Replacing an object: the shared step of PUT, PATCH, apply and scale, with
//! optimistic concurrency, what the system owns kept, generation, validation,
//! managedFields, and removal once an object being deleted has no finalizers left.

use std::sync::Arc;

use berth_store::{Error as StoreError, Store};
use serde_json::{json, Value};

use super::body::{answer, check_body, parse_body, with_warnings, write_opts, WriteOpts};
use super::meta::{encode, meta_mut, meta_str, set_managed, set_rv, spec_of};
use super::read::read;
use super::strategy;
use crate::request::{Request, Response};
use crate::resources::Resource;
use crate::state::Api;
use crate::status::ApiError;
use crate::{defaults, ssa, validate};

/// Replaces `cur` (at `rev`) with `new`: the shared path of PUT, PATCH and apply.
/// `sub` says which part the request may change (status: only status).
#[allow(clippy::too_many_arguments)]
pub(super) async fn replace(
    api: &Arc<Api>,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    cur: &Value,
    rev: i64,
    mut new: Value,
    sub: Option<&str>,
    opts: &WriteOpts,
    managed: Option<Value>,
) -> Result<Value, ApiError> {
    match meta_str(&new, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
        None => {
            meta_mut(&mut new).insert("name".into(), json!(name));
        }
        _ => {}
    }
    if let Some(want) = meta_str(&new, "resourceVersion").filter(|r| !r.is_empty()) {
        if want != rev.to_string() {
            return Err(ApiError::conflict(res.group, res.plural, name));
        }
    }
    if let Some(uid) = meta_str(&new, "uid").filter(|u| !u.is_empty()) {
        if Some(uid) != meta_str(cur, "uid") {
            let have = meta_str(cur, "uid").unwrap_or("");
            return Err(ApiError::uid_precondition(
                res.group, res.plural, name, uid, have,
            ));
        }
    }
    let csr = res.strategy == crate::resources::Strategy::CertificateSigningRequest;
    let mut o = match sub {
        Some(s @ ("status" | "approval")) if csr => {
            let o = crate::certificates::csr::merge(s, cur, &new);
            if let Some(user) = &opts.user {
                crate::certificates::csr::authorize(&api.authz, user, s, cur, &o)?;
            }
            o
        }
        // Status writes change only status.
        Some("status") => {
            let mut o = cur.clone();
            o["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            o
        }
        Some("finalize") => {
            let mut o = cur.clone();
            o["spec"]["finalizers"] = new
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            o
        }
        _ => {
            let mut o = new;
            if res.subresources.contains(&"status") {
                match cur.get("status") {
                    Some(s) => o["status"] = s.clone(),
                    None => {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            o
        }
    };
    strategy::prepare_update(res, cur, &mut o, sub);
    // What the system owns stays as it was.
    {
        let cm = cur.get("metadata").cloned().unwrap_or(json!({}));
        let m = meta_mut(&mut o);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
        ] {
            match cm.get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        m.remove("resourceVersion");
    }
    if sub.is_none() {
        defaults::apply(res, &mut o);
    }
    if res.has_generation() && spec_of(&o) != spec_of(cur) {
        let g = cur
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut o).insert("generation".into(), json!(g + 1));
    }
    let causes = validate::validate(res, &o, Some(cur));
    if !causes.is_empty() {
        return Err(ApiError::invalid(res.group, res.kind, name, causes));
    }
    if let Some(user) = &opts.user {
        if res.group.is_empty() && res.plural == "nodes" {
            crate::authz::restriction::check_node_labels(user, Some(cur), &o)?;
        }
    }
    if let Some(user) = opts.user.as_ref().filter(|_| sub.is_none()) {
        crate::authz::escalation::check(&api.authz, user, res, ns, &o)?;
        opts.warn(crate::podsecurity::admit(api, res, ns, name, &o, Some(cur), user).await?);
    }
    let mf = match managed {
        Some(mf) => mf,
        None => ssa::record_update(res, cur, &o, &opts.manager, sub),
    };
    set_managed(&mut o, mf);
    if unchanged(cur, &o) {
        // No change: kube answers with the object as stored, without a write.
        return Ok(cur.clone());
    }
    if opts.dry_run {
        set_rv(&mut o, rev);
        return Ok(o);
    }
    // Finalizers all gone from an object being deleted: it goes now, unless its
    // kind waits for something else (see strategy::removed_when_finalized).
    let finalizers_gone = o.pointer("/metadata/deletionTimestamp").is_some()
        && o.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    let key = res.key(ns, name);
    if finalizers_gone && strategy::removed_when_finalized(res, &o) {
        return match api.store.delete(&key, rev).await {
            Ok((_, del_rev)) => {
                set_rv(&mut o, del_rev);
                strategy::release(api, res, &o).await;
                Ok(o)
            }
            Err(StoreError::Conflict { .. }) => {
                Err(ApiError::conflict(res.group, res.plural, name))
            }
            Err(StoreError::NotFound(_)) => Err(ApiError::not_found(res.group, res.plural, name)),
            Err(e) => Err(e.into()),
        };
    }
    // Quotas: what this update adds, checked and written before the namespace's
    // next write under them.
    let mut quota_held = None;
    if let (Some(ns), Some(_), None) = (ns.filter(|_| res.namespaced), &opts.user, sub) {
        if crate::quota::grows(&api.hub, res, ns, &o, cur) {
            quota_held = Some(api.quota_gate.of(ns).lock_owned().await);
            crate::quota::admit(&api.hub, res, ns, name, &o, Some(cur))?;
        }
    }
    match api.store.update(&key, &encode(&o), rev).await {
        Ok(kv) => {
            set_rv(&mut o, kv.mod_revision);
            if let Some(held) = quota_held.take() {
                // Counted by the next admission once the hub has it.
                let _ = api.hub.wait_for(kv.mod_revision).await;
                drop(held);
            }
            Ok(o)
        }
        Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(res.group, res.plural, name)),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(res.group, res.plural, name)),
        Err(e) => Err(e.into()),
    }
}

/// Replaces an object (or, with `sub`, its status) on the server's own behalf —
/// bootstrap reconciliation, a quota's usage — if it is still at the revision of
/// `cur`.
pub async fn replace_internal(
    api: &Arc<Api>,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    cur: (&Value, i64),
    new: Value,
    sub: Option<&str>,
) -> Result<(), ApiError> {
    let opts = WriteOpts::internal("berth-apiserver");
    replace(api, res, ns, name, cur.0, cur.1, new, sub, &opts, None)
        .await
        .map(|_| ())
}

pub(super) async fn update(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
) -> Result<Response, ApiError> {
    let opts = write_opts(req, "unknown")?;
    let mut o = parse_body(req)?;
    let mut warnings = Vec::new();
    check_body(res, &mut o, &opts, &mut warnings)?;
    let (cur, rev) = read(api, res, ns, name).await?;
    let out = replace(api, res, ns, name, &cur, rev, o, sub, &opts, None).await?;
    warnings.extend(opts.take_warnings());
    Ok(with_warnings(answer(req, res, 200, &out), &warnings))
}

/// Whether `new` is `cur` but for what does not make a change on its own: the
/// resourceVersion and the timestamps of field managers. Compared in place: two deep
/// copies of both objects, stripped and compared, cost more than the rest of a
/// Lease renewal.
fn unchanged(cur: &Value, new: &Value) -> bool {
    same_objects_but(cur, new, None, &|k, a, b| match k {
        "metadata" => same_objects_but(a, b, Some("resourceVersion"), &|k, a, b| match k {
            "managedFields" => same_managed_fields(a, b),
            _ => a == b,
        }),
        _ => a == b,
    })
}

/// Whether objects `a` and `b` have the same fields, `ignored` aside, each the same
/// by `same(field, a's value, b's value)`; values that are not both objects compare
/// as they are.
fn same_objects_but(
    a: &Value,
    b: &Value,
    ignored: Option<&str>,
    same: &dyn Fn(&str, &Value, &Value) -> bool,
) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let counted = |m: &serde_json::Map<String, Value>| {
        m.len() - usize::from(ignored.is_some_and(|k| m.contains_key(k)))
    };
    counted(a) == counted(b)
        && a.iter()
            .filter(|(k, _)| Some(k.as_str()) != ignored)
            .all(|(k, av)| b.get(k).is_some_and(|bv| same(k, av, bv)))
}

fn same_managed_fields(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_array(), b.as_array()) else {
        return a == b;
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| same_objects_but(x, y, Some("time"), &|_, x, y| x == y))
}

#[cfg(test)]
mod tests {
    use super::unchanged;
    use serde_json::json;

    #[test]
    fn bookkeeping_alone_is_no_change() {
        let cur = json!({"metadata": {"name": "a", "resourceVersion": "7", "managedFields": [
            {"manager": "m", "operation": "Update", "time": "2026-01-01T00:00:00Z", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"x": 1}});
        let mut new = cur.clone();
        new["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        new["metadata"]["managedFields"][0]["time"] = json!("2026-12-07T00:00:00Z");
        assert!(unchanged(&cur, &new));
        let mut changed = new.clone();
        changed["spec"]["x"] = json!(2);
        assert!(!unchanged(&cur, &changed));
        let mut labelled = new.clone();
        labelled["metadata"]["labels"] = json!({"a": "b"});
        assert!(!unchanged(&cur, &labelled));
        let mut other_manager = new.clone();
        other_manager["metadata"]["managedFields"][0]["manager"] = json!("n");
        assert!(!unchanged(&cur, &other_manager));
        let mut no_time = new;
        no_time["metadata"]["managedFields"][0]
            .as_object_mut()
            .unwrap()
            .remove("time");
        assert!(unchanged(&cur, &no_time));
        // A field only one side has is a change.
        let mut with_status = cur.clone();
        with_status["status"] = json!({});
        assert!(!unchanged(&cur, &with_status));
    }
}
