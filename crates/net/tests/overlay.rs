//! The VXLAN overlay in a real kernel when node addresses change: a node's network
//! namespace, synced with one peer, then with the peer at a new address (a DHCP
//! lease renewed elsewhere, a node moved), then with this node at a new address;
//! each time the device, forwarding entry, neighbour entry and route are read back
//! with iproute2, and at the end teardown leaves nothing.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use berth_net::overlay::{self, Backend, Local, Peer, VXLAN_DEVICE};

/// Runs iproute2's `tool` (ip, bridge) in the namespace pinned at `pin`.
fn read(pin: &Path, tool: &str, args: &[&str]) -> String {
    let o = Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .arg(tool)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sh(pin: &Path, script: &str) {
    read(pin, "sh", &["-ec", script]);
}

const PEER_MAC: [u8; 6] = [0x0e, 0x11, 0x22, 0x33, 0x44, 0x55];

fn peer(ip: [u8; 4]) -> Peer {
    Peer {
        name: "other".into(),
        node_ip: Ipv4Addr::from(ip),
        pod_cidr: "10.42.7.0/24".parse().unwrap(),
        vtep_mac: Some(PEER_MAC),
    }
}

fn local(ip: [u8; 4]) -> Local {
    Local {
        node_ip: Ipv4Addr::from(ip),
        pod_cidr: "10.42.3.0/24".parse().unwrap(),
        vtep_mac: overlay::vtep_mac("this"),
    }
}

/// What the kernel holds for the one peer, read back: the device's tunnel source,
/// the forwarding entries, the neighbour entries and the route to its pods.
struct Seen {
    device: String,
    fdb: String,
    neighbours: String,
    route: String,
}

fn seen(pin: &Path) -> Seen {
    Seen {
        device: read(pin, "ip", &["-d", "link", "show", VXLAN_DEVICE]),
        fdb: read(pin, "bridge", &["fdb", "show", "dev", VXLAN_DEVICE]),
        neighbours: read(pin, "ip", &["neigh", "show", "dev", VXLAN_DEVICE]),
        route: read(pin, "ip", &["route", "show", "10.42.7.0/24"]),
    }
}

fn assert_peer_at(s: &Seen, local_ip: &str, peer_ip: &str) {
    let mac = overlay::format_mac(&PEER_MAC);
    assert!(
        s.device.contains(&format!("local {local_ip} ")),
        "{}",
        s.device
    );
    assert!(s.device.contains("vxlan id 1 "), "{}", s.device);
    let to_peer: Vec<&str> = s.fdb.lines().filter(|l| l.starts_with(&mac)).collect();
    assert_eq!(
        to_peer,
        [format!("{mac} dst {peer_ip} self permanent").as_str()],
        "{}",
        s.fdb
    );
    assert!(
        s.neighbours
            .contains(&format!("10.42.7.0 lladdr {mac} PERMANENT")),
        "{}",
        s.neighbours
    );
    assert!(
        s.route
            .contains(&format!("10.42.7.0/24 via 10.42.7.0 dev {VXLAN_DEVICE}")),
        "{}",
        s.route
    );
}

#[test]
fn entries_follow_a_peer_and_this_node_to_new_addresses_and_teardown_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The nftables marks of this namespace's tables in the test's directory, not among
    // the host's (they would say the host has tables it has not).
    std::env::set_var(berth_hostdirs::RUN_DIR_ENV, dir.path().join("run"));
    let pin = dir.path().join("node");
    let pin_in = pin.clone();
    let result = berth_net::link::in_new_netns(&pin, |_, _, _| async move {
        let pin = pin_in.as_path();
        // The node network: an interface (a veth: this kernel has no dummy devices)
        // holding the node's old and new addresses.
        sh(
            pin,
            "ip link set lo up\n\
             ip link add uplink type veth peer name uplink-end\n\
             ip addr add 172.31.9.1/24 dev uplink\n\
             ip addr add 172.31.9.2/24 dev uplink\n\
             ip link set uplink up\n\
             ip link set uplink-end up",
        );
        let sync = |l: Local, p: Peer| overlay::sync(Backend::Vxlan, &l, &[p], 1450);
        sync(local([172, 31, 9, 1]), peer([172, 31, 9, 20]))?;
        assert_peer_at(&seen(pin), "172.31.9.1", "172.31.9.20");

        // The peer's Node now gives another InternalIP: its forwarding entry moves
        // (the old one goes), the route and neighbour entry stay.
        sync(local([172, 31, 9, 1]), peer([172, 31, 9, 21]))?;
        assert_peer_at(&seen(pin), "172.31.9.1", "172.31.9.21");

        // This node's address changes (the agent restarted with it): the device is
        // made again with the new tunnel source, and everything it held is back.
        let before = read(pin, "ip", &["-o", "link", "show", VXLAN_DEVICE]);
        sync(local([172, 31, 9, 2]), peer([172, 31, 9, 21]))?;
        let after = seen(pin);
        assert_peer_at(&after, "172.31.9.2", "172.31.9.21");
        assert_ne!(
            before.split(':').next(),
            read(pin, "ip", &["-o", "link", "show", VXLAN_DEVICE])
                .split(':')
                .next(),
            "the device was not made again (same index): {before}"
        );
        // Synced again with nothing changed, nothing changes: not even the device's
        // index (made again, it would hold the same entries).
        let index = |l: String| l.split(':').next().unwrap_or_default().to_string();
        let before = index(read(pin, "ip", &["-o", "link", "show", VXLAN_DEVICE]));
        sync(local([172, 31, 9, 2]), peer([172, 31, 9, 21]))?;
        let again = seen(pin);
        assert_eq!(
            index(read(pin, "ip", &["-o", "link", "show", VXLAN_DEVICE])),
            before
        );
        assert_eq!(
            (again.fdb, again.neighbours, again.route),
            (after.fdb, after.neighbours, after.route)
        );

        overlay::teardown()?;
        let links = read(pin, "ip", &["-o", "link"]);
        assert!(!links.contains(VXLAN_DEVICE), "{links}");
        let routes = read(pin, "ip", &["route", "show", "proto", "0xbe"]);
        assert_eq!(routes.trim(), "", "berth's routes to other nodes remain");
        let peers = read(pin, "nft", &["list", "set", "ip", "berth", "peers"]);
        assert!(!peers.contains("10.42.7.0/24"), "{peers}");
        Ok(())
    });
    berth_net::netns::remove(&pin);
    result.unwrap();
}
