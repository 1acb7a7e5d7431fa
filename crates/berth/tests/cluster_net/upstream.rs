//! A DNS server standing in for the host's resolvers, the cluster DNS's upstream: on
//! an address of its own (a link of its own on the host, which the nodes reach
//! through their default route), over UDP and TCP. It knows two names: `outside.example`
//! (one address) and `big.example` (sixty addresses, more than a 512-byte UDP answer
//! holds: over UDP without EDNS it answers truncated, as real servers do). Anything
//! else is NXDOMAIN.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::Command;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// The one address `outside.example` has.
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
/// How many addresses `big.example` has.
pub const BIG: usize = 60;

/// The running server; dropping it removes its link (and with it its address).
pub struct Upstream {
    link: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The answer to one query; `udp_limit` cuts it (TC set, answers dropped) as a UDP
/// server must.
fn answer(query: &[u8], udp_limit: Option<usize>) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries().first()?.clone();
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .add_query(question.clone());
    let name = question.name().to_ascii().to_ascii_lowercase();
    let addrs: Vec<Ipv4Addr> = match name.as_str() {
        "outside.example." => vec![OUTSIDE],
        "big.example." => (1..=BIG as u8)
            .map(|i| Ipv4Addr::new(192, 0, 2, i))
            .collect(),
        _ => {
            r.set_response_code(ResponseCode::NXDomain);
            return r.to_vec().ok();
        }
    };
    if question.query_type() == RecordType::A {
        for a in addrs {
            r.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(a)),
            ));
        }
    }
    let bytes = r.to_vec().ok()?;
    let limit = udp_limit.map(|l| {
        q.extensions()
            .as_ref()
            .map_or(l, |e| usize::from(e.max_payload()).max(l))
    });
    match limit {
        Some(max) if bytes.len() > max => {
            r.take_answers();
            r.set_truncated(true);
            r.to_vec().ok()
        }
        _ => Some(bytes),
    }
}

impl Upstream {
    pub fn start() -> Upstream {
        let pid = std::process::id();
        let link = format!("bdns{pid}");
        let addr = Ipv4Addr::new(198, 18, (pid >> 8) as u8, pid as u8);
        // A veth pair (this kernel has no dummy links); its far end stays unused.
        ip(&[
            "link",
            "add",
            &link,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{link}p"),
        ]);
        let u = Upstream { link, ip: addr };
        ip(&["addr", "add", &format!("{addr}/32"), "dev", &u.link]);
        ip(&["link", "set", &u.link, "up"]);
        let udp = UdpSocket::bind((addr, 53)).unwrap();
        let tcp = TcpListener::bind((addr, 53)).unwrap();
        // The threads end with the test process (their sockets stay bound to an
        // address that is gone once the link is).
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                if let Some(b) = answer(&buf[..n], Some(512)) {
                    let _ = udp.send_to(&b, from);
                }
            }
        });
        std::thread::spawn(move || {
            for mut s in tcp.incoming().flatten() {
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if s.read_exact(&mut q).is_err() {
                    continue;
                }
                if let Some(b) = answer(&q, None) {
                    let _ = s.write_all(&(b.len() as u16).to_be_bytes());
                    let _ = s.write_all(&b);
                }
            }
        });
        u
    }

    /// A resolv.conf naming this server, with a search domain of the host's.
    pub fn resolv_conf(&self) -> String {
        format!("nameserver {}\nsearch example.test\n", self.ip)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
    }
}
