//! Pod priority, as kube-apiserver's Priority admission plugin sets it: a new pod's
//! priorityClassName (or the class marked globalDefault) resolved to spec.priority
//! and spec.preemptionPolicy, which the scheduler orders and preempts by; and the two
//! classes every cluster has for its system pods.

use berth_store::Store;
use serde_json::{json, Value};

use crate::resources;
use crate::state::Api;
use crate::status::ApiError;

/// The highest value a class not named system-* may have (kube's
/// HighestUserDefinablePriority).
pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

/// The built-in classes: name, value, description (kube's).
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The PriorityClass objects of [`SYSTEM_CLASSES`].
pub fn system_classes() -> impl Iterator<Item = Value> {
    SYSTEM_CLASSES.iter().map(|(name, value, description)| {
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
               "metadata": {"name": name}, "value": value, "description": description,
               "preemptionPolicy": "PreemptLowerPriority"})
    })
}

/// Resolves a new pod's priority from its class (kube's messages when it cannot).
pub async fn admit(api: &Api, pod: &mut Value) -> Result<(), ApiError> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let forbidden =
        |why: String| ApiError::forbidden(format!("pods \"{pod_name}\" is forbidden: {why}"));
    let res = resources::find("scheduling.k8s.io", "v1", "priorityclasses").expect("served");
    let asked = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let class = match &asked {
        Some(name) => match api.store.get(&res.key(None, name)).await? {
            Some(kv) => Some(crate::hub::decode(&kv.value, kv.mod_revision)),
            None => {
                return Err(forbidden(format!(
                    "no PriorityClass with name {name} was found"
                )))
            }
        },
        None => global_default(api).await?,
    };
    let (name, value, policy) = match &class {
        Some(c) => (
            c.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or(""),
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority"),
        ),
        None => ("", 0, "PreemptLowerPriority"),
    };
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64) {
        if given != value {
            return Err(forbidden(format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name")));
        }
    }
    if let Some(given) = pod
        .pointer("/spec/preemptionPolicy")
        .and_then(Value::as_str)
    {
        if given != policy {
            return Err(forbidden(format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name")));
        }
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        if !name.is_empty() {
            spec.insert("priorityClassName".into(), json!(name));
        }
        spec.insert("priority".into(), json!(value));
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

/// The class marked globalDefault (the lowest valued, if several are).
async fn global_default(api: &Api) -> Result<Option<Value>, ApiError> {
    use berth_store::Store;
    let res = resources::find("scheduling.k8s.io", "v1", "priorityclasses").expect("served");
    let page = api.store.list(&res.ns_prefix(None), 0, 0, None).await?;
    Ok(page
        .items
        .iter()
        .map(|kv| crate::hub::decode(&kv.value, kv.mod_revision))
        .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0)))
}
