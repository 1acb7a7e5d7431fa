//! CustomResourceDefinitions themselves: what kube defaults in them and what it
//! answers 422 for (names, scope, versions, schemas, subresources, printer columns,
//! conversion, and what may not change).

use serde_json::{json, Value};

use super::custom::path_segments;
use super::structural;
use crate::names;
use crate::status::Cause;

/// The finalizer that holds a definition until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The storage version of a definition (the version marked `storage`).
pub fn storage_version(d: &Value) -> Option<&str> {
    versions(d)
        .iter()
        .find(|v| v.get("storage") == Some(&Value::Bool(true)))
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
}

fn versions(d: &Value) -> &[Value] {
    d.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// kube's defaults: the singular and list kind from the kind, conversion None,
/// column priorities 0.
pub fn default(d: &mut Value) {
    let Some(spec) = d.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !kind.is_empty() {
            names
                .entry("singular")
                .or_insert_with(|| json!(kind.to_ascii_lowercase()));
            names
                .entry("listKind")
                .or_insert_with(|| json!(format!("{kind}List")));
        }
    }
    spec.entry("conversion")
        .or_insert_with(|| json!({"strategy": "None"}));
    for v in spec
        .get_mut("versions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for c in v
            .get_mut("additionalPrinterColumns")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = c.as_object_mut() {
                c.entry("priority").or_insert(json!(0));
            }
        }
    }
}

/// What a new definition is given: the cleanup finalizer (its objects are removed
/// before it goes) and a status that names its storage version; acceptance and
/// establishment follow from the definitions' controller.
pub fn prepare_create(d: &mut Value) {
    let meta = &mut d["metadata"];
    if !meta["finalizers"].is_array() {
        meta["finalizers"] = json!([]);
    }
    if let Some(f) = meta["finalizers"].as_array_mut() {
        if !f.iter().any(|x| x == CLEANUP_FINALIZER) {
            f.push(json!(CLEANUP_FINALIZER));
        }
    }
    let stored: Vec<String> = storage_version(d).into_iter().map(str::to_string).collect();
    d["status"] = json!({"acceptedNames": {"plural": "", "kind": ""}, "conditions": [],
                         "storedVersions": stored});
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Everything wrong with definition `d` (a create when `old` is None).
pub fn validate(d: &Value, old: Option<&Value>, out: &mut Vec<Cause>) {
    let group = s(d, "/spec/group");
    let plural = s(d, "/spec/names/plural");
    let name = s(d, "/metadata/name");
    if group.is_empty() {
        out.push(Cause::required("spec.group"));
    } else if let Some(why) = names::dns1123_subdomain(group) {
        out.push(Cause::invalid("spec.group", group, why));
    } else if !group.contains('.') {
        out.push(Cause::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    } else if (group.ends_with(".k8s.io")
        || group.ends_with(".kubernetes.io")
        || group == "k8s.io"
        || group == "kubernetes.io")
        && d.pointer("/metadata/annotations/api-approved.kubernetes.io")
            .is_none()
    {
        out.push(Cause::invalid(
            "metadata.annotations[api-approved.kubernetes.io]",
            "",
            "protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111",
        ));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        out.push(Cause::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    for (field, required) in [
        ("plural", true),
        ("singular", false),
        ("kind", true),
        ("listKind", false),
    ] {
        let v = s(d, &format!("/spec/names/{field}"));
        let path = format!("spec.names.{field}");
        if v.is_empty() {
            if required {
                out.push(Cause::required(path));
            }
            continue;
        }
        let bad = if field == "plural" || field == "singular" {
            names::dns1035_label(v)
        } else {
            names::dns1035_label(&v.to_ascii_lowercase())
        };
        if let Some(why) = bad {
            out.push(Cause::invalid(path, v, why));
        }
    }
    if s(d, "/spec/names/kind") == s(d, "/spec/names/listKind")
        && !s(d, "/spec/names/kind").is_empty()
    {
        out.push(Cause::invalid(
            "spec.names.listKind",
            s(d, "/spec/names/listKind"),
            "kind and listKind cannot be the same",
        ));
    }
    for (i, sn) in d
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let sn = sn.as_str().unwrap_or("");
        if let Some(why) = names::dns1035_label(sn) {
            out.push(Cause::invalid(
                format!("spec.names.shortNames[{i}]"),
                sn,
                why,
            ));
        }
    }
    let scope = s(d, "/spec/scope");
    if scope.is_empty() {
        out.push(Cause::required("spec.scope"));
    } else if scope != "Cluster" && scope != "Namespaced" {
        out.push(Cause::not_supported(
            "spec.scope",
            scope,
            &["Cluster", "Namespaced"],
        ));
    }
    match s(d, "/spec/conversion/strategy") {
        "" | "None" => {}
        "Webhook" => out.push(Cause::forbidden(
            "spec.conversion.strategy",
            "berth does not call conversion webhooks: serve one version, or versions whose objects need no conversion (strategy None)",
        )),
        other => out.push(Cause::not_supported(
            "spec.conversion.strategy",
            other,
            &["None", "Webhook"],
        )),
    }
    versions_valid(d, out);
    if let Some(old) = old {
        for (ptr, field) in [
            ("/spec/scope", "spec.scope"),
            ("/spec/group", "spec.group"),
            ("/spec/names/plural", "spec.names.plural"),
        ] {
            if d.pointer(ptr) != old.pointer(ptr) {
                out.push(Cause::immutable(field));
            }
        }
    }
}

fn versions_valid(d: &Value, out: &mut Vec<Cause>) {
    let vs = versions(d);
    if vs.is_empty() {
        out.push(Cause::required_because(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
        return;
    }
    let storage = vs
        .iter()
        .filter(|v| v.get("storage") == Some(&Value::Bool(true)))
        .count();
    if storage != 1 {
        out.push(Cause::invalid(
            "spec.versions",
            "",
            "must have exactly one version marked as storage version",
        ));
    }
    if vs.iter().any(|v| {
        v.get("storage") == Some(&Value::Bool(true)) && v.get("served") != Some(&Value::Bool(true))
    }) {
        // Every version is served through the storage version here.
        out.push(Cause::invalid(
            "spec.versions",
            "",
            "berth serves the storage version's objects through it: mark the storage version served",
        ));
    }
    if !vs
        .iter()
        .any(|v| v.get("served") == Some(&Value::Bool(true)))
    {
        out.push(Cause::invalid(
            "spec.versions",
            "",
            "must have at least one version marked as served",
        ));
    }
    let mut seen = Vec::new();
    for (i, v) in vs.iter().enumerate() {
        let base = format!("spec.versions[{i}]");
        let name = s(v, "/name");
        if name.is_empty() {
            out.push(Cause::required(format!("{base}.name")));
        } else if let Some(why) = names::dns1035_label(name) {
            out.push(Cause::invalid(format!("{base}.name"), name, why));
        } else if seen.contains(&name) {
            out.push(Cause::duplicate(format!("{base}.name"), name));
        }
        seen.push(name);
        for k in ["served", "storage"] {
            if !v.get(k).is_some_and(Value::is_boolean) {
                out.push(Cause::required(format!("{base}.{k}")));
            }
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => out.push(Cause::required_because(
                format!("{base}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(schema) => {
                structural::check(schema, &format!("{base}.schema.openAPIV3Schema"), out)
            }
        }
        if let Some(scale) = v.pointer("/subresources/scale") {
            let sp = format!("{base}.subresources.scale");
            for (field, prefixes, required) in [
                ("specReplicasPath", &[".spec."][..], true),
                ("statusReplicasPath", &[".status."][..], true),
                ("labelSelectorPath", &[".spec.", ".status."][..], false),
            ] {
                match scale.get(field).and_then(Value::as_str) {
                    None if required => out.push(Cause::required(format!("{sp}.{field}"))),
                    Some(p)
                        if !prefixes.iter().any(|pre| p.starts_with(pre))
                            || path_segments(p).is_none() =>
                    {
                        out.push(Cause::invalid(
                            format!("{sp}.{field}"),
                            p,
                            format!("should be a json path under {}", prefixes.join(" or ")),
                        ));
                    }
                    _ => {}
                }
            }
        }
        for (j, c) in v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cp = format!("{base}.additionalPrinterColumns[{j}]");
            if s(c, "/name").is_empty() {
                out.push(Cause::required(format!("{cp}.name")));
            }
            let t = s(c, "/type");
            if !["integer", "number", "string", "boolean", "date"].contains(&t) {
                out.push(Cause::not_supported(
                    format!("{cp}.type"),
                    t,
                    &["boolean", "date", "integer", "number", "string"],
                ));
            }
            let jp = s(c, "/jsonPath");
            if jp.is_empty() {
                out.push(Cause::required(format!("{cp}.jsonPath")));
            } else if let Some(why) = crate::table::custom::json_path_error(jp) {
                out.push(Cause::invalid(format!("{cp}.jsonPath"), jp, why));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "crontabs.stable.example.com"},
               "spec": {"group": "stable.example.com", "scope": "Namespaced",
                        "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                        "versions": [{"name": "v1", "served": true, "storage": true,
                            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}},
                            "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                                     "statusReplicasPath": ".status.replicas"}},
                            "additionalPrinterColumns": [{"name": "Replicas", "type": "integer",
                                                          "jsonPath": ".spec.replicas"}]}]}})
    }

    fn causes(d: &Value, old: Option<&Value>) -> Vec<String> {
        let mut out = Vec::new();
        validate(d, old, &mut out);
        out.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_good_definition_is_defaulted_and_passes() {
        let mut d = crd();
        default(&mut d);
        assert_eq!(d["spec"]["names"]["singular"], "crontab");
        assert_eq!(d["spec"]["names"]["listKind"], "CronTabList");
        assert_eq!(d["spec"]["conversion"]["strategy"], "None");
        assert_eq!(causes(&d, None), Vec::<String>::new());
        assert_eq!(storage_version(&d), Some("v1"));
    }

    #[test]
    fn bad_definitions_say_what_is_wrong() {
        let mut d = crd();
        d["metadata"]["name"] = json!("crontab.stable.example.com");
        d["spec"]["scope"] = json!("Global");
        d["spec"]["versions"][0]["storage"] = json!(false);
        d["spec"]["versions"][0]["additionalPrinterColumns"][0]["type"] = json!("float");
        d["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] = json!(".status.x");
        d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = json!({});
        let got = causes(&d, None);
        for want in [
            "metadata.name: Invalid value: \"crontab.stable.example.com\": must be spec.names.plural+\".\"+spec.group",
            "spec.scope: Unsupported value: \"Global\"",
            "spec.versions: Invalid value: \"\": must have exactly one version marked as storage version",
            "spec.versions[0].additionalPrinterColumns[0].type: Unsupported value: \"float\"",
            "spec.versions[0].subresources.scale.specReplicasPath: Invalid value: \".status.x\"",
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value",
        ] {
            assert!(got.iter().any(|g| g.starts_with(want)), "{want}\nin {got:#?}");
        }
        let mut g = crd();
        g["spec"]["group"] = json!("example");
        g["metadata"]["name"] = json!("crontabs.example");
        assert!(causes(&g, None)
            .iter()
            .any(|c| c.contains("should be a domain with at least one dot")));
        let mut changed = crd();
        changed["spec"]["scope"] = json!("Cluster");
        assert!(
            causes(&changed, Some(&crd())).contains(&"spec.scope: field is immutable".to_string())
        );
        let mut nothing = crd();
        nothing["spec"]["versions"][0]
            .as_object_mut()
            .unwrap()
            .remove("schema");
        assert!(causes(&nothing, None).contains(
            &"spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"
                .to_string()
        ));
    }
}
