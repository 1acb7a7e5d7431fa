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

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn pods_are_placed_as_kube_scheduler_places_them() {
    let c = Cluster::api_only();
    // No node yet: kube's message for an empty cluster; the first nodes take it.
    c.apply(&with_cpu(pod("early", ""), "100m"));
    let cond = unschedulable(&c, "early");
    assert_eq!(
        cond["message"], "no nodes available to schedule pods",
        "{cond}"
    );
    let p = format!("s{}", std::process::id());
    let _nodes = sim(&c, &p, 3, &["--cpu", "2", "--memory", "4Gi"]);
    node_of(&c, "early");
    let (n0, n1, n2) = (format!("{p}-0"), format!("{p}-1"), format!("{p}-2"));
    c.ok(&["label", "node", &n2, "disk=ssd"]);
    // A node selector picks the node.
    c.apply(&with_cpu(
        pod("ssd", "  nodeSelector: {disk: ssd}\n"),
        "100m",
    ));
    assert_eq!(node_of(&c, "ssd"), n2);
    // Compared word by word: kubectl widens the columns when an earlier event (a
    // FailedScheduling from before the scheduler's cache had the nodes) is listed too.
    let ev = c.events("ssd");
    let want = format!("Scheduled default-scheduler Successfully assigned default/ssd to {n2}");
    assert!(
        ev.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want),
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
    let ev = c.events("huge");
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
    assert!(c.events("theirs").lines().count() <= 1);
    c.ok(&["delete", "pod", "--all", "--grace-period=0", "--force"]);
}

/// A Deployment of `app` with `replicas` and `extra` in its pod spec (four spaces in).
fn deployment(app: &str, replicas: u32, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n    metadata: {{labels: {{app: {app}}}}}\n    spec:\n{extra}      containers:\n      - {{name: c, image: example.invalid/{app}}}\n"
    )
}

/// The nodes of `app`'s pods (None for a pod not placed).
fn placements(c: &Cluster, app: &str) -> Vec<Option<String>> {
    let v: Value =
        serde_json::from_str(&c.ok(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]))
            .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .collect()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn pod_affinity_anti_affinity_and_topology_spread_place_replicas_as_kube_does() {
    let c = Cluster::api_only();
    let p = format!("a{}", std::process::id());
    let _nodes = sim(&c, &p, 3, &[]);
    let zone = |i: usize, z: &str| {
        c.ok(&[
            "label",
            "node",
            &format!("{p}-{i}"),
            &format!("topology.kubernetes.io/zone={z}"),
        ]);
    };
    zone(0, "z1");
    zone(1, "z1");
    zone(2, "z2");
    // Required anti-affinity by hostname: one replica per node, the fourth Pending.
    c.apply(&deployment(
        "web",
        4,
        "      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - {labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}\n",
    ));
    let placed = c.until("three web pods placed, one left", 30, || {
        let pl = placements(&c, "web");
        (pl.len() == 4 && pl.iter().flatten().count() == 3).then_some(pl)
    });
    let nodes: std::collections::BTreeSet<_> = placed.iter().flatten().collect();
    assert_eq!(nodes.len(), 3, "{placed:?}");
    let pending: Value = serde_json::from_str(&c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "--field-selector",
        "spec.nodeName=",
        "-o",
        "json",
    ]))
    .unwrap();
    let name = pending["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let cond = unschedulable(&c, &name);
    assert_eq!(
        cond["message"],
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
    // Required affinity to web, by zone: a cache pod lands where web pods are.
    c.apply(&deployment(
        "cache",
        2,
        "      affinity:\n        podAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - {labelSelector: {matchLabels: {app: web}}, topologyKey: topology.kubernetes.io/zone}\n",
    ));
    let placed = c.until("cache pods placed", 30, || {
        let pl = placements(&c, "cache");
        (pl.len() == 2 && pl.iter().all(Option::is_some)).then_some(pl)
    });
    assert_eq!(placed.len(), 2);
    // A pod without terms of its own is kept off by web's anti-affinity.
    c.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: intruder, labels: {app: web}}\nspec:\n  containers: [{name: c, image: example.invalid/x}]\n");
    let cond = unschedulable(&c, "intruder");
    assert_eq!(
        cond["message"],
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
    );
    // Spread over zones with skew 1: 6 replicas, 3 in each zone.
    c.apply(&deployment(
        "spread",
        6,
        "      topologySpreadConstraints:\n      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: spread}}}\n",
    ));
    let placed = c.until("spread pods placed", 30, || {
        let pl = placements(&c, "spread");
        (pl.len() == 6 && pl.iter().all(Option::is_some)).then_some(pl)
    });
    let in_z2 = placed
        .iter()
        .flatten()
        .filter(|n| **n == format!("{p}-2"))
        .count();
    assert_eq!(in_z2, 3, "{placed:?}");
    // The scheduler's and controllers' metrics, at the server's /metrics.
    let metrics = c.ok(&["get", "--raw", "/metrics"]);
    for want in [
        "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"}",
        "scheduler_schedule_attempts_total{result=\"unschedulable\",profile=\"default-scheduler\"}",
        "scheduler_scheduling_attempt_duration_seconds_bucket{result=\"scheduled\"",
        "controller_reconcile_total{controller=\"replicaset\",result=\"success\"}",
        "controller_reconcile_time_seconds_count{controller=\"deployment\"}",
        "workqueue_depth{name=\"replicaset\"}",
        "apiserver_request_total{verb=",
    ] {
        assert!(metrics.contains(want), "{want} not in:\n{metrics}");
    }
    c.ok(&["delete", "deploy", "--all"]);
    c.ok(&["delete", "pod", "--all", "--grace-period=0", "--force"]);
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_pod_of_higher_priority_preempts_lower_ones_and_classes_resolve_at_admission() {
    let c = Cluster::api_only();
    let p = format!("pr{}", std::process::id());
    let _nodes = sim(&c, &p, 1, &["--cpu", "2"]);
    // Every cluster has the system classes; users add theirs with kubectl.
    let pcs = c.ok(&["get", "priorityclass"]);
    assert!(
        pcs.contains("system-node-critical") && pcs.contains("2000001000"),
        "{pcs}"
    );
    c.ok(&[
        "create",
        "priorityclass",
        "high",
        "--value=1000",
        "--description=urgent work",
    ]);
    c.ok(&[
        "create",
        "priorityclass",
        "low",
        "--value=10",
        "--global-default",
    ]);
    let pcs = c.ok(&["get", "pc", "low"]);
    assert!(pcs.contains("true"), "{pcs}");
    // An unknown class is refused at create, as kube's admission refuses it.
    let o = c.kubectl_in(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: lost}\nspec:\n  priorityClassName: nope\n  containers: [{name: c, image: example.invalid/x}]\n"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no PriorityClass with name nope was found"),
        "{err}"
    );
    // Two low pods fill the node (the global default gives them priority 10).
    for i in 0..2 {
        c.apply(&with_cpu(pod(&format!("low{i}"), ""), "900m"));
        node_of(&c, &format!("low{i}"));
    }
    assert_eq!(c.pod("low0")["spec"]["priority"], 10);
    assert_eq!(c.pod("low0")["spec"]["priorityClassName"], "low");
    // A disruption budget protects low0: preemption takes low1 instead.
    c.ok(&["label", "pod", "low0", "tier=db"]);
    c.ok(&[
        "create",
        "poddisruptionbudget",
        "db",
        "--selector=tier=db",
        "--min-available=1",
    ]);
    c.until("the budget's status", 30, || {
        (c.json("pdb", "db")["status"]["expectedPods"] == 1).then_some(())
    });
    // A pod of no higher priority waits; a high one takes one low pod's place.
    c.apply(&with_cpu(pod("peer", ""), "900m"));
    assert_eq!(
        unschedulable(&c, "peer")["message"],
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    c.apply(&with_cpu(
        pod("urgent", "  priorityClassName: high\n"),
        "900m",
    ));
    assert_eq!(node_of(&c, "urgent"), format!("{p}-0"));
    assert_eq!(c.pod("urgent")["spec"]["priority"], 1000);
    let left: Vec<String> = ["low0", "low1"]
        .iter()
        .filter(|n| c.kubectl(&["get", "pod", n]).status.success())
        .map(|n| n.to_string())
        .collect();
    assert_eq!(left, ["low0"], "one victim, the pod no budget protects");
    let victim = "low1";
    let ev = c.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={victim},reason=Preempted"),
        "-o",
        "custom-columns=MESSAGE:.message",
    ]);
    let uid = c.pod("urgent")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ev.contains(&format!("Preempted by pod {uid} on node {p}-0")),
        "{ev}"
    );
    // The peer, of equal priority, never preempts and is still waiting.
    assert!(c.pod("peer")["spec"]["nodeName"].is_null());
    c.ok(&["delete", "pod", "--all", "--grace-period=0", "--force"]);

    // Room is not all preemption frees: a pod kept off the node by its anti-affinity
    // to a lower one, or by a lower one's anti-affinity to it, takes its place.
    let labelled = |name: &str, app: &str, class: &str, anti_to: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\nspec:\n  priorityClassName: {class}\n  affinity: {{podAntiAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: [{{labelSelector: {{matchLabels: {{app: {anti_to}}}}}, topologyKey: kubernetes.io/hostname}}]}}}}\n  containers: [{{name: c, image: example.invalid/x, resources: {{requests: {{cpu: 100m}}}}}}]\n"
        )
    };
    let gone = |name: &str| {
        c.until(&format!("{name} preempted"), 30, || {
            (!c.kubectl(&["get", "pod", name]).status.success()).then_some(())
        })
    };
    c.apply(&labelled("lone", "lone", "low", "nobody"));
    node_of(&c, "lone");
    c.apply(&labelled("shy", "shy", "high", "lone"));
    assert_eq!(node_of(&c, "shy"), format!("{p}-0"));
    gone("lone");
    c.apply(&labelled("hermit", "hermit", "low", "visitor"));
    node_of(&c, "hermit");
    c.apply(&labelled("visitor", "visitor", "high", "nobody"));
    assert_eq!(node_of(&c, "visitor"), format!("{p}-0"));
    gone("hermit");
    c.ok(&["delete", "pod", "--all", "--grace-period=0", "--force"]);
}
