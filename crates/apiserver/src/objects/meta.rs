//! Metadata helpers every step of the object path uses: the time in kube's format,
//! the stored encoding, and reading and writing `metadata` fields.

use serde_json::{json, Map, Value};

/// The time now in kube's format (RFC 3339, seconds, UTC).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(crate) fn encode(o: &Value) -> Vec<u8> {
    let mut o = o.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

pub(super) fn set_rv(o: &mut Value, rv: i64) {
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

/// The resourceVersion an object carries (0 if none).
pub(super) fn revision_of(o: &Value) -> i64 {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn meta_str<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o.get("metadata")
        .and_then(|m| m.get(k))
        .and_then(Value::as_str)
}

pub(super) fn meta_mut(o: &mut Value) -> &mut Map<String, Value> {
    if !o.get("metadata").is_some_and(Value::is_object) {
        o["metadata"] = json!({});
    }
    o.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata is an object")
}

/// Sets managedFields, leaving none rather than an empty list.
pub(super) fn set_managed(o: &mut Value, mf: Value) {
    if mf.as_array().is_some_and(Vec::is_empty) {
        meta_mut(o).remove("managedFields");
    } else {
        meta_mut(o).insert("managedFields".into(), mf);
    }
}

/// The parts of an object that count as its spec, for metadata.generation.
pub(super) fn spec_of(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_has_no_resource_version_and_empty_managed_fields_go() {
        let o = json!({"metadata": {"name": "a", "resourceVersion": "5", "selfLink": "/x"}, "data": {}});
        let stored: Value = serde_json::from_slice(&encode(&o)).unwrap();
        assert_eq!(stored, json!({"metadata": {"name": "a"}, "data": {}}));
        let mut o = json!({"metadata": {"name": "a", "managedFields": [{"manager": "m"}]}});
        set_managed(&mut o, json!([]));
        assert!(o["metadata"].get("managedFields").is_none());
        set_rv(&mut o, 12);
        assert_eq!(meta_str(&o, "resourceVersion"), Some("12"));
        // Only what is not metadata or status counts as spec.
        let a = json!({"metadata": {"generation": 1}, "spec": {"x": 1}, "status": {"y": 1}});
        let b = json!({"metadata": {"generation": 2}, "spec": {"x": 1}, "status": {"y": 2}});
        assert_eq!(spec_of(&a), spec_of(&b));
    }
}
