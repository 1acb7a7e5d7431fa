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
