//! The host side of a cluster's node network: a bridge with the subnet's first
//! address, one network namespace per node joined to it by a veth (the node's `eth0`,
//! its IP, a default route through the bridge), and an nftables table of the cluster's
//! own letting nodes reach beyond the host (masquerade). Traffic between nodes leaves
//! one namespace for another over the bridge, as between machines on one switch.

use std::net::Ipv4Addr;

use anyhow::Context;

use super::record::{name_hash, ClusterRecord, NodeRecord, Paths};

/// The host bridge of cluster `name` (15 bytes at most, as the kernel wants).
pub fn bridge_name(name: &str) -> String {
    format!("berthc{}", name_hash(name))
}

/// The host end of node `index`'s veth.
pub fn host_veth(name: &str, index: usize) -> String {
    format!("bc{}-{index}", name_hash(name))
}

fn table(c: &ClusterRecord) -> String {
    format!("berthc-{}", name_hash(&c.name))
}

/// The first /24 of 10.45.0.0/16 that no route of the host and no other cluster of
/// `others` covers.
pub fn free_subnet(others: &[ipnet::Ipv4Net]) -> anyhow::Result<ipnet::Ipv4Net> {
    let routes = host_routes();
    let base: ipnet::Ipv4Net = "10.45.0.0/16".parse().expect("a CIDR");
    base.subnets(24)
        .expect("24 > 16")
        .find(|s| {
            !routes.iter().chain(others).any(|r| {
                r.prefix_len() > 0 && (r.contains(&s.network()) || s.contains(&r.network()))
            })
        })
        .context("no free /24 in 10.45.0.0/16 for the cluster's nodes: give one with --subnet")
}

/// The host's IPv4 routes (destination networks), from /proc/net/route.
pub fn host_routes() -> Vec<ipnet::Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Little-endian hex: destination in field 1, mask in field 7.
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            ipnet::Ipv4Net::new(Ipv4Addr::from(dest), mask.count_ones() as u8).ok()
        })
        .collect()
}

/// Makes the bridge with the subnet's first address and the cluster's nft table.
pub fn ensure_bridge(c: &ClusterRecord) -> anyhow::Result<()> {
    let gateway = first_host(&c.subnet);
    let prefix = c.subnet.prefix_len();
    let bridge = c.bridge.clone();
    berth_net::link::run(move |h| async move {
        berth_net::link::ensure_bridge(&h, &bridge, gateway, prefix, 1500, None)
            .await
            .map(drop)
    })
    .with_context(|| format!("making the cluster's bridge {}", c.bridge))?;
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1");
    let t = table(c);
    let script = format!(
        "add table ip {t}\n\
         add chain ip {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain ip {t} postrouting\n\
         add rule ip {t} postrouting ip saddr {s} ip daddr != {s} masquerade\n\
         add chain ip {t} forward {{ type filter hook forward priority filter; policy accept; }}\n\
         flush chain ip {t} forward\n\
         add rule ip {t} forward iifname \"{b}\" accept\n\
         add rule ip {t} forward oifname \"{b}\" accept\n",
        s = c.subnet,
        b = c.bridge,
    );
    berth_net::nft::apply(&script).context("adding the cluster's nftables table")
}

/// The first host address of a subnet: the bridge's.
pub fn first_host(subnet: &ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Makes node `n`'s network namespace (pinned in the cluster's run directory) wired
/// to the bridge. A namespace already pinned is kept (a restart of the cluster).
pub fn ensure_node(c: &ClusterRecord, paths: &Paths, n: &NodeRecord) -> anyhow::Result<()> {
    let pin = paths.node_netns(&n.name);
    if berth_net::netns::open(&pin).is_ok_and(|_| is_pinned(&pin)) {
        return Ok(());
    }
    let gateway = first_host(&c.subnet);
    let prefix = c.subnet.prefix_len();
    let (ip, veth, bridge) = (n.ip, n.host_veth.clone(), c.bridge.clone());
    let mac = node_mac(&n.name);
    berth_net::link::in_new_netns(&pin, move |host, inside, fd| async move {
        use std::os::fd::AsRawFd;
        let bridge_idx = berth_net::link::index_of(&host, &bridge)
            .await?
            .ok_or_else(|| berth_net::Error::NotFound(format!("no bridge {bridge}")))?;
        berth_net::link::create_veth(&host, &veth, "eth0", mac, 1500, bridge_idx, fd.as_raw_fd())
            .await?;
        berth_net::link::configure_inside(&inside, "eth0", ip, prefix, Some(gateway), None).await
    })
    .with_context(|| format!("making node {}'s network namespace", n.name))
}

fn is_pinned(path: &std::path::Path) -> bool {
    berth_cgroups::mountinfo::points_under(path)
        .iter()
        .any(|p| p == path)
}

/// A stable MAC for a node's eth0 (locally administered, unicast).
fn node_mac(node: &str) -> [u8; 6] {
    let h = name_hash(node);
    let b = u32::from_str_radix(&h, 16).unwrap_or(0).to_be_bytes();
    [0x0a, 0x58, b[0], b[1], b[2], b[3]]
}

/// Removes node `n`'s namespace (its veth goes with it).
pub fn remove_node(paths: &Paths, n: &NodeRecord) {
    berth_net::netns::remove(&paths.node_netns(&n.name));
    let _ = berth_net::rtnl_sync::delete_link(&n.host_veth);
}

/// Removes the bridge and the nft table.
pub fn remove_bridge(c: &ClusterRecord) {
    let _ = berth_net::rtnl_sync::delete_link(&c.bridge);
    let _ = berth_net::nft::apply(&format!("delete table ip {}", table(c)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_fit_and_subnets_avoid_routes() {
        assert!(bridge_name("a-very-long-cluster-name-indeed").len() <= 15);
        assert!(host_veth("a-very-long-cluster-name-indeed", 99).len() <= 15);
        let taken: Vec<ipnet::Ipv4Net> = vec!["10.45.0.0/24".parse().unwrap()];
        let s = free_subnet(&taken).unwrap();
        assert_ne!(s.to_string(), "10.45.0.0/24");
        assert_eq!(s.prefix_len(), 24);
        assert_eq!(
            first_host(&"10.45.3.0/24".parse().unwrap()),
            Ipv4Addr::from([10, 45, 3, 1])
        );
    }
}
