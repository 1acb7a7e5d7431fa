//! Whether a definition's schema is structural, as kube requires of
//! apiextensions.k8s.io/v1 definitions: every node says its type (unless it keeps
//! unknown fields or is int-or-string), the root is an object, `metadata` restricts
//! nothing but name and generateName, no `$ref`, properties and additionalProperties
//! not both, allOf/anyOf/oneOf/not only add value checks, patterns compile, and
//! every default is valid under its own schema.

use serde_json::Value;

use super::values;
use crate::status::Cause;

/// What junctors (allOf, anyOf, oneOf, not) may not say: they only validate.
const NOT_IN_JUNCTORS: &[&str] = &[
    "type",
    "default",
    "nullable",
    "additionalProperties",
    "description",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    super::cel::RULES,
];

/// Everything that keeps `schema` (at field path `path`) from being structural.
pub fn check(schema: &Value, path: &str, out: &mut Vec<Cause>) {
    if !schema.is_object() {
        out.push(Cause::invalid(path, "", "must be an object"));
        return;
    }
    let root_type = schema.get("type").and_then(Value::as_str);
    if root_type != Some("object") && !preserves(schema) {
        out.push(Cause::invalid(
            format!("{path}.type"),
            root_type.unwrap_or(""),
            "must be object at the root",
        ));
    }
    if let Some(meta) = schema.pointer("/properties/metadata") {
        let p = format!("{path}.properties[metadata]");
        let allowed = ["type", "properties", "description"];
        if meta
            .as_object()
            .is_some_and(|m| m.keys().any(|k| !allowed.contains(&k.as_str())))
            || meta
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.keys().any(|k| k != "name" && k != "generateName"))
        {
            out.push(Cause::forbidden(
                p,
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }
    node(schema, path, Junctor::No, out);
}

/// Where a schema node sits.
#[derive(Clone, Copy, PartialEq)]
enum Junctor {
    /// Not under allOf, anyOf, oneOf or not.
    No,
    /// Under one of them.
    Yes,
    /// Under one of them of an int-or-string node, where kube allows naming the two
    /// types (`anyOf: [{type: integer}, {type: string}]`, as IntOrString fields are
    /// generated).
    IntOrString,
}

fn preserves(s: &Value) -> bool {
    s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
}

fn node(s: &Value, path: &str, junctor: Junctor, out: &mut Vec<Cause>) {
    let in_junctor = junctor != Junctor::No;
    let Some(m) = s.as_object() else {
        out.push(Cause::invalid(path, "", "must be a schema object"));
        return;
    };
    if m.contains_key("$ref") {
        out.push(Cause::forbidden(
            format!("{path}.$ref"),
            "$ref is not supported",
        ));
    }
    if in_junctor {
        for k in NOT_IN_JUNCTORS {
            let typed = *k == "type"
                && junctor == Junctor::IntOrString
                && matches!(
                    s.get("type").and_then(Value::as_str),
                    Some("integer" | "string")
                );
            if m.contains_key(*k) && !typed {
                out.push(Cause::forbidden(
                    format!("{path}.{k}"),
                    &format!("must not be used inside of allOf, anyOf, oneOf or not (they may only validate): {k}"),
                ));
            }
        }
    } else {
        let int_or_string = s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        match s.get("type").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => {
                if !["object", "array", "string", "integer", "number", "boolean"].contains(&t) {
                    out.push(Cause::not_supported(
                        format!("{path}.type"),
                        t,
                        &["array", "boolean", "integer", "number", "object", "string"],
                    ));
                }
                if int_or_string {
                    out.push(Cause::forbidden(
                        format!("{path}.type"),
                        "must be empty if x-kubernetes-int-or-string is true",
                    ));
                }
            }
            _ if int_or_string || preserves(s) => {}
            _ => out.push(Cause::required_because(
                format!("{path}.type"),
                "must not be empty for specified object fields",
            )),
        }
    }
    if !in_junctor {
        super::cel::check_rules(s, path, out);
        list_type(s, path, out);
    }
    if m.contains_key("properties") && m.contains_key("additionalProperties") {
        out.push(Cause::forbidden(
            format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if m.get("uniqueItems") == Some(&Value::Bool(true)) {
        out.push(Cause::forbidden(
            format!("{path}.uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if m.get("additionalProperties") == Some(&Value::Bool(true)) {
        out.push(Cause::forbidden(
            format!("{path}.additionalProperties"),
            "must not be true: use x-kubernetes-preserve-unknown-fields: true instead",
        ));
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        if let Err(e) = regex::Regex::new(p) {
            out.push(Cause::invalid(
                format!("{path}.pattern"),
                p,
                format!("must be a valid regular expression: {e}"),
            ));
        }
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            node(child, &format!("{path}.properties[{k}]"), junctor, out);
        }
    }
    if let Some(ex) = s.get("additionalProperties").filter(|a| a.is_object()) {
        node(ex, &format!("{path}.additionalProperties"), junctor, out);
    }
    match s.get("items") {
        Some(Value::Array(_)) => out.push(Cause::forbidden(
            format!("{path}.items"),
            "items must be a schema object and not an array",
        )),
        Some(is) => node(is, &format!("{path}.items"), junctor, out),
        None if s.get("type").and_then(Value::as_str) == Some("array") && !in_junctor => out.push(
            Cause::required_because(format!("{path}.items"), "must be specified"),
        ),
        None => {}
    }
    let inner = if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || junctor == Junctor::IntOrString
    {
        Junctor::IntOrString
    } else {
        Junctor::Yes
    };
    for j in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = s.get(j) {
            for (i, sub) in subs.iter().enumerate() {
                node(sub, &format!("{path}.{j}[{i}]"), inner, out);
            }
        }
    }
    if let Some(not) = s.get("not") {
        node(not, &format!("{path}.not"), Junctor::Yes, out);
    }
    if let Some(d) = s.get("default") {
        if !in_junctor {
            let mut pruned = d.clone();
            let dropped = values::prune(s, &mut pruned);
            if !dropped.is_empty() {
                out.push(Cause::invalid(
                    format!("{path}.default"),
                    &d.to_string(),
                    format!("must not have unknown fields: {}", dropped.join(", ")),
                ));
            }
            let mut errs = Vec::new();
            values::check_value(s, d, &mut errs);
            for e in errs {
                out.push(Cause::invalid(
                    format!("{path}.default"),
                    &d.to_string(),
                    e.message,
                ));
            }
        }
    }
}

/// A list type and its keys as kube requires them: `atomic`, `set` of scalars, or
/// `map` of objects told apart by keys that are scalar properties of the items,
/// required or defaulted (server-side apply and validation match items by them).
fn list_type(s: &Value, path: &str, out: &mut Vec<Cause>) {
    let lt = s.get("x-kubernetes-list-type").and_then(Value::as_str);
    let keys = s.get("x-kubernetes-list-map-keys");
    if keys.is_some() && lt != Some("map") {
        out.push(Cause::invalid(
            format!("{path}.x-kubernetes-list-map-keys"),
            &keys.map(Value::to_string).unwrap_or_default(),
            "must only be set if x-kubernetes-list-type is map",
        ));
    }
    let Some(lt) = lt else { return };
    if !["atomic", "set", "map"].contains(&lt) {
        out.push(Cause::not_supported(
            format!("{path}.x-kubernetes-list-type"),
            lt,
            &["atomic", "set", "map"],
        ));
        return;
    }
    let items = s.get("items").filter(|i| i.is_object());
    let scalar = |n: &Value| {
        matches!(
            n.get("type").and_then(Value::as_str),
            Some("string" | "integer" | "number" | "boolean")
        ) || n.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
    };
    match lt {
        "set" => {
            if let Some(is) = items.filter(|is| {
                !scalar(is)
                    && is.get("x-kubernetes-map-type").and_then(Value::as_str) != Some("atomic")
            }) {
                out.push(Cause::invalid(
                    format!("{path}.items.type"),
                    is.get("type").and_then(Value::as_str).unwrap_or(""),
                    "must be a scalar type (or an atomic object) if x-kubernetes-list-type is set",
                ));
            }
        }
        "map" => {
            let names = values::map_keys(s);
            if names.is_empty() {
                out.push(Cause::required_because(
                    format!("{path}.x-kubernetes-list-map-keys"),
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
            let Some(is) = items else { return };
            if is.get("type").and_then(Value::as_str) != Some("object") {
                out.push(Cause::invalid(
                    format!("{path}.items.type"),
                    is.get("type").and_then(Value::as_str).unwrap_or(""),
                    "must be object if parent array's x-kubernetes-list-type is map",
                ));
                return;
            }
            let required: Vec<&str> = is
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for k in names {
                let Some(prop) = is.pointer(&format!(
                    "/properties/{}",
                    k.replace('~', "~0").replace('/', "~1")
                )) else {
                    out.push(Cause::invalid(
                        format!("{path}.x-kubernetes-list-map-keys"),
                        k,
                        "entries must all be names of item properties",
                    ));
                    continue;
                };
                if !scalar(prop) {
                    out.push(Cause::invalid(
                        format!("{path}.items.properties[{k}].type"),
                        prop.get("type").and_then(Value::as_str).unwrap_or(""),
                        "must be a scalar type if parent array's x-kubernetes-list-type is map",
                    ));
                }
                if !required.contains(&k) && prop.get("default").is_none() {
                    out.push(Cause::required_because(
                        format!("{path}.items.properties[{k}]"),
                        "all map keys must be required properties or have a default",
                    ));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn causes(s: Value) -> Vec<String> {
        let mut out = Vec::new();
        check(&s, "spec.versions[0].schema.openAPIV3Schema", &mut out);
        out.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn structural_schemas_pass_and_others_say_why() {
        let good = json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}},
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer", "default": 1},
                "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "free": {"x-kubernetes-preserve-unknown-fields": true},
                "tags": {"type": "array", "items": {"type": "string"}}}}}});
        // anyOf under int-or-string may name its two types (kube's one exception).
        assert_eq!(causes(good), Vec::<String>::new());
        let bad = json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "spec": {"properties": {"x": {"type": "string"}}},
            "list": {"type": "array"},
            "both": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "d": {"type": "integer", "default": "one"},
            "re": {"type": "string", "pattern": "("},
            "j": {"type": "string", "anyOf": [{"type": "string", "maxLength": 3}]},
            "u": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
            "m": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "gone"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "nokeys": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object"}},
            "st": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "object"}}}});
        let got = causes(bad);
        for want in [
            "openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName",
            "openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
            "openAPIV3Schema.properties[list].items: Required value",
            "openAPIV3Schema.properties[both].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive",
            "openAPIV3Schema.properties[d].default: Invalid value: \"\\\"one\\\"\"",
            "openAPIV3Schema.properties[re].pattern: Invalid value: \"(\"",
            "openAPIV3Schema.properties[j].anyOf[0].type: Forbidden",
            "openAPIV3Schema.properties[u].uniqueItems: Forbidden: uniqueItems cannot be set to true",
            "openAPIV3Schema.properties[m].x-kubernetes-list-map-keys: Invalid value: \"gone\": entries must all be names of item properties",
            "openAPIV3Schema.properties[m].items.properties[name]: Required value: all map keys must be required properties or have a default",
            "openAPIV3Schema.properties[nokeys].x-kubernetes-list-map-keys: Required value: must not be empty",
            "openAPIV3Schema.properties[st].items.type: Invalid value: \"object\": must be a scalar type",
        ] {
            assert!(got.iter().any(|g| g.contains(want)), "{want}\nin {got:#?}");
        }
    }
}
