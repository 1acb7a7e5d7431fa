//! The three PATCH formats: JSON patch (RFC 6902) and JSON merge patch (RFC 7386) from
//! the json-patch crate, and kube's strategic merge patch, written here because no
//! crate has it: lists of the built-in types merge by their keys (containers by name,
//! ports by containerPort, ...) and patches carry directives (`$patch`,
//! `$retainKeys`, `$setElementOrder/…`, `$deleteFromPrimitiveList/…`).

use serde_json::{Map, Value};

/// A patch failure: a message for a 422/400.
#[derive(Debug)]
pub struct PatchError(pub String);

impl From<PatchError> for crate::status::ApiError {
    fn from(e: PatchError) -> Self {
        crate::status::ApiError::new(422, "Invalid", e.0)
    }
}

/// A PATCH body's format other than server-side apply, by its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// application/json-patch+json
    Json,
    /// application/merge-patch+json
    Merge,
    /// application/strategic-merge-patch+json
    Strategic,
}

impl Format {
    /// The format a media type names; kube's 415 for any other.
    pub fn of(media_type: &str) -> Result<Format, crate::status::ApiError> {
        match media_type {
            "application/json-patch+json" => Ok(Format::Json),
            "application/merge-patch+json" => Ok(Format::Merge),
            "application/strategic-merge-patch+json" => Ok(Format::Strategic),
            other => Err(crate::status::ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
            )),
        }
    }

    /// Applies `patch` to `doc`, an object of `kind` (strategic merge keys by it).
    pub fn apply(self, doc: &mut Value, patch: &Value, kind: &str) -> Result<(), PatchError> {
        match self {
            Format::Json => json_patch(doc, patch),
            Format::Merge => merge_patch(doc, patch),
            Format::Strategic => strategic(doc, patch, Lists::BuiltIn(kind)),
        }
    }
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(doc, &p).map_err(|e| PatchError(format!("the JSON patch failed: {e}")))
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    if !patch.is_object() {
        return Err(PatchError("a merge patch must be a JSON object".into()));
    }
    json_patch::merge(doc, patch);
    Ok(())
}

/// How a list merges with another version of itself.
#[derive(Debug, PartialEq)]
pub enum ListMerge<'a> {
    /// Items are matched by these fields (a map-list; kube's patchMergeKey).
    Keys(Vec<&'a str>),
    /// Primitive items, merged as a set.
    Set,
    /// The list is replaced whole.
    Atomic,
}

/// Where an object's list shapes come from: the built-in kinds' merge keys (by
/// kind and field), or a custom resource's schema (`x-kubernetes-list-type` and
/// `x-kubernetes-list-map-keys`; metadata as ObjectMeta).
#[derive(Clone, Copy)]
pub enum Lists<'a> {
    /// An object of this built-in kind.
    BuiltIn(&'a str),
    /// A custom object under this schema.
    Schema(&'a Value),
}

impl<'a> Lists<'a> {
    /// The list shapes of `res`'s objects.
    pub fn of(res: &'a crate::resources::Resource) -> Lists<'a> {
        match res.custom.and_then(|c| c.schema.as_ref()) {
            Some(s) => Lists::Schema(s),
            None => Lists::BuiltIn(res.kind),
        }
    }

    /// How the list at field path `path` (field names, no indexes) merges.
    pub fn merge(self, path: &[&str]) -> ListMerge<'a> {
        let builtin = |kind: &str| {
            if primitive_merge(path) {
                ListMerge::Set
            } else {
                merge_key(kind, path).map_or(ListMerge::Atomic, |k| ListMerge::Keys(vec![k]))
            }
        };
        match self {
            Lists::BuiltIn(kind) => builtin(kind),
            Lists::Schema(_) if path.first() == Some(&"metadata") => builtin(""),
            Lists::Schema(s) => {
                let Some(node) = schema_at(s, path) else {
                    return ListMerge::Atomic;
                };
                match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => ListMerge::Keys(crate::crd::values::map_keys(node)),
                    Some("set") => ListMerge::Set,
                    _ => ListMerge::Atomic,
                }
            }
        }
    }
}

/// The schema node at field path `path` (through lists' items as it goes).
fn schema_at<'a>(s: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut node = s;
    for name in path {
        if let Some(items) = node.get("items") {
            node = items;
        }
        node = node
            .get("properties")
            .and_then(|p| p.get(*name))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?;
    }
    Some(node)
}

/// The key a list of the built-in types merges by, from the list's field name and
/// where it sits (kube's `patchMergeKey` struct tags).
fn merge_key(kind: &str, path: &[&str]) -> Option<&'static str> {
    let field = *path.last()?;
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "env"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "addresses" if kind == "Node" => "type",
        "ports" if path.iter().any(|p| p.ends_with("ontainers")) => "containerPort",
        "ports" if kind == "Service" && path == ["spec", "ports"] => "port",
        _ => return None,
    })
}

/// Lists of primitives merged as sets (`patchStrategy:"merge"`).
fn primitive_merge(path: &[&str]) -> bool {
    matches!(path, ["metadata", "finalizers"])
}

/// Applies a strategic merge patch, lists merging as `lists` says.
pub fn strategic(doc: &mut Value, patch: &Value, lists: Lists) -> Result<(), PatchError> {
    if !patch.is_object() {
        return Err(PatchError(
            "a strategic merge patch must be a JSON object".into(),
        ));
    }
    let mut path = Vec::new();
    if let Some(v) = merge_value(Some(doc.take()), patch, lists, &mut path)? {
        *doc = v;
    }
    Ok(())
}

fn merge_value(
    orig: Option<Value>,
    patch: &Value,
    lists: Lists,
    path: &mut Vec<String>,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(pm) => {
            match pm.get("$patch").and_then(Value::as_str) {
                Some("delete") => return Ok(None),
                Some("replace") => {
                    let mut m = pm.clone();
                    m.remove("$patch");
                    return Ok(Some(Value::Object(strip_directives(m))));
                }
                Some("merge") | None => {}
                Some(other) => {
                    return Err(PatchError(format!(
                        "unknown patch type {other:?} in $patch"
                    )))
                }
            }
            let mut om = match orig {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            for (k, pv) in pm {
                if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
                    continue;
                }
                if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    let gone = pv.as_array().cloned().unwrap_or_default();
                    if let Some(Value::Array(list)) = om.get_mut(field) {
                        list.retain(|x| !gone.contains(x));
                    }
                    continue;
                }
                if pv.is_null() {
                    om.remove(k);
                    continue;
                }
                path.push(k.clone());
                let merged = match (om.remove(k), pv) {
                    (Some(Value::Array(ol)), Value::Array(pl)) => {
                        Some(merge_list(ol, pl, lists, path)?)
                    }
                    (o, pv @ Value::Object(_)) => merge_value(o, pv, lists, path)?,
                    (None, Value::Array(pl)) => Some(merge_list(Vec::new(), pl, lists, path)?),
                    (_, pv) => Some(pv.clone()),
                };
                path.pop();
                if let Some(v) = merged {
                    om.insert(k.clone(), v);
                }
            }
            if let Some(keep) = pm.get("$retainKeys").and_then(Value::as_array) {
                let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
                om.retain(|k, _| keep.contains(&k.as_str()));
            }
            Ok(Some(Value::Object(om)))
        }
        other => Ok(Some(other.clone())),
    }
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    m
}

fn merge_list(
    mut orig: Vec<Value>,
    patch: &[Value],
    lists: Lists,
    path: &mut Vec<String>,
) -> Result<Value, PatchError> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    if patch
        .iter()
        .any(|x| x.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let rest: Vec<Value> = patch
            .iter()
            .filter(|x| x.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(Value::Array(rest));
    }
    let keys = match lists.merge(&p) {
        ListMerge::Set => {
            for x in patch {
                if !orig.contains(x) {
                    orig.push(x.clone());
                }
            }
            return Ok(Value::Array(orig));
        }
        ListMerge::Atomic => {
            // Atomic lists are replaced; elements lose their directives.
            return Ok(Value::Array(
                patch
                    .iter()
                    .map(|x| match x {
                        Value::Object(m) => Value::Object(strip_directives(m.clone())),
                        other => other.clone(),
                    })
                    .collect(),
            ));
        }
        ListMerge::Keys(keys) => keys,
    };
    // An item's identity: its key fields' values (an absent optional key is part of
    // it as absent).
    let id =
        |x: &Value| -> Vec<Option<Value>> { keys.iter().map(|k| x.get(*k).cloned()).collect() };
    for item in patch {
        if keys.iter().all(|k| item.get(*k).is_none()) {
            return Err(PatchError(format!(
                "map: {item} does not contain declared merge key: {}",
                keys.join(",")
            )));
        }
        let want = id(item);
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            orig.retain(|o| id(o) != want);
            continue;
        }
        match orig.iter().position(|o| id(o) == want) {
            Some(i) => {
                let o = orig[i].take();
                match merge_value(Some(o), item, lists, path)? {
                    Some(v) => orig[i] = v,
                    None => {
                        orig.remove(i);
                    }
                }
            }
            None => {
                if let Some(v) = merge_value(None, item, lists, path)? {
                    orig.push(v);
                }
            }
        }
    }
    Ok(Value::Array(orig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y:1"}]}}}});
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x:2", "env": [{"name": "B", "value": "2"}]},
            {"name": "b", "$patch": "delete"}]}}}});
        strategic(&mut d, &p, Lists::BuiltIn("Deployment")).unwrap();
        let cs = d.pointer("/spec/template/spec/containers").unwrap();
        assert_eq!(cs.as_array().unwrap().len(), 1);
        assert_eq!(cs[0]["image"], "x:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn directives_and_atomic_lists() {
        let mut d = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
                           "spec": {"tolerations": [{"key": "k"}], "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"metadata": {"finalizers": ["b"], "labels": {"x": null},
                                    "$deleteFromPrimitiveList/finalizers": ["a"]},
                       "spec": {"tolerations": [{"key": "j"}],
                                "strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        strategic(&mut d, &p, Lists::BuiltIn("Deployment")).unwrap();
        assert_eq!(d["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(d["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(d["spec"]["tolerations"], json!([{"key": "j"}]));
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let mut d = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
        strategic(
            &mut d,
            &json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}),
            Lists::BuiltIn("Service"),
        )
        .unwrap();
        assert_eq!(d["spec"]["ports"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn custom_lists_merge_as_their_schema_says() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "routes": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["host", "port"],
                "items": {"type": "object", "properties": {
                    "host": {"type": "string"}, "port": {"type": "integer"},
                    "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}},
            "conditions": {"type": "array", "items": {"type": "object"}}}}}});
        let lists = Lists::Schema(&s);
        assert_eq!(
            lists.merge(&["spec", "routes"]),
            ListMerge::Keys(vec!["host", "port"])
        );
        assert_eq!(lists.merge(&["spec", "routes", "tags"]), ListMerge::Set);
        // Without a list type a custom list is atomic, whatever its name.
        assert_eq!(lists.merge(&["spec", "conditions"]), ListMerge::Atomic);
        assert_eq!(lists.merge(&["metadata", "finalizers"]), ListMerge::Set);
        let mut d = json!({"spec": {
            "routes": [{"host": "a", "port": 80, "tags": ["x"]}, {"host": "a", "port": 443}],
            "conditions": [{"type": "Ready"}]}});
        strategic(
            &mut d,
            &json!({"spec": {
            "routes": [{"host": "a", "port": 80, "tags": ["y"]}, {"host": "b", "port": 80}],
            "conditions": [{"type": "Synced"}]}}),
            lists,
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"spec": {
                "routes": [{"host": "a", "port": 80, "tags": ["x", "y"]}, {"host": "a", "port": 443}, {"host": "b", "port": 80}],
                "conditions": [{"type": "Synced"}]}})
        );
    }
}
