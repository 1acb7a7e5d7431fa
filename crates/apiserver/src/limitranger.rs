//! LimitRanger (kube's admission plugin): a namespace's LimitRanges give containers
//! the requests and limits they leave out (`default`, `defaultRequest`) and bound what
//! they and their pods and claims ask (`min`, `max`, `maxLimitRequestRatio`). A pod or
//! claim outside the bounds is refused with every reason, in kube's words.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Map, Value};

use crate::hub::Hub;
use crate::resources;
use crate::status::ApiError;

fn milli(v: &Value) -> Option<i128> {
    berth_pods::milli_value(&Quantity(v.as_str()?.to_string())).ok()
}

fn show(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// The namespace's LimitRange items of `kind` (Container, Pod, PersistentVolumeClaim).
fn items(hub: &Hub, ns: &str, kind: &str) -> Vec<Value> {
    let res = resources::find("", "v1", "limitranges").expect("served");
    hub.under(&res.ns_prefix(Some(ns)))
        .into_iter()
        .flat_map(|(_, lr)| {
            lr.pointer("/spec/limits")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter(|i| i.get("type").and_then(Value::as_str) == Some(kind))
        .collect()
}

fn map(v: &Value, key: &str) -> Map<String, Value> {
    v.get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Gives a container what it leaves out; returns what was set, for kube's annotation.
fn default_container(c: &mut Value, item: &Value, set: &mut Vec<String>) {
    let name = c
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // kube's LimitRange defaulting: default falls back to max, defaultRequest to
    // default.
    let mut default = map(item, "max");
    default.extend(map(item, "default"));
    // ...and, for requests, to min.
    let mut default_request = map(item, "min");
    default_request.extend(default.clone());
    default_request.extend(map(item, "defaultRequest"));
    if !c.get("resources").is_some_and(Value::is_object) {
        c["resources"] = json!({});
    }
    let mut limits_set = Vec::new();
    let mut requests_set = Vec::new();
    // Looked up by key: resource names hold '/' (nvidia.com/gpu).
    let has_in =
        |c: &Value, kind: &str, r: &str| c["resources"].get(kind).and_then(|m| m.get(r)).cloned();
    for (r, q) in &default {
        let has = has_in(c, "limits", r).is_some();
        if !has {
            if !c["resources"].get("limits").is_some_and(Value::is_object) {
                c["resources"]["limits"] = json!({});
            }
            c["resources"]["limits"][r] = q.clone();
            limits_set.push(r.clone());
        }
    }
    for (r, q) in &default_request {
        let has = has_in(c, "requests", r).is_some();
        if !has {
            // A limit given without a request is the request, as kube defaults it.
            let v = has_in(c, "limits", r)
                .filter(|_| !limits_set.contains(r))
                .unwrap_or_else(|| q.clone());
            if !c["resources"].get("requests").is_some_and(Value::is_object) {
                c["resources"]["requests"] = json!({});
            }
            c["resources"]["requests"][r] = v;
            requests_set.push(r.clone());
        }
    }
    if !requests_set.is_empty() {
        set.push(format!(
            "{} request for container {name}",
            requests_set.join(", ")
        ));
    }
    if !limits_set.is_empty() {
        set.push(format!(
            "{} limit for container {name}",
            limits_set.join(", ")
        ));
    }
}

/// The bounds of one item over `requests` and `limits` of something of `kind`
/// (`bounded`: what max bounds, "limit", or "request" for a claim).
fn check(
    item: &Value,
    kind: &str,
    requests: &BTreeMap<String, (i128, Value)>,
    limits: &BTreeMap<String, (i128, Value)>,
    bounded: &str,
    out: &mut Vec<String>,
) {
    for (r, min) in map(item, "min") {
        let Some(m) = milli(&min) else { continue };
        match requests.get(&r) {
            Some((v, shown)) if *v < m => out.push(format!(
                "minimum {r} usage per {kind} is {}, but request is {}",
                show(&min),
                show(shown)
            )),
            None => out.push(format!(
                "minimum {r} usage per {kind} is {}.  No request is specified",
                show(&min)
            )),
            _ => {}
        }
    }
    for (r, max) in map(item, "max") {
        let Some(m) = milli(&max) else { continue };
        match limits.get(&r) {
            Some((v, shown)) if *v > m => out.push(format!(
                "maximum {r} usage per {kind} is {}, but {bounded} is {}",
                show(&max),
                show(shown)
            )),
            None => out.push(format!(
                "maximum {r} usage per {kind} is {}.  No {bounded} is specified",
                show(&max)
            )),
            _ => {}
        }
    }
    for (r, ratio) in map(item, "maxLimitRequestRatio") {
        let Some(m) = milli(&ratio) else { continue };
        if let (Some((l, _)), Some((q, _))) = (limits.get(&r), requests.get(&r)) {
            if *q > 0 && l * 1000 > m * q {
                out.push(format!(
                    "{r} max limit to request ratio per {kind} is {}, but provided ratio is {:.6}",
                    show(&ratio),
                    *l as f64 / *q as f64
                ));
            }
        }
    }
}

fn amounts(c: &Value, key: &str) -> BTreeMap<String, (i128, Value)> {
    map(&c["resources"], key)
        .into_iter()
        .filter_map(|(r, q)| Some((r, (milli(&q)?, q))))
        .collect()
}

/// Applies the namespace's LimitRanges to a new pod (`kind` "Pod") or claim
/// ("PersistentVolumeClaim"): defaults first, then the bounds.
pub fn admit(hub: &Hub, plural: &str, o: &mut Value) -> Result<(), ApiError> {
    let field = |k: &str| {
        crate::objects::meta::meta_str(o, k)
            .unwrap_or("")
            .to_string()
    };
    let (ns, name) = (field("namespace"), field("name"));
    let mut reasons = Vec::new();
    match plural {
        "pods" => {
            let container_items = items(hub, &ns, "Container");
            let pod_items = items(hub, &ns, "Pod");
            if container_items.is_empty() && pod_items.is_empty() {
                return Ok(());
            }
            let mut set = Vec::new();
            for list in ["initContainers", "containers"] {
                let Some(cs) = o
                    .pointer_mut(&format!("/spec/{list}"))
                    .and_then(Value::as_array_mut)
                else {
                    continue;
                };
                for c in cs.iter_mut() {
                    for item in &container_items {
                        default_container(c, item, &mut set);
                    }
                }
            }
            if !set.is_empty() {
                let ann = &mut o["metadata"]["annotations"];
                if !ann.is_object() {
                    *ann = json!({});
                }
                ann["kubernetes.io/limit-ranger"] =
                    json!(format!("LimitRanger plugin set: {}", set.join("; ")));
            }
            let containers: Vec<Value> = ["initContainers", "containers"]
                .iter()
                .flat_map(|l| {
                    o.pointer(&format!("/spec/{l}"))
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .collect();
            for c in &containers {
                for item in &container_items {
                    check(
                        item,
                        "Container",
                        &amounts(c, "requests"),
                        &amounts(c, "limits"),
                        "limit",
                        &mut reasons,
                    );
                }
            }
            if !pod_items.is_empty() {
                let sum = |key: &str| {
                    let mut total: BTreeMap<String, (i128, Value)> = BTreeMap::new();
                    for c in o
                        .pointer("/spec/containers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        for (r, (v, _)) in amounts(c, key) {
                            total.entry(r).or_insert((0, Value::Null)).0 += v;
                        }
                    }
                    for (r, (v, shown)) in total.iter_mut() {
                        *shown = json!(crate::quota::show(r, *v));
                    }
                    total
                };
                let (req, lim) = (sum("requests"), sum("limits"));
                for item in &pod_items {
                    check(item, "Pod", &req, &lim, "limit", &mut reasons);
                }
            }
        }
        "persistentvolumeclaims" => {
            let claim_items = items(hub, &ns, "PersistentVolumeClaim");
            let req = amounts(o.get("spec").unwrap_or(&Value::Null), "requests");
            for item in &claim_items {
                // A claim asks storage once: its request is what max bounds too.
                check(
                    item,
                    "PersistentVolumeClaim",
                    &req,
                    &req,
                    "request",
                    &mut reasons,
                );
            }
        }
        _ => {}
    }
    if reasons.is_empty() {
        return Ok(());
    }
    let mut e = ApiError::forbidden(format!(
        "{plural} {name:?} is forbidden: [{}]",
        reasons.join(", ")
    ));
    e.kind = Some(plural.into());
    e.name = Some(name);
    e.group = Some(String::new());
    Err(e)
}
