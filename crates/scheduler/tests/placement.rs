//! The scheduler's decisions on a cache built by hand: inter-pod affinity and
//! anti-affinity (own and existing pods'), topology spread (hard and soft), node
//! affinity preferences and default spreading by controller, each with kube's
//! reasons when nothing fits.

use berth_scheduler::cache::{Cache, Needs};
use berth_scheduler::choose;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

fn node(name: &str, zone: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": zone}},
        "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}
    }))
    .unwrap()
}

fn pod(name: &str, labels: Value, node: &str, spec: Value) -> Pod {
    let mut s = json!({"nodeName": node, "containers": [{"name": "c", "image": "i"}]});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "uid": name, "namespace": "default", "labels": labels},
        "spec": s,
    }))
    .unwrap()
}

fn cluster(nodes: &[(&str, &str)]) -> Cache {
    let mut c = Cache::default();
    for (n, z) in nodes {
        c.set_node(node(n, z));
    }
    c
}

/// Places `p` and records it there (as a binding seen).
fn place(c: &mut Cache, p: &Pod) -> Result<String, String> {
    let n = choose(c, p, &Needs::of(p), 0)?;
    c.assume(p, Needs::of(p), &n);
    Ok(n)
}

fn anti(key: &str, app: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}})
}

#[test]
fn anti_affinity_keeps_replicas_apart_and_existing_pods_keep_others_out() {
    let mut c = cluster(&[("a", "z1"), ("b", "z1"), ("c", "z2")]);
    let mut used = std::collections::BTreeSet::new();
    for i in 0..3 {
        let p = pod(
            &format!("w{i}"),
            json!({"app": "web"}),
            "",
            anti("kubernetes.io/hostname", "web"),
        );
        used.insert(place(&mut c, &p).unwrap());
    }
    assert_eq!(used.len(), 3, "one per node: {used:?}");
    let p = pod(
        "w3",
        json!({"app": "web"}),
        "",
        anti("kubernetes.io/hostname", "web"),
    );
    assert_eq!(
        place(&mut c, &p),
        Err("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.".into())
    );
    // A pod without terms of its own is still kept out by theirs (symmetry).
    let plain = pod("x", json!({"app": "web"}), "", json!({}));
    assert_eq!(
        place(&mut c, &plain),
        Err(
            "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
                .into()
        )
    );
    // Other labels are not concerned.
    let other = pod("y", json!({"app": "db"}), "", json!({}));
    assert!(place(&mut c, &other).is_ok());
    // By zone: two zones, two pods at most.
    let mut c = cluster(&[("a", "z1"), ("b", "z1"), ("c", "z2")]);
    let zones: Vec<_> = (0..2)
        .map(|i| {
            let p = pod(
                &format!("z{i}"),
                json!({"app": "zz"}),
                "",
                anti("topology.kubernetes.io/zone", "zz"),
            );
            place(&mut c, &p).unwrap()
        })
        .collect();
    assert!(zones.contains(&"c".to_string()), "{zones:?}");
    let p = pod(
        "z2",
        json!({"app": "zz"}),
        "",
        anti("topology.kubernetes.io/zone", "zz"),
    );
    assert!(place(&mut c, &p).is_err());
}

#[test]
fn affinity_follows_the_matching_pods_domain_and_the_first_of_a_group_goes_anywhere() {
    let mut c = cluster(&[("a", "z1"), ("b", "z1"), ("c", "z2")]);
    let with = |name: &str, key: &str| {
        pod(
            name,
            json!({"app": "cache"}),
            "",
            json!({"affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": key}]}}}),
        )
    };
    // No db anywhere, and the pod is not a db: nowhere.
    assert_eq!(
        place(&mut c, &with("c0", "kubernetes.io/hostname")),
        Err("0/3 nodes are available: 3 node(s) didn't match pod affinity rules.".into())
    );
    let db = pod("db", json!({"app": "db"}), "c", json!({}));
    c.set_pod(&db);
    assert_eq!(
        place(&mut c, &with("c1", "kubernetes.io/hostname")).unwrap(),
        "c"
    );
    let mut c = cluster(&[("a", "z1"), ("b", "z1"), ("c", "z2")]);
    c.set_pod(&pod("db", json!({"app": "db"}), "a", json!({})));
    for i in 0..4 {
        let n = place(
            &mut c,
            &with(&format!("z{i}"), "topology.kubernetes.io/zone"),
        )
        .unwrap();
        assert!(n == "a" || n == "b", "{n}");
    }
    // A group with affinity to itself: the first goes anywhere, the rest follow it.
    let mut c = cluster(&[("a", "z1"), ("b", "z1"), ("c", "z2")]);
    let selfish = |name: &str| {
        pod(
            name,
            json!({"app": "g"}),
            "",
            json!({"affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "g"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        )
    };
    let first = place(&mut c, &selfish("g0")).unwrap();
    for i in 1..4 {
        assert_eq!(place(&mut c, &selfish(&format!("g{i}"))).unwrap(), first);
    }
}

#[test]
fn topology_spread_bounds_the_skew_and_names_the_missing_label() {
    let mut c = cluster(&[("a", "z1"), ("b", "z1"), ("c", "z2")]);
    let spread = |name: &str, when: &str| {
        pod(
            name,
            json!({"app": "s"}),
            "",
            json!({"topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "s"}}}]}),
        )
    };
    let mut per_zone = std::collections::BTreeMap::<String, i32>::new();
    for i in 0..6 {
        let n = place(&mut c, &spread(&format!("s{i}"), "DoNotSchedule")).unwrap();
        let z = if n == "c" { "z2" } else { "z1" };
        *per_zone.entry(z.into()).or_default() += 1;
        let counts: Vec<i32> = per_zone.values().copied().collect();
        let skew = counts.iter().max().unwrap()
            - if counts.len() < 2 {
                0
            } else {
                *counts.iter().min().unwrap()
            };
        assert!(skew <= 1, "{per_zone:?}");
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), vec![3, 3]);
    // Skew 1 with z2 unable to take more: z1 is refused too.
    let mut c = cluster(&[("a", "z1"), ("c", "z2")]);
    c.set_pod(&pod("old", json!({"app": "s"}), "a", json!({})));
    let p = spread("new", "DoNotSchedule");
    let tainted: Node = serde_json::from_value(json!({
        "metadata": {"name": "c", "labels": {"topology.kubernetes.io/zone": "z2"}},
        "spec": {"unschedulable": true},
        "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}
    }))
    .unwrap();
    c.set_node(tainted);
    assert_eq!(
        place(&mut c, &p),
        Err("0/2 nodes are available: 1 node(s) didn't match pod topology spread constraints, 1 node(s) were unschedulable.".into())
    );
    // A node without the key cannot take the pod.
    let mut c = Cache::default();
    c.set_node(
        serde_json::from_value(json!({"metadata": {"name": "bare"},
        "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"}}}))
        .unwrap(),
    );
    assert_eq!(
        place(&mut c, &spread("x", "DoNotSchedule")),
        Err("0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label).".into())
    );
    // ScheduleAnyway prefers the emptier zone but never refuses.
    let mut c = cluster(&[("a", "z1"), ("c", "z2")]);
    for i in 0..3 {
        c.set_pod(&pod(&format!("o{i}"), json!({"app": "s"}), "a", json!({})));
    }
    assert_eq!(
        place(&mut c, &spread("soft", "ScheduleAnyway")).unwrap(),
        "c"
    );
}

#[test]
fn preferences_and_default_spreading_tip_the_balance() {
    // Preferred node affinity beats a little more free room.
    let mut c = cluster(&[("a", "z1"), ("b", "z2")]);
    c.set_pod(&pod(
        "busy",
        json!({}),
        "b",
        json!({"containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"cpu": "1"}}}]}),
    ));
    let p = pod(
        "p",
        json!({}),
        "",
        json!({"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50,
            "preference": {"matchExpressions": [{"key": "topology.kubernetes.io/zone",
                "operator": "In", "values": ["z2"]}]}}]}}}),
    );
    assert_eq!(place(&mut c, &p).unwrap(), "b");
    // Preferred anti-affinity steers away from the matching pod.
    let mut c = cluster(&[("a", "z1"), ("b", "z2")]);
    c.set_pod(&pod("db", json!({"app": "db"}), "a", json!({})));
    let p = pod(
        "p",
        json!({}),
        "",
        json!({"affinity": {"podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm":
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}),
    );
    assert_eq!(place(&mut c, &p).unwrap(), "b");
    // Pods of one controller spread by hostname even when requests would not tell.
    let mut c = cluster(&[("a", "z1"), ("b", "z1"), ("c", "z1")]);
    let owned = |name: &str| {
        let mut p = pod(name, json!({"app": "r"}), "", json!({}));
        p.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "rs-1",
            "controller": true}))
        .unwrap()]);
        p
    };
    let nodes: std::collections::BTreeSet<String> = (0..3)
        .map(|i| place(&mut c, &owned(&format!("r{i}"))).unwrap())
        .collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
}

fn sized(name: &str, node: &str, cpu: &str, priority: i32) -> Pod {
    pod(
        name,
        json!({}),
        node,
        json!({"priority": priority, "containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": cpu}}}]}),
    )
}

#[test]
fn preemption_takes_the_least_important_pods_that_make_room() {
    use berth_scheduler::preempt;
    let mut c = cluster(&[("a", "z1"), ("b", "z1")]);
    // a: two low pods (prio 1 and 5); b: one at prio 10. 8 CPUs each.
    c.set_pod(&sized("a1", "a", "4", 1));
    c.set_pod(&sized("a5", "a", "4", 5));
    c.set_pod(&sized("b10", "b", "6", 10));
    let big = sized("big", "", "4", 100);
    assert!(choose(&c, &big, &Needs::of(&big), 0).is_err());
    // One victim suffices on a (the lower, a1); b would cost a priority-10 pod.
    let (node, victims) = preempt::find(&c, &big, &Needs::of(&big), &[]).unwrap();
    assert_eq!(node, "a");
    let names: Vec<_> = victims.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a1"]);
    // Nothing of lower priority to take: no preemption; nor for preemptionPolicy Never.
    let low = sized("low", "", "4", 0);
    assert!(preempt::find(&c, &low, &Needs::of(&low), &[]).is_none());
    let mut never = sized("never", "", "4", 100);
    never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
    assert!(preempt::find(&c, &never, &Needs::of(&never), &[]).is_none());
    // Nominated room is kept for the preemptor against pods of lower priority.
    c.remove_pod(&sized("a1", "a", "4", 1));
    c.nominate(&big, Some("a"));
    let small = sized("small", "", "4", 50);
    assert!(choose(&c, &small, &Needs::of(&small), 0).is_err());
    assert_eq!(choose(&c, &big, &Needs::of(&big), 0).unwrap(), "a");
    let higher = sized("higher", "", "4", 200);
    assert_eq!(choose(&c, &higher, &Needs::of(&higher), 0).unwrap(), "a");
}

#[test]
fn preemption_spares_pods_a_disruption_budget_protects() {
    use berth_scheduler::preempt;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use std::sync::Arc;
    let labelled = |name: &str, app: &str, node: &str, priority: i32| {
        pod(
            name,
            json!({"app": app}),
            node,
            json!({"priority": priority, "containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "4"}}}]}),
        )
    };
    let budget = |app: &str, allowed: i32| -> Arc<PodDisruptionBudget> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": app, "namespace": "default"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
                "status": {"disruptionsAllowed": allowed, "currentHealthy": 1,
                    "desiredHealthy": 1, "expectedPods": 1}
            }))
            .unwrap(),
        )
    };
    // Two nodes, equal but for the budget: the node whose victim no budget protects.
    let mut c = cluster(&[("a", "z1"), ("b", "z1")]);
    c.set_pod(&labelled("db", "db", "a", 1));
    c.set_pod(&labelled("db2", "db", "a", 1));
    c.set_pod(&labelled("web", "web", "b", 1));
    c.set_pod(&labelled("web-x", "web", "b", 1));
    let big = sized("big", "", "4", 100);
    let (node, victims) = preempt::find(&c, &big, &Needs::of(&big), &[budget("db", 0)]).unwrap();
    assert_eq!(node, "b", "{victims:?}");
    // On one node: the protected pod is given back first, though it matters least.
    let mut c = cluster(&[("a", "z1")]);
    c.set_pod(&labelled("db", "db", "a", 1));
    c.set_pod(&labelled("cache", "cache", "a", 5));
    let (_, victims) = preempt::find(&c, &big, &Needs::of(&big), &[]).unwrap();
    let names: Vec<_> = victims.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["db"], "without a budget the least important goes");
    let (_, victims) = preempt::find(&c, &big, &Needs::of(&big), &[budget("db", 0)]).unwrap();
    let names: Vec<_> = victims.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["cache"], "the budget spares db");
    // A budget that allows one disruption protects nothing from one deletion.
    let (_, victims) = preempt::find(&c, &big, &Needs::of(&big), &[budget("db", 1)]).unwrap();
    let names: Vec<_> = victims.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["db"]);
    // When every way breaks a budget, preemption still happens (kube's rule).
    let mut c = cluster(&[("a", "z1")]);
    c.set_pod(&labelled("db", "db", "a", 1));
    c.set_pod(&labelled("db2", "db", "a", 1));
    let (_, victims) = preempt::find(&c, &big, &Needs::of(&big), &[budget("db", 0)]).unwrap();
    assert_eq!(victims.len(), 1, "{victims:?}");
}

#[test]
fn preemption_takes_enough_pods_to_bring_the_spread_within_its_skew() {
    use berth_scheduler::preempt;
    let spread_pod = |name: &str, node: &str, cpu: &str, priority: i32| {
        pod(
            name,
            json!({"app": "s"}),
            node,
            json!({"priority": priority,
                "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}],
                "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                     "whenUnsatisfiable": "DoNotSchedule",
                     "labelSelector": {"matchLabels": {"app": "s"}}}]}),
        )
    };
    // z1 holds three matching pods of low priority, z2 one of high priority on a
    // full node: the preemptor fits z1 only once z1 is down to z2's count.
    let mut c = cluster(&[("a", "z1"), ("b", "z2")]);
    for (name, prio) in [("s1", 1), ("s2", 2), ("s3", 3)] {
        c.set_pod(&spread_pod(name, "a", "1", prio));
    }
    c.set_pod(&spread_pod("bs", "b", "8", 1000));
    let p = spread_pod("new", "", "1", 100);
    assert_eq!(
        choose(&c, &p, &Needs::of(&p), 0),
        Err("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match pod topology spread constraints.".into())
    );
    let (node, victims) = preempt::find(&c, &p, &Needs::of(&p), &[]).unwrap();
    assert_eq!(node, "a");
    let names: Vec<_> = victims.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["s2", "s1"],
        "the most important of the three is spared"
    );
    // With z2 empty, all three go: the emptiest domain counts none.
    c.remove_pod(&spread_pod("bs", "b", "8", 1000));
    c.set_pod(&sized("hog", "b", "8", 1000));
    let (_, victims) = preempt::find(&c, &p, &Needs::of(&p), &[]).unwrap();
    assert_eq!(victims.len(), 3, "{victims:?}");
}

#[test]
fn large_clusters_are_searched_in_part_and_in_turn_as_kube_does() {
    use berth_scheduler::feasible_nodes_to_find;
    // kube's adaptive percentageOfNodesToScore, never under 100 nodes.
    assert_eq!(feasible_nodes_to_find(50), 50);
    assert_eq!(feasible_nodes_to_find(150), 100);
    assert_eq!(feasible_nodes_to_find(300), 144);
    assert_eq!(feasible_nodes_to_find(1000), 420);
    assert_eq!(feasible_nodes_to_find(5000), 500);
    assert_eq!(feasible_nodes_to_find(20000), 1000);
    // Each search starts where the last stopped: three pods on 300 empty nodes look
    // at nodes 0-143, 144-287 and 288-299 then 0-131, and (all scoring the same)
    // take the first node each looked at.
    let names: Vec<String> = (0..300).map(|i| format!("n{i:03}")).collect();
    let nodes: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "z")).collect();
    let mut c = cluster(&nodes);
    for (k, want) in ["n000", "n144", "n288"].into_iter().enumerate() {
        let p = pod(&format!("small{k}"), json!({}), "", json!({}));
        assert_eq!(place(&mut c, &p).unwrap(), want, "pod {k}");
    }
    // A pod preemption made room for tries its nominated node first, wherever the
    // search would start.
    let mut nominated = pod("preemptor", json!({}), "", json!({}));
    nominated.status = Some(k8s_openapi::api::core::v1::PodStatus {
        nominated_node_name: Some("n250".into()),
        ..Default::default()
    });
    assert_eq!(place(&mut c, &nominated).unwrap(), "n250");
    // 300 nodes, each with room for one 6-CPU pod: each search stops after 144
    // feasible nodes and the next starts where it stopped, so every pod still finds
    // the one node left at the end.
    let mut c = cluster(&nodes);
    let mut used = std::collections::BTreeSet::new();
    for i in 0..300 {
        let p = pod(
            &format!("big{i}"),
            json!({}),
            "",
            json!({"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "6"}}}]}),
        );
        let n = place(&mut c, &p).unwrap_or_else(|e| panic!("pod {i}: {e}"));
        assert!(used.insert(n), "pod {i} placed on a full node");
    }
    let extra = pod(
        "extra",
        json!({}),
        "",
        json!({"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "6"}}}]}),
    );
    assert_eq!(
        place(&mut c, &extra).unwrap_err(),
        "0/300 nodes are available: 300 Insufficient cpu."
    );
}
