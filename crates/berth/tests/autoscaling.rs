//! The HorizontalPodAutoscaler in `berth server` on simulated nodes, driven with
//! kubectl: replicas brought within min and max, the table kubectl shows, and kube's
//! conditions and events when no metrics can be read (simulated nodes report none;
//! scaling on real CPU use is tried in controllers_real). Needs kubectl 1.32.

mod common;

use common::cluster::{Cluster, SimNodes};

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn autoscalers_keep_replicas_within_bounds_and_say_why_they_cannot_measure() {
    let c = Cluster::api_only();
    let p = format!("as{}", std::process::id());
    let _nodes = SimNodes::start(&c, &p, 2, &[], true);
    c.apply("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: example.invalid/web, resources: {requests: {cpu: 100m}}}]}\n");
    c.apply("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 2\n  maxReplicas: 4\n  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}\n");
    c.until("the Deployment raised to minReplicas", 40, || {
        (c.json("deploy", "web")["spec"]["replicas"] == 2).then_some(())
    });
    let ev = c.until("the rescale event", 30, || {
        let ev = c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=HorizontalPodAutoscaler",
        ]);
        ev.contains("SuccessfulRescale").then_some(ev)
    });
    assert!(
        ev.contains("New size: 2; reason: Current number of replicas below Spec.MinReplicas"),
        "{ev}"
    );
    // Simulated nodes report no usage: the autoscaler says so and leaves the scale.
    let hpa = c.until("ScalingActive False", 60, || {
        let h = c.json("hpa", "web");
        h["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "ScalingActive" && c["status"] == "False")
            .then_some(h)
    });
    let active = hpa["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ScalingActive")
        .unwrap()
        .clone();
    assert_eq!(active["reason"], "FailedGetResourceMetric", "{hpa}");
    assert_eq!(hpa["status"]["desiredReplicas"], 2);
    let table = c.ok(&["get", "hpa"]);
    for want in [
        "REFERENCE",
        "Deployment/web",
        "cpu: <unknown>/50%",
        "MINPODS",
    ] {
        assert!(table.contains(want), "{table}");
    }
    // Above the maximum by hand: brought back down.
    c.ok(&["scale", "deploy/web", "--replicas=6"]);
    c.until("the Deployment lowered to maxReplicas", 40, || {
        (c.json("deploy", "web")["spec"]["replicas"] == 4).then_some(())
    });
    // A bad autoscaler is refused, naming the field.
    let o = c.kubectl_in(
        &["apply", "-f", "-"],
        Some("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: bad}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 5\n  maxReplicas: 2\n"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("spec.maxReplicas"),
        "{err}"
    );
}

/// autoscaling/v1, which `kubectl autoscale` (1.32) writes: created, read, patched
/// and watched in v1 while stored as v2, nothing v1 cannot say lost on the way.
#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn kubectl_autoscale_and_the_v1_form_of_autoscalers() {
    let c = Cluster::api_only();
    let p = format!("as1{}", std::process::id());
    let _nodes = SimNodes::start(&c, &p, 2, &[], true);
    c.apply("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec: {containers: [{name: api, image: example.invalid/api, resources: {requests: {cpu: 100m}}}]}\n");
    let out = c.ok(&[
        "autoscale",
        "deployment",
        "api",
        "--min=2",
        "--max=5",
        "--cpu-percent=60",
    ]);
    assert!(out.contains("autoscaled"), "{out}");
    // Stored as v2 with the CPU target as a metric; read back in v1 the same.
    let v2 = c.json("horizontalpodautoscalers.v2.autoscaling", "api");
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["name"], "cpu", "{v2}");
    assert_eq!(
        v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    let v1 = c.json("horizontalpodautoscalers.v1.autoscaling", "api");
    assert_eq!(v1["apiVersion"], "autoscaling/v1", "{v1}");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60, "{v1}");
    assert_eq!(v1["spec"]["minReplicas"], 2);
    assert_eq!(v1["spec"]["scaleTargetRef"]["name"], "api");
    // The controller acts on it as on any autoscaler.
    c.until("the Deployment raised to minReplicas", 40, || {
        (c.json("deploy", "api")["spec"]["replicas"] == 2).then_some(())
    });
    // A v2-only detail (a memory metric) survives a v1 patch of the CPU target.
    c.ok(&[
        "patch",
        "horizontalpodautoscalers.v2.autoscaling",
        "api",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/spec/metrics/-", "value": {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}}]"#,
    ]);
    c.ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "api",
        "--type=merge",
        "-p",
        r#"{"spec": {"targetCPUUtilizationPercentage": 70, "maxReplicas": 6}}"#,
    ]);
    let v2 = c.json("horizontalpodautoscalers.v2.autoscaling", "api");
    let metrics = v2["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 2, "{v2}");
    assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 70);
    assert_eq!(metrics[1]["resource"]["name"], "memory");
    assert_eq!(v2["spec"]["maxReplicas"], 6);
    // The v1 status shows the conditions in kube's annotation, once there are some.
    let v1 = c.until("conditions in the v1 annotation", 60, || {
        let v1 = c.json("horizontalpodautoscalers.v1.autoscaling", "api");
        v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/conditions"]
            .as_str()
            .is_some_and(|s| s.contains("AbleToScale"))
            .then_some(v1)
    });
    assert_eq!(v1["status"]["desiredReplicas"], 2, "{v1}");
    // A v1 watch gets v1 objects.
    let o = c.kubectl_in(
        &[
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "--watch",
            "--request-timeout=3s",
            "-o",
            "jsonpath={.apiVersion}{\"\\n\"}",
        ],
        None,
    );
    let seen = String::from_utf8_lossy(&o.stdout);
    assert!(seen.lines().next() == Some("autoscaling/v1"), "{seen:?}");
    // Deleted through v1: gone from both.
    c.ok(&["delete", "horizontalpodautoscalers.v1.autoscaling", "api"]);
    let o = c.kubectl_in(
        &["get", "horizontalpodautoscalers.v2.autoscaling", "api"],
        None,
    );
    assert!(!o.status.success());
}
