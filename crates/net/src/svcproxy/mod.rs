//! Services in the kernel, as kube-proxy's nftables mode builds them: one table
//! ([`TABLE`]) where a packet to a Service address and port is looked up in a verdict
//! map and sent to the Service's chain, which picks one endpoint at random (`numgen`)
//! and DNATs to it.
//!
//! - `service-ips`: `IP . proto . port : goto CHAIN` for ClusterIPs, external IPs and
//!   LoadBalancer ingress IPs; `service-nodeports`: `proto . port : goto CHAIN` for
//!   NodePorts, on the node's own addresses (`fib daddr type local`).
//! - One chain per Service port (`svc-NS/NAME/PROTO/PORT`), one for its external
//!   traffic when that differs (`ext-...`: masqueraded unless externalTrafficPolicy is
//!   Local, which keeps the client's address and uses this node's endpoints only), one
//!   per endpoint (`ep-...__IP/PORT`: the DNAT, and masquerade for a pod reaching
//!   itself).
//! - Traffic to a ClusterIP from outside the cluster's pod network (a host process, a
//!   hostNetwork pod) is masqueraded, so replies come back the way it went.
//! - sessionAffinity ClientIP: a timed set of client addresses per endpoint.
//! - A Service port without endpoints rejects (TCP reset / ICMP port unreachable)
//!   through `no-endpoint-services` and `no-endpoint-nodeports`, instead of letting
//!   clients time out.
//!
//! The rules are kept as a [`Ruleset`] (chains with their rules, map elements); each
//! sync renders the wanted ruleset and sends nft only the difference, in one
//! transaction: a changed endpoint rewrites its Service's chain and adds or deletes
//! one endpoint chain, never more. The first sync (and any after a failure) replaces
//! the whole table atomically — connections keep their conntrack entries.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The table's name.
pub const TABLE: &str = "berth-proxy";

/// The mark asking for masquerade on the way out (kube-proxy's 0x4000).
pub(super) const MASQ_MARK: u32 = 0x4000;

/// A transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Its name in nft (`tcp`, `udp`, `sctp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// From a Service port's `protocol` (TCP when missing).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// One endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The target port.
    pub port: u16,
    /// Ready (serving and not terminating).
    pub ready: bool,
    /// Serving (ready, or terminating but still passing its readiness probe).
    pub serving: bool,
    /// Its pod is being deleted.
    pub terminating: bool,
    /// On this node.
    pub local: bool,
}

/// One port of a Service, with what it needs to be proxied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The port's name ("" for a single unnamed port).
    pub port_name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The Service's ClusterIPs (IPv4 ones).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// The Service port.
    pub port: u16,
    /// The NodePort, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// externalIPs and LoadBalancer ingress IPs: reached like the ClusterIP, treated as
    /// external traffic.
    pub external_ips: Vec<Ipv4Addr>,
    /// sessionAffinity ClientIP's timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// internalTrafficPolicy Local: traffic from inside the cluster goes to this
    /// node's endpoints only.
    pub internal_local: bool,
    /// externalTrafficPolicy Local: external traffic goes to this node's endpoints
    /// only, with its client address kept.
    pub external_local: bool,
    /// The endpoints (from the EndpointSlices).
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    fn id(&self) -> String {
        let port = if self.port_name.is_empty() {
            self.port.to_string()
        } else {
            self.port_name.clone()
        };
        format!(
            "{}/{}/{}/{port}",
            self.namespace,
            self.name,
            self.protocol.nft()
        )
    }
}

/// What the node is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The cluster's pod network: traffic from outside it to a ClusterIP is
    /// masqueraded. None: everything to a ClusterIP is.
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
}

/// Which endpoints serve traffic, as kube-proxy picks them: the ready ones; if none is
/// ready, the serving terminating ones (so connections drain during a rollout);
/// limited to this node's when `local`.
pub(super) fn usable(eps: &[Endpoint], local: bool) -> Vec<&Endpoint> {
    let pool: Vec<&Endpoint> = eps.iter().filter(|e| !local || e.local).collect();
    let ready: Vec<&Endpoint> = pool.iter().copied().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    pool.into_iter()
        .filter(|e| e.serving && e.terminating)
        .collect()
}

/// nftables objects berth-proxy holds: chains with their rules, map elements, and
/// the affinity sets (with their timeouts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Regular chains (not the hooked base chains) and their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Map name -> key -> value.
    pub elements: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Affinity set name -> timeout in seconds.
    pub sets: BTreeMap<String, u32>,
}

/// The named maps and sets, with their definitions. Elements carry all per-Service
/// data (and the maps a connection's first packet is looked up in count per element,
/// which `berth explain path` shows): nftables makes chains and anonymous sets slowly (a table of 10,000 Services
/// with a chain and an anonymous map each took 16 s of kernel time to load), named
/// map elements quickly (100,000 in about a second).
pub(super) const MAPS: [(&str, &str); 8] = [
    (
        "service-ips",
        "type ipv4_addr . inet_proto . inet_service : verdict; counter;",
    ),
    (
        "service-nodeports",
        "type inet_proto . inet_service : verdict; counter;",
    ),
    (
        "no-endpoint-services",
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        "no-endpoint-nodeports",
        "type inet_proto . inet_service : verdict;",
    ),
    // (Service address, protocol, port, slot) -> endpoint; a Service with N endpoints
    // has slots 0..N and its `pick-N` chain draws one at random into the connection's
    // mark, which picks the slot. (The slot is typed as a mark because nft 1.0 cannot
    // read back a `typeof ... numgen` map it made: later element changes fail.)
    (
        "endpoints",
        "type ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service; counter;",
    ),
    (
        "nodeport-endpoints",
        "type inet_proto . inet_service . mark : ipv4_addr . inet_service; counter;",
    ),
    // ClusterIP ports, whose clients from outside the pod network are masqueraded.
    ("cluster-ips", "type ipv4_addr . inet_proto . inet_service;"),
    // A local endpoint's address twice: a pod reaching itself through a Service.
    ("hairpin", "type ipv4_addr . ipv4_addr;"),
];

/// Whether a map of [`MAPS`] is a set (elements without values).
pub(super) fn is_set(map: &str) -> bool {
    matches!(map, "cluster-ips" | "hairpin")
}

mod render;
mod script;
mod sync;

pub use render::render;
pub use script::script;
pub use sync::{Proxy, SyncStats};

/// Removes the table.
pub fn remove() {
    let _ = crate::nft::apply(&format!("delete table ip {TABLE}"));
}

#[cfg(test)]
mod tests;
