//! Field ownership (managedFields) and server-side apply. Every write records which
//! manager set which fields, in kube's FieldsV1 format; an apply merges the applied
//! configuration, refuses (409) to change a field another manager set to a different
//! value unless forced, and removes fields the manager applied before but no longer
//! does when nobody else owns them. Written here because no Rust crate implements
//! kube's structured-merge-diff.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::patch::{self, ListMerge, Lists};
use crate::resources::Resource;
use crate::status::{ApiError, Cause};

type Path = Vec<String>;
type Set = BTreeSet<Path>;

const SKIP_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "matchLabels",
    "data",
    "binaryData",
    "stringData",
    "nodeSelector",
    "selector",
    "limits",
    "requests",
    "capacity",
    "allocatable",
];

/// The field set of `o`: every leaf, list item and map field, as FieldsV1 path
/// elements (`f:spec`, `k:{"name":"web"}`, `v:"x"`).
fn fieldset(lists: Lists, o: &Value, status_only: Option<bool>) -> Set {
    fieldset_apart_from(lists, o, status_only, None)
}

/// [`fieldset`], leaving out the top-level fields (and metadata's fields) that are
/// the same in `other`: an update's changed and removed fields are never under
/// those, and a Lease renewal's whole objects cost far more to walk than the one
/// timestamp it changes.
fn fieldset_apart_from(
    lists: Lists,
    o: &Value,
    status_only: Option<bool>,
    other: Option<&Value>,
) -> Set {
    let mut out = Set::new();
    let Some(m) = o.as_object() else { return out };
    let same = |field: Option<&Value>, v: &Value| field.is_some_and(|f| f == v);
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        if k != "metadata" && same(other.and_then(|x| x.get(k)), v) {
            continue;
        }
        match status_only {
            Some(true) if k != "status" => continue,
            Some(false) if k == "status" => continue,
            _ => {}
        }
        let mut path = vec![format!("f:{k}")];
        let mut names = vec![k.as_str()];
        if k == "metadata" {
            if let Some(mm) = v.as_object() {
                for (mk, mv) in mm {
                    if SKIP_META.contains(&mk.as_str()) {
                        continue;
                    }
                    let theirs = other
                        .and_then(|x| x.get("metadata"))
                        .and_then(|x| x.get(mk));
                    if same(theirs, mv) {
                        continue;
                    }
                    path.push(format!("f:{mk}"));
                    names.push(mk);
                    walk(lists, mv, &mut path, &mut names, &mut out);
                    path.pop();
                    names.pop();
                }
            }
            continue;
        }
        walk(lists, v, &mut path, &mut names, &mut out);
    }
    out
}

fn walk<'a>(lists: Lists, v: &'a Value, path: &mut Path, names: &mut Vec<&'a str>, out: &mut Set) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            if names.last().is_some_and(|n| MAP_FIELDS.contains(n)) {
                out.insert(path.clone());
            }
            fields(lists, m, path, names, out);
        }
        Value::Array(items) => match lists.merge(names) {
            ListMerge::Keys(keys) => {
                for it in items {
                    let mut km = Map::new();
                    for key in &keys {
                        if let Some(kv) = it.get(*key) {
                            km.insert((*key).into(), kv.clone());
                        }
                    }
                    if km.is_empty() {
                        out.insert(path.clone());
                        return;
                    }
                    // Built-in ports merge by port number and protocol.
                    let ports = keys == ["containerPort"] || keys == ["port"];
                    if ports && matches!(lists, Lists::BuiltIn(_)) {
                        if let Some(p) = it.get("protocol") {
                            km.insert("protocol".into(), p.clone());
                        }
                    }
                    path.push(format!("k:{}", Value::Object(km)));
                    out.insert(path.clone());
                    if let Some(m) = it.as_object() {
                        fields(lists, m, path, names, out);
                    }
                    path.pop();
                }
            }
            ListMerge::Set => {
                for it in items {
                    path.push(format!("v:{it}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListMerge::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Each field of an object, one path element further.
fn fields<'a>(
    lists: Lists,
    m: &'a Map<String, Value>,
    path: &mut Path,
    names: &mut Vec<&'a str>,
    out: &mut Set,
) {
    for (k, c) in m {
        path.push(format!("f:{k}"));
        names.push(k);
        walk(lists, c, path, names, out);
        path.pop();
        names.pop();
    }
}

/// The value at a field path.
fn value_at<'a>(o: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = o;
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur.as_array()?.iter().find(|it| {
                key.iter().all(|(kk, kv)| {
                    it.get(kk) == Some(kv)
                        || (kk == "protocol" && it.get(kk).is_none() && kv == "TCP")
                })
            })?;
        } else if let Some(v) = el.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|it| **it == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes the field at `path` from `o`.
fn remove_at(o: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = o;
    for el in parent {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|it| key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
        if let Some(a) = cur.as_array_mut() {
            a.retain(|it| !key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).unwrap_or(Value::Null);
        if let Some(a) = cur.as_array_mut() {
            a.retain(|it| *it != want);
        }
    }
}

/// FieldsV1 JSON of a set.
fn encode(set: &Set) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for el in p {
            cur = cur
                .entry(el.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("field set nodes are objects");
        }
        let has_children = set.iter().any(|q| q.len() > p.len() && q.starts_with(p));
        if has_children {
            cur.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

/// The set a FieldsV1 JSON describes.
fn decode(v: &Value) -> Set {
    fn go(v: &Value, path: &mut Path, out: &mut Set) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() {
            out.insert(path.clone());
            return;
        }
        for (k, c) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            go(c, path, out);
            path.pop();
        }
    }
    let mut out = Set::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    set: Set,
}

fn entries(o: &Value) -> Vec<Entry> {
    o.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            operation: e
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("Update")
                .into(),
            api_version: e
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            time: e.get("time").and_then(Value::as_str).unwrap_or("").into(),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_string),
            set: e.get("fieldsV1").map(decode).unwrap_or_default(),
        })
        .collect()
}

fn render(list: &[Entry]) -> Value {
    Value::Array(
        list.iter()
            .filter(|e| !e.set.is_empty())
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": encode(&e.set),
                });
                if let Some(s) = &e.subresource {
                    v["subresource"] = json!(s);
                }
                v
            })
            .collect(),
    )
}

fn status_scope(res: &Resource, sub: Option<&str>) -> Option<bool> {
    if !res.subresources.contains(&"status") {
        return None;
    }
    Some(sub == Some("status"))
}

/// The managedFields after `manager` changed `old` into `new` with an ordinary write
/// (create, update, patch): changed fields move to the manager.
pub fn record_update(
    res: &Resource,
    old: &Value,
    new: &Value,
    manager: &str,
    sub: Option<&str>,
) -> Value {
    let scope = status_scope(res, sub);
    let before = fieldset_apart_from(Lists::of(res), old, scope, Some(new));
    let after = fieldset_apart_from(Lists::of(res), new, scope, Some(old));
    let changed: Set = after
        .iter()
        .filter(|p| value_at(old, p) != value_at(new, p) || !before.contains(*p))
        .cloned()
        .collect();
    let removed: Set = before.difference(&after).cloned().collect();
    let mut list = entries(old);
    for e in list.iter_mut() {
        e.set.retain(|p| !removed.contains(p));
        if !(e.manager == manager && e.operation == "Update") {
            e.set.retain(|p| !changed.contains(p));
        }
    }
    let sub_name = sub.map(str::to_string);
    let now = crate::objects::meta::now();
    match list
        .iter_mut()
        .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub_name)
    {
        Some(e) => {
            if !changed.is_empty() {
                e.time = now;
            }
            e.set.extend(changed);
        }
        None if !changed.is_empty() => list.push(Entry {
            manager: manager.into(),
            operation: "Update".into(),
            api_version: res.api_version(),
            time: now,
            subresource: sub_name,
            set: changed,
        }),
        None => {}
    }
    render(&list)
}

fn display(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(a, b)| format!("{a}={b}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// Server-side apply of `applied` by `manager` onto `live` (Null: a create): the
/// merged object and its managedFields, or 409 with the conflicting fields.
pub fn apply(
    res: &Resource,
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    sub: Option<&str>,
) -> Result<(Value, Value), ApiError> {
    let scope = status_scope(res, sub);
    let fa = fieldset(Lists::of(res), applied, scope);
    let mut list = entries(live);
    // (manager with its subresource, apiVersion, path)
    let mut conflicts: Vec<(String, String, Path)> = Vec::new();
    for e in &list {
        if e.manager == manager && e.operation == "Apply" {
            continue;
        }
        for p in e.set.intersection(&fa) {
            let (a, l) = (value_at(applied, p), value_at(live, p));
            let leaf = a.is_some_and(|v| !v.is_object() && !v.is_array())
                || a.is_some_and(|v| v.is_array());
            if leaf && a != l {
                let who = match &e.subresource {
                    Some(sr) => format!("\"{}\" with subresource \"{sr}\"", e.manager),
                    None => format!("\"{}\"", e.manager),
                };
                conflicts.push((who, e.api_version.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            let n = conflicts.len();
            let mut msg = format!(
                "Apply failed with {n} conflict{}: ",
                if n == 1 { "" } else { "s" }
            );
            let parts: Vec<String> = conflicts
                .iter()
                .map(|(m, av, p)| format!("conflict with {m} using {av}: {}", display(p)))
                .collect();
            msg.push_str(&parts.join("\n"));
            let mut e = ApiError::new(409, "Conflict", msg);
            e.causes = conflicts
                .iter()
                .map(|(m, av, p)| Cause {
                    reason: "FieldManagerConflict",
                    field: display(p),
                    message: format!("conflict with {m} using {av}"),
                })
                .collect();
            return Err(e);
        }
        for e in list.iter_mut() {
            let who = match &e.subresource {
                Some(sr) => format!("\"{}\" with subresource \"{sr}\"", e.manager),
                None => format!("\"{}\"", e.manager),
            };
            e.set
                .retain(|p| !conflicts.iter().any(|(m, _, cp)| *m == who && cp == p));
        }
    }
    let prev: Set = list
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply")
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let mut merged = if live.is_null() {
        json!({})
    } else {
        live.clone()
    };
    for p in prev.difference(&fa) {
        let owned_elsewhere = list
            .iter()
            .any(|e| !(e.manager == manager && e.operation == "Apply") && e.set.contains(p));
        if !owned_elsewhere {
            remove_at(&mut merged, p);
        }
    }
    let mut body = applied.clone();
    if scope == Some(true) {
        body = json!({"status": applied.get("status").cloned().unwrap_or(Value::Null)});
    }
    patch::strategic(&mut merged, &body, Lists::of(res))
        .map_err(|e| ApiError::new(422, "Invalid", e.0))?;
    list.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    list.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: res.api_version(),
        time: crate::objects::meta::now(),
        subresource: sub.map(str::to_string),
        set: fa,
    });
    Ok((merged, render(&list)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> &'static Resource {
        crate::resources::find("apps", "v1", "deployments").unwrap()
    }

    #[test]
    fn fields_v1_round_trips() {
        let o = json!({"metadata": {"name": "x", "labels": {"a": "b"}},
                       "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let s = fieldset(Lists::BuiltIn("Deployment"), &o, Some(false));
        let enc = encode(&s);
        assert_eq!(enc["f:metadata"]["f:labels"], json!({".": {}, "f:a": {}}));
        assert!(
            enc["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]
                .get("f:image")
                .is_some()
        );
        assert_eq!(decode(&enc), s);
    }

    #[test]
    fn apply_conflicts_unless_forced_and_prunes_dropped_fields() {
        let r = deploy();
        let a1 = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "1"}}, "spec": {"replicas": 2}});
        let (o, mf) = apply(r, &Value::Null, &a1, "alice", false, None).unwrap();
        let mut live = o;
        live["metadata"]["managedFields"] = mf;
        // bob changes replicas with an ordinary update: he owns it now
        let mut upd = live.clone();
        upd["spec"]["replicas"] = json!(5);
        let mf = record_update(r, &live, &upd, "bob", None);
        upd["metadata"]["managedFields"] = mf;
        let err = apply(r, &upd, &a1, "alice", false, None).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"bob\""),
            "{}",
            err.message
        );
        assert_eq!(err.causes[0].field, ".spec.replicas");
        // alice drops label b and forces replicas
        let a2 = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"replicas": 3}});
        let (o, _) = apply(r, &upd, &a2, "alice", true, None).unwrap();
        assert_eq!(o["spec"]["replicas"], 3);
        assert_eq!(o["metadata"]["labels"], json!({"a": "1"}));
    }
}
