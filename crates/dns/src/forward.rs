//! Questions outside the cluster's domain go to the node's resolvers (the agent's
//! `--resolv-conf`), over UDP, then over TCP when the answer was cut; answers are
//! cached for their lowest TTL (30 s at most), keyed by name, type and class.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::rr::{DNSClass, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::answer::{cache_key, is_truncated, min_ttl, udp_limit};

/// The longest an upstream answer is kept.
const MAX_CACHE_TTL: u32 = 30;
/// Entries kept before the cache starts over.
const MAX_ENTRIES: usize = 10_000;
/// How long one upstream gets.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

type Key = (String, RecordType, DNSClass);

/// Relays questions to upstream resolvers, with a cache.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<Key, (Instant, Vec<u8>)>>,
}

/// The name servers of a resolv.conf text, loopback ones left out unless `loopback`
/// (a server inside a network namespace of its own cannot reach the host's
/// 127.0.0.53).
pub fn nameservers(resolv_conf: &str, loopback: bool) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = f.next()?.parse().ok()?;
            (loopback || !ip.is_loopback()).then_some(SocketAddr::new(ip, 53))
        })
        .collect()
}

impl Forwarder {
    /// A forwarder to `upstreams`.
    pub fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder {
            upstreams,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether it has anywhere to forward to.
    pub fn has_upstreams(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// The answer to `packet` from the cache or an upstream; None when none answers.
    pub async fn forward(&self, packet: &[u8], over_tcp: bool) -> Option<Vec<u8>> {
        let key = cache_key(packet);
        // A cached answer larger than a UDP asker takes (fetched over TCP for
        // another asker) is not for it: it is asked upstream, which cuts it.
        let limit = (!over_tcp).then(|| udp_limit(packet));
        if let Some(k) = &key {
            let hit = self
                .cache
                .lock()
                .ok()?
                .get(k)
                .filter(|(until, b)| *until > Instant::now() && limit.is_none_or(|l| b.len() <= l))
                .map(|(_, b)| b.clone());
            if let Some(mut b) = hit {
                b[..2].copy_from_slice(&packet[..2]);
                return Some(b);
            }
        }
        for up in &self.upstreams {
            let got = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
                let b = udp(*up, packet).await?;
                // Cut: a TCP asker gets the whole answer.
                if over_tcp && is_truncated(&b) {
                    return tcp(*up, packet).await;
                }
                Some(b)
            })
            .await
            .ok()
            .flatten();
            let Some(b) = got else { continue };
            // A cut answer is not the answer: never kept for the next asker.
            if is_truncated(&b) {
                return Some(b);
            }
            if let (Some(k), Some(ttl)) = (key, min_ttl(&b)) {
                let ttl = ttl.min(MAX_CACHE_TTL);
                if ttl > 0 {
                    if let Ok(mut c) = self.cache.lock() {
                        if c.len() >= MAX_ENTRIES {
                            c.clear();
                        }
                        c.insert(
                            k,
                            (Instant::now() + Duration::from_secs(ttl.into()), b.clone()),
                        );
                    }
                }
            }
            return Some(b);
        }
        None
    }
}

async fn udp(up: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = tokio::net::UdpSocket::bind(bind).await.ok()?;
    s.connect(up).await.ok()?;
    s.send(packet).await.ok()?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = s.recv(&mut buf).await.ok()?;
        // Only the answer to this question (same ID).
        if n >= 2 && buf[..2] == packet[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

async fn tcp(up: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(up).await.ok()?;
    let len = u16::try_from(packet.len()).ok()?;
    s.write_all(&len.to_be_bytes()).await.ok()?;
    s.write_all(packet).await.ok()?;
    let n = s.read_u16().await.ok()?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolvers_are_left_out_inside_a_namespace() {
        let conf = "# x\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.com\n";
        assert_eq!(
            nameservers(conf, false),
            vec!["192.0.2.53:53".parse().unwrap()]
        );
        assert_eq!(nameservers(conf, true).len(), 2);
    }
}
