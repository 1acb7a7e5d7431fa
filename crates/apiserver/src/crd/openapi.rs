//! The OpenAPI v3 schemas of custom resources, as kube publishes them for a custom
//! group-version: each kind's structural schema (apiVersion, kind and metadata
//! added, metadata an ObjectMeta), its list, and the meta.k8s.io definitions they
//! refer to — what `kubectl explain` reads.

use serde_json::{json, Map, Value};

use crate::resources::Resource;
use crate::schema;

/// The OpenAPI name of a custom kind: its group reversed, then version and kind
/// (`com.example.stable.v1.CronTab`).
pub fn schema_name(r: &Resource) -> String {
    let group: Vec<&str> = r.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), r.version, r.kind)
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

fn meta_ref(name: &str) -> Value {
    json!({"allOf": [{"$ref": format!("#/components/schemas/{META}{name}")}]})
}

/// The definitions of the custom resources `rs` (all of one group-version).
pub fn definitions(rs: &[&Resource]) -> Map<String, Value> {
    let mut defs = Map::new();
    for (k, v) in &schema::for_group_version("", "v1").defs {
        if k.starts_with(META) {
            defs.insert(k.clone(), v.clone());
        }
    }
    for r in rs {
        let Some(c) = r.custom else { continue };
        let mut s = c.schema.clone().unwrap_or(json!({"type": "object",
            "x-kubernetes-preserve-unknown-fields": true}));
        let props = s
            .as_object_mut()
            .map(|m| m.entry("properties").or_insert_with(|| json!({})));
        if let Some(Value::Object(p)) = props {
            p.insert("apiVersion".into(), json!({"type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values."}));
            p.insert("kind".into(), json!({"type": "string",
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to."}));
            let mut meta = meta_ref("ObjectMeta");
            meta["description"] = json!("Standard object's metadata.");
            p.insert("metadata".into(), meta);
        }
        let gvk = json!([{"group": r.group, "kind": r.kind, "version": r.version}]);
        s["x-kubernetes-group-version-kind"] = gvk;
        let name = schema_name(r);
        let list_gvk = json!([{"group": r.group, "kind": c.list_kind, "version": r.version}]);
        defs.insert(
            format!("{name}List"),
            json!({"type": "object", "required": ["items"],
                   "description": format!("{} is a list of {}", c.list_kind, r.kind),
                   "properties": {
                       "apiVersion": {"type": "string"},
                       "kind": {"type": "string"},
                       "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}},
                       "metadata": meta_ref("ListMeta")},
                   "x-kubernetes-group-version-kind": list_gvk}),
        );
        defs.insert(name, s);
    }
    defs
}
