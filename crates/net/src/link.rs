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
        Err(e) if errno(&e) == Some(libc_enodev()) => Ok(None),
        Err(e) => Err(Error::netlink(format!("look up link {name}"), e)),
    }
}

const fn libc_enodev() -> i32 {
    19
}

const EEXIST: i32 = 17;

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
) -> Result<u32> {
    let idx = match index_of(h, name).await? {
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
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("bring bridge {name} up"), e))?;
    Ok(idx)
}

/// Creates the veth pair `host`/`peer`, moves `peer` into the namespace `ns_fd`,
/// attaches `host` to the bridge `bridge` and brings it up.
pub async fn create_veth(
    h: &Handle,
    host: &str,
    peer: &str,
    mtu: u32,
    bridge: u32,
    ns_fd: std::os::fd::RawFd,
) -> Result<()> {
    h.link()
        .add(LinkVeth::new(host, peer).mtu(mtu).build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("create veth pair {host}/{peer}"), e))?;
    let peer_idx = index_of(h, peer)
        .await?
        .ok_or_else(|| Error::NotFound(format!("veth {peer} vanished")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(peer_idx)
                .setns_by_fd(ns_fd)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("move {peer} into the container's namespace"), e))?;
    let host_idx = index_of(h, host)
        .await?
        .ok_or_else(|| Error::NotFound(format!("veth {host} vanished")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(host_idx)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("attach {host} to its bridge"), e))
}

/// Inside a container's namespace: renames `peer` to `ifname`, gives it `addr`/`prefix`
/// and `mac`, brings it up and routes everything else through `gateway`.
pub async fn configure_inside(
    h: &Handle,
    peer: &str,
    ifname: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    mac: [u8; 6],
) -> Result<()> {
    let idx = index_of(h, peer)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no {peer} in the container's namespace")))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(idx)
                .name(ifname.to_string())
                .address(mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("rename {peer} to {ifname}"), e))?;
    h.address()
        .add(idx, IpAddr::V4(addr), prefix)
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("give {ifname} the address {addr}/{prefix}"), e))?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("bring {ifname} up"), e))?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(idx)
        .build();
    h.route()
        .add(route)
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("route through {gateway}"), e))
}

/// Deletes link `name` if it exists.
pub async fn delete(h: &Handle, name: &str) -> Result<()> {
    if let Some(idx) = index_of(h, name).await? {
        match h.link().del(idx).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc_enodev()) => {}
            Err(e) => return Err(Error::netlink(format!("delete link {name}"), e)),
        }
    }
    Ok(())
}
