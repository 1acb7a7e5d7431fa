//! A sandbox's network: its namespace wired to a berth network (a bridge, an address
//! lease, published ports) or by CNI plugins, or loopback only, or the host's; and the
//! /etc/hostname, /etc/hosts and /etc/resolv.conf its containers see. berth-net does
//! the kernel work and keeps the record (`net.json`) that undoes it.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use berth_net::attach::Attachment;
use berth_net::network::{Networks, NewNetwork};
use berth_net::ports::{PortMap, Proto};

use crate::cri::{DnsConfig, PortMapping, Protocol, SandboxNetwork, SharedNamespace};
use crate::error::{Context, Error, Result};

use super::records::SandboxRecord;
use super::Core;

/// The files every container of a sandbox gets over the image's, from the sandbox's
/// directory.
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// The node's pod network (`pod-network.json`; the CIDR set by
/// `update_runtime_config`): pods are on the berth network `name` with addresses
/// from `cidr`, unless the CNI configuration directory of the state root
/// (`cni/net.d`, as k3s keeps its own rather than /etc/cni/net.d, where other tools
/// install theirs) has a configuration — then its first network wires them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodNetwork {
    /// The network's name.
    pub name: String,
    /// This node's pod CIDR.
    pub cidr: String,
    /// The MTU of the pod bridge and pods' interfaces (lowered under an overlay's
    /// headers); None: the network default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl Default for PodNetwork {
    fn default() -> Self {
        // k3s's first node's share of its default cluster CIDR.
        PodNetwork {
            name: "pods".into(),
            cidr: "10.42.0.0/24".into(),
            mtu: None,
        }
    }
}

impl Core {
    /// The node's pod network settings.
    pub fn pod_network(&self) -> PodNetwork {
        berth_monitor::record::read_json(&self.dirs().pod_network())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Sets this node's pod CIDR (CRI UpdateRuntimeConfig): new pods get addresses from
    /// it. The pod bridge is made again with the new subnet once no pod uses the old.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<()> {
        let mtu = self.pod_network().mtu;
        self.set_pod_network(cidr, mtu)
    }

    /// Sets this node's pod CIDR and the MTU of its pods' interfaces (the node agent's
    /// start, or node IPAM's assignment). As [`Core::set_pod_cidr`], the bridge is made
    /// again with them once no pod uses the old one.
    pub fn set_pod_network(&self, cidr: &str, mtu: Option<u32>) -> Result<()> {
        berth_net::network::parse_cidr("pod CIDR", cidr)?;
        let mut pn = self.pod_network();
        pn.cidr = cidr.to_string();
        pn.mtu = mtu;
        Ok(berth_monitor::record::write_json(
            &self.dirs().pod_network(),
            &pn,
        )?)
    }

    /// Makes the node's pod network now unless a CNI configuration wires pods (else it
    /// is made with the first pod), so that a pod CIDR the host cannot use is reported
    /// when the node starts: `Error::Invalid` when the CIDR overlaps a network or route
    /// of the host, `Error::Conflict` while pods still use a previous CIDR's network.
    pub fn ensure_pod_network(&self) -> Result<()> {
        if berth_net::cni::default_network(&self.dirs().pod_cni()).is_some() {
            return Ok(());
        }
        self.pod_bridge().map(drop)
    }

    /// The berth network of this node's pods, made with the pod CIDR if missing.
    fn pod_bridge(&self) -> Result<String> {
        let pn = self.pod_network();
        let nets = Networks::host();
        if let Ok(n) = nets.get(&pn.name) {
            let same_subnet = n.subnet.to_string() == pn.cidr;
            if same_subnet && pn.mtu.is_none_or(|m| n.mtu == m) {
                return Ok(n.name);
            }
            let in_use = !nets.leases(&n.name).all_named().is_empty();
            // A new MTU waits for the pods on the bridge to go.
            if same_subnet && in_use {
                return Ok(n.name);
            }
            if in_use {
                return Err(Error::Conflict(format!(
                    "the pod CIDR changed to {} but pods still use network {} ({}): remove them first",
                    pn.cidr, n.name, n.subnet
                )));
            }
            nets.remove(&n.name)?;
        }
        let req = NewNetwork {
            name: pn.name.clone(),
            subnet: Some(pn.cidr.clone()),
            mtu: pn.mtu,
            no_dns: true,
            ..Default::default()
        };
        // The CIDR may be taken on this host (another network, another berth's bridge, a
        // VPN's route): say so, not a conflict the user cannot place.
        let subnet = berth_net::network::parse_cidr("pod CIDR", &pn.cidr)?;
        if let Some(user) = nets.subnet_user(&subnet)? {
            if nets.get(&pn.name).is_err() {
                return Err(Error::Invalid(format!(
                    "the pod CIDR {} overlaps {user}: give this node a pod CIDR of its own",
                    pn.cidr
                )));
            }
        }
        match nets.create(&req) {
            Ok(n) => Ok(n.name),
            // Another start made it meanwhile.
            Err(berth_net::Error::Conflict(_)) => Ok(nets.get(&pn.name)?.name),
            Err(e) => Err(e.into()),
        }
    }
}

fn port_maps(ports: &[PortMapping]) -> Result<Vec<PortMap>> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let proto = match p.protocol {
                Protocol::Tcp => Proto::Tcp,
                Protocol::Udp => Proto::Udp,
                Protocol::Sctp => {
                    return Err(Error::Invalid(format!(
                    "port_mappings[{i}]: SCTP ports cannot be published by berth (TCP and UDP can)"
                )))
                }
            };
            if p.container_port == 0 {
                return Err(Error::Invalid(format!(
                    "port_mappings[{i}]: container_port is required"
                )));
            }
            let host_ip = match p.host_ip.as_str() {
                "" | "0.0.0.0" => None,
                ip => Some(ip.parse().map_err(|_| {
                    Error::Invalid(format!(
                        "port_mappings[{i}].host_ip {ip:?}: not an IPv4 address"
                    ))
                })?),
            };
            Ok(PortMap {
                host_ip,
                host_port: p.host_port,
                container_port: p.container_port,
                proto,
            })
        })
        .collect()
}

/// Wires the sandbox's network; returns the network's name as shown and the hold on
/// the network helper (keep it until a process of the sandbox runs).
pub fn connect(core: &Core, rec: &SandboxRecord) -> Result<(String, Option<crate::dns::Hold>)> {
    let id = rec.id.as_str();
    let dir = core.dirs().sandbox(id);
    let record = berth_monitor::sandbox::net_record(&dir);
    let netns = berth_net::netns::path_of(id);
    // A record left by a crash: take that down first.
    berth_monitor::sandbox::release_network(id, &dir);
    let ports = port_maps(&rec.config.port_mappings)?;
    let net = match &rec.config.namespaces.network {
        SandboxNetwork::Pod => match berth_net::cni::default_network(&core.dirs().pod_cni()) {
            Some(name) => SandboxNetwork::Cni(format!("pod:{name}")),
            None => SandboxNetwork::Network {
                name: core.pod_bridge()?,
                aliases: Vec::new(),
            },
        },
        n => n.clone(),
    };
    if !ports.is_empty()
        && !matches!(
            net,
            SandboxNetwork::Network { .. } | SandboxNetwork::Cni(_) | SandboxNetwork::Pasta
        )
    {
        return Err(Error::Invalid(
            "ports can be published only from a sandbox on a network of its own (not host, none or another's)".into(),
        ));
    }
    let (shown, att, hold) = match &net {
        SandboxNetwork::Node => ("host".to_string(), None, None),
        SandboxNetwork::Loopback => {
            berth_net::attach::loopback_only(&netns)?;
            ("none".to_string(), None, None)
        }
        SandboxNetwork::Sandbox(o) => (format!("sandbox:{o}"), None, None),
        SandboxNetwork::Pasta => {
            berth_net::attach::loopback_only(&netns)?;
            if let Err(e) = berth_net::pasta::start(&netns, &ports, &dir) {
                berth_monitor::sandbox::release_network(id, &dir);
                return Err(e.into());
            }
            ("pasta".to_string(), None, None)
        }
        SandboxNetwork::Cni(name) => {
            // `pod:NAME`: the pod network's, from the state root's directory.
            let list = match name.strip_prefix("pod:") {
                Some(n) => berth_net::cni::load_from(&core.dirs().pod_cni(), n)?,
                None => berth_net::cni::load(name)?,
            };
            let att = berth_net::attach::attach_cni(name, list, id, &netns, ports, &record)?;
            (format!("cni:{name}"), Some(att), None)
        }
        SandboxNetwork::Network { name, aliases } => {
            let nets = Networks::host();
            let att = berth_net::attach::attach(&nets, name, id, &netns, ports, aliases, &record)?;
            // The network helper: the resolver of user networks, and the one that
            // prunes the bridge and firewall after the last container.
            let dns = nets.get(&att.network).is_ok_and(|n| n.dns);
            let hold = match crate::dns::ensure(dns.then_some(att.gateway)) {
                Ok(h) => h,
                Err(err) => {
                    berth_net::attach::teardown(&att);
                    let _ = std::fs::remove_file(&record);
                    return Err(err);
                }
            };
            (att.network.clone(), Some(att), Some(hold))
        }
        SandboxNetwork::Pod => unreachable!("resolved above"),
    };
    if let Err(e) = write_etc(core, rec, &net, att.as_ref()) {
        berth_monitor::sandbox::release_network(id, &dir);
        return Err(e);
    }
    if let SandboxNetwork::Network { aliases, .. } = &net {
        for extra in &rec.config.extra_networks {
            if let Err(e) = connect_extra(core, rec, extra, aliases) {
                berth_monitor::sandbox::release_network(id, &dir);
                return Err(Error::Invalid(format!("network {extra}: {e}")));
            }
        }
    }
    Ok((shown, hold))
}

/// The sandbox's /etc files: hostname, hosts (its address, aliases and extra hosts),
/// resolv.conf (the config's DNS, else berth's resolver on user networks, else the
/// host's less loopback servers).
fn write_etc(
    core: &Core,
    rec: &SandboxRecord,
    net: &SandboxNetwork,
    att: Option<&Attachment>,
) -> Result<()> {
    let dir = core.dirs().sandbox(&rec.id);
    let host = if rec.config.namespaces.uts == SharedNamespace::Node {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    } else {
        super::sandbox::hostname_of(&rec.id, &rec.config)
    };
    write(&dir.join("hostname"), format!("{host}\n"))?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut names = match &rec.config.domain {
        Some(d) if !d.is_empty() && !host.contains('.') => {
            vec![format!("{host}.{d}"), host.clone()]
        }
        _ => vec![host.clone()],
    };
    if let SandboxNetwork::Network { aliases, .. } = net {
        names.extend(aliases.iter().filter(|a| **a != host).cloned());
    }
    match att.and_then(|a| a.ip) {
        Some(ip) => hosts.push_str(&format!("{ip}\t{}\n", names.join(" "))),
        None if *net != SandboxNetwork::Node => {
            hosts.push_str(&format!("127.0.1.1\t{}\n", names.join(" ")))
        }
        None => {}
    }
    for (name, ip) in &rec.config.extra_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    write(&dir.join("hosts"), hosts)?;
    let user_dns = matches!(net, SandboxNetwork::Network { .. })
        && att.is_some_and(|a| Networks::host().get(&a.network).is_ok_and(|n| n.dns));
    let resolv = match (&rec.config.dns_config, att) {
        (Some(d), _)
            if !d.servers.is_empty() || !d.searches.is_empty() || !d.options.is_empty() =>
        {
            resolv_conf(d)
        }
        (_, Some(a)) if user_dns => format!("nameserver {}\noptions ndots:0\n", a.gateway),
        _ => host_resolv_conf(*net == SandboxNetwork::Node),
    };
    write(&dir.join("resolv.conf"), resolv)
}

fn resolv_conf(d: &DnsConfig) -> String {
    let mut s = String::new();
    for n in &d.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !d.searches.is_empty() {
        s.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    if !d.options.is_empty() {
        s.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    s
}

/// The host's resolv.conf; without its loopback servers unless on the host's network
/// (they do not exist in a namespace of its own).
fn host_resolv_conf(host_network: bool) -> String {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if host_network {
        return text;
    }
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with("nameserver")
                || !l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .is_some_and(|a| a.is_loopback())
        })
        .collect();
    kept.join("\n") + "\n"
}

/// Writes in place: containers bind-mount the file, and a bind mount keeps the inode.
fn write(path: &Path, text: String) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .ctx(|| format!("write {}", path.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes()).ctx(|| format!("write {}", path.display()))
}

impl Core {
    /// Connects running container `id`'s sandbox to a further network (docker's
    /// `network connect`) and remembers it for the next start; `remember` updates the
    /// client's copy of its flags.
    pub fn connect_network(
        &self,
        id: &str,
        network: &str,
        remember: impl Fn(&mut serde_json::Value, &str),
    ) -> Result<Attachment> {
        let c = self.find(id)?;
        let _lock = super::lock::Lock::take(&self.dirs().locks(), &c.sandbox_id, true)?;
        let mut sb = self.sandbox(&c.sandbox_id)?;
        let mut names = vec![c.name.clone()];
        let host = super::sandbox::hostname_of(&sb.id, &sb.config);
        if host != c.name {
            names.push(host);
        }
        let att = connect_extra(self, &sb, network, &names)
            .map_err(|e| Error::Conflict(format!("container {}: {e}", c.name)))?;
        if !sb.config.extra_networks.contains(&att.network) {
            sb.config.extra_networks.push(att.network.clone());
            sb.save(&self.dirs().sandbox(&sb.id))?;
        }
        let mut rec = c.clone();
        remember(&mut rec.client, &att.network);
        rec.save(&self.dirs().container(&c.id).dir)?;
        Ok(att)
    }

    /// Takes container `id`'s sandbox off a further network and forgets it.
    pub fn disconnect_network(
        &self,
        id: &str,
        network: &str,
        forget: impl Fn(&mut serde_json::Value, &str),
    ) -> Result<()> {
        let c = self.find(id)?;
        let _lock = super::lock::Lock::take(&self.dirs().locks(), &c.sandbox_id, true)?;
        let mut sb = self.sandbox(&c.sandbox_id)?;
        let name = Networks::host()
            .get(network)
            .map(|n| n.name)
            .unwrap_or_else(|_| network.to_string());
        let remembered = sb.config.extra_networks.contains(&name);
        if !disconnect_extra(self, &sb, &name)? && !remembered {
            let first = attachment(self, &sb.id).is_some_and(|a| a.network == name);
            return Err(Error::NotFound(format!(
                "container {} is not on network {name}{}",
                c.name,
                if first {
                    " as a further network (its first network goes with the container)"
                } else {
                    ""
                }
            )));
        }
        sb.config.extra_networks.retain(|n| *n != name);
        sb.save(&self.dirs().sandbox(&sb.id))?;
        let mut rec = c.clone();
        forget(&mut rec.client, &name);
        rec.save(&self.dirs().container(&c.id).dir)
    }
}

/// Connects running sandbox `rec` to a further berth network (docker's `network
/// connect`) as the next free ethN, answering to `names` there.
pub fn connect_extra(
    core: &Core,
    rec: &SandboxRecord,
    network: &str,
    names: &[String],
) -> Result<Attachment> {
    let dir = core.dirs().sandbox(&rec.id);
    let primary = Attachment::load(&berth_monitor::sandbox::net_record(&dir))?
        .ok_or_else(|| {
            Error::Conflict(
                "it has no network of its own to add to (it is not running, or its network is host, none or another container's)"
                    .into(),
            )
        })?;
    if primary.cni.is_some() || network.starts_with("cni:") {
        return Err(Error::Invalid(
            "network connect works with berth's networks, not CNI ones".into(),
        ));
    }
    let nets = Networks::host();
    let n = nets.get(network)?;
    let record = berth_monitor::sandbox::extra_net_record(&dir, &n.name);
    if primary.network == n.name || record.exists() {
        return Err(Error::Conflict(format!(
            "it is already on network {}",
            n.name
        )));
    }
    let taken: Vec<String> = berth_monitor::sandbox::extra_net_records(&dir)
        .iter()
        .filter_map(|p| Attachment::load(p).ok().flatten())
        .map(|a| a.ifname)
        .collect();
    let ifname = (1..)
        .map(|i| format!("eth{i}"))
        .find(|name| !taken.contains(name))
        .expect("unbounded");
    let att = berth_net::attach::attach_extra(
        &nets,
        &n.name,
        &rec.id,
        &primary.netns,
        &ifname,
        names,
        &record,
    )?;
    if let Err(e) = crate::dns::ensure(n.dns.then_some(att.gateway)) {
        berth_net::attach::teardown(&att);
        let _ = std::fs::remove_file(&record);
        return Err(e);
    }
    Ok(att)
}

/// Takes sandbox `rec` off further network `network`; false if it was not on it.
pub fn disconnect_extra(core: &Core, rec: &SandboxRecord, network: &str) -> Result<bool> {
    let dir = core.dirs().sandbox(&rec.id);
    let name = Networks::host()
        .get(network)
        .map(|n| n.name)
        .unwrap_or_else(|_| network.to_string());
    let record = berth_monitor::sandbox::extra_net_record(&dir, &name);
    let Some(att) = Attachment::load(&record)? else {
        return Ok(false);
    };
    berth_net::attach::teardown(&att);
    let _ = std::fs::remove_file(&record);
    Ok(true)
}

/// The sandbox's first network attachment (address, ports), if it has one.
pub fn attachment(core: &Core, sandbox_id: &str) -> Option<Attachment> {
    Attachment::load(&berth_monitor::sandbox::net_record(
        &core.dirs().sandbox(sandbox_id),
    ))
    .ok()
    .flatten()
}

/// The sandbox's further networks, by interface.
pub fn extra_attachments(core: &Core, sandbox_id: &str) -> Vec<Attachment> {
    let mut v: Vec<Attachment> =
        berth_monitor::sandbox::extra_net_records(&core.dirs().sandbox(sandbox_id))
            .iter()
            .filter_map(|p| Attachment::load(p).ok().flatten())
            .collect();
    v.sort_by(|a, b| a.ifname.cmp(&b.ifname));
    v
}
