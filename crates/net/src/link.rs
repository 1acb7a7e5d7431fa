//! Links, addresses and routes over netlink (rtnetlink), with a small synchronous
//! face: each call runs on a current-thread runtime of its own, in the host's network
//! namespace or — from a thread that entered it — in a container's.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::BorrowedFd;

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result};

/// Runs `f` with a netlink handle in the calling thread's network namespace, on a
/// thread of its own (the caller may itself be inside an async runtime, where blocking
/// on another is not allowed).
pub fn run<T, F, Fut>(f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    std::thread::scope(|s| {
        s.spawn(|| block_on(f))
            .join()
            .map_err(|_| Error::Invalid("a netlink thread panicked".into()))?
    })
}

fn block_on<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::io("start a netlink runtime", e))?;
    rt.block_on(async move {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("open a netlink socket", e))?;
        let task = tokio::spawn(conn);
        let out = f(handle).await;
        task.abort();
        out
    })
}

/// Runs `f` with a netlink handle inside the network namespace `ns` (from a thread
/// that enters it, so the caller's namespace does not change).
pub fn in_netns<T, F, Fut>(ns: BorrowedFd<'_>, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                ns,
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| Error::io("enter the container's network namespace", e))?;
            block_on(f)
        })
        .join()
        .map_err(|_| Error::Invalid("a netlink thread panicked".into()))?
    })
}

/// Makes a network namespace kept at `path` and runs `f` with two netlink handles —
/// the caller's namespace's and the new one's — and a descriptor of the new namespace.
/// One thread does it all: it opens the first socket, enters a new namespace (only it
/// moves: namespaces are per thread), binds it to `path` and opens the second; sockets
/// stay in the namespace they were made in. (A thread and an async runtime per step
/// cost more than the netlink work itself.)
pub fn in_new_netns<T, F, Fut>(path: &std::path::Path, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle, Handle, std::os::fd::OwnedFd) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    crate::netns::prepare_path(path)?;
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| Error::io("start a netlink runtime", e))?;
            rt.block_on(async move {
                let (hconn, host, _) = rtnetlink::new_connection()
                    .map_err(|e| Error::io("open a netlink socket", e))?;
                let htask = tokio::spawn(hconn);
                crate::sys::unshare_net()
                    .map_err(|e| Error::io("unshare the network namespace", e))?;
                crate::netns::bind_current(path)?;
                let fd = crate::netns::open(path)?;
                let (cconn, inside, _) = rtnetlink::new_connection()
                    .map_err(|e| Error::io("open a netlink socket", e))?;
                let ctask = tokio::spawn(cconn);
                let out = f(host, inside, fd).await;
                htask.abort();
                ctask.abort();
                out
            })
        })
        .join()
        .map_err(|_| Error::Invalid("a netlink thread panicked".into()))?
    });
    if out.is_err() {
        crate::netns::remove(path);
    }
    out
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// The index of link `name`, if it exists.
pub async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(Error::netlink(format!("look up link {name}"), e)),
    }
}

const ENODEV: i32 = rustix::io::Errno::NODEV.raw_os_error();
const EEXIST: i32 = rustix::io::Errno::EXIST.raw_os_error();

/// Brings link `name` up.
pub async fn set_up(h: &Handle, name: &str) -> Result<()> {
    let idx = index_of(h, name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no link {name}")))?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("bring {name} up"), e))
}

/// Makes sure bridge `name` exists, is up, and has `gateway`/`prefix`; returns its
/// index.
pub async fn ensure_bridge(
    h: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    mtu: u32,
    v6: Option<(std::net::Ipv6Addr, u8)>,
) -> Result<u32> {
    // The common case, a bridge already up: one request.
    let mut links = h.link().get().match_name(name.to_string()).execute();
    let existing = match links.try_next().await {
        Ok(Some(l)) => Some((
            l.header.index,
            l.header
                .flags
                .contains(rtnetlink::packet_route::link::LinkFlags::Up),
        )),
        Ok(None) => None,
        Err(e) if errno(&e) == Some(ENODEV) => None,
        Err(e) => return Err(Error::netlink(format!("look up link {name}"), e)),
    };
    drop(links);
    if let Some((idx, true)) = existing {
        return Ok(idx);
    }
    let idx = match existing.map(|(i, _)| i) {
        Some(i) => i,
        None => {
            match h
                .link()
                .add(LinkBridge::new(name).mtu(mtu).build())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(Error::netlink(format!("create bridge {name}"), e)),
            }
            index_of(h, name)
                .await?
                .ok_or_else(|| Error::NotFound(format!("bridge {name} vanished")))?
        }
    };
    match h
        .address()
        .add(idx, IpAddr::V4(gateway), prefix)
        .execute()
        .await
    {
        Ok(()) => {}
        Err(e) if errno(&e) == Some(EEXIST) => {}
        Err(e) => {
            return Err(Error::netlink(
                format!("give bridge {name} the address {gateway}/{prefix}"),
                e,
            ))
        }
    }
    if let Some((g6, p6)) = v6 {
        match add_address_nodad(h, idx, IpAddr::V6(g6), p6).await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => {
                return Err(Error::netlink(
                    format!("give bridge {name} the address {g6}/{p6}"),
                    e,
                ))
            }
        }
    }
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("bring bridge {name} up"), e))?;
    Ok(idx)
}

/// Adds an address without duplicate address detection (an IPv6 address is otherwise
/// unusable for a second or two while the kernel probes for it).
async fn add_address_nodad(
    h: &Handle,
    idx: u32,
    addr: IpAddr,
    prefix: u8,
) -> std::result::Result<(), rtnetlink::Error> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
    let mut req = h.address().add(idx, addr, prefix);
    let m = req.message_mut();
    m.header.flags |= AddressHeaderFlags::Nodad;
    m.attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    req.execute().await
}

/// Creates the veth pair `host`/`ifname` in one request: `host` attached to the bridge
/// `bridge` and up, `ifname` (with `mac`) made directly inside the namespace `ns_fd`.
/// (Asking for the inner end up at creation fails: its peer is not registered yet.)
/// (Creating the pair on the host and moving one end costs an RCU grace period, some
/// 20 ms, in the move.)
pub async fn create_veth(
    h: &Handle,
    host: &str,
    ifname: &str,
    mac: [u8; 6],
    mtu: u32,
    bridge: u32,
    ns_fd: std::os::fd::RawFd,
) -> Result<()> {
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
    let peer = LinkUnspec::new_with_name(ifname)
        .setns_by_fd(ns_fd)
        .mtu(mtu)
        .address(mac.to_vec())
        .build();
    let msg = rtnetlink::LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .mtu(mtu)
        .controller(bridge)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    match h.link().add(msg.clone()).execute().await {
        // The same container's previous veth: the kernel destroys a released namespace
        // (and the veth in it) asynchronously, so a quick restart can find it still
        // there. It is stale: delete it and try again.
        Err(e) if errno(&e) == Some(EEXIST) => {
            delete(h, host).await?;
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(|e| Error::netlink(format!("create veth pair {host}/{ifname}"), e))
        }
        r => r.map_err(|e| Error::netlink(format!("create veth pair {host}/{ifname}"), e)),
    }
}

/// Inside a container's namespace: brings `ifname` and the loopback up, gives `ifname`
/// `addr`/`prefix` (and with `v6` an IPv6 address/prefix) and, with a `gateway`,
/// routes everything else through it (and IPv6 through `v6`'s gateway).
pub async fn configure_inside(
    h: &Handle,
    ifname: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    v6: Option<(std::net::Ipv6Addr, u8, std::net::Ipv6Addr)>,
) -> Result<()> {
    // A new namespace numbers its links in order: lo is 1, the veth end made in it 2.
    let idx = index_of(h, ifname)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no {ifname} in the container's namespace")))?;
    let lo = async {
        h.link()
            .set(LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(|e| Error::netlink("bring lo up", e))
    };
    let address = async {
        h.address()
            .add(idx, IpAddr::V4(addr), prefix)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("give {ifname} the address {addr}/{prefix}"), e))
    };
    let up = async {
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("bring {ifname} up"), e))
    };
    let (lo, up, address) = futures_util::join!(lo, up, address);
    lo?;
    up?;
    address?;
    if let Some((a6, p6, _)) = v6 {
        add_address_nodad(h, idx, IpAddr::V6(a6), p6)
            .await
            .map_err(|e| Error::netlink(format!("give {ifname} the address {a6}/{p6}"), e))?;
    }
    // A second network's interface gets its subnet's route only.
    let Some(gateway) = gateway else {
        return Ok(());
    };
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(idx)
        .build();
    h.route()
        .add(route)
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("route through {gateway}"), e))?;
    if let Some((_, _, g6)) = v6 {
        let route6 = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .gateway(g6)
            .output_interface(idx)
            .build();
        h.route()
            .add(route6)
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("route through {g6}"), e))?;
    }
    Ok(())
}

/// Deletes link `name` if it exists.
pub async fn delete(h: &Handle, name: &str) -> Result<()> {
    if let Some(idx) = index_of(h, name).await? {
        match h.link().del(idx).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(ENODEV) => {}
            Err(e) => return Err(Error::netlink(format!("delete link {name}"), e)),
        }
    }
    Ok(())
}

/// Makes sure this namespace's loopback interface holds `addr`/32: an address of the
/// namespace's own that no other interface carries (the node-local DNS server's, as
/// NodeLocal DNSCache binds the kube-dns address; on lo, since kernels without the
/// dummy driver are common).
pub async fn ensure_local_address(h: &Handle, addr: Ipv4Addr) -> Result<()> {
    // lo is interface 1 in every network namespace.
    match h.address().add(1, IpAddr::V4(addr), 32).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(Error::netlink(format!("give lo the address {addr}/32"), e)),
    }
}
