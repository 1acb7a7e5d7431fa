//! ResourceQuota (kube's admission plugin and the usage its controller keeps): a
//! namespace's quotas cap what may be made in it — pods and other objects by count,
//! compute requests and limits, claimed storage (also per StorageClass); scoped
//! quotas ([`scopes`]) track only the pods in their scopes. A create or an update
//! that would go past a hard limit is refused with kube's "exceeded quota" message;
//! a pod that gives no value for a compute resource a quota caps is refused with
//! "must specify". Writes in a namespace with quotas pass one at a time (admission,
//! write, and the write seen), so a burst of pods from a controller cannot slip past
//! a limit together.
//! `status.used` is kept current by [`run`] ([`status`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

pub mod scopes;
mod status;

pub use status::run;

use crate::hub::Hub;
use crate::resources::{self, Resource};
use crate::status::ApiError;

/// One namespace's creates, one at a time while it has quotas.
#[derive(Default)]
pub struct Gate(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Gate {
    /// The lock of namespace `ns`.
    pub fn of(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ns.to_string())
            .or_default()
            .clone()
    }
}

fn quotas_prefix(ns: &str) -> String {
    resources::find("", "v1", "resourcequotas")
        .expect("served")
        .ns_prefix(Some(ns))
}

/// One quota of a namespace.
pub struct Quota {
    /// Its name.
    pub name: String,
    /// Its hard limits, in milli-units.
    pub hard: BTreeMap<String, i128>,
    /// Which pods it tracks (empty: every object).
    pub scopes: Vec<scopes::Scope>,
}

impl Quota {
    /// What `o` (of `res`) uses of `resource` under this quota: nothing unless the
    /// quota tracks it (a scoped quota, only pods in its scopes).
    fn usage(&self, res: &Resource, o: &Value, resource: &str) -> i128 {
        if self.scopes.is_empty() {
            return usage_of(res, o, resource);
        }
        let pod = res.plural == "pods" && res.group.is_empty();
        if pod && scopes::allows(&self.scopes, resource) && scopes::tracks(&self.scopes, o) {
            usage_of(res, o, resource)
        } else {
            0
        }
    }
}

/// The quotas of a namespace.
pub fn quotas(hub: &Hub, ns: &str) -> Vec<Quota> {
    hub.under(&quotas_prefix(ns))
        .into_iter()
        .map(|(_, q)| Quota {
            name: q
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            hard: q
                .pointer("/spec/hard")
                .and_then(Value::as_object)
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| Some((k.clone(), milli(v.as_str()?)?)))
                        .collect()
                })
                .unwrap_or_default(),
            scopes: scopes::of(&q),
        })
        .collect()
}

fn milli(q: &str) -> Option<i128> {
    berth_pods::milli_value(&Quantity(q.to_string())).ok()
}

/// A milli-unit amount as kube prints a quantity of `resource`.
pub fn show(resource: &str, m: i128) -> String {
    if m % 1000 != 0 {
        return format!("{m}m");
    }
    let v = m / 1000;
    let bytes = resource.contains("memory") || resource.contains("storage");
    if bytes && v != 0 {
        for (unit, size) in [
            ("Ti", 1i128 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if v % size == 0 {
                return format!("{}{unit}", v / size);
            }
        }
    }
    v.to_string()
}

/// Whether a pod counts against quota (not finished).
fn live_pod(p: &Value) -> bool {
    !matches!(
        p.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// A pod's requests or limits (`kind`) of `resource`, in milli-units: its containers'
/// sum or its largest init container's, whichever is more.
fn pod_amount(pod: &Pod, kind: &str, resource: &str) -> i128 {
    let Some(spec) = &pod.spec else {
        return 0;
    };
    let of = |c: &Container| {
        let q = if kind == "limits" {
            berth_pods::limit(c, resource)
        } else {
            berth_pods::request(c, resource)
        };
        q.and_then(|q| berth_pods::milli_value(&q).ok())
            .unwrap_or(0)
    };
    let apps: i128 = spec.containers.iter().map(of).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(of)
        .max()
        .unwrap_or(0);
    apps.max(init)
}

/// What the per-StorageClass quota resources put between the class and the
/// resource (`CLASS.storageclass.storage.k8s.io/requests.storage`).
const STORAGE_CLASS: &str = ".storageclass.storage.k8s.io/";

/// The storage a claim requests (milli-units).
fn claimed(o: &Value) -> i128 {
    o.pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .and_then(milli)
        .unwrap_or(0)
}

/// What one object uses of `resource` (milli-units), when it is of a kind the
/// resource counts.
fn usage_of(res: &Resource, o: &Value, resource: &str) -> i128 {
    let count =
        |plural: &str, group: &str| (res.plural == plural && res.group == group) as i128 * 1000;
    if let Some(r) = resource.strip_prefix("count/") {
        let (plural, group) = r.split_once('.').unwrap_or((r, ""));
        return count(plural, group);
    }
    if let Some((class, what)) = resource.split_once(STORAGE_CLASS) {
        // A claim of that class (`gold.storageclass.storage.k8s.io/requests.storage`).
        let claim = res.plural == "persistentvolumeclaims" && res.group.is_empty();
        if !claim || o.pointer("/spec/storageClassName").and_then(Value::as_str) != Some(class) {
            return 0;
        }
        return match what {
            "persistentvolumeclaims" => 1000,
            "requests.storage" => claimed(o),
            _ => 0,
        };
    }
    match resource {
        "pods" => {
            if res.plural == "pods" && res.group.is_empty() && live_pod(o) {
                1000
            } else {
                0
            }
        }
        "services" => count("services", ""),
        "configmaps" => count("configmaps", ""),
        "secrets" => count("secrets", ""),
        "persistentvolumeclaims" => count("persistentvolumeclaims", ""),
        "replicationcontrollers" => count("replicationcontrollers", ""),
        "resourcequotas" => count("resourcequotas", ""),
        "services.nodeports" | "services.loadbalancers" => {
            if res.plural != "services" || !res.group.is_empty() {
                return 0;
            }
            let t = o
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            match (resource, t) {
                ("services.loadbalancers", "LoadBalancer") => 1000,
                ("services.nodeports", "NodePort" | "LoadBalancer") => {
                    o.pointer("/spec/ports")
                        .and_then(Value::as_array)
                        .map_or(0, |p| p.len() as i128)
                        * 1000
                }
                _ => 0,
            }
        }
        "requests.storage" => {
            if res.plural == "persistentvolumeclaims" && res.group.is_empty() {
                claimed(o)
            } else {
                0
            }
        }
        r => {
            if res.plural != "pods" || !res.group.is_empty() || !live_pod(o) {
                return 0;
            }
            let (kind, name) = match r.split_once('.') {
                Some(("requests", n)) => ("requests", n),
                Some(("limits", n)) => ("limits", n),
                _ => ("requests", r),
            };
            match serde_json::from_value::<Pod>(o.clone()) {
                Ok(p) => pod_amount(&p, kind, name),
                Err(_) => 0,
            }
        }
    }
}

/// What the namespace's objects use now under quota `q` of each of `resources`
/// (milli-units).
fn used(hub: &Hub, ns: &str, q: &Quota, resources: &[&String]) -> BTreeMap<String, i128> {
    let mut out: BTreeMap<String, i128> = resources.iter().map(|r| (r.to_string(), 0)).collect();
    // Custom resources too (`count/widgets.example.com`).
    for res in resources::all().filter(|r| r.stored() && r.namespaced) {
        if !resources.iter().any(|r| counts_kind(res, r)) {
            continue;
        }
        for (_, o) in hub.under(&res.ns_prefix(Some(ns))) {
            if o.pointer("/metadata/deletionTimestamp").is_some() && res.plural == "pods" {
                continue;
            }
            for r in resources {
                *out.entry(r.to_string()).or_default() += q.usage(res, &o, r);
            }
        }
    }
    out
}

/// Whether objects of `res` may count toward `resource` at all.
fn counts_kind(res: &Resource, resource: &str) -> bool {
    if let Some(r) = resource.strip_prefix("count/") {
        let (plural, group) = r.split_once('.').unwrap_or((r, ""));
        return res.plural == plural && res.group == group;
    }
    let core = res.group.is_empty();
    if resource.contains(STORAGE_CLASS) {
        return core && res.plural == "persistentvolumeclaims";
    }
    match resource {
        "services" | "services.nodeports" | "services.loadbalancers" => {
            core && res.plural == "services"
        }
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
            core && res.plural == resource
        }
        "persistentvolumeclaims" | "requests.storage" => {
            core && res.plural == "persistentvolumeclaims"
        }
        _ => core && res.plural == "pods",
    }
}

/// The compute resources a quota caps that every container must then give.
fn compute(resource: &str) -> Option<(&'static str, &str)> {
    match resource {
        "cpu" | "memory" => Some(("requests", resource)),
        r => match r.split_once('.') {
            Some(("requests", n)) if n == "cpu" || n == "memory" => Some(("requests", n)),
            Some(("limits", n)) if n == "cpu" || n == "memory" => Some(("limits", n)),
            _ => None,
        },
    }
}

/// Admits a create of `o` (of `res`, named `name`) in `ns`, or its update from
/// `old`, against the namespace's quotas: refused when what it adds would take a
/// quota past a hard limit. The caller holds the namespace's [`Gate`].
pub fn admit(
    hub: &Hub,
    res: &Resource,
    ns: &str,
    name: &str,
    o: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let forbidden = |msg: String| {
        let mut e =
            ApiError::forbidden(format!("{} {name:?} is forbidden: {msg}", res.qualified()));
        e.kind = Some(res.plural.into());
        e.group = Some(res.group.into());
        e.name = Some(name.into());
        e
    };
    let pod = res.plural == "pods" && res.group.is_empty();
    for q in quotas(hub, ns) {
        // A new pod the quota tracks must say what it needs of every compute
        // resource capped.
        if pod && old.is_none() && (q.scopes.is_empty() || scopes::tracks(&q.scopes, o)) {
            let missing = unspecified(&q, o);
            if !missing.is_empty() {
                return Err(forbidden(format!(
                    "failed quota: {}: must specify {}",
                    q.name,
                    missing.join("; ")
                )));
            }
        }
        let adds = |r: &str| q.usage(res, o, r) - old.map_or(0, |old| q.usage(res, old, r));
        let keys: Vec<&String> = q.hard.keys().filter(|r| adds(r) > 0).collect();
        if keys.is_empty() {
            continue;
        }
        let now = used(hub, ns, &q, &keys);
        let over: Vec<&String> = keys
            .iter()
            .copied()
            .filter(|r| now.get(*r).copied().unwrap_or(0) + adds(r) > q.hard[*r])
            .collect();
        if !over.is_empty() {
            let list = |f: &dyn Fn(&str) -> i128| {
                over.iter()
                    .map(|r| format!("{r}={}", show(r, f(r))))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(forbidden(format!(
                "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                q.name,
                list(&adds),
                list(&|r| now.get(r).copied().unwrap_or(0)),
                list(&|r| q.hard[r]),
            )));
        }
    }
    Ok(())
}

/// Whether updating `old` to `o` (of `res`) in `ns` adds to what any of the
/// namespace's quotas count: only such updates need [`admit`] (and the [`Gate`]).
pub fn grows(hub: &Hub, res: &Resource, ns: &str, o: &Value, old: &Value) -> bool {
    quotas(hub, ns).iter().any(|q| {
        q.hard
            .keys()
            .any(|r| q.usage(res, o, r) > q.usage(res, old, r))
    })
}

/// The compute resources quota `q` caps that a container of `pod` gives no value
/// for, as kube words them (`limits.memory for: web`).
fn unspecified(q: &Quota, pod: &Value) -> Vec<String> {
    let pod: Pod = serde_json::from_value(pod.clone()).unwrap_or_default();
    let spec = pod.spec.unwrap_or_default();
    let mut missing = Vec::new();
    for r in q.hard.keys().filter(|r| scopes::allows(&q.scopes, r)) {
        let Some((kind, n)) = compute(r) else {
            continue;
        };
        let lacking: Vec<&str> = spec
            .containers
            .iter()
            .filter(|c| {
                let v = if kind == "limits" {
                    berth_pods::limit(c, n)
                } else {
                    berth_pods::request(c, n)
                };
                v.is_none()
            })
            .map(|c| c.name.as_str())
            .collect();
        if !lacking.is_empty() {
            missing.push(format!("{r} for: {}", lacking.join(",")));
        }
    }
    missing
}
