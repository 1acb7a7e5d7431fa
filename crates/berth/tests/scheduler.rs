//! The scheduler in `berth server`, on simulated nodes, driven with kubectl: pods
//! placed by requests, node selectors, taints and cordons, spread over the emptier
//! nodes; pods that fit nowhere stay Pending with kube's FailedScheduling message
//! until a node that fits comes. Needs kubectl 1.32.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, SimNodes};
use serde_json::Value;

fn sim(c: &Cluster, prefix: &str, count: usize, extra: &[&str]) -> SimNodes {
    SimNodes::start(c, prefix, count, extra, true)
}

/// The pod's PodScheduled condition once the scheduler found no node for it.
fn unschedulable(c: &Cluster, name: &str) -> Value {
    let p = c.wait_pod(name, "unschedulable", 30, |p| {
        p["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "Unschedulable"))
    });
    assert_eq!(p["status"]["phase"], "Pending");
    p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone()
}

fn pod(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{spec}  containers:\n  - {{name: c, image: example.invalid/app, resources: {{requests: {{cpu: {{CPU}}}}}}}}\n"
    )
}

fn with_cpu(yaml: String, cpu: &str) -> String {
    yaml.replace("{CPU}", cpu)
}

fn node_of(c: &Cluster, name: &str) -> String {
    let p = c.wait_pod(name, "scheduled", 30, |p| {
        p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    });
    p["spec"]["nodeName"].as_str().unwrap().to_string()
}

fn events(c: &Cluster, name: &str) -> String {
    c.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "custom-columns=REASON:.reason,FROM:.source.component,MESSAGE:.message",
    ])
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn pods_are_placed_as_kube_scheduler_places_them() {
    let c = Cluster::api_only();
    let p = format!("s{}", std::process::id());
    let _nodes = sim(&c, &p, 3, &["--cpu", "2", "--memory", "4Gi"]);
    let (n0, n1, n2) = (format!("{p}-0"), format!("{p}-1"), format!("{p}-2"));
    c.ok(&["label", "node", &n2, "disk=ssd"]);
    // A node selector picks the node.
    c.apply(&with_cpu(
        pod("ssd", "  nodeSelector: {disk: ssd}\n"),
        "100m",
    ));
    assert_eq!(node_of(&c, "ssd"), n2);
    let ev = events(&c, "ssd");
    assert!(
        ev.contains(&format!(
            "Scheduled   default-scheduler   Successfully assigned default/ssd to {n2}"
        )),
        "{ev}"
    );
    // Pods spread over the emptier nodes: one big pod on each node.
    for i in 0..3 {
        c.apply(&with_cpu(pod(&format!("big{i}"), ""), "1500m"));
    }
    let placed: std::collections::BTreeSet<String> =
        (0..3).map(|i| node_of(&c, &format!("big{i}"))).collect();
    assert_eq!(placed.len(), 3, "{placed:?}");
    // No room: Pending, with kube's message, as a condition and an event.
    c.apply(&with_cpu(pod("huge", ""), "1"));
    let cond = unschedulable(&c, "huge");
    assert_eq!(cond["status"], "False");
    assert_eq!(
        cond["message"], "0/3 nodes are available: 3 Insufficient cpu.",
        "{cond}"
    );
    let ev = events(&c, "huge");
    assert!(
        ev.contains("FailedScheduling")
            && ev.contains("0/3 nodes are available: 3 Insufficient cpu."),
        "{ev}"
    );
    // A node with room arrives: the pod goes there.
    let _more = sim(&c, &format!("{p}x"), 1, &["--cpu", "4"]);
    assert_eq!(node_of(&c, "huge"), format!("{p}x-0"));
    // Taints keep pods off unless tolerated; cordoned nodes take none.
    c.ok(&["taint", "node", &n0, "dedicated=db:NoSchedule"]);
    c.ok(&["cordon", &n1]);
    c.ok(&["cordon", &format!("{p}x-0")]);
    c.apply(&with_cpu(pod("plain", ""), "100m"));
    assert_eq!(node_of(&c, "plain"), n2);
    c.apply(&with_cpu(
        pod(
            "tolerant",
            "  nodeSelector: {kubernetes.io/hostname: NODE}\n  tolerations:\n  - {key: dedicated, operator: Equal, value: db, effect: NoSchedule}\n"
                .replace("NODE", &n0)
                .as_str(),
        ),
        "100m",
    ));
    assert_eq!(node_of(&c, "tolerant"), n0);
    c.apply(&with_cpu(
        pod(
            "stuck",
            "  nodeSelector: {kubernetes.io/hostname: NODE}\n"
                .replace("NODE", &n0)
                .as_str(),
        ),
        "100m",
    ));
    let msg = unschedulable(&c, "stuck")["message"].clone();
    assert_eq!(
        msg,
        "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: db}, 2 node(s) were unschedulable.",
    );
    // Host ports: a second pod wanting the same port goes elsewhere.
    c.ok(&["uncordon", &n1]);
    let ported = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeSelector: {{sim.berth.dev/node: 'true'}}\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {{key: kubernetes.io/hostname, operator: In, values: [{n1}, {n2}]}}\n  containers:\n  - {{name: c, image: example.invalid/app, ports: [{{containerPort: 80, hostPort: 8080}}]}}\n"
        )
    };
    c.apply(&ported("port-a"));
    c.apply(&ported("port-b"));
    let (a, b) = (node_of(&c, "port-a"), node_of(&c, "port-b"));
    assert_ne!(a, b);
    // Another scheduler's pods are left alone.
    c.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: theirs}\nspec:\n  schedulerName: other\n  containers:\n  - {name: c, image: example.invalid/app}\n");
    std::thread::sleep(Duration::from_secs(2));
    let theirs: Value = c.pod("theirs");
    assert!(theirs["spec"]["nodeName"].is_null(), "{theirs}");
    assert!(events(&c, "theirs").lines().count() <= 1);
    c.ok(&["delete", "pod", "--all", "--grace-period=0", "--force"]);
}
