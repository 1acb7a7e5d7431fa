use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::json;

use super::*;

fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: serde_json::Value) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
        .unwrap(),
    )
}

fn ns(name: &str, labels: serde_json::Value) -> Arc<Namespace> {
    Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap())
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> Arc<NetworkPolicy> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
            .unwrap(),
    )
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

struct Fixture {
    pods: Vec<Arc<Pod>>,
    namespaces: Vec<Arc<Namespace>>,
    nodes: Vec<Arc<Node>>,
}

fn node(name: &str, ip: &str, cidr: &str) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name}]},
        }))
        .unwrap(),
    )
}

fn fixture() -> Fixture {
    Fixture {
        pods: vec![
            pod("default", "web", "n1", "10.42.1.5", json!({"app": "web"})),
            pod(
                "default",
                "client",
                "n2",
                "10.42.2.5",
                json!({"app": "client"}),
            ),
            pod(
                "other",
                "client",
                "n2",
                "10.42.2.6",
                json!({"app": "client"}),
            ),
            pod("default", "db", "n1", "10.42.1.6", json!({"app": "db"})),
        ],
        namespaces: vec![
            ns("default", json!({"kubernetes.io/metadata.name": "default"})),
            ns(
                "other",
                json!({"kubernetes.io/metadata.name": "other", "team": "b"}),
            ),
        ],
        nodes: vec![
            node("n1", "10.45.0.2", "10.42.1.0/24"),
            node("n2", "10.45.0.3", "10.42.2.0/24"),
            node("n3", "10.45.0.4", "10.42.3.0/24"),
        ],
    }
}

fn run(f: &Fixture, policies: &[Arc<NetworkPolicy>]) -> Wanted {
    wanted(&View {
        policies,
        pods: &f.pods,
        namespaces: &f.namespaces,
        nodes: &f.nodes,
        node: "n1",
    })
}

#[test]
fn the_other_nodes_proxies_come_from_their_addresses_and_overlay_addresses() {
    let f = fixture();
    let w = run(&f, &[]);
    assert_eq!(
        w.node_proxies,
        ["10.42.2.0", "10.42.3.0", "10.45.0.3", "10.45.0.4"]
            .map(|a| (ip(a), ip(a)))
            .to_vec(),
        "n1's own are not among them"
    );
}

#[test]
fn default_deny_isolates_every_local_pod_of_the_namespace_only() {
    let f = fixture();
    let w = run(&f, &[policy("default", "deny", json!({"podSelector": {}}))]);
    assert_eq!(
        w.ingress.keys().copied().collect::<Vec<_>>(),
        vec![ip("10.42.1.5"), ip("10.42.1.6")]
    );
    assert!(w.ingress.values().all(BTreeSet::is_empty));
    assert!(
        w.egress.is_empty(),
        "no egress rules, no policyTypes: ingress only"
    );
    let w = run(
        &f,
        &[policy(
            "default",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        )],
    );
    assert!(w.ingress.is_empty() && w.egress.len() == 2);
}

#[test]
fn peers_by_pod_and_namespace_selector() {
    let f = fixture();
    let w = run(
        &f,
        &[policy(
            "default",
            "web",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                 "ports": [{"port": 80}, {"protocol": "UDP", "port": 5000, "endPort": 5005}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}},
                           "podSelector": {"matchLabels": {"app": "client"}}}],
                 "ports": [{"port": "http"}]},
            ]}),
        )],
    );
    assert_eq!(w.ingress.len(), 1);
    // podSelector alone: the policy's namespace only.
    assert_eq!(
        w.sets["p.default.web.i0"],
        vec![(ip("10.42.2.5"), ip("10.42.2.5"))]
    );
    // Both: that namespace's matching pods.
    assert_eq!(
        w.sets["p.default.web.i1"],
        vec![(ip("10.42.2.6"), ip("10.42.2.6"))]
    );
    let rules: Vec<&Rule> = w.ingress[&ip("10.42.1.5")].iter().collect();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[0].ports,
        vec![
            PortMatch {
                protocol: Protocol::Tcp,
                ports: Some((80, 80))
            },
            PortMatch {
                protocol: Protocol::Udp,
                ports: Some((5000, 5005))
            },
        ]
    );
    // The name is the target pod's container port.
    assert_eq!(
        rules[1].ports,
        vec![PortMatch {
            protocol: Protocol::Tcp,
            ports: Some((8080, 8080))
        }]
    );
}

#[test]
fn ip_blocks_and_egress_named_ports() {
    let f = fixture();
    let w = run(
        &f,
        &[policy(
            "default",
            "out",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
            "egress": [
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16"]}}]},
                {"ports": [{"port": "http"}]},
            ]}),
        )],
    );
    // No policyTypes: Ingress always, so db takes no traffic in.
    assert_eq!(w.ingress.len(), 1);
    assert!(w.ingress[&ip("10.42.1.6")].is_empty());
    assert_eq!(
        w.sets["p.default.out.e0"],
        vec![
            (ip("10.0.0.0"), ip("10.41.255.255")),
            (ip("10.43.0.0"), ip("10.255.255.255")),
        ]
    );
    // A named port out: each destination pod's port of that name, any peer.
    assert_eq!(w.sets["p.default.out.e1.http.tcp.8080"].len(), 4);
    let rules = &w.egress[&ip("10.42.1.6")];
    assert!(rules.contains(&Rule {
        peers: Some("p.default.out.e1.http.tcp.8080".into()),
        ports: vec![PortMatch {
            protocol: Protocol::Tcp,
            ports: Some((8080, 8080))
        }],
    }));
    assert!(rules.contains(&Rule {
        peers: Some("p.default.out.e0".into()),
        ports: vec![]
    }));
    assert_eq!(rules.len(), 2);
}

#[test]
fn finished_and_host_network_pods_are_neither_targets_nor_peers() {
    let mut f = fixture();
    let mut done = (*f.pods[0]).clone();
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    f.pods[0] = Arc::new(done);
    let mut host = (*f.pods[1]).clone();
    host.spec.as_mut().unwrap().host_network = Some(true);
    f.pods[1] = Arc::new(host);
    let w = run(
        &f,
        &[policy(
            "default",
            "p",
            json!({"podSelector": {},
            "ingress": [{"from": [{"podSelector": {}}]}]}),
        )],
    );
    assert_eq!(
        w.ingress.keys().copied().collect::<Vec<_>>(),
        vec![ip("10.42.1.6")]
    );
    assert_eq!(
        w.sets["p.default.p.i0"],
        vec![(ip("10.42.1.6"), ip("10.42.1.6"))]
    );
}
