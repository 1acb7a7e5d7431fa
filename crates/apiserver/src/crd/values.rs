//! A custom object against its version's structural schema, as kube-apiserver treats
//! it: unknown fields pruned (and reported, for fieldValidation), defaults applied,
//! then every value validated, with kube's field paths and messages (`spec.replicas:
//! Invalid value: 15: spec.replicas in body should be less than or equal to 10`).
//!
//! Written here because no crate validates kube's structural-schema dialect of
//! OpenAPI v3 (nullable, x-kubernetes-* extensions, kube's messages): general JSON
//! Schema validators speak other drafts and other errors.

use serde_json::{Map, Value};

use crate::status::Cause;

/// The fields every object has at its root, whatever its schema says.
const ROOT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

/// A field path one field further (`spec` + `replicas`: `spec.replicas`).
pub(super) fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn is_true(s: &Value, k: &str) -> bool {
    s.get(k) == Some(&Value::Bool(true))
}

fn props(s: &Value) -> Option<&Map<String, Value>> {
    s.get("properties").and_then(Value::as_object)
}

fn extra(s: &Value) -> Option<&Value> {
    s.get("additionalProperties").filter(|a| a.is_object())
}

/// Removes the fields of `o` its schema does not have (and nulls where the schema
/// does not allow them), returning the paths of the unknown ones. `metadata` is
/// left to the caller (pruned as ObjectMeta).
pub fn prune(schema: &Value, o: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    prune_at(schema, o, "", true, &mut out);
    out
}

fn prune_at(s: &Value, v: &mut Value, path: &str, root: bool, out: &mut Vec<String>) {
    let keep_meta = root || is_true(s, "x-kubernetes-embedded-resource");
    match v {
        Value::Object(m) => {
            let preserve = is_true(s, "x-kubernetes-preserve-unknown-fields");
            let p = props(s);
            let ex = extra(s);
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if keep_meta
                    && ROOT_FIELDS.contains(&k.as_str())
                    && p.is_none_or(|p| !p.contains_key(&k))
                {
                    continue;
                }
                if root && k == "metadata" {
                    continue;
                }
                let child_schema = p.and_then(|p| p.get(&k)).or(ex);
                match child_schema {
                    Some(cs) => {
                        if m[&k].is_null() && !is_true(cs, "nullable") {
                            m.remove(&k);
                            continue;
                        }
                        if let Some(child) = m.get_mut(&k) {
                            prune_at(cs, child, &join(path, &k), false, out);
                        }
                    }
                    None if preserve => {}
                    None => {
                        m.remove(&k);
                        out.push(join(path, &k));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items").filter(|i| i.is_object()) {
                for (i, it) in items.iter_mut().enumerate() {
                    prune_at(is, it, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

/// The keys of a map-list schema (`x-kubernetes-list-type: map`) its items are
/// told apart by; empty for any other list.
pub fn map_keys(s: &Value) -> Vec<&str> {
    if s.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return Vec::new();
    }
    s.get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Whether any field of the schema has a default.
pub fn has_defaults(s: &Value) -> bool {
    let children = props(s)
        .into_iter()
        .flat_map(|p| p.values())
        .chain(extra(s))
        .chain(s.get("items").filter(|i| i.is_object()));
    s.get("default").is_some() || children.into_iter().any(has_defaults)
}

/// Fills in the defaults the schema gives for fields `o` lacks.
pub fn default(s: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(p) = props(s) {
                for (k, cs) in p {
                    if let Some(d) = cs.get("default") {
                        let absent = match m.get(k) {
                            None => true,
                            Some(Value::Null) => !is_true(cs, "nullable"),
                            Some(_) => false,
                        };
                        if absent {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                }
                for (k, child) in m.iter_mut() {
                    if let Some(cs) = p.get(k) {
                        default(cs, child);
                    }
                }
            } else if let Some(ex) = extra(s) {
                for child in m.values_mut() {
                    default(ex, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items").filter(|i| i.is_object()) {
                for it in items {
                    default(is, it);
                }
            }
        }
        _ => {}
    }
}

/// Everything wrong with `o` under its schema (apiVersion, kind and metadata are
/// checked elsewhere).
pub fn validate(schema: &Value, o: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    if let Some(m) = o.as_object() {
        object(schema, o, m, "", ROOT_FIELDS, &mut out);
    }
    out
}

/// Everything wrong with one value under its schema (a default, say), its paths
/// relative to the value.
pub fn check_value(schema: &Value, v: &Value, out: &mut Vec<Cause>) {
    check(schema, v, "", out);
}

/// The type name of a JSON value, as the schema's `type` would say it.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        _ => true,
    }
}

fn invalid(path: &str, v: &Value, why: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: path.to_string(),
        message: format!("Invalid value: {v}: {why}"),
    }
}

/// `path` as kube's messages name it ("spec.replicas in body").
fn at(path: &str) -> String {
    let p = if path.is_empty() { "body" } else { path };
    format!("{p} in body")
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn check(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() {
        if is_true(s, "nullable") {
            return;
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            out.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: path.to_string(),
                message: format!(
                    "Invalid value: \"null\": {} must be of type {t}: \"null\"",
                    at(path)
                ),
            });
        }
        return;
    }
    if is_true(s, "x-kubernetes-int-or-string") {
        if !(v.is_string() || type_ok("integer", v)) {
            let t = type_of(v);
            out.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: path.to_string(),
                message: format!(
                    "Invalid value: \"{t}\": {} must be of type integer,string: \"{t}\"",
                    at(path)
                ),
            });
            return;
        }
    } else if let Some(want) = s.get("type").and_then(Value::as_str) {
        if !type_ok(want, v) {
            let t = type_of(v);
            out.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: path.to_string(),
                message: format!(
                    "Invalid value: \"{t}\": {} must be of type {want}: \"{t}\"",
                    at(path)
                ),
            });
            return;
        }
    }
    if let Some(Value::Array(allowed)) = s.get("enum") {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            out.push(Cause {
                reason: "FieldValueNotSupported",
                field: path.to_string(),
                message: format!(
                    "Unsupported value: {v}: supported values: {}",
                    list.join(", ")
                ),
            });
        }
    }
    match v {
        Value::String(text) => string(s, v, text, path, out),
        Value::Number(_) => number(s, v, path, out),
        Value::Array(items) => array(s, v, items, path, out),
        Value::Object(m) => object(s, v, m, path, &[], out),
        _ => {}
    }
    junctions(s, v, path, out);
}

fn string(s: &Value, v: &Value, text: &str, path: &str, out: &mut Vec<Cause>) {
    let len = text.chars().count() as u64;
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
        if len > max {
            out.push(Cause {
                reason: "FieldValueTooLong",
                field: path.to_string(),
                message: format!("Too long: may not be more than {max} bytes"),
            });
        }
    }
    if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
        if len < min {
            out.push(invalid(
                path,
                v,
                format!("{} should be at least {min} chars long", at(path)),
            ));
        }
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        // The definition's patterns were checked when it was written.
        if let Some(re) = pattern(p) {
            if !re.is_match(text) {
                out.push(invalid(path, v, format!("{} should match '{p}'", at(path))));
            }
        }
    }
    if let Some(f) = s.get("format").and_then(Value::as_str) {
        let ok = match f {
            "date-time" => text.parse::<jiff::Timestamp>().is_ok(),
            "date" => text.parse::<jiff::civil::Date>().is_ok(),
            "int-or-string" => true,
            "byte" => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .is_ok()
            }
            "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
            "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
            "cidr" => text.parse::<ipnet::IpNet>().is_ok(),
            "uuid" => uuid::Uuid::parse_str(text).is_ok(),
            _ => true,
        };
        if !ok {
            out.push(invalid(
                path,
                v,
                format!("{} must be of type {f}: {v}", at(path)),
            ));
        }
    }
}

/// A schema's pattern, compiled once: kept in a cache of the patterns in use (cleared
/// when it grows past a few thousand, which only many different definitions reach).
fn pattern(p: &str) -> Option<regex::Regex> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(re) = cache.get(p) {
        return re.clone();
    }
    if cache.len() > 4096 {
        cache.clear();
    }
    let re = regex::Regex::new(p).ok();
    cache.insert(p.to_string(), re.clone());
    re
}

fn number(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(x) = num(v) else { return };
    if let Some(max) = s.get("maximum").and_then(num) {
        let exclusive = is_true(s, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let m = &s["maximum"];
            let why = if exclusive {
                format!("{} should be less than {m}", at(path))
            } else {
                format!("{} should be less than or equal to {m}", at(path))
            };
            out.push(invalid(path, v, why));
        }
    }
    if let Some(min) = s.get("minimum").and_then(num) {
        let exclusive = is_true(s, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let m = &s["minimum"];
            let why = if exclusive {
                format!("{} should be greater than {m}", at(path))
            } else {
                format!("{} should be greater than or equal to {m}", at(path))
            };
            out.push(invalid(path, v, why));
        }
    }
    if let Some(k) = s.get("multipleOf").and_then(num).filter(|k| *k > 0.0) {
        let q = x / k;
        if (q - q.round()).abs() > 1e-9 {
            out.push(invalid(
                path,
                v,
                format!("{} should be a multiple of {}", at(path), s["multipleOf"]),
            ));
        }
    }
}

fn array(s: &Value, v: &Value, items: &[Value], path: &str, out: &mut Vec<Cause>) {
    count_bounds(
        s,
        v,
        items.len(),
        ("maxItems", "minItems", "items"),
        path,
        out,
    );
    let list_type = s.get("x-kubernetes-list-type").and_then(Value::as_str);
    // Duplicates found through a set of each item's JSON: linear, whatever the list's
    // length (a pairwise scan of a large body would hold a worker for minutes).
    let mut seen = std::collections::HashSet::new();
    if list_type == Some("set") {
        for (i, it) in items.iter().enumerate() {
            if !seen.insert(it.to_string()) {
                out.push(Cause {
                    reason: "FieldValueDuplicate",
                    field: format!("{path}[{i}]"),
                    message: format!("Duplicate value: {it}"),
                });
            }
        }
    }
    if list_type == Some("map") {
        let keys = map_keys(s);
        let key_of = |it: &Value| -> Value {
            let mut k = Map::new();
            for name in &keys {
                if let Some(x) = it.get(*name) {
                    k.insert((*name).to_string(), x.clone());
                }
            }
            Value::Object(k)
        };
        for (i, k) in items.iter().map(key_of).enumerate() {
            if !seen.insert(k.to_string()) {
                out.push(Cause {
                    reason: "FieldValueDuplicate",
                    field: format!("{path}[{i}]"),
                    message: format!("Duplicate value: {k}"),
                });
            }
        }
    }
    if let Some(is) = s.get("items").filter(|i| i.is_object()) {
        for (i, it) in items.iter().enumerate() {
            check(is, it, &format!("{path}[{i}]"), out);
        }
    }
}

/// maxItems/minItems or maxProperties/minProperties: (max key, min key, what is
/// counted).
fn count_bounds(
    s: &Value,
    v: &Value,
    n: usize,
    (max_key, min_key, what): (&str, &str, &str),
    path: &str,
    out: &mut Vec<Cause>,
) {
    let n = n as u64;
    if let Some(max) = s.get(max_key).and_then(Value::as_u64) {
        if n > max {
            out.push(Cause {
                reason: "FieldValueTooMany",
                field: path.to_string(),
                message: format!("Too many: {n}: must have at most {max} items"),
            });
        }
    }
    if let Some(min) = s.get(min_key).and_then(Value::as_u64) {
        if n < min {
            out.push(invalid(
                path,
                v,
                format!("{} should have at least {min} {what}", at(path)),
            ));
        }
    }
}

/// An object's required fields, counts and properties; `skip`: fields checked
/// elsewhere (the root's apiVersion, kind and metadata).
fn object(
    s: &Value,
    v: &Value,
    m: &Map<String, Value>,
    path: &str,
    skip: &[&str],
    out: &mut Vec<Cause>,
) {
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|r| !skip.contains(r))
    {
        if !m.contains_key(r) {
            out.push(Cause::required(join(path, r)));
        }
    }
    count_bounds(
        s,
        v,
        m.keys().filter(|k| !skip.contains(&k.as_str())).count(),
        ("maxProperties", "minProperties", "properties"),
        path,
        out,
    );
    let p = props(s);
    let ex = extra(s);
    for (k, child) in m.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        if let Some(cs) = p.and_then(|p| p.get(k)).or(ex) {
            check(cs, child, &join(path, k), out);
        }
    }
}

/// allOf, anyOf, oneOf and not: in a structural schema they only add value checks.
fn junctions(s: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let passes = |sub: &Value| {
        let mut errs = Vec::new();
        check(sub, v, path, &mut errs);
        errs.is_empty()
    };
    if let Some(Value::Array(all)) = s.get("allOf") {
        for sub in all {
            check(sub, v, path, out);
        }
    }
    if let Some(Value::Array(any)) = s.get("anyOf") {
        if !any.iter().any(passes) {
            out.push(invalid(
                path,
                v,
                format!("{} must validate at least one schema (anyOf)", at(path)),
            ));
        }
    }
    if let Some(Value::Array(one)) = s.get("oneOf") {
        let n = one.iter().filter(|sub| passes(sub)).count();
        if n != 1 {
            out.push(invalid(
                path,
                v,
                format!("{} must validate one and only one schema (oneOf)", at(path)),
            ));
        }
    }
    if let Some(not) = s.get("not").filter(|n| n.is_object()) {
        if passes(not) {
            out.push(invalid(
                path,
                v,
                format!("{} must not validate the schema (not)", at(path)),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["cronSpec"], "properties": {
                "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                "image": {"type": "string", "maxLength": 5},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "few": {"type": "array", "items": {"type": "string"}, "maxItems": 1},
                "some": {"type": "object", "minProperties": 2, "additionalProperties": {"type": "integer"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "nested": {"type": "object", "default": {}, "properties": {
                    "depth": {"type": "integer", "default": 3}}}
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
        }})
    }

    fn messages(o: &Value) -> Vec<String> {
        validate(&schema(), o)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn values_are_checked_with_kubes_paths_and_messages() {
        let ok = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
                        "spec": {"cronSpec": "* * * * */5", "replicas": 3, "port": "http",
                                 "tags": ["a", "b"], "labels": {"k": "v"}}});
        assert_eq!(messages(&ok), Vec::<String>::new());
        let bad = json!({"spec": {"cronSpec": "* * * *", "replicas": 15, "image": "toolong",
                                  "mode": "c", "port": true, "tags": ["a", "a"],
                                  "labels": {"k": 1}, "few": ["a", "b"], "some": {"a": 1}},
                        "status": {"ready": "yes"}});
        let got = messages(&bad);
        for want in [
            "spec.cronSpec: Invalid value: \"* * * *\": spec.cronSpec in body should match",
            "spec.replicas: Invalid value: 15: spec.replicas in body should be less than or equal to 10",
            "spec.image: Too long: may not be more than 5 bytes",
            "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
            "spec.tags[1]: Duplicate value: \"a\"",
            "spec.few: Too many: 2: must have at most 1 items",
            "spec.some: Invalid value: {\"a\":1}: spec.some in body should have at least 2 properties",
            "spec.labels.k: Invalid value: \"integer\": spec.labels.k in body must be of type string: \"integer\"",
            "status.ready: Invalid value: \"string\": status.ready in body must be of type boolean: \"string\"",
        ] {
            assert!(got.iter().any(|g| g.starts_with(want)), "{want}\nin {got:#?}");
        }
        let missing = messages(&json!({"spec": {}}));
        assert_eq!(missing, vec!["spec.cronSpec: Required value".to_string()]);
    }

    #[test]
    fn unknown_fields_are_pruned_and_defaults_filled() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
                           "spec": {"cronSpec": "x", "typo": 1, "free": {"any": {"thing": 1}},
                                    "labels": {"a": "b"}, "mode": null},
                           "extra": true});
        let mut unknown = prune(&schema(), &mut o);
        unknown.sort();
        assert_eq!(unknown, ["extra", "spec.typo"]);
        assert_eq!(o["spec"]["free"]["any"]["thing"], 1);
        assert!(
            o["spec"].get("mode").is_none(),
            "a null the schema does not allow is dropped"
        );
        default(&schema(), &mut o);
        assert_eq!(o["spec"]["replicas"], 1);
        assert_eq!(o["spec"]["nested"]["depth"], 3);
        assert_eq!(o["metadata"]["name"], "a");
    }
}
