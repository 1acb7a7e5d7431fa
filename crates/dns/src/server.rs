//! The DNS server: UDP and TCP on one address, answering from the zone it is handed
//! (swapped whole on every change), forwarding the rest.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::answer::{answer, Reply};
use crate::forward::Forwarder;
use crate::zone::Zone;

/// What the server answers from: the zone (replaced whole) and the forwarder.
pub struct Shared {
    zone: RwLock<Arc<Zone>>,
    forwarder: Forwarder,
}

impl Shared {
    /// A server's state: an empty zone for `domain` until the first [`Shared::set_zone`].
    pub fn new(domain: &str, forwarder: Forwarder) -> Arc<Shared> {
        Arc::new(Shared {
            zone: RwLock::new(Arc::new(Zone::build(domain, &[], &[]))),
            forwarder,
        })
    }

    /// Puts a new zone in place.
    pub fn set_zone(&self, z: Zone) {
        if let Ok(mut g) = self.zone.write() {
            *g = Arc::new(z);
        }
    }

    fn zone(&self) -> Arc<Zone> {
        self.zone
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The answer to one packet (forwarded when not the cluster's).
    pub async fn respond(&self, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
        match answer(&self.zone(), packet, udp) {
            Reply::Answer(b) => Some(b),
            Reply::Drop => None,
            Reply::Forward => match self.forwarder.forward(packet, !udp).await {
                Some(b) => Some(b),
                None => servfail(packet),
            },
        }
    }
}

/// SERVFAIL for a question no upstream answered (a header with its ID and question).
fn servfail(packet: &[u8]) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, ResponseCode};
    let q = Message::from_vec(packet).ok()?;
    let mut r = crate::answer::reply_to(&q);
    r.set_response_code(ResponseCode::ServFail)
        .add_queries(q.queries().to_vec());
    r.to_vec().ok()
}

/// Serves UDP on `sock` until the task is dropped. Zone answers are sent at once;
/// forwarded ones from a task each, so a slow upstream holds nobody up.
pub async fn serve_udp(sock: UdpSocket, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "dns: receiving failed");
                continue;
            }
        };
        let packet = &buf[..n];
        match answer(&shared.zone(), packet, true) {
            Reply::Answer(b) => {
                let _ = sock.send_to(&b, from).await;
            }
            Reply::Drop => {}
            Reply::Forward => {
                let (s, sh, p) = (sock.clone(), shared.clone(), packet.to_vec());
                tokio::spawn(async move {
                    if let Some(b) = sh.respond(&p, true).await {
                        let _ = s.send_to(&b, from).await;
                    }
                });
            }
        }
    }
}

/// Serves TCP on `listener` until the task is dropped: length-prefixed messages, several
/// per connection.
pub async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok(len) = conn.read_u16().await else {
                    return;
                };
                let mut packet = vec![0u8; usize::from(len)];
                if conn.read_exact(&mut packet).await.is_err() {
                    return;
                }
                let Some(b) = shared.respond(&packet, false).await else {
                    continue;
                };
                let Ok(n) = u16::try_from(b.len()) else {
                    return;
                };
                if conn.write_all(&n.to_be_bytes()).await.is_err()
                    || conn.write_all(&b).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

/// Binds UDP and TCP on `addr` and serves both until the task is dropped.
pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> std::io::Result<()> {
    let udp = UdpSocket::bind(addr).await?;
    let tcp = TcpListener::bind(addr).await?;
    tokio::join!(serve_udp(udp, shared.clone()), serve_tcp(tcp, shared));
    Ok(())
}
