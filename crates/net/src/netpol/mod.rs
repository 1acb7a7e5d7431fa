//! NetworkPolicies in the kernel: one table ([`TABLE`]) that filters forwarded
//! traffic to and from the pods of this node that policies isolate. What a policy
//! means (which pods it selects, which peers and ports it allows) is the caller's
//! business; this module takes the outcome — for each isolated pod the allow rules of
//! each direction, and the peer address sets they name — and keeps the kernel in step.
//!
//! - Two base chains on the forward hook, one per direction (egress first): an
//!   `accept` in one only ends that chain, so a packet must pass both. Replies of
//!   accepted connections pass (`ct state established,related`).
//! - `egress-pods` / `ingress-pods`: verdict maps from an isolated pod's address to
//!   its chain (`out-IP`, `in-IP`), whose rules accept what the policies allow and
//!   whose last rule drops the rest.
//! - Peers are named interval sets (`p.NS.NAME.i0` for ingress rule 0 of a policy),
//!   shared by every pod the policy selects; ipBlocks are written as ranges with their
//!   `except`s cut out.
//! - Traffic between a pod and its own node (kubelet probes, the cluster DNS on the
//!   node's address) takes the input and output hooks, never forward: it is always
//!   allowed, as Kubernetes asks.
//! - The node proxies that run outside pods — the Ingress proxy of every node — mark
//!   their connections to endpoints with [`NODE_PROXY_DSCP`]; from another node's
//!   address ([`Wanted::node_proxies`], set `node-proxies`) such a connection is let in
//!   as the proxy's own node's would be. Other traffic from other nodes (a NodePort
//!   connection masqueraded there) is a peer like any, as Kubernetes has it.
//!
//! Each sync renders the wanted table and sends nft the difference in one transaction;
//! the first (and any after a failure) replaces the table atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

mod render;

pub use render::{render, script, Enforcer, Table};

/// The table's name.
pub const TABLE: &str = "berth-netpol";

/// The DSCP value (RFC 2474's pool 2, for local use) the nodes' own proxies give
/// their connections to pods, which isolated pods take from the nodes of
/// [`Wanted::node_proxies`].
pub const NODE_PROXY_DSCP: u8 = 0x0b;

/// The set of the other nodes' addresses that marked proxy traffic comes from.
pub const NODE_PROXIES_SET: &str = "node-proxies";

pub use crate::svcproxy::Protocol;

/// A port or port range of one protocol; no ports: the whole protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortMatch {
    /// Protocol.
    pub protocol: Protocol,
    /// First and last port (equal for one port); None: every port.
    pub ports: Option<(u16, u16)>,
}

/// One allow rule: traffic with a peer in the set (any peer when None) to one of the
/// ports (any when empty).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    /// A set of [`Wanted::sets`].
    pub peers: Option<String>,
    /// The ports, any of which matches.
    pub ports: Vec<PortMatch>,
}

/// An inclusive range of addresses.
pub type AddrRange = (Ipv4Addr, Ipv4Addr);

/// What the node's policies make of its pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Peer sets by name: their addresses, in any order, overlaps allowed.
    pub sets: BTreeMap<String, Vec<AddrRange>>,
    /// Pods isolated for ingress, with the rules allowing traffic in (none: nothing is
    /// allowed).
    pub ingress: BTreeMap<Ipv4Addr, BTreeSet<Rule>>,
    /// Pods isolated for egress, with the rules allowing traffic out.
    pub egress: BTreeMap<Ipv4Addr, BTreeSet<Rule>>,
    /// The addresses other nodes' proxies connect from (their node IPs and overlay
    /// addresses): marked traffic from them passes every pod's ingress chain.
    pub node_proxies: Vec<AddrRange>,
}

/// The range a CIDR covers.
pub fn cidr_range(net: ipnet::Ipv4Net) -> AddrRange {
    (net.network(), net.broadcast())
}

/// `range` with `holes` cut out.
pub fn subtract(range: AddrRange, holes: &[AddrRange]) -> Vec<AddrRange> {
    let mut out = vec![(u32::from(range.0), u32::from(range.1))];
    for &(hs, he) in holes {
        let (hs, he) = (u32::from(hs), u32::from(he));
        let mut next = Vec::new();
        for (s, e) in out {
            if he < s || hs > e {
                next.push((s, e));
                continue;
            }
            if hs > s {
                next.push((s, hs - 1));
            }
            if he < e {
                next.push((he + 1, e));
            }
        }
        out = next;
    }
    out.into_iter()
        .map(|(s, e)| (Ipv4Addr::from(s), Ipv4Addr::from(e)))
        .collect()
}

/// Sorted, with overlapping and adjacent ranges joined: nft refuses overlapping
/// elements in an interval set.
pub fn merge_ranges(ranges: &[AddrRange]) -> Vec<AddrRange> {
    let mut v: Vec<(u32, u32)> = ranges
        .iter()
        .map(|&(s, e)| (u32::from(s), u32::from(e)))
        .filter(|(s, e)| s <= e)
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out.into_iter()
        .map(|(s, e)| (Ipv4Addr::from(s), Ipv4Addr::from(e)))
        .collect()
}

/// Removes the table.
pub fn remove() {
    let _ = crate::nft::apply(&format!("delete table ip {TABLE}"));
}

#[cfg(test)]
mod tests;
