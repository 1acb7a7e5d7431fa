//! NetworkPolicy rules in a real kernel, with real traffic: a node's network
//! namespace with a bridge and three pods (namespaces of their own on veths), TCP
//! listeners in two of them, and the enforcer's table changed step by step while
//! connections are tried — each step applied as a difference after the first.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

use berth_net::netpol::{cidr_range, subtract, Enforcer, PortMatch, Protocol, Rule, Wanted};

/// The pods' network namespaces and listeners, removed however the test ends.
struct Pods {
    names: Vec<String>,
    listeners: Vec<Child>,
}

impl Drop for Pods {
    fn drop(&mut self) {
        for l in &mut self.listeners {
            let _ = l.kill();
            let _ = l.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pod_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, 1, 10 + i)
}

/// Whether pod `from` gets the listener's greeting from `to`'s port 80 within a second.
fn connects(pods: &Pods, from: usize, to: usize) -> bool {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pods.names[from],
            "busybox",
            "nc",
            "-w",
            "1",
        ])
        .arg(pod_ip(to as u8).to_string())
        .arg("80")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "ok"
}

fn tcp80() -> Vec<PortMatch> {
    vec![PortMatch {
        protocol: Protocol::Tcp,
        ports: Some((80, 80)),
    }]
}

fn one(ip: Ipv4Addr) -> (Ipv4Addr, Ipv4Addr) {
    (ip, ip)
}

fn list(pin: &std::path::Path) -> String {
    let o = Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args(["nft", "list", "table", "ip", "berth-netpol"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn policies_filter_traffic_between_pods_on_a_bridge() {
    if Command::new("busybox").arg("true").status().is_err() {
        eprintln!("SKIPPED: busybox is not installed (apt-get install busybox-static)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("node");
    let tag = format!("{:x}", std::process::id());
    let pin_for_list = pin.clone();
    let mut pods = Pods {
        names: (0..3).map(|i| format!("brt-np{tag}-{i}")).collect(),
        listeners: Vec::new(),
    };
    let (a, c) = (0, 2);
    let pods = &mut pods;
    let result = berth_net::link::in_new_netns(&pin, |_, _, _| async move {
        // The node: a bridge; each pod: a namespace on a veth into it. The pods reach
        // each other through the bridge, as pods on one node do.
        let mut script = String::from(
            "ip link add npbr0 type bridge\nip addr add 10.42.1.1/24 dev npbr0\nip link set npbr0 up\n",
        );
        for (i, n) in pods.names.iter().enumerate() {
            script.push_str(&format!(
                "ip netns add {n}\n\
                 ip link add npv{i} type veth peer name eth0 netns {n}\n\
                 ip link set npv{i} master npbr0 up\n\
                 ip -n {n} addr add {}/24 dev eth0\n\
                 ip -n {n} link set eth0 up\n\
                 ip -n {n} link set lo up\n",
                pod_ip(i as u8)
            ));
        }
        sh(&script);
        for i in [a, c] {
            pods.listeners.push(
                Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &pods.names[i],
                        "busybox",
                        "nc",
                        "-ll",
                        "-p",
                        "80",
                    ])
                    .args(["-e", "echo", "ok"])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        steps(pods, &pin_for_list);
        Ok(())
    });
    berth_net::netns::remove(&pin);
    result.unwrap();
}

/// The policy changes and the traffic each lets through, run in the node's namespace.
fn steps(pods: &Pods, pin: &std::path::Path) {
    let (a, b, c) = (0, 1, 2);
    assert!(connects(pods, b, a) && connects(pods, c, a) && connects(pods, b, c));
    let enforce = |enf: &mut Enforcer, w: &Wanted| enf.sync(w).unwrap();
    let mut enf = Enforcer::default();
    // Ingress to a: only from b, only on TCP 80.
    let mut w = Wanted::default();
    w.sets
        .insert("p.default.allow-b.i0".into(), vec![one(pod_ip(b as u8))]);
    w.ingress.insert(
        pod_ip(a as u8),
        BTreeSet::from([Rule {
            peers: Some("p.default.allow-b.i0".into()),
            ports: tcp80(),
        }]),
    );
    assert!(enforce(&mut enf, &w).full);
    assert!(connects(pods, b, a), "b is allowed into a");
    assert!(!connects(pods, c, a), "c is not");
    assert!(connects(pods, b, c), "c is not isolated");

    // Egress from b: only to 10.42.1.0/24 except c (an ipBlock with an except).
    let block = subtract(
        cidr_range("10.42.1.0/24".parse().unwrap()),
        &[one(pod_ip(c as u8))],
    );
    w.sets.insert("p.default.out.e0".into(), block);
    w.egress.insert(
        pod_ip(b as u8),
        BTreeSet::from([Rule {
            peers: Some("p.default.out.e0".into()),
            ports: vec![],
        }]),
    );
    let stats = enforce(&mut enf, &w);
    assert!(!stats.full && stats.lines > 0);
    assert!(connects(pods, b, a));
    assert!(!connects(pods, b, c), "c is cut out of b's egress block");

    // A peer joining a set lets it in, by a change of the set alone.
    w.sets
        .get_mut("p.default.allow-b.i0")
        .unwrap()
        .push(one(pod_ip(c as u8)));
    let before = list(pin);
    assert!(!enforce(&mut enf, &w).full);
    assert!(connects(pods, c, a), "c joined the peers");
    assert_ne!(before, list(pin));

    // Isolated with no rule: default deny.
    w.ingress.insert(pod_ip(a as u8), BTreeSet::new());
    enforce(&mut enf, &w);
    assert!(!connects(pods, b, a) && !connects(pods, c, a));

    // The policies gone: everything flows, and nothing is left but the base.
    let stats = enforce(&mut enf, &Wanted::default());
    assert!(!stats.full);
    assert!(connects(pods, b, a) && connects(pods, c, a) && connects(pods, b, c));
    let left = list(pin);
    assert!(
        !left.contains("chain in-") && !left.contains("set p."),
        "{left}"
    );

    // A new enforcer (an agent restart) replaces the table in one go.
    let mut again = Enforcer::default();
    assert!(enforce(&mut again, &w).full);
    assert!(!connects(pods, b, a));
}
