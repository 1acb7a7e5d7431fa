//! The cluster's names, as the Kubernetes DNS specification lays them out (what
//! kube-dns and CoreDNS's kubernetes plugin serve), built from Services and
//! EndpointSlices:
//!
//! - `SVC.NS.svc.DOMAIN`: A/AAAA of a Service's ClusterIPs; for a headless Service, of
//!   its ready endpoints (all with publishNotReadyAddresses); a CNAME for ExternalName;
//! - `HOST.SVC.NS.svc.DOMAIN`: a headless Service's endpoint by its hostname (a
//!   StatefulSet's `web-0.web.default.svc.cluster.local`), else by its address with
//!   dashes (`10-42-1-5.web...`);
//! - `_PORT._PROTO.SVC.NS.svc.DOMAIN`: SRV for named ports (the Service, or each
//!   endpoint of a headless one);
//! - `A-B-C-D.NS.pod.DOMAIN`: any pod address, as kube-dns's "insecure" pod records;
//! - PTR for ClusterIPs and headless endpoints.
//!
//! A name under the domain that is none of these is NXDOMAIN; a name that exists
//! without the asked type is an empty answer (NODATA).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The TTL of the cluster's records (CoreDNS's kubernetes plugin's default).
pub const TTL: u32 = 5;

/// What a lookup found.
#[derive(Debug, PartialEq)]
pub enum Found {
    /// Records of the asked type (and CNAMEs leading to them).
    Records(Vec<Record>),
    /// The name exists, without records of that type.
    NoData,
    /// No such name in the cluster's domain.
    NxDomain,
    /// Not the cluster's to answer (forwarded).
    NotOurs,
}

/// The cluster's records.
#[derive(Debug, Default)]
pub struct Zone {
    /// The cluster domain, lowercase, with its final dot (`cluster.local.`).
    domain: String,
    /// Owner name (lowercase, final dot) -> its records.
    records: HashMap<String, Vec<Record>>,
    /// Names that own nothing but lie above names that do (`svc.cluster.local.`).
    interior: HashSet<String>,
}

fn fqdn(s: &str) -> String {
    let mut s = s.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn name(s: &str) -> Option<Name> {
    Name::from_str(s).ok()
}

/// `10.42.1.5` -> `10-42-1-5`; `fd00::1` -> `fd00--1`.
fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The reverse name of an address.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa."
        }
    }
}

fn address_record(owner: &Name, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), TTL, rdata)
}

/// An endpoint of a headless Service, as DNS names it.
struct HeadlessEndpoint {
    ip: IpAddr,
    hostname: Option<String>,
}

impl Zone {
    /// The zone of `services` and `slices` under `domain` (`cluster.local`).
    pub fn build(domain: &str, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Zone {
        let mut z = Zone {
            domain: fqdn(domain),
            ..Default::default()
        };
        let by_service = berth_pods::services::slices_by_service(slices);
        for svc in services {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let svc_name = svc.metadata.name.clone().unwrap_or_default();
            let slices = by_service
                .get(&(ns.clone(), svc_name.clone()))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            z.add_service(svc, &ns, &svc_name, slices);
        }
        // Every name between the domain and an owner exists (empty non-terminals).
        let owners: Vec<String> = z.records.keys().cloned().collect();
        for o in owners {
            let mut rest = o.as_str();
            while let Some((_, tail)) = rest.split_once('.') {
                if tail.len() < z.domain.len() || !tail.ends_with(&z.domain) {
                    break;
                }
                if !z.records.contains_key(tail) {
                    z.interior.insert(tail.to_string());
                }
                rest = tail;
            }
        }
        z
    }

    fn add(&mut self, owner: &str, r: Record) {
        self.records.entry(fqdn(owner)).or_default().push(r);
    }

    fn add_service(
        &mut self,
        svc: &Service,
        ns: &str,
        svc_name: &str,
        slices: &[Arc<EndpointSlice>],
    ) {
        let Some(spec) = &svc.spec else { return };
        let base = format!("{svc_name}.{ns}.svc.{}", self.domain);
        let Some(base_name) = name(&base) else { return };
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().and_then(|t| name(&fqdn(t))) {
                self.add(
                    &base,
                    Record::from_rdata(base_name, TTL, RData::CNAME(CNAME(target))),
                );
            }
            return;
        }
        let cluster_ips = berth_pods::services::cluster_ips(spec);
        let headless = cluster_ips.is_empty();
        if !headless {
            for ip in &cluster_ips {
                self.add(&base, address_record(&base_name, *ip));
                if let Some(rev) = name(&reverse_name(*ip)) {
                    self.add(
                        &reverse_name(*ip),
                        Record::from_rdata(rev, TTL, RData::PTR(PTR(base_name.clone()))),
                    );
                }
            }
            for p in spec.ports.iter().flatten() {
                let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                let owner = format!("_{port_name}._{proto}.{base}");
                if let (Some(o), Ok(port)) = (name(&owner), u16::try_from(p.port)) {
                    self.add(
                        &owner,
                        Record::from_rdata(
                            o,
                            TTL,
                            RData::SRV(SRV::new(0, 100, port, base_name.clone())),
                        ),
                    );
                }
            }
            return;
        }
        let publish_all = spec.publish_not_ready_addresses == Some(true);
        let mut endpoints: Vec<HeadlessEndpoint> = Vec::new();
        let mut ports: BTreeMap<(String, String), u16> = BTreeMap::new();
        for s in slices {
            for p in s.ports.iter().flatten() {
                if let (Some(n), Some(port)) = (p.name.as_deref().filter(|n| !n.is_empty()), p.port)
                {
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    if let Ok(port) = u16::try_from(port) {
                        ports.insert((n.to_string(), proto), port);
                    }
                }
            }
            for e in &s.endpoints {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !publish_all {
                    continue;
                }
                for a in &e.addresses {
                    let Ok(ip) = a.parse::<IpAddr>() else {
                        continue;
                    };
                    if !endpoints.iter().any(|x| x.ip == ip) {
                        endpoints.push(HeadlessEndpoint {
                            ip,
                            hostname: e.hostname.clone().filter(|h| !h.is_empty()),
                        });
                    }
                }
            }
        }
        endpoints.sort_by_key(|e| e.ip);
        for e in &endpoints {
            self.add(&base, address_record(&base_name, e.ip));
            let label = e.hostname.clone().unwrap_or_else(|| dashed(e.ip));
            let own = format!("{label}.{base}");
            let Some(own_name) = name(&own) else { continue };
            self.add(&own, address_record(&own_name, e.ip));
            if e.hostname.is_some() {
                if let Some(rev) = name(&reverse_name(e.ip)) {
                    self.add(
                        &reverse_name(e.ip),
                        Record::from_rdata(rev, TTL, RData::PTR(PTR(own_name.clone()))),
                    );
                }
            }
            for ((port_name, proto), port) in &ports {
                let owner = format!("_{port_name}._{proto}.{base}");
                if let Some(o) = name(&owner) {
                    let weight = (100 / endpoints.len().max(1)) as u16;
                    self.add(
                        &owner,
                        Record::from_rdata(
                            o,
                            TTL,
                            RData::SRV(SRV::new(0, weight.max(1), *port, own_name.clone())),
                        ),
                    );
                }
            }
        }
        if endpoints.is_empty() {
            // The Service exists: its name answers NODATA, not NXDOMAIN.
            self.interior.insert(fqdn(&base));
        }
    }

    /// The cluster domain (`cluster.local.`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `qname` (lowercase, final dot) is in the cluster's domain.
    pub fn is_ours(&self, qname: &str) -> bool {
        qname == self.domain || qname.ends_with(&format!(".{}", self.domain))
    }

    /// The answer for `qname` and `qtype`.
    pub fn lookup(&self, qname: &str, qtype: RecordType) -> Found {
        let qname = fqdn(qname);
        let owned = self.records.get(&qname);
        if owned.is_none() && !self.is_ours(&qname) {
            return Found::NotOurs;
        }
        if let Some(rs) = owned {
            let matching: Vec<Record> = rs
                .iter()
                .filter(|r| {
                    qtype == RecordType::ANY
                        || r.record_type() == qtype
                        || r.record_type() == RecordType::CNAME
                })
                .cloned()
                .collect();
            return if matching.is_empty() {
                Found::NoData
            } else {
                Found::Records(matching)
            };
        }
        if let Some(ip) = self.pod_address(&qname) {
            let Some(owner) = name(&qname) else {
                return Found::NxDomain;
            };
            let r = address_record(&owner, ip);
            return if qtype == r.record_type() || qtype == RecordType::ANY {
                Found::Records(vec![r])
            } else {
                Found::NoData
            };
        }
        if qname == self.domain || self.interior.contains(&qname) {
            return Found::NoData;
        }
        Found::NxDomain
    }

    /// `A-B-C-D.NS.pod.DOMAIN` -> A.B.C.D.
    fn pod_address(&self, qname: &str) -> Option<IpAddr> {
        let rest = qname.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (label, _ns) = rest.split_once('.')?;
        if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
        label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    }

    /// How many names the zone holds (for logs).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the zone holds no names.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
