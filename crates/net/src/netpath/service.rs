//! A Service address as the Service proxy's table holds it (`ip berth-proxy`, see
//! [`crate::svcproxy`]): the `service-ips` element that matches the address, protocol
//! and port, with its counter (new connections: the NAT hooks see a connection's
//! first packet only), and the endpoint slots it draws from, each with its counter.

use std::net::{Ipv4Addr, SocketAddrV4};

pub use super::nftread::Element;
use super::nftread::{chain_rules, get};
use crate::error::Result;
use crate::svcproxy::TABLE;

/// What the table does with a Service address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not a Service address (of this protocol and port).
    NotService,
    /// A Service without endpoints: connections are rejected.
    NoEndpoints(Element),
    /// A Service: its element and its endpoint slots.
    Service {
        /// The `service-ips` element.
        element: Element,
        /// The slots (`endpoints` elements), in order; empty when the Service uses
        /// session affinity (its own chain picks).
        slots: Vec<(Element, SocketAddrV4)>,
        /// The affinity chain's rules, for a Service with session affinity.
        chain: Vec<String>,
    },
}

/// The slot count a `goto [masq-]pick-N` verdict draws from.
fn pick_count(verdict: &str) -> Option<usize> {
    let chain = verdict.strip_prefix("goto ")?;
    let n = chain
        .strip_prefix("masq-pick-")
        .or_else(|| chain.strip_prefix("pick-"))?;
    n.parse().ok()
}

fn endpoint(value: &str) -> Option<SocketAddrV4> {
    let (ip, port) = value.split_once(" . ")?;
    Some(SocketAddrV4::new(
        ip.trim().parse().ok()?,
        port.trim().parse().ok()?,
    ))
}

/// Reads what the table does with `ip`, `protocol` (`tcp`, `udp`, `sctp`) and `port`.
pub fn lookup(ip: Ipv4Addr, protocol: &str, port: u16) -> Result<Lookup> {
    let key = format!("{ip} . {protocol} . {port}");
    if let Some(e) = get(TABLE, "service-ips", std::slice::from_ref(&key))?.pop() {
        if let Some(n) = pick_count(&e.value) {
            let keys: Vec<String> = (0..n).map(|i| format!("{key} . {i}")).collect();
            let slots = get(TABLE, "endpoints", &keys)?
                .into_iter()
                .filter_map(|s| endpoint(&s.value).map(|a| (s, a)))
                .collect();
            return Ok(Lookup::Service {
                element: e,
                slots,
                chain: Vec::new(),
            });
        }
        let chain = match e.value.strip_prefix("goto ") {
            Some(c) => chain_rules(TABLE, c)?,
            None => Vec::new(),
        };
        return Ok(Lookup::Service {
            element: e,
            slots: Vec::new(),
            chain,
        });
    }
    if let Some(e) = get(TABLE, "no-endpoint-services", &[key])?.pop() {
        return Ok(Lookup::NoEndpoints(e));
    }
    Ok(Lookup::NotService)
}

/// The endpoint a connection from `client` (address and port) to `service` was sent
/// to, read from the connection tracking table of the calling thread's network
/// namespace (`/proc/net/nf_conntrack`; None where the kernel has no such file).
pub fn conntrack_endpoint(client: SocketAddrV4, service: SocketAddrV4) -> Option<SocketAddrV4> {
    let table = std::fs::read_to_string("/proc/thread-self/net/nf_conntrack").ok()?;
    let want = [
        format!("src={}", client.ip()),
        format!("dst={}", service.ip()),
        format!("sport={}", client.port()),
        format!("dport={}", service.port()),
    ];
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // The original direction's four fields come first, the reply's after them.
        let first = |k: &str, from: usize| {
            fields[from..]
                .iter()
                .position(|f| f.starts_with(k))
                .map(|p| p + from)
        };
        let Some(s) = first("src=", 0) else { continue };
        if fields
            .get(s..s + 4)
            .is_none_or(|f| f.iter().zip(&want).any(|(a, b)| a != b))
        {
            continue;
        }
        let Some(r) = first("src=", s + 4) else {
            continue;
        };
        let ip = fields[r].strip_prefix("src=")?.parse().ok()?;
        let port = first("sport=", r)
            .and_then(|p| fields[p].strip_prefix("sport="))
            .and_then(|p| p.parse().ok())?;
        return Some(SocketAddrV4::new(ip, port));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_read_with_their_counters() {
        let listing = "table ip berth-proxy {\n\tmap endpoints {\n\t\ttype ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service\n\t\tcounter\n\t\telements = { 10.96.0.9 . tcp . 80 . 0x00000000 counter packets 2 bytes 120 : 10.42.1.4 . 8080,\n\t\t\t     10.96.0.9 . tcp . 80 . 0x00000001 counter packets 3 bytes 180 : 10.42.2.5 . 8080 }\n\t}\n}\n";
        let e = super::super::nftread::parse_elements(listing);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].key, "10.96.0.9 . tcp . 80 . 0x00000000");
        assert_eq!(e[0].packets, 2);
        assert_eq!(
            endpoint(&e[1].value),
            Some("10.42.2.5:8080".parse().unwrap())
        );
        assert_eq!(e[1].packets, 3);
        assert_eq!(pick_count("goto masq-pick-12"), Some(12));
        assert_eq!(pick_count("goto pick-3"), Some(3));
        assert_eq!(pick_count("goto svc-abc"), None);
        assert!(super::super::nftread::parse_elements("table ip t {\n}\n").is_empty());
    }
}
