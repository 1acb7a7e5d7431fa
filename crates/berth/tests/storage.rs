//! Persistent volumes in `berth server`, on simulated nodes, driven with kubectl: the
//! default local-path StorageClass, claims bound where their first pod is placed
//! (WaitForFirstConsumer), volumes made by the local-path provisioner with node
//! affinity that brings a StatefulSet's pod back to its data, static volumes bound at
//! once, released volumes deleted, and kube's messages when a claim cannot be served.
//! Needs kubectl 1.32.

mod common;

use common::cluster::{Cluster, SimNodes};
use serde_json::Value;

fn claim(name: &str, extra: &str, size: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n{extra}  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n"
    )
}

fn pod_with(name: &str, claim: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: example.invalid/app, volumeMounts: [{{name: d, mountPath: /data}}]}}]\n  volumes: [{{name: d, persistentVolumeClaim: {{claimName: {claim}}}}}]\n"
    )
}

fn phase_of(c: &Cluster, kind: &str, name: &str) -> String {
    c.json(kind, name)["status"]["phase"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn wait_bound(c: &Cluster, name: &str) -> Value {
    c.until(&format!("claim {name} bound"), 30, || {
        let v = c.json("pvc", name);
        (v["status"]["phase"] == "Bound").then_some(v)
    })
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn claims_bind_where_their_pods_go_and_volumes_follow_their_claims() {
    let c = Cluster::api_only();
    let p = format!("st{}", std::process::id());
    let _nodes = SimNodes::start(&c, &p, 2, &[], true);
    // The default class, as k3s's local-path.
    let sc = c.until("the local-path class", 30, || {
        let o = c.kubectl(&["get", "storageclass"]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.contains("local-path").then_some(s)
    });
    for want in [
        "local-path (default)",
        "berth.dev/local-path",
        "Delete",
        "WaitForFirstConsumer",
    ] {
        assert!(sc.contains(want), "{sc}");
    }
    // A claim without a class gets the default and waits for its first consumer.
    c.apply(&claim("data", "", "1Gi"));
    let v = c.json("pvc", "data");
    assert_eq!(v["spec"]["storageClassName"], "local-path");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(phase_of(&c, "pvc", "data"), "Pending");
    let ev = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=data",
    ]);
    assert!(
        ev.contains("waiting for first consumer to be created before binding"),
        "{ev}"
    );
    // Its pod is placed; the claim is told the node, provisioned there and bound.
    c.apply(&pod_with("user", "data"));
    let node = c.wait_pod("user", "scheduled", 30, |p| {
        p["spec"]["nodeName"].is_string()
    })["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_string();
    let v = wait_bound(&c, "data");
    assert_eq!(
        v["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        node.as_str()
    );
    assert_eq!(v["status"]["capacity"]["storage"], "1Gi");
    let uid = v["metadata"]["uid"].as_str().unwrap().to_string();
    let pv_name = format!("pvc-{uid}");
    assert_eq!(v["spec"]["volumeName"], pv_name.as_str());
    let pv = c.json("pv", &pv_name);
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["values"][0],
        node.as_str()
    );
    let path = pv["spec"]["hostPath"]["path"].as_str().unwrap();
    assert!(
        path.ends_with(&format!("/pvc-{uid}_default_data")),
        "{path}"
    );
    // The volume's node affinity keeps its next user on the same node.
    c.ok(&["delete", "pod", "user", "--grace-period=0", "--force"]);
    for i in 0..3 {
        let name = format!("again{i}");
        c.apply(&pod_with(&name, "data"));
        let n = c.wait_pod(&name, "scheduled", 30, |p| {
            p["spec"]["nodeName"].is_string()
        })["spec"]["nodeName"]
            .clone();
        assert_eq!(n, node.as_str());
        c.ok(&["delete", "pod", &name, "--grace-period=0", "--force"]);
    }
    // Claim deleted: its volume is released and, being Delete, goes.
    c.ok(&["delete", "pvc", "data"]);
    c.until("the released volume deleted", 30, || {
        (!c.kubectl(&["get", "pv", &pv_name]).status.success()).then_some(())
    });

    // A StatefulSet's claims bind on its pods' nodes, one volume each.
    c.apply("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: example.invalid/db}]}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 2Gi}}}\n");
    for i in 0..2 {
        let v = wait_bound(&c, &format!("data-db-{i}"));
        let pod_node = c.pod(&format!("db-{i}"))["spec"]["nodeName"].clone();
        assert_eq!(
            v["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
            pod_node
        );
    }
    let pvs = c.ok(&["get", "pv"]);
    assert!(
        pvs.contains("default/data-db-0") && pvs.contains("local-path"),
        "{pvs}"
    );

    // A static volume of a class without a provisioner binds at once; a claim that
    // nothing can serve stays Pending with kube's event.
    c.apply("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: manual}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\n");
    c.apply("apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: disk1}\nspec:\n  storageClassName: manual\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  hostPath: {path: /tmp/berth-disk1}\n");
    c.until("disk1 Available", 30, || {
        (phase_of(&c, "pv", "disk1") == "Available").then_some(())
    });
    c.apply(&claim("small", "  storageClassName: manual\n", "500Mi"));
    let v = wait_bound(&c, "small");
    assert_eq!(v["spec"]["volumeName"], "disk1");
    c.apply(&claim("huge", "  storageClassName: manual\n", "5Gi"));
    let ev = c.until("FailedBinding", 30, || {
        let ev = c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=huge",
        ]);
        ev.contains("FailedBinding").then_some(ev)
    });
    assert!(
        ev.contains("no persistent volumes available for this claim"),
        "{ev}"
    );
    // Its pod cannot be placed until the claim is bound; nor one whose claim is missing.
    c.apply(&pod_with("stuck", "huge"));
    let cond = c.wait_pod("stuck", "unschedulable", 30, |p| {
        p["status"]["conditions"][0]["reason"] == "Unschedulable"
    })["status"]["conditions"][0]
        .clone();
    assert_eq!(
        cond["message"],
        "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."
    );
    c.apply(&pod_with("orphan", "nope"));
    let cond = c.wait_pod("orphan", "unschedulable", 30, |p| {
        p["status"]["conditions"][0]["reason"] == "Unschedulable"
    })["status"]["conditions"][0]
        .clone();
    assert_eq!(
        cond["message"],
        "0/2 nodes are available: persistentvolumeclaim \"nope\" not found."
    );
    // Retain: the claim deleted, the volume stays, Released.
    c.ok(&["delete", "pvc", "small"]);
    c.until("disk1 Released", 30, || {
        (phase_of(&c, "pv", "disk1") == "Released").then_some(())
    });
}
