//! Single link changes without an async runtime: one netlink request on a socket,
//! waited for. Teardown runs in the monitor — one small process per container — and a
//! loopback-only namespace is made on every `run --network none`: neither should start
//! tokio and rtnetlink's connection for one message. The message types come from
//! netlink-packet-route, the socket from netlink-sys (the crates rtnetlink itself is
//! built on).

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{Error, Result};

/// The index of interface `name` in this thread's network namespace, if it exists.
/// Asked of the kernel through a socket (SIOCGIFINDEX), which lives in the calling
/// thread's namespace — not read from /sys/class/net, which shows the namespace of
/// whoever mounted /sys: for a node agent in a network namespace of its own (`berth
/// cluster`), the host's.
pub fn index_of(name: &str) -> Option<u32> {
    if name.is_empty() || name.contains('/') || name.len() > 15 {
        return None;
    }
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .ok()?;
    rustix::net::netdevice::name_to_index(&sock, name).ok()
}

/// Deletes interface `name` (a veth takes its peer with it); one that is gone
/// already is fine.
pub fn delete_link(name: &str) -> Result<()> {
    let Some(index) = index_of(name) else {
        return Ok(());
    };
    let mut link = LinkMessage::default();
    link.header.index = index;
    request(
        RouteNetlinkMessage::DelLink(link),
        &format!("delete link {name}"),
    )
}

/// Brings the loopback interface of the calling thread's network namespace up.
pub fn loopback_up() -> Result<()> {
    let mut link = LinkMessage::default();
    // In every network namespace, lo is interface 1.
    link.header.index = 1;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    request(RouteNetlinkMessage::SetLink(link), "bring lo up")
}

/// Sends one request and waits for the kernel's acknowledgement.
fn request(msg: RouteNetlinkMessage, what: &str) -> Result<()> {
    let fail = |step: &str, e: std::io::Error| Error::io(format!("{what}: {step}"), e);
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| fail("open a netlink socket", e))?;
    sock.bind_auto()
        .map_err(|e| fail("bind the netlink socket", e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| fail("connect to the kernel", e))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    sock.send(&buf, 0).map_err(|e| fail("send", e))?;
    let mut reply = vec![0u8; 8192];
    let n = sock
        .recv(&mut &mut reply[..], 0)
        .map_err(|e| fail("receive", e))?;
    let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n])
        .map_err(|e| fail("decode the answer", std::io::Error::other(e.to_string())))?;
    match answer.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            // Gone meanwhile (its namespace went): what a deletion wanted.
            Some(c) if -c.get() == libc_enodev() => Ok(()),
            Some(c) => Err(fail(
                "the kernel refused",
                std::io::Error::from_raw_os_error(-c.get()),
            )),
        },
        _ => Ok(()),
    }
}

fn libc_enodev() -> i32 {
    rustix::io::Errno::NODEV.raw_os_error()
}
