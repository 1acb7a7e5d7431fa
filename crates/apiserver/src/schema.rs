//! Schemas from k8s-openapi's types (its schemars support), for the OpenAPI documents
//! and for fieldValidation: fields an object carries that its kind does not have are
//! found by walking the object against its schema, and dropped (or refused, Strict).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::resources::{Resource, RESOURCES};

/// The schemas of one group-version: every definition its kinds reach, keyed by the
/// OpenAPI name ("io.k8s.api.core.v1.Pod"), refs as `#/components/schemas/…`.
pub struct Schemas {
    /// The definitions.
    pub defs: Map<String, Value>,
}

fn build(resources: &[&Resource]) -> Schemas {
    let mut g = SchemaSettings::openapi3().into_generator();
    for r in resources {
        (r.schema)(&mut g);
    }
    let mut defs = g.take_definitions(true);
    for r in resources {
        let name = (r.schema_name)().into_owned();
        if let Some(Value::Object(s)) = defs.get_mut(&name) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": r.group, "kind": r.kind, "version": r.version}]),
            );
            // kube never requires metadata of a kind (k8s-openapi's Rust types hold
            // it unconditionally for some, e.g. SubjectAccessReview).
            if let Some(Value::Array(req)) = s.get_mut("required") {
                req.retain(|f| f != "metadata");
            }
        }
    }
    Schemas { defs }
}

/// The schemas of `group`/`version`, built once.
pub fn for_group_version(group: &str, version: &str) -> &'static Schemas {
    static ALL: OnceLock<BTreeMap<(String, String), Schemas>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let mut m: BTreeMap<(String, String), Vec<&Resource>> = BTreeMap::new();
        for r in RESOURCES {
            m.entry((r.group.to_string(), r.version.to_string()))
                .or_default()
                .push(r);
        }
        m.into_iter().map(|(k, rs)| (k, build(&rs))).collect()
    });
    all.get(&(group.to_string(), version.to_string()))
        .expect("every served group-version has schemas")
}

fn resolve<'a>(defs: &'a Map<String, Value>, s: &'a Value) -> &'a Value {
    let mut cur = s;
    for _ in 0..8 {
        if let Some(r) = cur.get("$ref").and_then(Value::as_str) {
            match r.rsplit('/').next().and_then(|n| defs.get(n)) {
                Some(d) => {
                    cur = d;
                    continue;
                }
                None => return cur,
            }
        }
        if let Some(Value::Array(all)) = cur.get("allOf") {
            if cur.get("properties").is_none() && all.len() == 1 {
                cur = &all[0];
                continue;
            }
        }
        break;
    }
    cur
}

/// Removes the fields of `v` its schema does not have, returning their paths
/// (`spec.containers[0].foo`).
pub fn prune_unknown(res: &Resource, v: &mut Value) -> Vec<String> {
    let schemas = for_group_version(res.group, res.version);
    let name = (res.schema_name)();
    let Some(root) = schemas.defs.get(name.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&schemas.defs, root, v, String::new(), &mut out);
    out
}

/// Removes the fields of an object's `metadata` that ObjectMeta does not have,
/// returning their paths (relative to metadata).
pub fn prune_object_meta(meta: &mut Value) -> Vec<String> {
    let schemas = for_group_version("", "v1");
    let Some(root) = schemas
        .defs
        .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&schemas.defs, root, meta, String::new(), &mut out);
    out
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn walk(
    defs: &Map<String, Value>,
    schema: &Value,
    v: &mut Value,
    path: String,
    out: &mut Vec<String>,
) {
    let s = resolve(defs, schema);
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && extra.is_none() {
                return; // free-form (or not an object schema): nothing to check
            }
            let mut unknown = Vec::new();
            for (k, child) in m.iter_mut() {
                match props.and_then(|p| p.get(k)).or(extra) {
                    Some(cs) => walk(defs, cs, child, join(&path, k), out),
                    None => unknown.push(k.clone()),
                }
            }
            for k in unknown {
                m.remove(&k);
                out.push(join(&path, &k));
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    walk(defs, is, it, format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_with_their_paths() {
        let res = crate::resources::find("apps", "v1", "deployments").unwrap();
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo",
                                           "resources": {"limits": {"cpu": "1"}}}]}}}
        });
        let mut unknown = prune_unknown(res, &mut d);
        unknown.sort();
        assert_eq!(
            unknown,
            ["metadata.bogus", "spec.template.spec.containers[0].imagee"]
        );
        assert!(d
            .pointer("/spec/template/spec/containers/0/imagee")
            .is_none());
        assert_eq!(
            d.pointer("/spec/template/spec/containers/0/resources/limits/cpu"),
            Some(&json!("1"))
        );
    }
}
