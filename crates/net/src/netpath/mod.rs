//! What `berth explain path` shows: the way one packet goes from a pod to an address,
//! read from the kernel — the pod's route and interface, its veth's host end, the
//! bridge, the node's route, the VXLAN device with its VNI and the outer addresses
//! (neighbour and forwarding entries), the uplink — each device with its packet
//! counters; and for a Service address the nftables map element that matched and the
//! endpoint slots behind it ([`service`]).
//!
//! The node agent builds a [`Trace`] for its own part of the path and the CLI joins the
//! parts of the two nodes, so both sides share these types.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteType};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod nftread;
pub mod policy;
pub mod service;

/// One place the packet passes, as shown: a device, a route lookup, a table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// Whose network namespace: `pod default/web-0` or `node agent-1`.
    pub at: String,
    /// What it is: `eth0 (veth)`, `route`, `nft ip berth-proxy`...
    pub what: String,
    /// What the kernel says about it, one fact per line.
    pub facts: Vec<String>,
    /// The device's packet counters, when it is a device.
    pub packets: Option<Packets>,
}

/// A device's packet counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packets {
    /// Received.
    pub rx: u64,
    /// Sent.
    pub tx: u64,
}

/// Where the packet goes once it leaves the part of the path a [`Trace`] covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Next {
    /// Into a pod of this node: the path ends here.
    Delivered,
    /// To another node, at this address (the VXLAN outer destination, or the host-gw
    /// gateway).
    Node(Ipv4Addr),
    /// Out of the cluster through this device.
    Leaves(String),
    /// Nowhere: why.
    Dropped(String),
}

/// A node's part of a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The hops, in order.
    pub hops: Vec<Hop>,
    /// The address the packet is finally for (a Service address replaced by the
    /// endpoint chosen).
    pub target: Ipv4Addr,
    /// What happens next.
    pub next: Next,
}

/// A device as the kernel describes it.
#[derive(Clone, Debug, Default)]
pub struct Device {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its kind (`veth`, `bridge`, `vxlan`; empty for a plain device).
    pub kind: String,
    /// MTU.
    pub mtu: u32,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// The other end's index, for a veth (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// The bridge it is a port of.
    pub master: Option<u32>,
    /// VXLAN: VNI, UDP port, local address.
    pub vxlan: Option<(u32, u16, Option<Ipv4Addr>)>,
    /// IPv4 addresses with prefix lengths.
    pub addresses: Vec<String>,
    /// Counters.
    pub packets: Packets,
}

impl Device {
    /// The device as a hop at `at`, with its facts.
    pub fn hop(&self, at: &str, role: &str) -> Hop {
        let kind = if self.kind.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.kind)
        };
        let mut facts = Vec::new();
        let mut line = format!("mtu {}", self.mtu);
        if let Some(m) = &self.mac {
            line.push_str(&format!(", mac {}", crate::overlay::format_mac(m)));
        }
        if !self.addresses.is_empty() {
            line.push_str(&format!(", inet {}", self.addresses.join(" ")));
        }
        facts.push(line);
        if let Some((vni, port, local)) = self.vxlan {
            facts.push(format!(
                "VXLAN VNI {vni}, UDP port {port}, local {}",
                local.map_or("any".into(), |l| l.to_string())
            ));
        }
        if !role.is_empty() {
            facts.push(role.to_string());
        }
        Hop {
            at: at.to_string(),
            what: format!("{}{kind}", self.name),
            facts,
            packets: Some(self.packets),
        }
    }
}

/// A route lookup's answer.
#[derive(Clone, Debug)]
pub struct RouteHit {
    /// The output device.
    pub oif: u32,
    /// The gateway, when not on-link.
    pub gateway: Option<Ipv4Addr>,
    /// The source address the kernel would use.
    pub source: Option<Ipv4Addr>,
    /// The route's type: unicast and local routes deliver; others (unreachable,
    /// blackhole, prohibit...) end the path.
    pub kind: RouteType,
}

impl RouteHit {
    /// Whether the kernel sends the packet on (unicast) or takes it (local).
    pub fn delivers(&self) -> bool {
        matches!(self.kind, RouteType::Unicast | RouteType::Local)
    }

    /// The route's type as `ip route` names it.
    pub fn kind_name(&self) -> String {
        format!("{:?}", self.kind).to_lowercase()
    }
}

/// Reads device `index`.
pub async fn device(h: &Handle, index: u32) -> Result<Device> {
    let mut links = h.link().get().match_index(index).execute();
    let link = links
        .try_next()
        .await
        .map_err(|e| Error::netlink(format!("read device {index}"), e))?
        .ok_or_else(|| Error::NotFound(format!("device {index}")))?;
    let mut d = Device {
        index,
        ..Default::default()
    };
    for a in &link.attributes {
        match a {
            LinkAttribute::IfName(n) => d.name = n.clone(),
            LinkAttribute::Mtu(m) => d.mtu = *m,
            LinkAttribute::Address(m) if m.len() == 6 => {
                d.mac = Some([m[0], m[1], m[2], m[3], m[4], m[5]])
            }
            LinkAttribute::Link(i) => d.peer_index = Some(*i),
            LinkAttribute::Controller(i) => d.master = Some(*i),
            LinkAttribute::Stats64(s) => {
                d.packets = Packets {
                    rx: s.rx_packets,
                    tx: s.tx_packets,
                }
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => {
                            d.kind = match k {
                                InfoKind::Veth => "veth".into(),
                                InfoKind::Bridge => "bridge".into(),
                                InfoKind::Vxlan => "vxlan".into(),
                                other => format!("{other:?}").to_lowercase(),
                            }
                        }
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            let (mut vni, mut port, mut local) = (0, 0, None);
                            for x in v {
                                match x {
                                    InfoVxlan::Id(i) => vni = *i,
                                    InfoVxlan::Port(p) => port = *p,
                                    InfoVxlan::Local(l) => local = Some(*l),
                                    _ => {}
                                }
                            }
                            d.vxlan = Some((vni, port, local));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mut addrs = h.address().get().set_link_index_filter(index).execute();
    while let Some(m) = addrs
        .try_next()
        .await
        .map_err(|e| Error::netlink(format!("read the addresses of {}", d.name), e))?
    {
        for a in &m.attributes {
            if let rtnetlink::packet_route::address::AddressAttribute::Address(
                std::net::IpAddr::V4(ip),
            ) = a
            {
                d.addresses.push(format!("{ip}/{}", m.header.prefix_len));
            }
        }
    }
    Ok(d)
}

/// Asks the kernel which way it sends a packet for `dst` (as `ip route get`).
pub async fn route_get(h: &Handle, dst: Ipv4Addr) -> Result<RouteHit> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .build();
    let mut answers = h.route().get(msg).execute();
    let m = answers
        .try_next()
        .await
        .map_err(|e| Error::netlink(format!("look up the route to {dst}"), e))?
        .ok_or_else(|| Error::NotFound(format!("a route to {dst}")))?;
    let mut hit = RouteHit {
        oif: 0,
        gateway: None,
        source: None,
        kind: m.header.kind,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => hit.oif = *i,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => hit.gateway = Some(*g),
            RouteAttribute::PrefSource(RouteAddress::Inet(s)) => hit.source = Some(*s),
            _ => {}
        }
    }
    Ok(hit)
}

/// The link-layer address of neighbour `ip` on device `index`.
pub async fn neighbour(h: &Handle, index: u32, ip: Ipv4Addr) -> Result<Option<[u8; 6]>> {
    let all = crate::overlay::list_neighbours(h, AddressFamily::Inet, index).await?;
    Ok(all
        .iter()
        .map(crate::overlay::neighbour_of)
        .find(|(dst, _)| *dst == Some(ip))
        .and_then(|(_, lla)| <[u8; 6]>::try_from(lla?.as_slice()).ok()))
}

/// The remote address a VXLAN device's forwarding entry sends `mac` to.
pub async fn fdb_destination(h: &Handle, index: u32, mac: [u8; 6]) -> Result<Option<Ipv4Addr>> {
    let all = crate::overlay::list_neighbours(h, AddressFamily::Bridge, index).await?;
    Ok(all
        .iter()
        .map(crate::overlay::neighbour_of)
        .find(|(_, lla)| lla.as_deref() == Some(&mac[..]))
        .and_then(|(dst, _)| dst))
}

/// The node's part of the path to `target` from a packet that came in on `came_from`
/// (the bridge a pod's veth is a port of, or the VXLAN device): the route lookup and
/// where it leads. `at` names the node; `local_pod` finds this node's pod with an
/// address and returns its part (host veth, pod interface), the last hops.
pub async fn node_part(
    h: &Handle,
    at: &str,
    target: Ipv4Addr,
    local_pod: &(dyn Fn(Ipv4Addr) -> Result<Option<Vec<Hop>>> + Sync),
) -> Result<Trace> {
    let mut hops = Vec::new();
    let hit = route_get(h, target).await?;
    if !hit.delivers() {
        let kind = hit.kind_name();
        hops.push(Hop {
            at: at.into(),
            what: "route".into(),
            facts: vec![format!("{target}: {kind}")],
            packets: None,
        });
        return Ok(Trace {
            hops,
            target,
            next: Next::Dropped(format!("the route to {target} is {kind}")),
        });
    }
    let out = device(h, hit.oif).await?;
    let via = hit.gateway.map_or(String::new(), |g| format!(" via {g}"));
    let src = hit.source.map_or(String::new(), |s| format!(" src {s}"));
    hops.push(Hop {
        at: at.into(),
        what: "route".into(),
        facts: vec![format!("{target}{via} dev {}{src}", out.name)],
        packets: None,
    });
    if out.kind == "bridge" {
        hops.push(out.hop(at, "the pod bridge: the packet goes out of the port whose MAC answers for the pod's address"));
        return match local_pod(target)? {
            Some(mut last) => {
                hops.append(&mut last);
                Ok(Trace {
                    hops,
                    target,
                    next: Next::Delivered,
                })
            }
            None => Ok(Trace {
                hops,
                target,
                next: Next::Dropped(format!("no pod on this node has the address {target}")),
            }),
        };
    }
    if out.kind == "vxlan" {
        let mut vx = out.hop(at, "");
        let gw = hit.gateway.unwrap_or(target);
        let mac = neighbour(h, out.index, gw).await?;
        let Some(mac) = mac else {
            vx.facts.push(format!(
                "no neighbour entry for {gw}: the packet is dropped"
            ));
            hops.push(vx);
            return Ok(Trace {
                hops,
                target,
                next: Next::Dropped(format!("no neighbour entry for {gw} on {}", out.name)),
            });
        };
        vx.facts.push(format!(
            "neighbour {gw} lladdr {} (the other node's VXLAN device)",
            crate::overlay::format_mac(&mac)
        ));
        let Some(remote) = fdb_destination(h, out.index, mac).await? else {
            vx.facts.push(format!(
                "no forwarding entry for {}: the packet is dropped",
                crate::overlay::format_mac(&mac)
            ));
            hops.push(vx);
            return Ok(Trace {
                hops,
                target,
                next: Next::Dropped(format!("no forwarding entry on {}", out.name)),
            });
        };
        let (vni, port, local) = out.vxlan.unwrap_or_default();
        vx.facts.push(format!(
            "fdb {} dst {remote}: encapsulated in UDP {} → {remote}:{port}, VNI {vni}",
            crate::overlay::format_mac(&mac),
            local.map_or("?".into(), |l| l.to_string()),
        ));
        hops.push(vx);
        let outer = route_get(h, remote).await?;
        let uplink = device(h, outer.oif).await?;
        let via = outer.gateway.map_or(String::new(), |g| format!(" via {g}"));
        hops.push(Hop {
            at: at.into(),
            what: "route".into(),
            facts: vec![format!("outer packet: {remote}{via} dev {}", uplink.name)],
            packets: None,
        });
        hops.push(uplink.hop(at, "the node's uplink"));
        return Ok(Trace {
            hops,
            target,
            next: Next::Node(remote),
        });
    }
    hops.push(out.hop(at, ""));
    match hit.gateway {
        // host-gw: a route to another node's pod CIDR through that node.
        Some(g) => Ok(Trace {
            hops,
            target,
            next: Next::Node(g),
        }),
        None => Ok(Trace {
            hops,
            target,
            next: Next::Leaves(out.name),
        }),
    }
}

/// The device of the calling thread's namespace that holds `ip`.
pub async fn device_with_address(h: &Handle, ip: Ipv4Addr) -> Result<Option<Device>> {
    let mut addrs = h.address().get().execute();
    let mut found = None;
    while let Some(m) = addrs
        .try_next()
        .await
        .map_err(|e| Error::netlink("list addresses", e))?
    {
        let has = m.attributes.iter().any(|a| {
            matches!(a, rtnetlink::packet_route::address::AddressAttribute::Address(
                std::net::IpAddr::V4(x)) if *x == ip)
        });
        if has {
            found = Some(m.header.index);
        }
    }
    match found {
        Some(i) => Ok(Some(device(h, i).await?)),
        None => Ok(None),
    }
}

/// A pod's end of its veth pair, in its network namespace `netns`, and the host end in
/// the caller's: the last hops of a packet for `ip`, the pod's address (host veth,
/// then the pod's interface).
pub fn pod_arrival(netns: &Path, pod: &str, node: &str, ip: Ipv4Addr) -> Result<Vec<Hop>> {
    let fd = crate::netns::open(netns)?;
    let inside = crate::link::in_netns(fd.as_fd(), move |h| async move {
        device_with_address(&h, ip).await
    })?
    .ok_or_else(|| Error::NotFound(format!("the address {ip} in pod {pod}")))?;
    let mut hops = Vec::new();
    if let Some(peer) = inside.peer_index {
        let host = crate::link::run(move |h| async move { device(&h, peer).await })?;
        hops.push(host.hop(node, &format!("the host end of {pod}'s veth")));
    }
    hops.push(inside.hop(&format!("pod {pod}"), "the packet is delivered"));
    Ok(hops)
}

/// The first hops of a packet a pod sends to `dst`: the pod's route lookup and
/// interface (in its namespace `netns`), the host end of its veth and the bridge it is
/// a port of (in the caller's).
pub fn pod_departure(netns: &Path, pod: &str, node: &str, dst: Ipv4Addr) -> Result<Vec<Hop>> {
    let at = format!("pod {pod}");
    let fd = crate::netns::open(netns)?;
    let (hit, dev) = crate::link::in_netns(fd.as_fd(), move |h| async move {
        let hit = route_get(&h, dst).await?;
        let dev = device(&h, hit.oif).await?;
        Ok((hit, dev))
    })?;
    let via = hit.gateway.map_or(String::new(), |g| format!(" via {g}"));
    let src = hit.source.map_or(String::new(), |s| format!(" src {s}"));
    let mut hops = vec![
        Hop {
            at: at.clone(),
            what: "route".into(),
            facts: vec![format!("{dst}{via} dev {}{src}", dev.name)],
            packets: None,
        },
        dev.hop(&at, ""),
    ];
    if let Some(peer) = dev.peer_index {
        let (host, bridge) = crate::link::run(move |h| async move {
            let host = device(&h, peer).await?;
            let bridge = match host.master {
                Some(m) => Some(device(&h, m).await?),
                None => None,
            };
            Ok((host, bridge))
        })?;
        hops.push(host.hop(node, &format!("the host end of {pod}'s veth")));
        if let Some(b) = bridge {
            hops.push(b.hop(
                node,
                "the pod bridge, the pod's gateway: the node routes the packet from here",
            ));
        }
    }
    Ok(hops)
}
