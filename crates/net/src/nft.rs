//! The firewall side, with nftables (`nft -f -`): one table, `ip berth`, holding
//! outbound NAT for berth's subnets, isolation between its networks, and published ports
//! as map elements — so a container's ports are added and removed as elements, never as
//! rules, and removing them cannot disturb anyone else's.
//!
//! nft is driven through its command line rather than netlink: the nftables netlink
//! protocol is a bytecode that only libnftables compiles, and no maintained Rust crate
//! replaces it (the `nftables` crate also runs the nft binary).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::network::Network;
use crate::ports::{PortMap, Proto};

/// The table's definition. Re-applying it is harmless: sets, maps and chains are
/// added if missing, and each chain's rules are flushed and written again.
const BASE: &str = r#"
add table ip berth
add set ip berth subnets { type ipv4_addr; flags interval; }
add set ip berth peers { type ipv4_addr; flags interval; }
add set ip berth bridges { type ifname; }
add map ip berth tcp_ports { type inet_service : ipv4_addr . inet_service; }
add map ip berth udp_ports { type inet_service : ipv4_addr . inet_service; }
add map ip berth tcp_addr_ports { type ipv4_addr . inet_service : ipv4_addr . inet_service; }
add map ip berth udp_addr_ports { type ipv4_addr . inet_service : ipv4_addr . inet_service; }
add chain ip berth publish
flush chain ip berth publish
add rule ip berth publish meta l4proto tcp dnat ip to ip daddr . tcp dport map @tcp_addr_ports
add rule ip berth publish meta l4proto udp dnat ip to ip daddr . udp dport map @udp_addr_ports
add rule ip berth publish meta l4proto tcp dnat ip to tcp dport map @tcp_ports
add rule ip berth publish meta l4proto udp dnat ip to udp dport map @udp_ports
add chain ip berth prerouting { type nat hook prerouting priority dstnat; policy accept; }
flush chain ip berth prerouting
add rule ip berth prerouting fib daddr type local jump publish
add chain ip berth output { type nat hook output priority -100; policy accept; }
flush chain ip berth output
add rule ip berth output fib daddr type local jump publish
add set ip berth bridge_pairs { type ifname . ifname; }
add chain ip berth forward { type filter hook forward priority filter; policy accept; }
flush chain ip berth forward
add rule ip berth forward ct status dnat accept
add rule ip berth forward iifname . oifname @bridge_pairs drop
add chain ip berth postrouting { type nat hook postrouting priority srcnat; policy accept; }
flush chain ip berth postrouting
add rule ip berth postrouting ip saddr @subnets ip daddr != @subnets ip daddr != @peers masquerade
add rule ip berth postrouting ct status dnat ip saddr @subnets oifname @bridges masquerade
add rule ip berth postrouting ip saddr 127.0.0.0/8 oifname @bridges masquerade
"#;

/// The IPv6 side, for networks with IPv6: outbound NAT (ULA subnets are not routed
/// beyond the host) and the same isolation between networks.
const BASE6: &str = r#"
add table ip6 berth
add set ip6 berth subnets { type ipv6_addr; flags interval; }
add set ip6 berth bridge_pairs { type ifname . ifname; }
add chain ip6 berth forward { type filter hook forward priority filter; policy accept; }
flush chain ip6 berth forward
add rule ip6 berth forward iifname . oifname @bridge_pairs drop
add chain ip6 berth postrouting { type nat hook postrouting priority srcnat; policy accept; }
flush chain ip6 berth postrouting
add rule ip6 berth postrouting ip6 saddr @subnets ip6 daddr != @subnets masquerade
"#;

/// The mark of [`BASE`] applied; a new name for each change of BASE, so that a newer
/// berth applies its rules on a host where an older one left its marks.
const BASE_MARK: &str = "base-2";

// Where berth notes what it put into the kernel's ruleset since boot is
// `berth_hostdirs::nft_marks()` (tmpfs, like the ruleset itself), so that a container
// start costs no nft call when nothing is new.

/// Elements written per nft statement when a script changes many: nft parses one long
/// element list much faster than as many statements.
pub const ELEMENTS_PER_LINE: usize = 500;

/// The start of a script that replaces table `table` (family ip) in one
/// transaction: made if missing, so that the delete always has something to delete.
pub fn replace_table(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}

/// Appends to `script` what removes from table `table` (family ip) the chains and the
/// sets of `old` that `new` lacks: the chains all emptied first (they may jump to each
/// other), then deleted, then the sets (no rule names them any more).
pub fn delete_gone<C, D, S, T>(
    script: &mut String,
    table: &str,
    (old_chains, new_chains): (
        &std::collections::BTreeMap<String, C>,
        &std::collections::BTreeMap<String, D>,
    ),
    (old_sets, new_sets): (
        &std::collections::BTreeMap<String, S>,
        &std::collections::BTreeMap<String, T>,
    ),
) {
    use std::fmt::Write as _;
    let gone: Vec<&String> = old_chains
        .keys()
        .filter(|n| !new_chains.contains_key(*n))
        .collect();
    for name in &gone {
        let _ = writeln!(script, "flush chain ip {table} {name}");
    }
    for name in &gone {
        let _ = writeln!(script, "delete chain ip {table} {name}");
    }
    for name in old_sets.keys().filter(|n| !new_sets.contains_key(*n)) {
        let _ = writeln!(script, "delete set ip {table} {name}");
    }
}

/// Runs `nft -f -` with `script`.
pub fn apply(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Nft("nft is not installed (apt-get install nftables): berth needs it for bridge networks' NAT and published ports; use --network none or host without it".into())
            } else {
                Error::io("run nft", e)
            }
        })?;
    let _ = child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io("run nft", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(format!(
            "nft refused berth's rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn marked(name: &str) -> bool {
    berth_hostdirs::nft_marks().join(name).exists()
}

fn mark(name: &str) {
    let marks = berth_hostdirs::nft_marks();
    let _ = std::fs::create_dir_all(&marks);
    let _ = std::fs::write(marks.join(name), b"");
}

fn pairs(bridge: &str, others: &[String]) -> Vec<String> {
    others
        .iter()
        .filter(|o| o.as_str() != bridge)
        .flat_map(|o| {
            [
                format!("\"{bridge}\" . \"{o}\""),
                format!("\"{o}\" . \"{bridge}\""),
            ]
        })
        .collect()
}

/// Makes sure the table exists and network `n` is in it — its subnet NATed, and no
/// forwarding between its bridge and the other networks' bridges, as docker isolates
/// its networks — and that the kernel forwards; cheap (no nft, no network list) when
/// already done.
pub fn ensure_network(n: &Network, nets: &crate::network::Networks) -> Result<()> {
    let key = format!("net-{}", n.id);
    if marked(&key) && marked(BASE_MARK) {
        return Ok(());
    }
    let others: Vec<String> = nets
        .list()
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.bridge)
        .collect();
    let mut script = String::from(BASE);
    script.push_str(&format!(
        "add element ip berth subnets {{ {} }}\nadd element ip berth bridges {{ \"{}\" }}\n",
        n.subnet, n.bridge
    ));
    let p = pairs(&n.bridge, &others);
    if !p.is_empty() {
        script.push_str(&format!(
            "add element ip berth bridge_pairs {{ {} }}\n",
            p.join(", ")
        ));
    }
    if let Some(s6) = n.subnet6 {
        script.push_str(BASE6);
        script.push_str(&format!("add element ip6 berth subnets {{ {s6} }}\n"));
        if !p.is_empty() {
            script.push_str(&format!(
                "add element ip6 berth bridge_pairs {{ {} }}\n",
                p.join(", ")
            ));
        }
        let _ = std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", b"1");
    }
    apply(&script)?;
    // Forwarding between the bridges and the world.
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1");
    mark(BASE_MARK);
    mark(&key);
    Ok(())
}

/// Makes the `peers` set hold exactly `cidrs`: other nodes' pod CIDRs, which pods
/// reach with their own addresses (not masqueraded), in one transaction.
pub fn set_peers(cidrs: &[ipnet::Ipv4Net]) -> Result<()> {
    let mut script = String::from(BASE);
    script.push_str("flush set ip berth peers\n");
    if !cidrs.is_empty() {
        let list: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
        script.push_str(&format!(
            "add element ip berth peers {{ {} }}\n",
            list.join(", ")
        ));
    }
    apply(&script)?;
    mark(BASE_MARK);
    Ok(())
}

/// Deletes berth's tables (and what they hold) and forgets that they were made.
pub fn forget_all() {
    let _ = std::fs::remove_dir_all(berth_hostdirs::nft_marks());
    for t in ["ip berth", "ip6 berth"] {
        let _ = apply(&format!("delete table {t}"));
    }
}

/// Lets the host's own connections to 127.0.0.1 be DNATed to containers on `bridge`
/// (the kernel otherwise drops loopback-sourced packets leaving a real interface).
pub fn allow_localhost(bridge: &str) {
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        b"1",
    );
}

/// Takes network `n` out of the table (its bridge is gone).
pub fn forget_network(n: &Network, others: &[String]) -> Result<()> {
    let _ = std::fs::remove_file(berth_hostdirs::nft_marks().join(format!("net-{}", n.id)));
    let mut script = format!(
        "delete element ip berth subnets {{ {} }}\ndelete element ip berth bridges {{ \"{}\" }}\n",
        n.subnet, n.bridge
    );
    for p in pairs(&n.bridge, others) {
        script.push_str(&format!("delete element ip berth bridge_pairs {{ {p} }}\n"));
    }
    if let Some(s6) = n.subnet6 {
        script.push_str(&format!("delete element ip6 berth subnets {{ {s6} }}\n"));
    }
    // Absent elements make nft fail: then each on its own, ignoring that.
    withdraw(&script);
    Ok(())
}

fn map_name(p: &PortMap) -> String {
    let proto = match p.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    if p.host_ip.is_some() {
        format!("{proto}_addr_ports")
    } else {
        format!("{proto}_ports")
    }
}

fn key(p: &PortMap) -> String {
    match p.host_ip {
        Some(ip) => format!("{ip} . {}", p.host_port),
        None => p.host_port.to_string(),
    }
}

/// The script that publishes `ports` of the container at `ip`; `create` fails on a
/// host port another container already has.
pub fn publish_script(ports: &[PortMap], ip: Ipv4Addr) -> String {
    ports
        .iter()
        .map(|p| {
            format!(
                "create element ip berth {} {{ {} : {ip} . {} }}\n",
                map_name(p),
                key(p),
                p.container_port
            )
        })
        .collect()
}

/// The script that withdraws `ports` (one statement per line: see [`withdraw`]).
pub fn withdraw_script(ports: &[PortMap]) -> String {
    ports
        .iter()
        .map(|p| format!("delete element ip berth {} {{ {} }}\n", map_name(p), key(p)))
        .collect()
}

/// Runs a withdraw script: all at once, else line by line, ignoring elements already
/// gone (nft 1.0.6 has no `destroy`).
pub fn withdraw(script: &str) {
    if script.trim().is_empty() || apply(script).is_ok() {
        return;
    }
    for line in script.lines().filter(|l| !l.trim().is_empty()) {
        let _ = apply(line);
    }
}
