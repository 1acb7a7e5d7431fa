//! Networks: named bridges with a subnet, stored as `networks/NAME.json` under the
//! host's network root (see [`Networks::host`]). `bridge` (berth0, 10.87.0.0/16) is the default, made on first use; others are
//! made by `berth network create` and get 10.90.N.0/24 unless given a subnet.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::ipam::Leases;

/// The name of the default network.
pub const DEFAULT: &str = "bridge";

/// Takes the network lock (`berth_hostdirs::net_lock()`), shared or exclusive, for as
/// long as the file is held: attaches hold it shared while they wire a container, and
/// [`Networks::prune`] exclusive while it takes unused bridges and firewall tables away.
pub fn lock(exclusive: bool) -> Result<std::fs::File> {
    let path = berth_hostdirs::net_lock();
    let dir = berth_hostdirs::run_dir();
    std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("open {}", path.display()))?;
    let op = if exclusive {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::LockShared
    };
    rustix::fs::flock(&f, op).ctx(|| format!("lock {}", path.display()))?;
    Ok(f)
}

/// A network's configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Network {
    /// Its name (`bridge` for the default one).
    pub name: String,
    /// A random 64-hex-digit ID, as docker gives networks.
    pub id: String,
    /// The Linux bridge that carries it.
    pub bridge: String,
    /// Its IPv4 subnet.
    pub subnet: Ipv4Net,
    /// The bridge's address, the containers' default route.
    pub gateway: Ipv4Addr,
    /// The IPv6 subnet, when the network has IPv6 (`--ipv6`): a container's IPv6
    /// address is this prefix with its IPv4 address as the last 32 bits, so the IPv4
    /// lease covers both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    /// The MTU of the bridge and of the containers' interfaces.
    pub mtu: u32,
    /// Whether containers reach each other by name (user-defined networks).
    pub dns: bool,
    /// Labels given at creation.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// When it was made (RFC 3339).
    pub created: String,
}

/// The networks under a berth root.
pub struct Networks {
    dir: PathBuf,
}

/// What `berth network create` asks for.
#[derive(Default)]
pub struct NewNetwork {
    /// The name.
    pub name: String,
    /// `--subnet` (CIDR), else the next free 10.90.N.0/24.
    pub subnet: Option<String>,
    /// `--gateway`, else the subnet's first address.
    pub gateway: Option<String>,
    /// `--opt mtu=N` / `--mtu`.
    pub mtu: Option<u32>,
    /// `--label`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--ipv6`: IPv6 too.
    pub ipv6: bool,
    /// An IPv6 `--subnet` (a /64 to /96), else the next free fdb7:0:N::/64.
    pub subnet6: Option<String>,
    /// No name resolution by berth's resolver (a pod network: pods have the cluster's
    /// DNS).
    pub no_dns: bool,
}

impl Network {
    /// The IPv6 gateway (the prefix's first address), if the network has IPv6.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.subnet6
            .map(|s| Ipv6Addr::from(u128::from(s.network()) + 1))
    }

    /// The IPv6 address that goes with `v4` on this network, if it has IPv6.
    pub fn ipv6_for(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        self.subnet6
            .map(|s| Ipv6Addr::from(u128::from(s.network()) | u128::from(u32::from(v4))))
    }
}

/// Parses an IPv6 CIDR for a network (/64 to /96: the last 32 bits carry the IPv4).
pub fn parse_cidr6(s: &str) -> Result<Ipv6Net> {
    let net: Ipv6Net = s.parse().map_err(|_| {
        Error::Invalid(format!(
            "--subnet {s:?} is not an IPv6 CIDR (like fdb7:0:1::/64)"
        ))
    })?;
    if !(64..=96).contains(&net.prefix_len()) {
        return Err(Error::Invalid(format!(
            "--subnet {s}: an IPv6 subnet must be a /64 to /96 (berth puts the container's IPv4 address in its last 32 bits)"
        )));
    }
    if net.network() != net.addr() {
        return Err(Error::Invalid(format!(
            "--subnet {s} has host bits set: did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Parses a CIDR, naming the flag in the error.
pub fn parse_cidr(what: &str, s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        Error::Invalid(format!(
            "{what} {s:?} is not an IPv4 CIDR (like 10.90.0.0/24)"
        ))
    })?;
    if net.prefix_len() > 30 {
        return Err(Error::Invalid(format!(
            "{what} {s}: a /{} has no room for a gateway and containers (use /30 or larger)",
            net.prefix_len()
        )));
    }
    if net.network() != net.addr() {
        return Err(Error::Invalid(format!(
            "{what} {s} has host bits set: did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// IPv4 routes of the host outside the bridges of networks `ours` (from
/// /proc/net/route): a new subnet must not shadow them.
fn host_routes(ours: &[Network]) -> Vec<(String, Ipv4Net)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, dst, mask) = (f.first()?, f.get(1)?, f.get(7)?);
            let dst = Ipv4Addr::from(u32::from_be(u32::from_str_radix(dst, 16).ok()?));
            let mask = u32::from_be(u32::from_str_radix(mask, 16).ok()?);
            let prefix = mask.count_ones() as u8;
            // The default route overlaps everything and shadows nothing.
            if prefix == 0 || ours.iter().any(|o| o.bridge == *dev) {
                return None;
            }
            Some((dev.to_string(), Ipv4Net::new(dst, prefix).ok()?))
        })
        .collect()
}

/// See [`Networks::subnet_user`]; `routes` are the host's routes but the networks'.
fn subnet_user(existing: &[Network], routes: &[(String, Ipv4Net)], s: &Ipv4Net) -> Option<String> {
    existing
        .iter()
        .find(|n| overlaps(&n.subnet, s))
        .map(|n| format!("network {} ({})", n.name, n.subnet))
        .or_else(|| {
            // The default network may not exist yet; its subnet is reserved.
            let d: Ipv4Net = "10.87.0.0/16".parse().expect("valid");
            overlaps(&d, s).then(|| format!("network {DEFAULT} ({d})"))
        })
        .or_else(|| {
            routes
                .iter()
                .find(|(_, r)| overlaps(r, s))
                .map(|(dev, r)| format!("the host's route to {r} on {dev}"))
        })
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Networks {
    /// The host's networks. Bridges, the firewall table and addresses belong to the
    /// host, not to one berth state root, so every root shares these records (under
    /// `$BERTH_NET_ROOT`, else /var/lib/berth): two roots never hand out one address.
    pub fn host() -> Networks {
        let root = std::env::var_os("BERTH_NET_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/berth"));
        Networks::new(&root)
    }

    /// The networks kept under `root` (for tests of this crate).
    pub fn new(root: &Path) -> Networks {
        Networks {
            dir: root.join("networks"),
        }
    }

    /// The directory the records live in.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The leases of network `name`.
    pub fn leases(&self, name: &str) -> Leases {
        Leases::new(self.dir.join("leases").join(name))
    }

    /// Every network, the default one included once it exists.
    pub fn list(&self) -> Result<Vec<Network>> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read(&p).ctx(|| format!("read {}", p.display()))?;
                let n: Network = serde_json::from_slice(&text).map_err(|e| {
                    Error::Invalid(format!("{}: not a network record: {e}", p.display()))
                })?;
                out.push(n);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Network `name` (or an ID prefix); the default network is made on first use.
    pub fn get(&self, name: &str) -> Result<Network> {
        if name == DEFAULT {
            return self.default_network();
        }
        let all = self.list()?;
        if let Some(n) = all.iter().find(|n| n.name == name) {
            return Ok(n.clone());
        }
        let by_id: Vec<&Network> = all
            .iter()
            .filter(|n| name.len() >= 3 && n.id.starts_with(name))
            .collect();
        match by_id.as_slice() {
            [n] => Ok((*n).clone()),
            [] => Err(Error::NotFound(format!(
                "network {name} not found (see `berth network ls`, or create it with `berth network create {name}`)"
            ))),
            _ => Err(Error::Invalid(format!(
                "network ID prefix {name} is ambiguous: give more of it"
            ))),
        }
    }

    /// What on this host already uses addresses of `subnet` (one of these networks, the
    /// default network's reserved range, or a route of the host's not to one of these
    /// networks' bridges), described for an error message; None when it is free.
    pub fn subnet_user(&self, subnet: &Ipv4Net) -> Result<Option<String>> {
        let existing = self.list()?;
        let routes = host_routes(&existing);
        Ok(subnet_user(&existing, &routes, subnet))
    }

    fn default_network(&self) -> Result<Network> {
        if let Ok(text) = std::fs::read(self.file(DEFAULT)) {
            if let Ok(n) = serde_json::from_slice(&text) {
                return Ok(n);
            }
        }
        let n = Network {
            name: DEFAULT.into(),
            id: random_id(),
            bridge: "berth0".into(),
            subnet: "10.87.0.0/16".parse().expect("valid"),
            gateway: Ipv4Addr::new(10, 87, 0, 1),
            subnet6: None,
            mtu: 1500,
            dns: false,
            labels: Default::default(),
            created: now_rfc3339(),
        };
        self.save(&n, false)?;
        Ok(n)
    }

    fn save(&self, n: &Network, exclusive: bool) -> Result<()> {
        std::fs::create_dir_all(&self.dir).ctx(|| format!("create {}", self.dir.display()))?;
        let tmp = self.dir.join(format!(".{}.tmp", n.name));
        std::fs::write(&tmp, serde_json::to_vec_pretty(n).expect("serializable"))
            .ctx(|| format!("write {}", tmp.display()))?;
        if exclusive {
            // Two creates of one name: only the first wins.
            std::fs::hard_link(&tmp, self.file(&n.name)).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::Conflict(format!("network {} already exists", n.name))
                } else {
                    Error::io(format!("write {}", self.file(&n.name).display()), e)
                }
            })?;
            let _ = std::fs::remove_file(&tmp);
            Ok(())
        } else {
            std::fs::rename(&tmp, self.file(&n.name))
                .ctx(|| format!("write {}", self.file(&n.name).display()))
        }
    }

    /// Creates a network (the bridge itself appears with its first container).
    pub fn create(&self, req: &NewNetwork) -> Result<Network> {
        if !valid_name(&req.name) || req.name == DEFAULT || req.name == "host" || req.name == "none"
        {
            return Err(Error::Invalid(format!(
                "network name {:?} is not allowed: use letters, digits, '_', '.', '-' (starting with a letter or digit; not bridge, host or none)",
                req.name
            )));
        }
        if self.file(&req.name).exists() {
            return Err(Error::Conflict(format!(
                "network {} already exists",
                req.name
            )));
        }
        let existing = self.list()?;
        let routes = host_routes(&existing);
        let taken = |s: &Ipv4Net| subnet_user(&existing, &routes, s);
        let subnet = match &req.subnet {
            Some(s) => {
                let net = parse_cidr("--subnet", s)?;
                if let Some(who) = taken(&net) {
                    return Err(Error::Conflict(format!(
                        "subnet {net} overlaps {who}: choose another --subnet"
                    )));
                }
                net
            }
            None => (0..=255u8)
                .map(|i| Ipv4Net::new(Ipv4Addr::new(10, 90, i, 0), 24).expect("valid"))
                .find(|s| taken(s).is_none())
                .ok_or_else(|| {
                    Error::Conflict(
                        "no free subnet left in 10.90.0.0/16: give one with --subnet".into(),
                    )
                })?,
        };
        let gateway = match &req.gateway {
            Some(g) => {
                let ip: Ipv4Addr = g.parse().map_err(|_| {
                    Error::Invalid(format!("--gateway {g:?} is not an IPv4 address"))
                })?;
                if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
                    return Err(Error::Invalid(format!(
                        "--gateway {ip} is not a host address of the subnet {subnet}"
                    )));
                }
                ip
            }
            None => Ipv4Addr::from(u32::from(subnet.network()) + 1),
        };
        let mtu = req.mtu.unwrap_or(1500);
        if !(68..=65535).contains(&mtu) {
            return Err(Error::Invalid(format!(
                "mtu {mtu} is out of range (68 to 65535)"
            )));
        }
        let subnet6 = match (&req.subnet6, req.ipv6) {
            (Some(s6), _) => {
                let net = parse_cidr6(s6)?;
                if let Some(other) = existing.iter().find(|n| {
                    n.subnet6
                        .is_some_and(|o| o.contains(&net.network()) || net.contains(&o.network()))
                }) {
                    return Err(Error::Conflict(format!(
                        "subnet {net} overlaps network {}: choose another --subnet",
                        other.name
                    )));
                }
                Some(net)
            }
            (None, true) => Some(
                (0..=u16::MAX)
                    .map(|i| {
                        Ipv6Net::new(Ipv6Addr::new(0xfdb7, 0, i, 0, 0, 0, 0, 0), 64).expect("valid")
                    })
                    .find(|s| !existing.iter().any(|n| n.subnet6 == Some(*s)))
                    .ok_or_else(|| {
                        Error::Conflict("no free IPv6 subnet left: give one with --subnet".into())
                    })?,
            ),
            (None, false) => None,
        };
        let id = random_id();
        let n = Network {
            name: req.name.clone(),
            bridge: format!("br-{}", &id[..12]),
            id,
            subnet,
            gateway,
            subnet6,
            mtu,
            dns: !req.no_dns,
            labels: req.labels.clone(),
            created: now_rfc3339(),
        };
        self.save(&n, true)?;
        Ok(n)
    }

    /// When no container holds an address on any network: deletes every network's
    /// bridge and berth's firewall tables, so nothing of berth stays in the kernel once
    /// the last container is gone (the next container makes them again). Returns
    /// whether it did.
    pub fn prune(&self) -> Result<bool> {
        let _lock = lock(true)?;
        let all = self.list()?;
        if all.iter().any(|n| self.leases(&n.name).any()) {
            return Ok(false);
        }
        let bridges: Vec<String> = all.into_iter().map(|n| n.bridge).collect();
        crate::link::run(|h| async move {
            for b in &bridges {
                crate::link::delete(&h, b).await?;
            }
            Ok(())
        })?;
        crate::nft::forget_all();
        Ok(true)
    }

    /// Removes network `name`, refusing while containers use it; deletes its bridge
    /// and takes it out of the firewall.
    pub fn remove(&self, name: &str) -> Result<Network> {
        let n = self.get(name)?;
        if n.name == DEFAULT {
            return Err(Error::Invalid(format!(
                "network {DEFAULT} is berth's default network and cannot be removed"
            )));
        }
        let users: Vec<String> = self
            .leases(&n.name)
            .all()
            .into_iter()
            .map(|(_, h)| h)
            .collect();
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "network {} is in use by {} container(s) ({}): remove them or disconnect them first",
                n.name,
                users.len(),
                users.iter().map(|u| &u[..u.len().min(12)]).collect::<Vec<_>>().join(", ")
            )));
        }
        let bridge = n.bridge.clone();
        crate::link::run(|h| async move { crate::link::delete(&h, &bridge).await })?;
        let others: Vec<String> = self.list()?.into_iter().map(|o| o.bridge).collect();
        crate::nft::forget_network(&n, &others)?;
        let _ = std::fs::remove_dir_all(self.leases(&n.name).dir());
        std::fs::remove_file(self.file(&n.name))
            .ctx(|| format!("remove {}", self.file(&n.name).display()))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_cidrs_are_named() {
        let e = parse_cidr("--subnet", "10.1.2.0/33")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an IPv4 CIDR"), "{e}");
        let e = parse_cidr("--subnet", "10.1.2.5/24")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean 10.1.2.0/24"), "{e}");
        let e = parse_cidr("--subnet", "10.1.2.0/31")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no room"), "{e}");
    }

    #[test]
    fn subnets_are_chosen_without_overlap_and_overlaps_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let nets = Networks::new(d.path());
        let a = nets
            .create(&NewNetwork {
                name: "a".into(),
                ..Default::default()
            })
            .unwrap();
        let b = nets
            .create(&NewNetwork {
                name: "b".into(),
                ..Default::default()
            })
            .unwrap();
        assert_ne!(a.subnet, b.subnet);
        assert_eq!(b.gateway, Ipv4Addr::from(u32::from(b.subnet.network()) + 1));
        let e = nets
            .create(&NewNetwork {
                name: "c".into(),
                subnet: Some(a.subnet.to_string()),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps network a"), "{e}");
        let e = nets
            .create(&NewNetwork {
                name: "a".into(),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = nets
            .create(&NewNetwork {
                name: "bad name".into(),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("not allowed"), "{e}");
        assert_eq!(nets.get(&a.id[..8]).unwrap().name, "a");
    }
}

#[cfg(test)]
mod v6_tests {
    use super::*;

    #[test]
    fn ipv6_subnets_carry_the_ipv4_address() {
        let d = tempfile::tempdir().unwrap();
        let mut n = Networks::new(d.path()).default_network().unwrap();
        n.subnet6 = Some(parse_cidr6("fdb7:0:5::/64").unwrap());
        assert_eq!(n.gateway6(), Some("fdb7:0:5::1".parse().unwrap()));
        assert_eq!(
            n.ipv6_for(Ipv4Addr::new(10, 90, 5, 7)),
            Some("fdb7:0:5::a5a:507".parse().unwrap())
        );
        let e = parse_cidr6("fdb7::/120").unwrap_err().to_string();
        assert!(e.contains("/64 to /96"), "{e}");
        let e = parse_cidr6("fdb7::1/64").unwrap_err().to_string();
        assert!(e.contains("did you mean fdb7::/64"), "{e}");
        let e = parse_cidr6("10.0.0.0/8").unwrap_err().to_string();
        assert!(e.contains("not an IPv6 CIDR"), "{e}");
    }
}
