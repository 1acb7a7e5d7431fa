//! Discovery documents, from the resource table: the legacy ones (/api, /apis,
//! /api/v1, /apis/GROUP[/VERSION]) and aggregated discovery v2 (what kubectl 1.32
//! asks for first), with an ETag so clients can revalidate cheaply.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::resources::{self, Resource};

fn sub_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "status" | "scale" | "ephemeralcontainers" => &["get", "patch", "update"],
        "binding" | "eviction" | "token" => &["create"],
        "finalize" => &["update"],
        "log" => &["get"],
        "exec" | "attach" | "portforward" | "proxy" => &["create", "get"],
        _ => &["get"],
    }
}

fn sub_kind(r: &Resource, sub: &str) -> (String, String, String) {
    match sub {
        "scale" => ("autoscaling".into(), "v1".into(), "Scale".into()),
        "binding" => (String::new(), "v1".into(), "Binding".into()),
        "eviction" => ("policy".into(), "v1".into(), "Eviction".into()),
        "token" => (
            "authentication.k8s.io".into(),
            "v1".into(),
            "TokenRequest".into(),
        ),
        "log" | "exec" | "attach" | "portforward" | "proxy" => (
            String::new(),
            "v1".into(),
            format!(
                "{}{}",
                r.kind,
                match sub {
                    "exec" => "ExecOptions",
                    "attach" => "AttachOptions",
                    "portforward" => "PortForwardOptions",
                    "log" => "",
                    _ => "ProxyOptions",
                }
            ),
        ),
        _ => (r.group.into(), r.version.into(), r.kind.into()),
    }
}

fn storage_hash(r: &Resource) -> String {
    use base64::Engine;
    let h = Sha256::digest(format!("{}/{}/{}", r.group, r.version, r.kind));
    base64::engine::general_purpose::STANDARD.encode(&h[..8])
}

/// /api/v1 or /apis/GROUP/VERSION (APIResourceList).
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&Resource> = resources::of(group, version).collect();
    if rs.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in rs {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        if r.from_store() {
            e["storageVersionHash"] = json!(storage_hash(resources::storage_of(r)));
        }
        list.push(e);
        for sub in r.subresources {
            let (g, v, k) = sub_kind(r, sub);
            let mut s = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": k,
                "verbs": sub_verbs(sub),
            });
            if g != r.group || v != r.version {
                s["group"] = json!(g);
                s["version"] = json!(v);
            }
            list.push(s);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// /api (APIVersions).
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn versions_of(group: &str) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    let mut custom = false;
    for r in resources::all().filter(|r| r.group == group) {
        if !v.contains(&r.version) {
            v.push(r.version);
            custom |= r.custom.is_some();
        }
    }
    if custom {
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
    }
    v
}

/// kube's order of versions (a custom group's preferred version is the first): GA
/// before beta before alpha, higher numbers first; anything else last, by name.
fn version_priority(v: &str) -> (u8, u32, u32, std::cmp::Reverse<String>) {
    let parse = || -> Option<(u8, u32, u32)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: u32 = digits.parse().ok()?;
        match &rest[digits.len()..] {
            "" => Some((3, major, 0)),
            s => {
                let (level, n) = if let Some(n) = s.strip_prefix("beta") {
                    (2, n)
                } else {
                    (1, s.strip_prefix("alpha")?)
                };
                Some((level, major, n.parse().ok()?))
            }
        }
    };
    match parse() {
        Some((l, a, b)) => (l, a, b, std::cmp::Reverse(String::new())),
        None => (0, 0, 0, std::cmp::Reverse(v.to_string())),
    }
}

/// /apis/GROUP (APIGroup).
pub fn group(name: &str) -> Option<Value> {
    let vs = versions_of(name);
    if vs.is_empty() || name.is_empty() {
        return None;
    }
    let versions: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": name,
        "versions": versions, "preferredVersion": versions[0],
    }))
}

/// /apis (APIGroupList).
pub fn group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .filter_map(|g| {
            let mut v = group(g)?;
            v.as_object_mut()?.remove("kind");
            v.as_object_mut()?.remove("apiVersion");
            Some(v)
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn aggregated_group(name: &str) -> Value {
    let versions: Vec<Value> = versions_of(name)
        .into_iter()
        .map(|v| {
            let res: Vec<Value> = resources::of(name, v)
                .map(|r| {
                    let subs: Vec<Value> = r
                        .subresources
                        .iter()
                        .map(|s| {
                            let (g, ver, k) = sub_kind(r, s);
                            json!({"subresource": s,
                                   "responseKind": {"group": g, "version": ver, "kind": k},
                                   "verbs": sub_verbs(s)})
                        })
                        .collect();
                    let mut e = json!({
                        "resource": r.plural,
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular(),
                        "verbs": r.verbs(),
                    });
                    if !r.short_names.is_empty() {
                        e["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        e["categories"] = json!(r.categories);
                    }
                    if !subs.is_empty() {
                        e["subresources"] = Value::Array(subs);
                    }
                    e
                })
                .collect();
            json!({"version": v, "resources": res, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": versions})
}

/// Aggregated discovery v2 (APIGroupDiscoveryList) of /api (`core`) or /apis.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group("")]
    } else {
        resources::groups()
            .into_iter()
            .map(aggregated_group)
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
           "metadata": {}, "items": items})
}

/// A strong ETag of a document.
pub fn etag(body: &[u8]) -> String {
    format!("\"{}\"", hex_upper(&Sha256::digest(body)))
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}
