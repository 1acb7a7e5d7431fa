//! The Service proxy's rules in a real kernel: in a network namespace of the test's
//! own, a full sync and then changes applied as differences (never falling back to a
//! full rewrite), and the table's contents as nft lists them.

use std::net::Ipv4Addr;

use berth_net::svcproxy::{Endpoint, Protocol, Proxy, ProxyConfig, ServicePort};

fn port(name: &str, vip: u8, eps: &[u8], node_port: Option<u16>) -> ServicePort {
    ServicePort {
        namespace: "default".into(),
        name: name.into(),
        port_name: String::new(),
        protocol: Protocol::Tcp,
        cluster_ips: vec![Ipv4Addr::new(10, 96, 0, vip)],
        port: 80,
        node_port,
        external_ips: vec![],
        affinity_timeout: None,
        internal_local: false,
        external_local: false,
        endpoints: eps
            .iter()
            .map(|e| Endpoint {
                ip: Ipv4Addr::new(10, 42, 1, *e),
                port: 8080,
                ready: true,
                serving: true,
                terminating: false,
                local: *e == 2,
            })
            .collect(),
    }
}

/// The table without its counts (`-s`; the maps a connection's first packet is
/// looked up in count per element).
fn list(pin: &std::path::Path) -> String {
    let o = std::process::Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(["nft", "-s", "list", "table", "ip", "berth-proxy"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A listing's words, sorted (nft lists set elements in hash order).
fn sorted_words(listing: &str) -> Vec<String> {
    let mut w: Vec<String> = listing
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    w.sort();
    w
}

#[test]
fn changes_after_the_first_sync_are_applied_as_differences() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("ns");
    let cfg = ProxyConfig {
        cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
    };
    let steps = berth_net::link::in_new_netns(&pin, |_, _, _| async {
        let mut proxy = Proxy::default();
        let mut svcs = vec![
            port("a", 10, &[2, 3], Some(30080)),
            port("b", 11, &[], None),
        ];
        let mut out = vec![proxy.sync(&cfg, &svcs)?];
        svcs[0].endpoints.pop();
        out.push(proxy.sync(&cfg, &svcs)?);
        svcs[1] = port("b", 11, &[4, 5, 6], None);
        out.push(proxy.sync(&cfg, &svcs)?);
        svcs.remove(0);
        out.push(proxy.sync(&cfg, &svcs)?);
        // The other shapes the kernel must take: session affinity, external IPs with
        // externalTrafficPolicy Local, internalTrafficPolicy Local, UDP.
        let mut sticky = port("sticky", 12, &[2, 3], Some(30081));
        sticky.affinity_timeout = Some(600);
        let mut ext = port("ext", 13, &[2, 7], Some(30082));
        ext.external_ips = vec![Ipv4Addr::new(192, 0, 2, 10)];
        ext.external_local = true;
        let mut local = port("local", 14, &[2, 8], None);
        local.internal_local = true;
        local.protocol = Protocol::Udp;
        svcs.extend([sticky, ext, local]);
        out.push(proxy.sync(&cfg, &svcs)?);
        svcs.truncate(1);
        out.push(proxy.sync(&cfg, &svcs)?);
        Ok(out)
    })
    .unwrap();
    assert!(steps[0].full);
    for s in &steps[1..] {
        assert!(!s.full && s.lines > 0, "{steps:?}");
    }
    let table = list(&pin);
    berth_net::netns::remove(&pin);
    // The same Services written in one go give the same table.
    let pin2 = dir.path().join("ns2");
    let final_services = vec![port("b", 11, &[4, 5, 6], None)];
    berth_net::link::in_new_netns(&pin2, |_, _, _| async {
        Proxy::default().sync(&cfg, &final_services)
    })
    .unwrap();
    let fresh = list(&pin2);
    berth_net::netns::remove(&pin2);
    assert_eq!(
        sorted_words(&table),
        sorted_words(&fresh),
        "{table}\n---\n{fresh}"
    );
    assert!(
        table.contains("10.96.0.11 . tcp . 80 counter : goto pick-3"),
        "{table}"
    );
    assert!(
        table.contains("10.96.0.11 . tcp . 80 . 0x00000002 counter : 10.42.1.6 . 8080"),
        "{table}"
    );
    assert!(!table.contains("10.96.0.10"), "service a is gone: {table}");
    // The small pick chains stay, ready for the next Service.
    assert!(table.contains("chain pick-1 "), "{table}");
    assert!(!table.contains("30080"), "{table}");
    assert!(
        !table.contains("affinity-"),
        "the affinity sets go with their Service: {table}"
    );
}

#[test]
fn objects_two_services_share_stay_while_either_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("ns");
    let cfg = ProxyConfig::default();
    let twenty: Vec<u8> = (2..22).collect();
    let (mid, end) = berth_net::link::in_new_netns(&pin, |_, _, _| async {
        let mut proxy = Proxy::default();
        // Both on pick-20 (past the permanent chains), both with the local 10.42.1.2.
        let mut svcs = vec![port("x", 20, &twenty, None), port("y", 21, &twenty, None)];
        proxy.sync(&cfg, &svcs)?;
        svcs[0].endpoints.pop();
        proxy.sync(&cfg, &svcs)?;
        let mid = list(&pin);
        svcs.remove(1);
        proxy.sync(&cfg, &svcs)?;
        Ok((mid, list(&pin)))
    })
    .unwrap();
    berth_net::netns::remove(&pin);
    assert!(
        mid.contains("chain pick-20 ") && mid.contains("chain pick-19 "),
        "{mid}"
    );
    assert!(mid.contains("10.42.1.2 . 10.42.1.2"), "{mid}");
    assert!(
        !end.contains("chain pick-20 "),
        "nobody uses pick-20: {end}"
    );
    assert!(end.contains("chain pick-19 "), "{end}");
    assert!(
        end.contains("10.42.1.2 . 10.42.1.2"),
        "x still has the local endpoint: {end}"
    );
}

/// 1,000 Services made and removed one after another — each of a different shape:
/// endpoint counts past the permanent pick chains, session affinity, NodePorts,
/// external IPs — leave the table as it was before the first: no element, chain or
/// set behind, and every change sent as a difference.
#[test]
fn a_thousand_service_create_delete_cycles_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("ns");
    let cfg = ProxyConfig {
        cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
    };
    let (before, after, fulls) = berth_net::link::in_new_netns(&pin, |_, _, _| async {
        let mut proxy = Proxy::default();
        let keep = vec![port("keep", 5, &[2, 3], Some(30005))];
        proxy.sync(&cfg, &keep)?;
        let before = list(&pin);
        let mut fulls = 0;
        for i in 0..1000u32 {
            let eps: Vec<u8> = (2..(2 + (i % 24) as u8)).collect();
            let node_port = (i % 3 == 0).then_some(31000 + (i % 500) as u16);
            let mut p = port(&format!("s{i}"), 10 + (i % 200) as u8, &eps, node_port);
            if i % 5 == 0 {
                p.affinity_timeout = Some(60 + i);
            }
            if i % 7 == 0 {
                p.external_ips = vec![Ipv4Addr::new(192, 0, 2, (i % 250) as u8 + 1)];
                p.external_local = i % 2 == 0;
            }
            let mut with = keep.clone();
            with.push(p);
            for svcs in [&with, &keep] {
                if proxy.sync(&cfg, svcs)?.full {
                    fulls += 1;
                }
            }
        }
        Ok((before, list(&pin), fulls))
    })
    .unwrap();
    berth_net::netns::remove(&pin);
    assert_eq!(fulls, 0, "every change a difference");
    assert_eq!(
        sorted_words(&before),
        sorted_words(&after),
        "{before}\n---\n{after}"
    );
}
