//! The engine's side of container networking: which containers get a network of their
//! own, connecting them when they start (berth-net does the kernel work), their
//! /etc/hosts and /etc/resolv.conf, and taking them off again.

use std::path::{Path, PathBuf};

use serde_json::Value;

use berth_monitor::config::RunConfig;
use berth_monitor::record::ContainerRecord;
use berth_net::attach::Attachment;
use berth_net::network::Networks;

use crate::engine::Engine;
use crate::error::{Context, Error, Result};

/// Whether the container gets a namespace on a bridge network (not none, host or
/// another container's; an empty mode, from callers that set none, is a private
/// namespace without interfaces).
pub fn bridged(cfg: &RunConfig) -> bool {
    !matches!(cfg.network.as_str(), "none" | "host" | "" | "private")
        && !cfg.network.starts_with("container:")
}

/// The network record of container dir `dir`.
pub fn record_path(dir: &Path) -> PathBuf {
    dir.join("net.json")
}

/// Checks the networking flags at create time; `-P` becomes one `-p` per port the image
/// exposes.
pub fn prepare(cfg: &mut RunConfig, image: &Value) -> Result<()> {
    for d in &cfg.dns {
        d.parse::<std::net::IpAddr>()
            .map_err(|_| Error::Invalid(format!("--dns {d:?} is not an IP address")))?;
    }
    if !bridged(cfg) {
        if !cfg.publish.is_empty() || cfg.publish_all {
            return Err(Error::Invalid(format!(
                "-p/-P need a bridge network: the container's network is {:?}",
                cfg.network
            )));
        }
        return Ok(());
    }
    match cfg.network.strip_prefix("cni:") {
        Some(name) => {
            berth_net::cni::load(name)?;
        }
        None => {
            Networks::host().get(&cfg.network)?;
        }
    }
    if cfg.publish_all {
        let exposed = image
            .pointer("/config/ExposedPorts")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        for e in exposed {
            let (port, proto) = e.split_once('/').unwrap_or((&e, "tcp"));
            if !cfg
                .publish
                .iter()
                .any(|p| p.ends_with(&format!(":{e}")) || p.ends_with(&format!(":{port}")))
            {
                cfg.publish.push(format!("{port}/{proto}"));
            }
        }
    }
    for p in &cfg.publish {
        berth_net::ports::parse(p)?;
    }
    Ok(())
}

/// The namespace path a bridged container joins.
pub fn netns_path(id: &str) -> PathBuf {
    berth_net::netns::path_of(id)
}

/// The files a bridged container gets bind-mounted over /etc (written at each start).
pub const ETC_FILES: [&str; 3] = ["hosts", "hostname", "resolv.conf"];

/// Connects a container about to start to its network, and writes its /etc files.
pub fn connect(e: &Engine, rec: &ContainerRecord) -> Result<Connected> {
    let dir = e.paths(&rec.id).dir;
    let record = record_path(&dir);
    // A record left by a crash or a lost monitor: take that down first.
    disconnect(&dir);
    let ports = rec
        .config
        .publish
        .iter()
        .map(|p| berth_net::ports::parse(p))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let nets = Networks::host();
    if let Some(name) = rec.config.network.strip_prefix("cni:") {
        // The CNI plugins do the wiring (and their IPAM); berth makes the namespace.
        let list = berth_net::cni::load(name)?;
        let att = berth_net::attach::attach_cni(
            name,
            list,
            &rec.id,
            &netns_path(&rec.id),
            ports,
            &record,
        )?;
        if let Err(err) = write_etc(e, rec, &att, &nets) {
            berth_net::attach::teardown(&att);
            let _ = std::fs::remove_file(&record);
            return Err(err);
        }
        return Ok(Connected {
            attachment: att,
            _dns: None,
        });
    }
    let mut names = vec![rec.name.clone()];
    let host = hostname(rec);
    if host != rec.name {
        names.push(host);
    }
    let att = berth_net::attach::attach(
        &nets,
        &rec.config.network,
        &rec.id,
        &netns_path(&rec.id),
        ports,
        &names,
        &record,
    )?;
    // The network helper: the resolver of user networks, and the one that prunes the
    // bridge and firewall after the last container.
    let dns = nets.get(&att.network).is_ok_and(|n| n.dns);
    let hold = match crate::dns::ensure(dns.then_some(att.gateway)) {
        Ok(h) => Some(h),
        Err(err) => {
            berth_net::attach::teardown(&att);
            let _ = std::fs::remove_file(&record);
            return Err(err);
        }
    };
    if let Err(err) = write_etc(e, rec, &att, &nets) {
        berth_net::attach::teardown(&att);
        let _ = std::fs::remove_file(&record);
        return Err(err);
    }
    Ok(Connected {
        attachment: att,
        _dns: hold,
    })
}

/// A container connected to its network, and the hold on the DNS resolver to keep
/// until the container exists (see [`crate::dns::ensure`]).
pub struct Connected {
    /// The connection.
    pub attachment: Attachment,
    _dns: Option<crate::dns::Hold>,
}

fn hostname(rec: &ContainerRecord) -> String {
    rec.config
        .hostname
        .clone()
        .unwrap_or_else(|| rec.id[..12].to_string())
}

fn write_etc(e: &Engine, rec: &ContainerRecord, att: &Attachment, nets: &Networks) -> Result<()> {
    let dir = e.paths(&rec.id).dir;
    let host = hostname(rec);
    std::fs::write(dir.join("hostname"), format!("{host}\n")).ctx(|| "write hostname")?;
    let dns = nets.get(&att.network).is_ok_and(|n| n.dns);
    let resolv = if !rec.config.dns.is_empty() {
        rec.config
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect()
    } else if dns {
        // berth's resolver on the gateway: containers by name, the rest relayed.
        format!("nameserver {}\noptions ndots:0\n", att.gateway)
    } else {
        // The host's, less loopback servers, which do not exist in the container's
        // namespace.
        let host_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let kept: Vec<&str> = host_conf
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with("nameserver")
                    || !l
                        .split_whitespace()
                        .nth(1)
                        .is_some_and(|a| a.starts_with("127.") || a == "::1")
            })
            .collect();
        kept.join("\n") + "\n"
    };
    std::fs::write(dir.join("resolv.conf"), resolv).ctx(|| "write resolv.conf")?;
    write_hosts(e, rec, att)
}

/// /etc/hosts: localhost, the container itself and `--add-host` lines. Written in
/// place, so the bind mount sees it.
fn write_hosts(e: &Engine, rec: &ContainerRecord, att: &Attachment) -> Result<()> {
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let host = hostname(rec);
    if let Some(ip) = att.ip {
        if host == rec.name {
            hosts.push_str(&format!("{ip}\t{host}\n"));
        } else {
            hosts.push_str(&format!("{ip}\t{host} {}\n", rec.name));
        }
    }
    for (name, ip) in &rec.config.add_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    let path = e.paths(&rec.id).dir.join("hosts");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .ctx(|| format!("write {}", path.display()))?;
    std::io::Write::write_all(&mut f, hosts.as_bytes()).ctx(|| format!("write {}", path.display()))
}

/// The record of a further network `network` of the container in `dir`.
pub fn extra_record_path(dir: &Path, network: &str) -> PathBuf {
    dir.join(format!("net-{network}.json"))
}

fn extra_records(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("net-") && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Connects the running container `rec` to a further network (docker's `network
/// connect`): interface eth1, eth2... and names on that network; remembered so that the
/// next start joins it again.
pub fn connect_extra(e: &Engine, rec: &ContainerRecord, network: &str) -> Result<Attachment> {
    let dir = e.paths(&rec.id).dir;
    let primary = attachment(&dir).ok_or_else(|| {
        Error::Conflict(format!(
            "container {} has no network of its own to add to (it is not running, or its network is {:?})",
            rec.name, rec.config.network
        ))
    })?;
    if primary.cni.is_some() || network.starts_with("cni:") {
        return Err(Error::Invalid(
            "network connect works with berth's networks, not CNI ones".into(),
        ));
    }
    let nets = Networks::host();
    let n = nets.get(network)?;
    let record = extra_record_path(&dir, &n.name);
    if primary.network == n.name || record.exists() {
        return Err(Error::Conflict(format!(
            "container {} is already on network {}",
            rec.name, n.name
        )));
    }
    let ifname = (1..)
        .map(|i| format!("eth{i}"))
        .find(|name| {
            !extra_records(&dir).iter().any(|p| {
                Attachment::load(p)
                    .ok()
                    .flatten()
                    .is_some_and(|a| &a.ifname == name)
            })
        })
        .expect("unbounded");
    let mut names = vec![rec.name.clone()];
    if hostname(rec) != rec.name {
        names.push(hostname(rec));
    }
    let att = berth_net::attach::attach_extra(
        &nets,
        &n.name,
        &rec.id,
        &primary.netns,
        &ifname,
        &names,
        &record,
    )?;
    crate::dns::ensure(n.dns.then_some(att.gateway))?;
    let mut updated = rec.clone();
    if !updated.config.networks.contains(&n.name) {
        updated.config.networks.push(n.name.clone());
        berth_monitor::record::write_json(&e.paths(&rec.id).record(), &updated)?;
    }
    Ok(att)
}

/// Takes the container off a further network (docker's `network disconnect`).
pub fn disconnect_extra(e: &Engine, rec: &ContainerRecord, network: &str) -> Result<()> {
    let dir = e.paths(&rec.id).dir;
    let name = Networks::host()
        .get(network)
        .map(|n| n.name)
        .unwrap_or_else(|_| network.to_string());
    let record = extra_record_path(&dir, &name);
    let remembered = rec.config.networks.contains(&name);
    match Attachment::load(&record)? {
        Some(att) => berth_net::attach::teardown(&att),
        None if remembered => {}
        None => {
            return Err(Error::NotFound(format!(
                "container {} is not on network {name}{}",
                rec.name,
                if attachment(&dir).is_some_and(|a| a.network == name) {
                    " as a further network (its first network goes with the container)"
                } else {
                    ""
                }
            )))
        }
    }
    let _ = std::fs::remove_file(&record);
    let mut updated = rec.clone();
    updated.config.networks.retain(|n| n != &name);
    berth_monitor::record::write_json(&e.paths(&rec.id).record(), &updated)?;
    Ok(())
}

/// Takes the container whose directory is `dir` off its networks, if it is on any.
pub fn disconnect(dir: &Path) {
    for extra in extra_records(dir) {
        if let Ok(Some(att)) = Attachment::load(&extra) {
            berth_net::attach::teardown(&att);
        }
        let _ = std::fs::remove_file(&extra);
    }
    let record = record_path(dir);
    if let Ok(Some(att)) = Attachment::load(&record) {
        berth_net::attach::teardown(&att);
    }
    let _ = std::fs::remove_file(&record);
}

/// The container's address and published ports, for `inspect` and `ps`.
pub fn attachment(dir: &Path) -> Option<Attachment> {
    Attachment::load(&record_path(dir)).ok().flatten()
}

/// The container's further networks (`network connect`), for `inspect`.
pub fn extra_attachments(dir: &Path) -> Vec<Attachment> {
    let mut v: Vec<Attachment> = extra_records(dir)
        .iter()
        .filter_map(|p| Attachment::load(p).ok().flatten())
        .collect();
    v.sort_by(|a, b| a.ifname.cmp(&b.ifname));
    v
}
