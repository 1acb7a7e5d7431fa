//! Rendering and the differences sent to nft, without a kernel.

use super::render::pick_rules;
use super::*;

fn ep(last: u8, ready: bool, local: bool) -> Endpoint {
    Endpoint {
        ip: Ipv4Addr::new(10, 42, 1, last),
        port: 8080,
        ready,
        serving: ready,
        terminating: false,
        local,
    }
}

fn svc(eps: Vec<Endpoint>) -> ServicePort {
    ServicePort {
        namespace: "default".into(),
        name: "web".into(),
        port_name: "http".into(),
        protocol: Protocol::Tcp,
        cluster_ips: vec![Ipv4Addr::new(10, 43, 0, 10)],
        port: 80,
        node_port: None,
        external_ips: vec![],
        affinity_timeout: None,
        internal_local: false,
        external_local: false,
        endpoints: eps,
    }
}

fn cfg() -> ProxyConfig {
    ProxyConfig {
        cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
    }
}

#[test]
fn a_service_picks_among_its_ready_endpoints() {
    let rs = render(
        &cfg(),
        &[svc(vec![
            ep(2, true, false),
            ep(3, true, true),
            ep(4, false, false),
        ])],
    );
    assert_eq!(
        rs.elements["service-ips"]["10.43.0.10 . tcp . 80"],
        "goto pick-2"
    );
    assert!(rs.chains.is_empty(), "pick-2 is a permanent chain");
    assert_eq!(
        pick_rules("", 2)[0].1,
        [
            "ct mark set numgen random mod 2",
            "dnat ip to ip daddr . meta l4proto . th dport . ct mark map @endpoints"
        ]
    );
    let slots = &rs.elements["endpoints"];
    assert_eq!(slots["10.43.0.10 . tcp . 80 . 0"], "10.42.1.2 . 8080");
    assert_eq!(slots["10.43.0.10 . tcp . 80 . 1"], "10.42.1.3 . 8080");
    assert_eq!(slots.len(), 2, "the unready endpoint has no slot");
    assert!(rs.elements["cluster-ips"].contains_key("10.43.0.10 . tcp . 80"));
    // Only the local endpoint can reach itself through the Service.
    assert_eq!(
        rs.elements["hairpin"].keys().collect::<Vec<_>>(),
        ["10.42.1.3 . 10.42.1.3"]
    );
}

#[test]
fn no_ready_endpoint_means_terminating_ones_then_reject() {
    let mut t = ep(5, false, false);
    t.serving = true;
    t.terminating = true;
    let rs = render(&cfg(), &[svc(vec![t, ep(6, false, false)])]);
    assert_eq!(
        rs.elements["endpoints"]["10.43.0.10 . tcp . 80 . 0"],
        "10.42.1.5 . 8080"
    );
    let rs = render(&cfg(), &[svc(vec![ep(6, false, false)])]);
    assert!(rs.chains.is_empty());
    assert_eq!(
        rs.elements["no-endpoint-services"]["10.43.0.10 . tcp . 80"],
        "goto reject-chain"
    );
    assert!(rs.elements["service-ips"].is_empty());
    assert!(rs.elements["cluster-ips"].is_empty());
}

#[test]
fn node_ports_masquerade_unless_external_traffic_is_local() {
    let mut s = svc(vec![ep(2, true, false), ep(3, true, true)]);
    s.node_port = Some(30080);
    let rs = render(&cfg(), &[s.clone()]);
    assert_eq!(
        rs.elements["service-nodeports"]["tcp . 30080"],
        "goto np-masq-pick-2"
    );
    assert_eq!(
        pick_rules("np-", 2)[1].1,
        ["jump mark-for-masquerade", "goto np-pick-2"]
    );
    assert_eq!(
        rs.elements["nodeport-endpoints"]["tcp . 30080 . 1"],
        "10.42.1.3 . 8080"
    );
    s.external_local = true;
    let rs = render(&cfg(), &[s.clone()]);
    assert_eq!(
        rs.elements["service-nodeports"]["tcp . 30080"], "goto np-pick-1",
        "no masquerade, the local endpoint only"
    );
    assert_eq!(
        rs.elements["nodeport-endpoints"]["tcp . 30080 . 0"],
        "10.42.1.3 . 8080"
    );
    // No local endpoint: external traffic is refused, internal still served.
    s.endpoints = vec![ep(2, true, false)];
    let rs = render(&cfg(), &[s]);
    assert_eq!(
        rs.elements["no-endpoint-nodeports"]["tcp . 30080"],
        "goto reject-chain"
    );
    assert!(rs.elements["service-ips"].contains_key("10.43.0.10 . tcp . 80"));
}

#[test]
fn affinity_remembers_clients_per_endpoint() {
    let mut s = svc(vec![ep(2, true, false)]);
    s.affinity_timeout = Some(10800);
    let rs = render(&cfg(), &[s]);
    assert_eq!(
        rs.sets["affinity-default/web/tcp/http__10.42.1.2/8080"],
        10800
    );
    let chain = &rs.chains["svc-default/web/tcp/http"];
    assert!(chain
        .iter()
        .any(|r| r.starts_with("ip saddr @affinity-default/web/tcp/http__10.42.1.2/8080 goto")));
    assert!(rs.chains["ep-default/web/tcp/http__10.42.1.2/8080"]
        .iter()
        .any(|r| r == "update @affinity-default/web/tcp/http__10.42.1.2/8080 { ip saddr }"));
    assert_eq!(
        rs.elements["service-ips"]["10.43.0.10 . tcp . 80"],
        "goto svc-default/web/tcp/http"
    );
}

#[test]
fn one_endpoint_changed_sends_a_few_lines() {
    let mut many: Vec<ServicePort> = (0..100)
        .map(|i| {
            let mut s = svc(vec![ep(2, true, false), ep(3, true, false)]);
            s.name = format!("web{i}");
            s.cluster_ips = vec![Ipv4Addr::new(10, 43, 1, i as u8)];
            s
        })
        .collect();
    let c = cfg();
    let old = render(&c, &many);
    assert_eq!(
        script(&c, Some(&old), &old),
        "",
        "nothing changed, nothing sent"
    );
    many[7].endpoints.push(ep(9, true, false));
    let new = render(&c, &many);
    let diff = script(&c, Some(&old), &new);
    assert_eq!(diff.lines().count(), 3, "{diff}");
    assert!(!diff.contains("chain"), "{diff}");
    assert!(
        diff.contains("10.43.1.7 . tcp . 80 . 2 : 10.42.1.9 . 8080"),
        "{diff}"
    );
    assert!(diff.contains("delete element ip berth-proxy service-ips { 10.43.1.7 . tcp . 80 }"));
    // Back again: the slot goes. Past the permanent counts, a chain is made and
    // goes when nobody uses it, after the elements that send packets to it.
    let back = script(&c, Some(&new), &old);
    assert!(
        back.contains("delete element ip berth-proxy endpoints"),
        "{back}"
    );
    many[7].endpoints = (1..=20).map(|i| ep(i, true, false)).collect();
    let big = render(&c, &many);
    assert!(script(&c, Some(&old), &big).contains("add chain ip berth-proxy pick-20"));
    let back = script(&c, Some(&big), &old);
    let elem = back
        .find("delete element ip berth-proxy service-ips")
        .unwrap();
    let chain = back.find("delete chain ip berth-proxy pick-20").unwrap();
    assert!(elem < chain, "{back}");
    // The first sync replaces the whole table.
    let full = script(&c, None, &old);
    assert!(full.starts_with("add table ip berth-proxy\ndelete table ip berth-proxy\n"));
}
