//! Connecting a container to a network and taking it off again. What will be made is
//! recorded before it is made (the record names the namespace, the veth, the network
//! whose leases to release and the nft elements to withdraw), so that a crash at any
//! point leaves something [`teardown`] can clean up completely.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::network::Networks;
use crate::ports::PortMap;

/// A container's connection to a network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attachment {
    /// The container's ID (the holder of its lease).
    pub container: String,
    /// The network's name and ID.
    pub network: String,
    /// The network's ID.
    pub network_id: String,
    /// The network's bridge.
    pub bridge: String,
    /// The persistent network namespace the container joins.
    pub netns: PathBuf,
    /// The host end of the veth pair.
    pub host_veth: String,
    /// The container's address, once leased.
    pub ip: Option<Ipv4Addr>,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The default route.
    pub gateway: Ipv4Addr,
    /// The container interface's MAC address.
    pub mac: String,
    /// Published ports.
    pub ports: Vec<PortMap>,
    /// Where the network's leases live (so teardown needs no network record).
    pub leases: PathBuf,
    /// The nft statements that withdraw the published ports.
    pub withdraw: String,
    /// The container's IPv6 address, on a network with IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
    /// The IPv6 subnet's prefix length.
    #[serde(default)]
    pub prefix6: u8,
    /// The IPv6 default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// The interface in the container (empty: eth0).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ifname: String,
    /// A further network of a running container (`network connect`): its teardown
    /// leaves the namespace alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extra: bool,
    /// For a CNI network: the configuration list and ADD's result (DEL needs both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniState>,
}

/// What DEL needs of a CNI network: the list as it was at ADD, and ADD's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CniState {
    /// The network configuration list.
    pub list: serde_json::Value,
    /// The result of ADD (null before it finished).
    pub result: serde_json::Value,
}

impl Attachment {
    /// Reads a record written by [`attach`].
    pub fn load(path: &Path) -> Result<Option<Attachment>> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::Invalid(format!("{}: not a network record: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("serializable"))
            .ctx(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).ctx(|| format!("write {}", path.display()))
    }
}

fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    // Locally administered, derived from the address as docker does: stable per IP.
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Connects container `id` to `network`: a namespace at `netns`, an address (leased
/// with the `names` the container answers to in DNS), a veth pair on the network's
/// bridge, the default route, and `ports` published. The record is kept at `record`.
/// On failure nothing is left behind.
pub fn attach(
    nets: &Networks,
    network: &str,
    id: &str,
    netns: &Path,
    ports: Vec<PortMap>,
    names: &[String],
    record: &Path,
) -> Result<Attachment> {
    attach_on(nets, network, id, netns, ports, names, record, None)
}

/// Connects the running container `id`, whose namespace is at `netns`, to a further
/// network as interface `ifname` (no default route: the first network keeps it).
pub fn attach_extra(
    nets: &Networks,
    network: &str,
    id: &str,
    netns: &Path,
    ifname: &str,
    names: &[String],
    record: &Path,
) -> Result<Attachment> {
    attach_on(
        nets,
        network,
        id,
        netns,
        Vec::new(),
        names,
        record,
        Some(ifname),
    )
}

#[allow(clippy::too_many_arguments)]
fn attach_on(
    nets: &Networks,
    network: &str,
    id: &str,
    netns: &Path,
    mut ports: Vec<PortMap>,
    names: &[String],
    record: &Path,
    extra: Option<&str>,
) -> Result<Attachment> {
    // Held while the bridge and firewall are needed and being wired, so that a prune
    // (the last container just went) cannot take them away underneath.
    let _lock = crate::network::lock(false)?;
    let n = nets.get(network)?;
    if n.dns {
        // Names are answered per network: two containers may not claim one.
        for (_, holder, taken) in nets.leases(&n.name).all_named() {
            if let Some(clash) = names.iter().find(|x| taken.contains(x)) {
                if holder != id {
                    return Err(Error::Conflict(format!(
                        "the name {clash:?} is already answered on network {} by container {}: choose another --name or --hostname",
                        n.name,
                        &holder[..holder.len().min(12)]
                    )));
                }
            }
        }
    }
    crate::ports::claim(&mut ports)?;
    let short = &id[..id.len().min(11)];
    let mut att = Attachment {
        container: id.to_string(),
        network: n.name.clone(),
        network_id: n.id.clone(),
        bridge: n.bridge.clone(),
        netns: netns.to_path_buf(),
        host_veth: match extra {
            None => format!("veth{short}"),
            // One per network: the network's ID tells them apart.
            Some(_) => format!("vx{}{}", &id[..id.len().min(9)], &n.id[..4]),
        },
        ip: None,
        prefix: n.subnet.prefix_len(),
        gateway: n.gateway,
        mac: String::new(),
        ports: Vec::new(),
        leases: nets.leases(&n.name).dir().to_path_buf(),
        withdraw: crate::nft::withdraw_script(&ports),
        ip6: None,
        prefix6: n.subnet6.map_or(0, |s| s.prefix_len()),
        gateway6: n.gateway6(),
        ifname: extra.unwrap_or("").to_string(),
        extra: extra.is_some(),
        cni: None,
    };
    att.save(record)?;
    let made = (|| -> Result<()> {
        let ip = nets
            .leases(&n.name)
            .allocate(&n.name, n.subnet, n.gateway, id, names)?;
        let mac = mac_for(ip);
        att.ip = Some(ip);
        att.ip6 = n.ipv6_for(ip);
        let bridge6 = n.gateway6().map(|g| (g, att.prefix6));
        let inside6 = att.ip6.zip(att.gateway6).map(|(a, g)| (a, att.prefix6, g));
        att.mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        // (Not saved yet: teardown finds the lease by its holder.)
        crate::nft::ensure_network(&n, nets)?;
        let (host, bridge, mtu, gw, prefix) = (
            att.host_veth.clone(),
            n.bridge.clone(),
            n.mtu,
            n.gateway,
            n.subnet.prefix_len(),
        );
        match extra {
            None => crate::link::in_new_netns(netns, |outside, inside, ns| async move {
                let idx =
                    crate::link::ensure_bridge(&outside, &bridge, gw, prefix, mtu, bridge6).await?;
                crate::link::create_veth(&outside, &host, "eth0", mac, mtu, idx, ns.as_raw_fd())
                    .await?;
                fault("net-after-veth");
                crate::link::configure_inside(&inside, "eth0", ip, prefix, Some(gw), inside6).await
            })?,
            Some(ifname) => {
                let ns = crate::netns::open(netns)?;
                let raw = ns.as_raw_fd();
                crate::link::run(|outside| async move {
                    let idx =
                        crate::link::ensure_bridge(&outside, &bridge, gw, prefix, mtu, bridge6)
                            .await?;
                    crate::link::create_veth(&outside, &host, ifname, mac, mtu, idx, raw).await
                })?;
                crate::link::in_netns(std::os::fd::AsFd::as_fd(&ns), |inside| async move {
                    crate::link::configure_inside(&inside, ifname, ip, prefix, None, inside6).await
                })?;
            }
        }
        // From this (the host's) thread: /proc/sys/net is the opener's namespace's, and
        // the wiring thread above has left the host's.
        crate::nft::allow_localhost(&n.bridge);
        if !ports.is_empty() {
            crate::nft::apply(&crate::nft::publish_script(&ports, ip)).map_err(|e| {
                if e.to_string().contains("File exists") {
                    Error::Conflict(format!(
                        "a host port of {} is already published by another container",
                        ports
                            .iter()
                            .map(|p| format!("{}/{}", p.host_port, p.proto))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else {
                    e
                }
            })?;
        }
        att.ports = ports.clone();
        att.save(record)?;
        Ok(())
    })();
    settle(made, att, record)
}

/// Connects container `id` to the CNI network `name` whose configuration list is
/// `list` (see [`crate::cni::load`]): a namespace at `netns` with its loopback up, then
/// the list's plugins' ADD. The record (written before anything is made) is kept at
/// `record`.
pub fn attach_cni(
    name: &str,
    list: serde_json::Value,
    id: &str,
    netns: &Path,
    mut ports: Vec<PortMap>,
    record: &Path,
) -> Result<Attachment> {
    crate::ports::claim(&mut ports)?;
    let mut att = Attachment {
        container: id.to_string(),
        network: format!("cni:{name}"),
        network_id: String::new(),
        bridge: String::new(),
        netns: netns.to_path_buf(),
        host_veth: String::new(),
        ip: None,
        prefix: 0,
        gateway: Ipv4Addr::UNSPECIFIED,
        mac: String::new(),
        ports: ports.clone(),
        leases: PathBuf::new(),
        withdraw: String::new(),
        ip6: None,
        prefix6: 0,
        gateway6: None,
        ifname: String::new(),
        extra: false,
        cni: Some(CniState {
            list: list.clone(),
            result: serde_json::Value::Null,
        }),
    };
    att.save(record)?;
    let made = (|| -> Result<()> {
        crate::link::in_new_netns(netns, |_, inside, _| async move {
            crate::link::set_up(&inside, "lo").await
        })?;
        let result = crate::cni::add(&list, id, netns, "eth0", &ports)?;
        att.ip = crate::cni::result_ip(&result);
        if let Some(first) = result["ips"].as_array().and_then(|a| a.first()) {
            att.prefix = first["address"]
                .as_str()
                .and_then(|a| a.split('/').nth(1)?.parse().ok())
                .unwrap_or(0);
            att.gateway = first["gateway"]
                .as_str()
                .and_then(|g| g.parse().ok())
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
        }
        att.mac = result["interfaces"]
            .as_array()
            .and_then(|i| i.iter().find(|x| x["sandbox"].is_string()))
            .and_then(|i| i["mac"].as_str())
            .unwrap_or("")
            .to_string();
        if let Some(c) = att.cni.as_mut() {
            c.result = result;
        }
        att.save(record)
    })();
    settle(made, att, record)
}

/// Makes a network namespace at `netns` with only its loopback, up (`--network none`):
/// in a thread of its own, with one netlink message.
pub fn loopback_only(netns: &Path) -> Result<()> {
    crate::netns::prepare_path(netns)?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            crate::sys::unshare_net().map_err(|e| Error::io("unshare the network namespace", e))?;
            crate::netns::bind_current(netns)?;
            crate::rtnl_sync::loopback_up()
        })
        .join()
        .map_err(|_| {
            Error::io(
                "make a network namespace",
                std::io::Error::other("the thread panicked"),
            )
        })?
    });
    if made.is_err() {
        crate::netns::remove(netns);
    }
    made
}

/// The attachment if it was made; otherwise everything taken down and the record gone.
fn settle(made: Result<()>, att: Attachment, record: &Path) -> Result<Attachment> {
    match made {
        Ok(()) => Ok(att),
        Err(e) => {
            teardown(&att);
            let _ = std::fs::remove_file(record);
            Err(e)
        }
    }
}

/// Takes a container off its network: withdraws its ports, releases its address,
/// releases its namespace (its interfaces go with it) and deletes a host veth that a
/// crash may have left outside it or that joined a further network (for CNI: the
/// plugins' DEL, then the namespace). Safe to repeat.
pub fn teardown(att: &Attachment) {
    if let Some(c) = &att.cni {
        let _ = crate::cni::del(
            &c.list,
            &att.container,
            &att.netns,
            "eth0",
            &att.ports,
            &c.result,
        );
        crate::netns::remove(&att.netns);
        return;
    }
    crate::nft::withdraw(&att.withdraw);
    crate::ipam::Leases::new(att.leases.clone()).release_all(&att.container);
    let unpinned = !att.extra && crate::netns::remove(&att.netns);
    // A namespace let go takes the veth with it when the kernel frees it, off this
    // thread (deleting it here would wait for the network stack to let go of it, some
    // 20 ms). A further network's veth, or one a crash left outside its namespace, is
    // deleted now.
    if !unpinned {
        let _ = crate::rtnl_sync::delete_link(&att.host_veth);
    }
}

/// Fault injection for the crash tests: with `BERTH_FAULT=POINT` the process kills
/// itself (SIGKILL, as a crash or `kill -9` would) when it reaches `point`.
fn fault(point: &str) {
    if std::env::var("BERTH_FAULT").is_ok_and(|v| v == point) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
