use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn excepts_are_cut_out_of_a_block() {
    let block = cidr_range("10.0.0.0/16".parse().unwrap());
    let holes = [
        cidr_range("10.0.1.0/24".parse().unwrap()),
        cidr_range("10.0.255.0/24".parse().unwrap()),
        cidr_range("192.168.0.0/24".parse().unwrap()),
    ];
    assert_eq!(
        subtract(block, &holes),
        vec![
            (ip("10.0.0.0"), ip("10.0.0.255")),
            (ip("10.0.2.0"), ip("10.0.254.255")),
        ]
    );
    // A hole covering everything leaves nothing.
    assert!(subtract(block, &[cidr_range("10.0.0.0/8".parse().unwrap())]).is_empty());
}

#[test]
fn overlapping_and_adjacent_ranges_are_joined() {
    let r = merge_ranges(&[
        (ip("10.42.1.5"), ip("10.42.1.5")),
        (ip("10.42.0.0"), ip("10.42.0.255")),
        (ip("10.42.1.0"), ip("10.42.1.4")),
        (ip("10.42.0.7"), ip("10.42.0.7")),
        (ip("0.0.0.0"), ip("255.255.255.255")),
    ]);
    assert_eq!(r, vec![(ip("0.0.0.0"), ip("255.255.255.255"))]);
    let r = merge_ranges(&[
        (ip("10.0.0.9"), ip("10.0.0.9")),
        (ip("10.0.0.1"), ip("10.0.0.2")),
    ]);
    assert_eq!(r.len(), 2);
}

fn wanted() -> Wanted {
    let mut sets = BTreeMap::new();
    sets.insert(
        "p.default.web.i0".to_string(),
        vec![
            (ip("10.42.2.7"), ip("10.42.2.7")),
            (ip("10.42.2.6"), ip("10.42.2.6")),
        ],
    );
    let rule = Rule {
        peers: Some("p.default.web.i0".into()),
        ports: vec![
            PortMatch {
                protocol: Protocol::Tcp,
                ports: Some((80, 80)),
            },
            PortMatch {
                protocol: Protocol::Udp,
                ports: Some((5000, 5010)),
            },
            PortMatch {
                protocol: Protocol::Sctp,
                ports: None,
            },
        ],
    };
    Wanted {
        sets,
        ingress: [(ip("10.42.1.5"), BTreeSet::from([rule]))].into(),
        egress: [(ip("10.42.1.6"), BTreeSet::new())].into(),
        node_proxies: vec![
            (ip("10.42.2.0"), ip("10.42.2.0")),
            (ip("10.45.0.3"), ip("10.45.0.3")),
        ],
    }
}

#[test]
fn an_isolated_pod_gets_its_allow_rules_then_a_drop() {
    let t = render(&wanted());
    assert_eq!(
        t.chains["in-10.42.1.5"],
        vec![
            "ip saddr @p.default.web.i0 meta l4proto tcp th dport 80 accept",
            "ip saddr @p.default.web.i0 meta l4proto udp th dport 5000-5010 accept",
            "ip saddr @p.default.web.i0 meta l4proto sctp accept",
            "drop",
        ]
    );
    // Isolated with nothing allowed: only the drop.
    assert_eq!(t.chains["out-10.42.1.6"], vec!["drop"]);
    assert_eq!(
        t.maps["ingress-pods"][&ip("10.42.1.5")],
        "goto in-10.42.1.5"
    );
    assert_eq!(t.sets["p.default.web.i0"], vec!["10.42.2.6-10.42.2.7"]);
    // The other nodes' proxies: a set the ingress chain lets in when marked.
    assert_eq!(t.sets["node-proxies"], vec!["10.42.2.0", "10.45.0.3"]);
    let full = script(None, &t);
    assert!(
        full.contains(
            "add rule ip berth-netpol ingress ip saddr @node-proxies ip dscp 0x0b accept"
        ),
        "{full}"
    );
}

#[test]
fn a_change_sends_only_the_difference() {
    let before = render(&wanted());
    let mut w = wanted();
    w.sets
        .get_mut("p.default.web.i0")
        .unwrap()
        .push((ip("10.42.3.1"), ip("10.42.3.1")));
    w.egress.clear();
    let s = script(Some(&before), &render(&w));
    assert_eq!(
        s.lines().collect::<Vec<_>>(),
        vec![
            "flush set ip berth-netpol p.default.web.i0",
            "add element ip berth-netpol p.default.web.i0 { 10.42.2.6-10.42.2.7, 10.42.3.1 }",
            "delete element ip berth-netpol egress-pods { 10.42.1.6 }",
            "flush chain ip berth-netpol out-10.42.1.6",
            "delete chain ip berth-netpol out-10.42.1.6",
        ]
    );
    assert_eq!(script(Some(&before), &before), "");
}
