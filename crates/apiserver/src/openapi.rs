//! OpenAPI v3 (one document per group-version, as kubectl 1.32 reads for `explain` and
//! to learn that the server validates fields itself) and v2 (one document), generated
//! from the resource table and k8s-openapi's schemas.

use serde_json::{json, Map, Value};

use crate::resources::{self, Resource};
use crate::schema;

const WRITE_PARAMS: &[(&str, &str)] = &[
    (
        "dryRun",
        "When present, indicates that modifications should not be persisted.",
    ),
    (
        "fieldManager",
        "The name of the actor or entity making these changes.",
    ),
    (
        "fieldValidation",
        "How to handle unknown or duplicate fields: Ignore, Warn (the default) or Strict.",
    ),
];

const LIST_PARAMS: &[&str] = &[
    "labelSelector",
    "fieldSelector",
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "watch",
    "allowWatchBookmarks",
    "sendInitialEvents",
    "timeoutSeconds",
];

fn param(v3: bool, name: &str, desc: &str) -> Value {
    if v3 {
        json!({"name": name, "in": "query", "description": desc, "schema": {"type": "string", "uniqueItems": true}})
    } else {
        json!({"name": name, "in": "query", "description": desc, "type": "string", "uniqueItems": true})
    }
}

fn path_param(v3: bool, name: &str) -> Value {
    if v3 {
        json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
    } else {
        json!({"name": name, "in": "path", "required": true, "type": "string", "uniqueItems": true})
    }
}

fn schema_ref(v3: bool, name: &str) -> Value {
    if v3 {
        json!({"$ref": format!("#/components/schemas/{name}")})
    } else {
        json!({"$ref": format!("#/definitions/{name}")})
    }
}

/// The OpenAPI name of a resource's kind.
fn schema_name(r: &Resource) -> String {
    match r.custom {
        Some(_) => crate::crd::openapi::schema_name(r),
        None => (r.schema_name)().into_owned(),
    }
}

fn op(v3: bool, r: &Resource, action: &str, id: String, body: bool, params: Vec<Value>) -> Value {
    let schema = schema_ref(v3, &schema_name(r));
    let mut o = json!({
        "operationId": id,
        "parameters": params,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    });
    if v3 {
        o["responses"] = json!({"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}});
        if body {
            let body_schema = if action == "patch" {
                json!({"type": "object"})
            } else {
                schema.clone()
            };
            // Custom objects take no strategic merge patch (kubectl learns it here and
            // sends a JSON merge patch instead).
            let content = if action == "patch" && r.custom.is_some() {
                json!({"application/json-patch+json": {"schema": body_schema},
                       "application/merge-patch+json": {"schema": body_schema},
                       "application/apply-patch+yaml": {"schema": body_schema}})
            } else {
                json!({"*/*": {"schema": body_schema}})
            };
            o["requestBody"] = json!({"content": content, "required": true});
        }
    } else {
        o["responses"] = json!({"200": {"description": "OK", "schema": schema}});
        if body {
            let mut ps = o["parameters"].as_array().cloned().unwrap_or_default();
            ps.push(json!({"name": "body", "in": "body", "required": true, "schema": if action == "patch" { json!({"type": "object"}) } else { schema }}));
            o["parameters"] = Value::Array(ps);
        }
    }
    o
}

fn add_paths(v3: bool, r: &Resource, paths: &mut Map<String, Value>) {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let writes = |extra: &[&str]| -> Vec<Value> {
        WRITE_PARAMS
            .iter()
            .filter(|(n, _)| !extra.contains(n))
            .map(|(n, d)| param(v3, n, d))
            .collect()
    };
    let lists: Vec<Value> = LIST_PARAMS.iter().map(|n| param(v3, n, n)).collect();
    let id = |verb: &str, sub: &str| {
        let scope = if r.namespaced { "Namespaced" } else { "" };
        format!("{verb}{scope}{}{sub}", r.kind)
    };
    let coll = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let mut common = vec![];
    if r.namespaced {
        common.push(path_param(v3, "namespace"));
    }
    if r.backing == resources::Backing::NodeMetrics {
        let mut item_params = common.clone();
        item_params.push(path_param(v3, "name"));
        paths.insert(
            coll.clone(),
            json!({"get": op(v3, r, "list", id("list", ""), false, lists.clone()), "parameters": common}),
        );
        paths.insert(
            format!("{coll}/{{name}}"),
            json!({"get": op(v3, r, "get", id("read", ""), false, vec![]), "parameters": item_params}),
        );
        return;
    }
    if !r.from_store() {
        paths.insert(
            coll,
            json!({"post": op(v3, r, "post", id("create", ""), true, writes(&[])), "parameters": common}),
        );
        return;
    }
    paths.insert(
        coll.clone(),
        json!({
            "get": op(v3, r, "list", id("list", ""), false, lists.clone()),
            "post": op(v3, r, "post", id("create", ""), true, writes(&[])),
            "delete": op(v3, r, "deletecollection", id("deletecollection", ""), false, lists.clone()),
            "parameters": common.clone(),
        }),
    );
    let mut item_params = common.clone();
    item_params.push(path_param(v3, "name"));
    let mut patch_params = writes(&[]);
    patch_params.push(param(
        v3,
        "force",
        "Force is going to \"force\" Apply requests.",
    ));
    paths.insert(
        format!("{coll}/{{name}}"),
        json!({
            "get": op(v3, r, "get", id("read", ""), false, vec![]),
            "put": op(v3, r, "put", id("replace", ""), true, writes(&[])),
            "patch": op(v3, r, "patch", id("patch", ""), true, patch_params.clone()),
            "delete": op(v3, r, "delete", id("delete", ""), false, vec![
                param(v3, "dryRun", "dry run"), param(v3, "gracePeriodSeconds", "grace period"),
                param(v3, "propagationPolicy", "Orphan, Background or Foreground")]),
            "parameters": item_params.clone(),
        }),
    );
    if r.namespaced {
        paths.insert(
            format!("{base}/{}", r.plural),
            json!({"get": op(v3, r, "list", format!("list{}ForAllNamespaces", r.kind), false, lists)}),
        );
    }
    for sub in r.subresources.iter().filter(|s| **s == "status") {
        let t = "Status";
        paths.insert(
            format!("{coll}/{{name}}/{sub}"),
            json!({
                "get": op(v3, r, "get", id("read", t), false, vec![]),
                "put": op(v3, r, "put", id("replace", t), true, writes(&[])),
                "patch": op(v3, r, "patch", id("patch", t), true, patch_params.clone()),
                "parameters": item_params.clone(),
            }),
        );
    }
}

fn info() -> Value {
    json!({"title": "Kubernetes", "version": crate::version::VERSION})
}

/// The v3 document of one group-version.
pub fn v3_document(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&Resource> = resources::of(group, version).collect();
    if rs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for r in &rs {
        add_paths(true, r, &mut paths);
    }
    let defs = if rs.iter().any(|r| r.custom.is_some()) {
        // Built-in kinds of the same group-version (a definition may join one) keep
        // theirs.
        let mut defs = if rs.iter().any(|r| r.custom.is_none()) {
            schema::for_group_version(group, version).defs.clone()
        } else {
            Map::new()
        };
        let custom: Vec<&Resource> = rs.iter().copied().filter(|r| r.custom.is_some()).collect();
        defs.extend(crate::crd::openapi::definitions(&custom));
        defs
    } else {
        schema::for_group_version(group, version).defs.clone()
    };
    Some(json!({
        "openapi": "3.0.0",
        "info": info(),
        "paths": paths,
        "components": {"schemas": defs},
    }))
}

/// The v3 index: each group-version's document path, with a hash so clients cache.
pub fn v3_index(hash_of: impl Fn(&str, &str) -> String) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(&str, &str)> = Vec::new();
    for r in resources::all() {
        if !gvs.contains(&(r.group, r.version)) {
            gvs.push((r.group, r.version));
        }
    }
    for (g, v) in gvs {
        let p = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash_of(g, v))}),
        );
    }
    json!({"paths": paths})
}

/// The v2 document (every group-version).
pub fn v2_document() -> Value {
    let mut paths = Map::new();
    let mut defs = Map::new();
    for r in resources::RESOURCES {
        add_paths(false, r, &mut paths);
        for (k, v) in &schema::for_group_version(r.group, r.version).defs {
            defs.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let text = serde_json::to_string(&Value::Object(defs)).unwrap_or_default();
    let defs: Value =
        serde_json::from_str(&text.replace("#/components/schemas/", "#/definitions/"))
            .unwrap_or(Value::Null);
    json!({"swagger": "2.0", "info": info(), "paths": paths, "definitions": defs})
}
