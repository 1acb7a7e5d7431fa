//! Peers as the overlay sees them: Node objects. A node given a new address is a
//! Node whose InternalIP changes; made here by hand (no agent behind it), since the
//! other nodes see nothing but the object.

use super::MultiNode;
use std::process::Command;

/// `bridge fdb show dev berth.1` in a node's network namespace.
fn fdb(m: &MultiNode, node: &str) -> String {
    let o = Command::new("nsenter")
        .arg(format!("--net={}", m.netns(node).display()))
        .args(["bridge", "fdb", "show", "dev", "berth.1"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A node whose address changes: the others send its pods' traffic to the new
/// address (the forwarding entry moves; the route and neighbour entry stay), and
/// forget it when it is deleted.
pub fn node_address_change(m: &MultiNode) {
    let a1 = m.node("agent-1");
    let ghost = format!("{}-moved", m.name);
    let mac = "0e:42:00:00:be:01";
    let cidr = "10.42.250.0/24";
    let subnet = m.node_ip(&a1);
    let subnet = subnet.rsplit_once('.').unwrap().0.to_string();
    let (old_ip, new_ip) = (format!("{subnet}.250"), format!("{subnet}.251"));
    m.ok_apply(
        &serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": ghost, "annotations": {"berth.dev/vtep-mac": mac}},
            "spec": {"podCIDR": cidr}})
        .to_string(),
    );
    let set_ip = |ip: &str| {
        m.ok(&[
            "patch",
            "node",
            &ghost,
            "--subresource=status",
            "--type=merge",
            "-p",
            &serde_json::json!({"status": {"addresses": [
                {"type": "InternalIP", "address": ip}]}})
            .to_string(),
        ]);
    };
    set_ip(&old_ip);
    m.until(
        "agent-1 sends the moved node's pods to its address",
        30,
        || {
            fdb(m, &a1)
                .contains(&format!("{mac} dst {old_ip} self permanent"))
                .then_some(())
        },
    );
    let route = m.ip_in(&a1, &["route", "show", cidr]);
    assert!(route.contains("dev berth.1"), "{route}");

    // The new address: the forwarding entry follows; the old one is gone.
    set_ip(&new_ip);
    let table = m.until("agent-1 follows the new address", 30, || {
        let t = fdb(m, &a1);
        t.contains(&format!("{mac} dst {new_ip} self permanent"))
            .then_some(t)
    });
    assert!(!table.contains(&old_ip), "{table}");
    let route = m.ip_in(&a1, &["route", "show", cidr]);
    assert!(route.contains("dev berth.1"), "{route}");
    let neigh = m.ip_in(&a1, &["neigh", "show", "dev", "berth.1"]);
    assert!(
        neigh.contains(&format!("10.42.250.0 lladdr {mac} PERMANENT")),
        "{neigh}"
    );

    // Deleted: nothing of it is left.
    m.ok(&["delete", "node", &ghost]);
    m.until("agent-1 forgets the deleted node", 30, || {
        (m.ip_in(&a1, &["route", "show", cidr]).trim().is_empty() && !fdb(m, &a1).contains(mac))
            .then_some(())
    });
    let neigh = m.ip_in(&a1, &["neigh", "show", "dev", "berth.1"]);
    assert!(!neigh.contains(mac), "{neigh}");
}
