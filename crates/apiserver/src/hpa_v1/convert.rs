//! The conversion between autoscaling/v1 and the stored autoscaling/v2 form of a
//! HorizontalPodAutoscaler: v1 carries one target (CPU utilization); a v1 write keeps
//! what it cannot express (other metrics, behavior) from the stored object, and a v1
//! read shows the status conditions in the annotation kube uses for them. kube also
//! keeps the other metrics and behavior in v1 annotations; berth does not (yet).

use serde_json::{json, Map, Value};

/// The annotation kube keeps a v1 autoscaler's status conditions in.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
pub(crate) const V1: &str = "autoscaling/v1";
pub(crate) const V2: &str = "autoscaling/v2";
pub(crate) const KIND: &str = "HorizontalPodAutoscaler";

/// Whether a metric is the CPU utilization target v1 can express.
fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

fn is_cpu(m: &Value) -> bool {
    m["type"] == "Resource" && m["resource"]["name"] == "cpu"
}

/// The fields v1 and v2 share, in the spec and in the status.
const SPEC_FIELDS: [&str; 3] = ["scaleTargetRef", "minReplicas", "maxReplicas"];
const STATUS_FIELDS: [&str; 4] = [
    "observedGeneration",
    "lastScaleTime",
    "currentReplicas",
    "desiredReplicas",
];

/// The first metric of a list (spec.metrics or status.currentMetrics) `pick` picks.
fn find_metric(list: &Value, pick: fn(&Value) -> bool) -> Option<&Value> {
    list.as_array().into_iter().flatten().find(|m| pick(m))
}

/// A list of metrics without those `drop` picks.
fn other_metrics(list: &Value, drop: fn(&Value) -> bool) -> Vec<Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|m| !drop(m))
        .cloned()
        .collect()
}

/// The v1 form of a stored (v2) autoscaler.
pub fn to_v1(o: &Value) -> Value {
    let mut meta = o.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let spec = &o["spec"];
    let mut s = Map::new();
    for k in SPEC_FIELDS {
        if let Some(v) = spec.get(k) {
            s.insert(k.into(), v.clone());
        }
    }
    let target = find_metric(&spec["metrics"], is_cpu_utilization)
        .and_then(|m| m["resource"]["target"].get("averageUtilization"));
    if let Some(t) = target {
        s.insert("targetCPUUtilizationPercentage".into(), t.clone());
    }
    let mut out = json!({"apiVersion": V1, "kind": KIND, "spec": s});
    // v1's status is never absent: its replica counts are required (0 until set).
    let no_status = json!({});
    let st = o
        .get("status")
        .filter(|s| s.is_object())
        .unwrap_or(&no_status);
    let mut status = Map::new();
    for k in STATUS_FIELDS {
        if let Some(v) = st.get(k) {
            status.insert(k.into(), v.clone());
        }
    }
    status.entry("currentReplicas").or_insert_with(|| json!(0));
    status.entry("desiredReplicas").or_insert_with(|| json!(0));
    let current = find_metric(&st["currentMetrics"], is_cpu)
        .and_then(|m| m["resource"]["current"].get("averageUtilization"));
    if let Some(c) = current {
        status.insert("currentCPUUtilizationPercentage".into(), c.clone());
    }
    out["status"] = Value::Object(status);
    if let Some(c) = st
        .get("conditions")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        if let Some(m) = meta.as_object_mut() {
            let ann = m.entry("annotations").or_insert_with(|| json!({}));
            ann[CONDITIONS_ANNOTATION] = json!(Value::Array(c.clone()).to_string());
        }
    }
    out["metadata"] = meta;
    out
}

/// The stored (v2) form of a v1 autoscaler, keeping from `base` (the stored object,
/// for an update) what v1 cannot say.
pub fn to_v2(v1: &Value, base: Option<&Value>) -> Value {
    let mut out = base.cloned().unwrap_or_else(|| json!({}));
    out["apiVersion"] = json!(V2);
    out["kind"] = json!(KIND);
    let mut meta = v1.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        ann.remove(CONDITIONS_ANNOTATION);
    }
    out["metadata"] = meta;
    let spec = &v1["spec"];
    if !out["spec"].is_object() {
        out["spec"] = json!({});
    }
    for k in SPEC_FIELDS {
        match spec.get(k) {
            Some(v) => out["spec"][k] = v.clone(),
            None => {
                if let Some(s) = out["spec"].as_object_mut() {
                    s.remove(k);
                }
            }
        }
    }
    let mut metrics = other_metrics(&out["spec"]["metrics"], is_cpu_utilization);
    if let Some(t) = spec.get("targetCPUUtilizationPercentage") {
        metrics.insert(
            0,
            json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": t}}}),
        );
    }
    // None left: v2's defaulting targets 80% CPU, as v1's does.
    if metrics.is_empty() {
        if let Some(s) = out["spec"].as_object_mut() {
            s.remove("metrics");
        }
    } else {
        out["spec"]["metrics"] = Value::Array(metrics);
    }
    if let Some(st) = v1.get("status").filter(|s| s.is_object()) {
        if !out["status"].is_object() {
            out["status"] = json!({});
        }
        for k in STATUS_FIELDS {
            if let Some(v) = st.get(k) {
                out["status"][k] = v.clone();
            }
        }
        if let Some(c) = st.get("currentCPUUtilizationPercentage") {
            // The stored CPU figure keeps its other fields (averageValue).
            let mut cpu = find_metric(&out["status"]["currentMetrics"], is_cpu)
                .cloned()
                .unwrap_or_else(
                    || json!({"type": "Resource", "resource": {"name": "cpu", "current": {}}}),
                );
            cpu["resource"]["current"]["averageUtilization"] = c.clone();
            let mut current = other_metrics(&out["status"]["currentMetrics"], is_cpu);
            current.insert(0, cpu);
            out["status"]["currentMetrics"] = Value::Array(current);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn stored_hpa() -> Value {
        json!({"apiVersion": V2, "kind": KIND,
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 4,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 81, "averageValue": "81m"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}]}})
    }

    #[test]
    fn the_v1_form_shows_the_cpu_target_usage_and_conditions() {
        let v1 = to_v1(&stored_hpa());
        assert_eq!(v1["apiVersion"], V1);
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["spec"]["maxReplicas"], 4);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 81);
        assert_eq!(v1["status"]["desiredReplicas"], 3);
        assert_eq!(v1["metadata"]["resourceVersion"], "7");
        let conds: Value = serde_json::from_str(
            v1["metadata"]["annotations"][CONDITIONS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(conds[0]["type"], "AbleToScale");
    }

    #[test]
    fn a_v1_write_keeps_what_v1_cannot_say() {
        let cur = stored_hpa();
        let mut v1 = to_v1(&cur);
        v1["spec"]["targetCPUUtilizationPercentage"] = json!(70);
        v1["spec"]["maxReplicas"] = json!(9);
        let v2 = to_v2(&v1, Some(&cur));
        assert_eq!(v2["apiVersion"], V2);
        let metrics = v2["spec"]["metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 70);
        assert_eq!(metrics[1]["resource"]["name"], "memory");
        assert_eq!(
            v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            60
        );
        assert_eq!(v2["spec"]["maxReplicas"], 9);
        assert!(v2["metadata"]["annotations"]
            .get(CONDITIONS_ANNOTATION)
            .is_none());
        // The usage figure keeps its other fields.
        let cpu = &v2["status"]["currentMetrics"][0]["resource"]["current"];
        assert_eq!(cpu["averageUtilization"], 81);
        assert_eq!(cpu["averageValue"], "81m");
        // Nothing stored in the status yet: v1 still shows its required counts.
        let mut bare = stored_hpa();
        bare.as_object_mut().unwrap().remove("status");
        let v1 = to_v1(&bare);
        assert_eq!(
            v1["status"],
            json!({"currentReplicas": 0, "desiredReplicas": 0})
        );
        // No target in v1 and nothing else: no metrics, for v2's default (80% CPU).
        let fresh = to_v2(
            &json!({"apiVersion": V1, "kind": KIND, "metadata": {"name": "x"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3}}),
            None,
        );
        assert!(fresh["spec"].get("metrics").is_none(), "{fresh}");
        assert_eq!(fresh["spec"]["maxReplicas"], 3);
    }
}
