//! What the server knows of one served version of a custom resource, beyond what
//! every resource has (`resources::Resource`): its schema, printer columns, scale
//! paths and its definition's state. Types only: this module imports nothing else of
//! the crate, so the resource table can hold it without an import circle.

use serde_json::Value;

/// One served version of a CustomResourceDefinition.
#[derive(Debug, Clone, PartialEq)]
pub struct Custom {
    /// The definition's name (`PLURAL.GROUP`).
    pub definition: String,
    /// The definition's uid: one deleted and made again under the same name is
    /// another definition.
    pub definition_uid: String,
    /// The singular name (`spec.names.singular`).
    pub singular: String,
    /// The list kind (`spec.names.listKind`).
    pub list_kind: String,
    /// The version's structural schema (`openAPIV3Schema`), if it has one.
    pub schema: Option<Value>,
    /// Whether the schema gives defaults: objects read are defaulted too (as kube
    /// defaults what it reads from storage), so objects stored before a default was
    /// added are served with it.
    pub defaults: bool,
    /// Whether the schema has CEL rules (`x-kubernetes-validations`) to evaluate.
    pub rules: bool,
    /// The version's additional printer columns.
    pub columns: Vec<Column>,
    /// The scale subresource's paths, if served.
    pub scale: Option<ScalePaths>,
    /// Whether this version is the one objects are stored in.
    pub storage: bool,
    /// The definition is being deleted: its objects are being removed, and no new
    /// one may be created.
    pub terminating: bool,
}

/// An additional printer column (`additionalPrinterColumns[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The column's header.
    pub name: String,
    /// integer, number, string, boolean or date.
    pub kind: String,
    /// An OpenAPI format hint (`format`).
    pub format: String,
    /// What the column shows.
    pub description: String,
    /// 0: always shown; more: only with `-o wide`.
    pub priority: i64,
    /// The simple JSONPath (`.spec.replicas`) the cell is read from.
    pub json_path: String,
}

/// Where the scale subresource reads and writes replicas (`subresources.scale`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    /// `.spec.…`: the desired replicas.
    pub spec_replicas: String,
    /// `.status.…`: the observed replicas.
    pub status_replicas: String,
    /// `.status.…` or `.spec.…`: the label selector, in its string form.
    pub label_selector: Option<String>,
}

/// The segments of a simple JSONPath (`.spec.replicas` → `["spec", "replicas"]`), as
/// the scale subresource's paths are written: dot-separated field names only.
pub fn path_segments(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('.')?;
    let segs: Vec<&str> = rest.split('.').collect();
    if segs.iter().any(|s| {
        s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        return None;
    }
    Some(segs)
}

/// The value at a simple JSONPath, if there is one.
pub fn get_path<'a>(o: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = o;
    for s in path_segments(path)? {
        cur = cur.get(s)?;
    }
    Some(cur)
}

/// Sets the value at a simple JSONPath, making the objects on the way.
pub fn set_path(o: &mut Value, path: &str, v: Value) -> bool {
    let Some(segs) = path_segments(path) else {
        return false;
    };
    let mut cur = o;
    for s in &segs[..segs.len() - 1] {
        match cur.get(*s) {
            Some(v) if v.is_object() => {}
            // Something else is there: not overwritten.
            Some(_) => return false,
            None if cur.is_object() => cur[*s] = serde_json::json!({}),
            None => return false,
        }
        cur = &mut cur[*s];
    }
    if !cur.is_object() {
        return false;
    }
    cur[segs[segs.len() - 1]] = v;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn simple_paths_read_and_write_nested_fields() {
        assert_eq!(
            path_segments(".spec.replicas"),
            Some(vec!["spec", "replicas"])
        );
        for bad in ["spec.replicas", ".spec..x", ".spec[0]", "."] {
            assert_eq!(path_segments(bad), None, "{bad}");
        }
        let mut o = json!({"spec": {"replicas": 2}});
        assert_eq!(get_path(&o, ".spec.replicas"), Some(&json!(2)));
        assert!(set_path(&mut o, ".status.observed.replicas", json!(3)));
        assert_eq!(o["status"]["observed"]["replicas"], 3);
        let mut scalar = json!({"spec": 1});
        assert!(!set_path(&mut scalar, ".spec.replicas", json!(1)));
    }
}
