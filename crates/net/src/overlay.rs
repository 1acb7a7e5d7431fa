//! The pod network between nodes, as flannel builds it: every node has a block of the
//! cluster's pod addresses (its pod CIDR, on its pod bridge), and reaches the other
//! nodes' blocks
//!
//! - with **VXLAN**: one VXLAN device per node ([`VXLAN_DEVICE`], VNI 1, UDP 8472 as
//!   flannel uses), holding the first address of the node's pod CIDR; for each other
//!   node a route to its pod CIDR through that node's first pod address (onlink), a
//!   permanent neighbour entry giving that address the other node's VXLAN device MAC,
//!   and a forwarding entry sending that MAC to the other node's IP. No multicast and
//!   no learning: everything comes from the Node objects;
//! - with **host-gw**: a plain route to each other node's pod CIDR through its IP (the
//!   nodes must share an L2 network).
//!
//! Pods keep their addresses between nodes: traffic from a pod to another node's pod
//! is not masqueraded (the other nodes' pod CIDRs are in nftables' `peers` set).
//! [`sync`] makes the kernel match a list of peers — what is missing is added, what
//! is no longer listed removed — so it is run on every change and at start, where it
//! adopts what a previous agent left.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::error::{Error, Result};

/// The node's VXLAN device (flannel's is flannel.1: VNI 1).
pub const VXLAN_DEVICE: &str = "berth.1";
/// The VXLAN network identifier.
pub const VNI: u32 = 1;
/// The UDP port VXLAN uses between nodes (flannel's and the Linux default).
pub const VXLAN_PORT: u16 = 8472;
/// What VXLAN adds to each packet: outer IPv4, UDP and VXLAN headers and the inner
/// Ethernet header.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The routing protocol number marking berth's routes to other nodes (so that a sync
/// finds its own, and never touches anyone else's).
pub const ROUTE_PROTOCOL: u8 = 0xbe;

/// How the node reaches the other nodes' pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Encapsulated in VXLAN over the node network.
    Vxlan,
    /// Plain routes through the other nodes' IPs (one L2 network).
    HostGw,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            other => Err(format!("unknown backend {other:?}: vxlan, host-gw or none")),
        }
    }
}

/// Another node, as its Node object tells.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// The Node's name.
    pub name: String,
    /// Its InternalIP.
    pub node_ip: Ipv4Addr,
    /// Its pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// Its VXLAN device's MAC address (VXLAN only; a peer without one is left out
    /// until it publishes it).
    pub vtep_mac: Option<[u8; 6]>,
}

/// This node's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    /// The node's IP, the VXLAN tunnel's source.
    pub node_ip: Ipv4Addr,
    /// The node's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// The VXLAN device's MAC ([`vtep_mac`] of the node's name).
    pub vtep_mac: [u8; 6],
}

/// A MAC address for the node's VXLAN device, the same at every start (other nodes
/// keep it in their forwarding entries): locally administered, unicast, from a hash
/// of the node's name.
pub fn vtep_mac(node_name: &str) -> [u8; 6] {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in node_name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    // splitmix64's finaliser: names that differ in one letter get unlike MACs.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d049bb133111eb);
    h ^= h >> 31;
    let b = h.to_be_bytes();
    [0x0e, b[1], b[2], b[3], b[4], b[5]]
}

/// Formats a MAC as `0e:12:34:56:78:9a`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `0e:12:34:56:78:9a`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The MTU of the interface that holds `ip` (the node's uplink), if one does.
pub fn mtu_of_address(ip: Ipv4Addr) -> Option<u32> {
    crate::link::run(move |h| async move {
        let mut addrs = h.address().get().execute();
        let mut index = None;
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(|e| Error::netlink("list addresses", e))?
        {
            use rtnetlink::packet_route::address::AddressAttribute;
            if a.attributes
                .iter()
                .any(|at| matches!(at, AddressAttribute::Address(IpAddr::V4(v)) if *v == ip))
            {
                index = Some(a.header.index);
                break;
            }
        }
        drop(addrs);
        let Some(index) = index else {
            return Ok(None);
        };
        let mut links = h.link().get().match_index(index).execute();
        let Some(l) = links
            .try_next()
            .await
            .map_err(|e| Error::netlink("look up the uplink", e))?
        else {
            return Ok(None);
        };
        use rtnetlink::packet_route::link::LinkAttribute;
        Ok(l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        }))
    })
    .ok()
    .flatten()
}

/// The MTU pods get on a node whose uplink has `uplink_mtu`: less VXLAN's headers
/// with VXLAN, the same with host-gw.
pub fn pod_mtu(backend: Backend, uplink_mtu: u32) -> u32 {
    match backend {
        Backend::Vxlan => uplink_mtu.saturating_sub(VXLAN_OVERHEAD),
        Backend::HostGw => uplink_mtu,
    }
}

/// What the kernel should hold for `peers` (this node left out).
#[derive(Debug, Default, PartialEq, Eq)]
struct Desired {
    /// Pod CIDR -> gateway (and whether through the VXLAN device).
    routes: BTreeMap<Ipv4Net, Ipv4Addr>,
    /// Peer's first pod address -> its VXLAN MAC.
    neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// Peer's VXLAN MAC -> its node IP.
    fdb: BTreeMap<[u8; 6], Ipv4Addr>,
}

fn desired(backend: Backend, local: &Local, peers: &[Peer]) -> Desired {
    let mut d = Desired::default();
    for p in peers {
        if p.pod_cidr == local.pod_cidr || p.node_ip == local.node_ip {
            continue;
        }
        match backend {
            Backend::HostGw => {
                d.routes.insert(p.pod_cidr, p.node_ip);
            }
            Backend::Vxlan => {
                let Some(mac) = p.vtep_mac else { continue };
                let gw = p.pod_cidr.network();
                d.routes.insert(p.pod_cidr, gw);
                d.neighbours.insert(gw, mac);
                d.fdb.insert(mac, p.node_ip);
            }
        }
    }
    d
}

/// Makes the kernel of the calling thread's network namespace route to `peers` with
/// `backend`: the VXLAN device made (or its settings checked) for VXLAN, removed for
/// host-gw; routes, neighbour and forwarding entries of peers no longer listed
/// removed; the nftables `peers` set matching. Idempotent.
pub fn sync(backend: Backend, local: &Local, peers: &[Peer], mtu: u32) -> Result<()> {
    let want = desired(backend, local, peers);
    let l = local.clone();
    let peer_cidrs: Vec<Ipv4Net> = want.routes.keys().copied().collect();
    crate::link::run(move |h| async move {
        let vxlan = match backend {
            Backend::Vxlan => Some(ensure_vxlan(&h, &l, mtu).await?),
            Backend::HostGw => {
                crate::link::delete(&h, VXLAN_DEVICE).await?;
                None
            }
        };
        sync_routes(&h, &want.routes, vxlan).await?;
        if let Some(idx) = vxlan {
            sync_neighbours(&h, idx, &want.neighbours).await?;
            sync_fdb(&h, idx, &want.fdb).await?;
        }
        Ok(())
    })?;
    crate::nft::set_peers(&peer_cidrs)
}

/// Removes what [`sync`] made: the VXLAN device (its neighbour and forwarding entries
/// go with it), berth's routes to other nodes, the nftables `peers` set's elements.
pub fn teardown() -> Result<()> {
    crate::link::run(|h| async move {
        crate::link::delete(&h, VXLAN_DEVICE).await?;
        sync_routes(&h, &BTreeMap::new(), None).await
    })?;
    crate::nft::set_peers(&[])
}

const EEXIST: i32 = rustix::io::Errno::EXIST.raw_os_error();

/// Makes the VXLAN device with this node's settings (made again if an earlier one has
/// other settings: another node IP), up, with the pod CIDR's first address; returns
/// its index.
async fn ensure_vxlan(h: &Handle, l: &Local, mtu: u32) -> Result<u32> {
    use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};
    let mut existing = None;
    {
        let mut links = h
            .link()
            .get()
            .match_name(VXLAN_DEVICE.to_string())
            .execute();
        if let Ok(Some(link)) = links.try_next().await {
            let local_ip = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Vxlan(v)) => v.iter().find_map(|x| match x {
                        InfoVxlan::Local(ip) => Some(*ip),
                        _ => None,
                    }),
                    _ => None,
                }),
                _ => None,
            });
            let mac = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::Address(m) => Some(m.clone()),
                _ => None,
            });
            existing = Some((link.header.index, local_ip, mac));
        }
    }
    let index = match existing {
        Some((idx, Some(ip), Some(mac))) if ip == l.node_ip && mac == l.vtep_mac => idx,
        other => {
            if other.is_some() {
                crate::link::delete(h, VXLAN_DEVICE).await?;
            }
            let msg = LinkVxlan::new(VXLAN_DEVICE, VNI)
                .local(l.node_ip)
                .port(VXLAN_PORT)
                .learning(false)
                .mtu(mtu)
                .address(l.vtep_mac.to_vec())
                .build();
            match h.link().add(msg).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => {
                    return Err(Error::netlink(
                        format!(
                            "create the VXLAN device {VXLAN_DEVICE} (VNI {VNI}, port {VXLAN_PORT})"
                        ),
                        e,
                    ))
                }
            }
            crate::link::index_of(h, VXLAN_DEVICE)
                .await?
                .ok_or_else(|| Error::NotFound(format!("{VXLAN_DEVICE} vanished")))?
        }
    };
    // The device's address: traffic the node itself sends to other nodes' pods leaves
    // from it (flannel gives flannel.1 the same).
    let addr = l.pod_cidr.network();
    match h.address().add(index, IpAddr::V4(addr), 32).execute().await {
        Ok(()) => {}
        Err(e) if errno(&e) == Some(EEXIST) => {}
        Err(e) => {
            return Err(Error::netlink(
                format!("give {VXLAN_DEVICE} the address {addr}/32"),
                e,
            ))
        }
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("bring {VXLAN_DEVICE} up"), e))?;
    Ok(index)
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// A route of berth's: destination, gateway, output interface.
fn our_route(m: &RouteMessage) -> Option<(Ipv4Net, Option<Ipv4Addr>, Option<u32>)> {
    if m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
        return None;
    }
    let mut dst = None;
    let mut gw = None;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let net = Ipv4Net::new(dst?, m.header.destination_prefix_length).ok()?;
    Some((net, gw, oif))
}

async fn sync_routes(
    h: &Handle,
    want: &BTreeMap<Ipv4Net, Ipv4Addr>,
    vxlan: Option<u32>,
) -> Result<()> {
    let mut have = Vec::new();
    {
        let mut routes = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(m) = routes
            .try_next()
            .await
            .map_err(|e| Error::netlink("list routes", e))?
        {
            if let Some(r) = our_route(&m) {
                have.push((r, m));
            }
        }
    }
    let mut kept = BTreeSet::new();
    for ((dst, gw, oif), m) in have {
        let right =
            want.get(&dst).is_some_and(|g| Some(*g) == gw) && (vxlan.is_none() || oif == vxlan);
        if right {
            kept.insert(dst);
            continue;
        }
        match h.route().del(m).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(rustix::io::Errno::SRCH.raw_os_error()) => {}
            Err(e) => return Err(Error::netlink(format!("remove the route to {dst}"), e)),
        }
    }
    for (dst, gw) in want {
        if kept.contains(dst) {
            continue;
        }
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(*gw)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .kind(RouteType::Unicast);
        if let Some(idx) = vxlan {
            b = b.output_interface(idx).onlink();
        }
        h.route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("route {dst} through {gw}"), e))?;
    }
    Ok(())
}

/// An entry's IPv4 destination. Forwarding entries (family AF_BRIDGE) carry theirs
/// as bytes the parser leaves undecoded.
pub(crate) fn ipv4_of(a: &NeighbourAddress) -> Option<Ipv4Addr> {
    match a {
        NeighbourAddress::Inet(ip) => Some(*ip),
        NeighbourAddress::Other(b) => <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from),
        _ => None,
    }
}

/// An entry's destination and link-layer address.
pub(crate) fn neighbour_of(m: &NeighbourMessage) -> (Option<Ipv4Addr>, Option<Vec<u8>>) {
    let mut dst = None;
    let mut lla = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(d) => dst = ipv4_of(d),
            NeighbourAttribute::LinkLayerAddress(l) => lla = Some(l.clone()),
            _ => {}
        }
    }
    (dst, lla)
}

pub(crate) async fn list_neighbours(
    h: &Handle,
    family: AddressFamily,
    index: u32,
) -> Result<Vec<NeighbourMessage>> {
    let mut out = Vec::new();
    let mut all = h.neighbours().get().set_address_family(family).execute();
    while let Some(m) = all
        .try_next()
        .await
        .map_err(|e| Error::netlink("list neighbours", e))?
    {
        if m.header.ifindex == index {
            out.push(m);
        }
    }
    Ok(out)
}

/// Makes the neighbour (or forwarding) entries of `family` on device `index` those of
/// `want`: an entry `right` finds a key for is kept, the others go; each wanted key
/// not kept is added with its request (what it does said in the error).
async fn sync_entries<K: Ord>(
    h: &Handle,
    family: AddressFamily,
    index: u32,
    right: impl Fn(&NeighbourMessage) -> Option<K>,
    want: Vec<(K, rtnetlink::NeighbourAddRequest, String)>,
) -> Result<()> {
    let mut kept = BTreeSet::new();
    for m in list_neighbours(h, family, index).await? {
        match right(&m) {
            Some(k) => {
                kept.insert(k);
            }
            None => {
                let _ = h.neighbours().del(m).execute().await;
            }
        }
    }
    for (k, req, what) in want {
        if kept.contains(&k) {
            continue;
        }
        req.replace()
            .execute()
            .await
            .map_err(|e| Error::netlink(what, e))?;
    }
    Ok(())
}

async fn sync_neighbours(h: &Handle, index: u32, want: &BTreeMap<Ipv4Addr, [u8; 6]>) -> Result<()> {
    let right = |m: &NeighbourMessage| {
        let (dst, lla) = neighbour_of(m);
        let dst = dst?;
        (want.get(&dst).map(|mac| mac.to_vec()) == lla
            && m.header.state == NeighbourState::Permanent)
            .then_some(dst)
    };
    let adds = want
        .iter()
        .map(|(ip, mac)| {
            let req = h
                .neighbours()
                .add(index, IpAddr::V4(*ip))
                .link_layer_address(mac)
                .state(NeighbourState::Permanent);
            let what = format!("give {ip} the MAC {} on {VXLAN_DEVICE}", format_mac(mac));
            (*ip, req, what)
        })
        .collect();
    sync_entries(h, AddressFamily::Inet, index, right, adds).await
}

async fn sync_fdb(h: &Handle, index: u32, want: &BTreeMap<[u8; 6], Ipv4Addr>) -> Result<()> {
    let right = |m: &NeighbourMessage| {
        let (dst, lla) = neighbour_of(m);
        let mac: [u8; 6] = lla?.try_into().ok()?;
        (want.get(&mac).copied() == dst).then_some(mac)
    };
    let adds = want
        .iter()
        .map(|(mac, ip)| {
            let req = h
                .neighbours()
                .add_bridge(index, mac)
                .destination(IpAddr::V4(*ip))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent);
            let what = format!("send {} to {ip} on {VXLAN_DEVICE}", format_mac(mac));
            (*mac, req, what)
        })
        .collect();
    sync_entries(h, AddressFamily::Bridge, index, right, adds).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, ip: [u8; 4], cidr: &str) -> Peer {
        Peer {
            name: name.into(),
            node_ip: ip.into(),
            pod_cidr: cidr.parse().unwrap(),
            vtep_mac: Some(vtep_mac(name)),
        }
    }

    #[test]
    fn macs_are_stable_local_and_unicast() {
        let m = vtep_mac("node-a");
        assert_eq!(m, vtep_mac("node-a"));
        assert_ne!(m, vtep_mac("node-b"));
        assert_eq!(m[0] & 0b11, 0b10, "locally administered, unicast");
        assert_eq!(parse_mac(&format_mac(&m)), Some(m));
        assert_eq!(parse_mac("0e:00:00:00:00"), None);
        assert_eq!(parse_mac("0e:00:00:00:00:00:00"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:00"), None);
    }

    #[test]
    fn the_wanted_state_leaves_out_this_node_and_peers_without_a_mac() {
        let local = Local {
            node_ip: [10, 45, 0, 2].into(),
            pod_cidr: "10.42.0.0/24".parse().unwrap(),
            vtep_mac: vtep_mac("a"),
        };
        let mut quiet = peer("c", [10, 45, 0, 4], "10.42.2.0/24");
        quiet.vtep_mac = None;
        let peers = [
            peer("a", [10, 45, 0, 2], "10.42.0.0/24"),
            peer("b", [10, 45, 0, 3], "10.42.1.0/24"),
            quiet,
        ];
        let d = desired(Backend::Vxlan, &local, &peers);
        let b_net: Ipv4Net = "10.42.1.0/24".parse().unwrap();
        assert_eq!(
            d.routes,
            BTreeMap::from([(b_net, Ipv4Addr::from([10, 42, 1, 0]))])
        );
        assert_eq!(
            d.neighbours,
            BTreeMap::from([(Ipv4Addr::from([10, 42, 1, 0]), vtep_mac("b"))])
        );
        assert_eq!(
            d.fdb,
            BTreeMap::from([(vtep_mac("b"), Ipv4Addr::from([10, 45, 0, 3]))])
        );
        let d = desired(Backend::HostGw, &local, &peers);
        assert_eq!(d.routes.len(), 2, "host-gw needs no MAC");
        assert_eq!(d.routes[&b_net], Ipv4Addr::from([10, 45, 0, 3]));
        assert!(d.neighbours.is_empty() && d.fdb.is_empty());
    }

    #[test]
    fn pods_lose_vxlan_headers_from_the_mtu() {
        assert_eq!(pod_mtu(Backend::Vxlan, 1500), 1450);
        assert_eq!(pod_mtu(Backend::HostGw, 1500), 1500);
        assert_eq!("host-gw".parse::<Backend>(), Ok(Backend::HostGw));
        assert!("udp".parse::<Backend>().unwrap_err().contains("vxlan"));
    }
}
