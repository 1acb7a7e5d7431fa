//! A pod's NetworkPolicy isolation as the node's `berth-netpol` table holds it (see
//! [`crate::netpol`]): whether its address is in the ingress or egress map, and the
//! rules of the chain that map sends it to (allows, then a drop).

use std::net::Ipv4Addr;

use super::nftread::{chain_rules, get};
use super::Hop;
use crate::error::Result;
use crate::netpol::TABLE;

/// Which way the packet goes for the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The pod sends it.
    Egress,
    /// The pod receives it.
    Ingress,
}

/// The hop that shows `pod_ip`'s isolation in `direction`, at `at`; None when no
/// policy isolates it that way (or the table is absent: policies are not enforced
/// here).
pub fn hop(at: &str, pod_ip: Ipv4Addr, direction: Direction) -> Result<Option<Hop>> {
    let (map, what) = match direction {
        Direction::Egress => ("egress-pods", "sending"),
        Direction::Ingress => ("ingress-pods", "receiving"),
    };
    let Some(e) = get(TABLE, map, &[pod_ip.to_string()])?.pop() else {
        return Ok(None);
    };
    let mut facts = vec![format!(
        "{map}[{pod_ip}] → {}: NetworkPolicies isolate the pod for {what}; the packet passes only if a rule accepts it:",
        e.value
    )];
    if let Some(chain) = e.value.strip_prefix("goto ") {
        facts.extend(
            chain_rules(TABLE, chain)?
                .into_iter()
                .map(|r| format!("  {r}")),
        );
    }
    Ok(Some(Hop {
        at: at.to_string(),
        what: format!("nft table ip {TABLE}"),
        facts,
        packets: None,
    }))
}
