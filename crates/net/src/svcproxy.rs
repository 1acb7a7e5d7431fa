//! Services in the kernel, as kube-proxy's nftables mode builds them: one table
//! ([`TABLE`]) where a packet to a Service address and port is looked up in a verdict
//! map and sent to the Service's chain, which picks one endpoint at random (`numgen`)
//! and DNATs to it.
//!
//! - `service-ips`: `IP . proto . port : goto CHAIN` for ClusterIPs, external IPs and
//!   LoadBalancer ingress IPs; `service-nodeports`: `proto . port : goto CHAIN` for
//!   NodePorts, on the node's own addresses (`fib daddr type local`).
//! - One chain per Service port (`svc-NS/NAME/PROTO/PORT`), one for its external
//!   traffic when that differs (`ext-...`: masqueraded unless externalTrafficPolicy is
//!   Local, which keeps the client's address and uses this node's endpoints only), one
//!   per endpoint (`ep-...__IP/PORT`: the DNAT, and masquerade for a pod reaching
//!   itself).
//! - Traffic to a ClusterIP from outside the cluster's pod network (a host process, a
//!   hostNetwork pod) is masqueraded, so replies come back the way it went.
//! - sessionAffinity ClientIP: a timed set of client addresses per endpoint.
//! - A Service port without endpoints rejects (TCP reset / ICMP port unreachable)
//!   through `no-endpoint-services` and `no-endpoint-nodeports`, instead of letting
//!   clients time out.
//!
//! The rules are kept as a [`Ruleset`] (chains with their rules, map elements); each
//! sync renders the wanted ruleset and sends nft only the difference, in one
//! transaction: a changed endpoint rewrites its Service's chain and adds or deletes
//! one endpoint chain, never more. The first sync (and any after a failure) replaces
//! the whole table atomically — connections keep their conntrack entries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::error::Result;

/// The table's name.
pub const TABLE: &str = "berth-proxy";

/// Elements written per nft statement.
const ELEMENTS_PER_LINE: usize = 500;

/// The mark asking for masquerade on the way out (kube-proxy's 0x4000).
const MASQ_MARK: u32 = 0x4000;

/// A transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// From a Service port's `protocol` (TCP when missing).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// One endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The target port.
    pub port: u16,
    /// Ready (serving and not terminating).
    pub ready: bool,
    /// Serving (ready, or terminating but still passing its readiness probe).
    pub serving: bool,
    /// Its pod is being deleted.
    pub terminating: bool,
    /// On this node.
    pub local: bool,
}

/// One port of a Service, with what it needs to be proxied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// The port's name ("" for a single unnamed port).
    pub port_name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The Service's ClusterIPs (IPv4 ones).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// The Service port.
    pub port: u16,
    /// The NodePort, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// externalIPs and LoadBalancer ingress IPs: reached like the ClusterIP, treated as
    /// external traffic.
    pub external_ips: Vec<Ipv4Addr>,
    /// sessionAffinity ClientIP's timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// internalTrafficPolicy Local: traffic from inside the cluster goes to this
    /// node's endpoints only.
    pub internal_local: bool,
    /// externalTrafficPolicy Local: external traffic goes to this node's endpoints
    /// only, with its client address kept.
    pub external_local: bool,
    /// The endpoints (from the EndpointSlices).
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    fn id(&self) -> String {
        let port = if self.port_name.is_empty() {
            self.port.to_string()
        } else {
            self.port_name.clone()
        };
        format!(
            "{}/{}/{}/{port}",
            self.namespace,
            self.name,
            self.protocol.nft()
        )
    }
}

/// What the node is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The cluster's pod network: traffic from outside it to a ClusterIP is
    /// masqueraded. None: everything to a ClusterIP is.
    pub cluster_cidr: Option<ipnet::Ipv4Net>,
}

/// Which endpoints serve traffic, as kube-proxy picks them: the ready ones; if none is
/// ready, the serving terminating ones (so connections drain during a rollout);
/// limited to this node's when `local`.
fn usable(eps: &[Endpoint], local: bool) -> Vec<&Endpoint> {
    let pool: Vec<&Endpoint> = eps.iter().filter(|e| !local || e.local).collect();
    let ready: Vec<&Endpoint> = pool.iter().copied().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    pool.into_iter()
        .filter(|e| e.serving && e.terminating)
        .collect()
}

/// nftables objects berth-proxy holds: chains with their rules, map elements, and
/// the affinity sets (with their timeouts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Regular chains (not the hooked base chains) and their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Map name -> key -> value.
    pub elements: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Affinity set name -> timeout in seconds.
    pub sets: BTreeMap<String, u32>,
}

/// The named maps and sets, with their definitions. Elements carry all per-Service
/// data: nftables makes chains and anonymous sets slowly (a table of 10,000 Services
/// with a chain and an anonymous map each took 16 s of kernel time to load), named
/// map elements quickly (100,000 in about a second).
const MAPS: [(&str, &str); 8] = [
    (
        "service-ips",
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        "service-nodeports",
        "type inet_proto . inet_service : verdict;",
    ),
    (
        "no-endpoint-services",
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        "no-endpoint-nodeports",
        "type inet_proto . inet_service : verdict;",
    ),
    // (Service address, protocol, port, slot) -> endpoint; a Service with N endpoints
    // has slots 0..N and its `pick-N` chain draws one at random into the connection's
    // mark, which picks the slot. (The slot is typed as a mark because nft 1.0 cannot
    // read back a `typeof ... numgen` map it made: later element changes fail.)
    (
        "endpoints",
        "type ipv4_addr . inet_proto . inet_service . mark : ipv4_addr . inet_service;",
    ),
    (
        "nodeport-endpoints",
        "type inet_proto . inet_service . mark : ipv4_addr . inet_service;",
    ),
    // ClusterIP ports, whose clients from outside the pod network are masqueraded.
    ("cluster-ips", "type ipv4_addr . inet_proto . inet_service;"),
    // A local endpoint's address twice: a pod reaching itself through a Service.
    ("hairpin", "type ipv4_addr . ipv4_addr;"),
];

/// Whether a map of [`MAPS`] is a set (elements without values).
fn is_set(map: &str) -> bool {
    matches!(map, "cluster-ips" | "hairpin")
}

/// The fixed part: hooked chains, maps, the masquerade marks.
fn base(cfg: &ProxyConfig) -> String {
    let t = TABLE;
    let mut s = format!("add table ip {t}\n");
    for (m, def) in MAPS {
        let kind = if is_set(m) { "set" } else { "map" };
        let _ = writeln!(s, "add {kind} ip {t} {m} {{ {def} }}");
    }
    // Regular chains first (the hooked ones jump to them), each after those it jumps to.
    let off_cluster = match cfg.cluster_cidr {
        Some(c) => format!("ip saddr != {c} "),
        None => String::new(),
    };
    let fixed: [(&str, &[String]); 5] = [
        (
            "mark-for-masquerade",
            &[format!("meta mark set meta mark or {MASQ_MARK:#x}")],
        ),
        (
            "services",
            &[
                format!("{off_cluster}ip daddr . meta l4proto . th dport @cluster-ips jump mark-for-masquerade"),
                "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports".into(),
            ],
        ),
        (
            "endpoints-check",
            &[
                "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
                "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports".into(),
            ],
        ),
        (
            "masquerading",
            &[
                "ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade".into(),
                format!("meta mark and {MASQ_MARK:#x} == 0 return"),
                format!("meta mark set meta mark xor {MASQ_MARK:#x}"),
                "masquerade fully-random".into(),
            ],
        ),
        (
            "reject-chain",
            &["reject".into()],
        ),
    ];
    for (name, rules) in fixed {
        let _ = writeln!(s, "add chain ip {t} {name}");
        let _ = writeln!(s, "flush chain ip {t} {name}");
        for r in rules {
            let _ = writeln!(s, "add rule ip {t} {name} {r}");
        }
    }
    for n in 1..=PERMANENT_PICKS {
        for prefix in ["", "np-"] {
            for (name, rules) in pick_rules(prefix, n) {
                let _ = writeln!(s, "add chain ip {t} {name}");
                for r in rules {
                    let _ = writeln!(s, "add rule ip {t} {name} {r}");
                }
            }
        }
    }
    let hooks = [
        (
            "nat-prerouting",
            "type nat hook prerouting priority dstnat",
            "jump services",
        ),
        (
            "nat-output",
            "type nat hook output priority -100",
            "jump services",
        ),
        (
            "nat-postrouting",
            "type nat hook postrouting priority srcnat",
            "jump masquerading",
        ),
        (
            "filter-input",
            "type filter hook input priority -110",
            "ct state new jump endpoints-check",
        ),
        (
            "filter-forward",
            "type filter hook forward priority -110",
            "ct state new jump endpoints-check",
        ),
        (
            "filter-output",
            "type filter hook output priority -110",
            "ct state new jump endpoints-check",
        ),
    ];
    for (name, hook, rule) in hooks {
        let _ = writeln!(s, "add chain ip {t} {name} {{ {hook}; policy accept; }}");
        let _ = writeln!(s, "flush chain ip {t} {name}");
        let _ = writeln!(s, "add rule ip {t} {name} {rule}");
    }
    s
}

/// The ruleset for `services` on a node configured as `cfg`.
pub fn render(cfg: &ProxyConfig, services: &[ServicePort]) -> Ruleset {
    let mut rs = Ruleset::default();
    for (m, _) in MAPS {
        rs.elements.insert(m, BTreeMap::new());
    }
    for sp in services {
        render_port(cfg, sp, &mut rs);
    }
    rs
}

fn render_port(cfg: &ProxyConfig, sp: &ServicePort, rs: &mut Ruleset) {
    if sp.affinity_timeout.is_some() {
        return render_affinity_port(cfg, sp, rs);
    }
    let proto = sp.protocol.nft();
    let internal = usable(&sp.endpoints, sp.internal_local);
    let external = usable(&sp.endpoints, sp.external_local);
    let has_external = sp.node_port.is_some() || !sp.external_ips.is_empty();
    // A Service address's slots and the verdict sending it to its pick chain.
    let add_address = |rs: &mut Ruleset, ip: Ipv4Addr, eps: &[&Endpoint], masq: bool| {
        let key = format!("{ip} . {proto} . {}", sp.port);
        if eps.is_empty() {
            rs.elements
                .get_mut("no-endpoint-services")
                .expect("map")
                .insert(key, "goto reject-chain".into());
            return;
        }
        let chain = pick_chain(rs, "", eps.len(), masq);
        rs.elements
            .get_mut("service-ips")
            .expect("map")
            .insert(key.clone(), format!("goto {chain}"));
        let slots = rs.elements.get_mut("endpoints").expect("map");
        for (i, e) in eps.iter().enumerate() {
            slots.insert(format!("{key} . {i}"), format!("{} . {}", e.ip, e.port));
        }
    };
    for ip in &sp.cluster_ips {
        add_address(rs, *ip, &internal, false);
        if !internal.is_empty() {
            rs.elements
                .get_mut("cluster-ips")
                .expect("set")
                .insert(format!("{ip} . {proto} . {}", sp.port), String::new());
        }
    }
    if has_external {
        // External traffic is masqueraded unless externalTrafficPolicy is Local (the
        // client's address kept, this node's endpoints only).
        let masq = !sp.external_local;
        for ip in &sp.external_ips {
            add_address(rs, *ip, &external, masq);
        }
        if let Some(np) = sp.node_port {
            let key = format!("{proto} . {np}");
            if external.is_empty() {
                rs.elements
                    .get_mut("no-endpoint-nodeports")
                    .expect("map")
                    .insert(key, "goto reject-chain".into());
            } else {
                let chain = pick_chain(rs, "np-", external.len(), masq);
                rs.elements
                    .get_mut("service-nodeports")
                    .expect("map")
                    .insert(key.clone(), format!("goto {chain}"));
                let slots = rs.elements.get_mut("nodeport-endpoints").expect("map");
                for (i, e) in external.iter().enumerate() {
                    slots.insert(format!("{key} . {i}"), format!("{} . {}", e.ip, e.port));
                }
            }
        }
    }
    for e in internal.iter().chain(external.iter()).filter(|e| e.local) {
        rs.elements
            .get_mut("hairpin")
            .expect("set")
            .insert(format!("{} . {}", e.ip, e.ip), String::new());
    }
}

/// The chain drawing one of `n` slots (`pick-N`; `np-pick-N` for NodePorts, keyed
/// without the address), behind one that marks for masquerade when `masq`; made on
/// first use. Returns the chain to go to.
fn pick_chain(rs: &mut Ruleset, prefix: &str, n: usize, masq: bool) -> String {
    let (pick, outer) = (
        format!("{prefix}pick-{n}"),
        format!("{prefix}masq-pick-{n}"),
    );
    // The small counts are in the base table for good: a Service growing from 3 to 4
    // endpoints then makes no chain (nft reads a whole map back to check a new rule
    // that uses it, some 100 ms at 100,000 endpoints).
    if n > PERMANENT_PICKS {
        for (name, rules) in pick_rules(prefix, n) {
            if name == pick || (masq && name == outer) {
                rs.chains.entry(name).or_insert(rules);
            }
        }
    }
    if masq {
        outer
    } else {
        pick
    }
}

/// The pick chains always present, for 1 to this many endpoints.
const PERMANENT_PICKS: usize = 16;

/// The chains drawing one of `n` slots: `PREFIXpick-N` (the draw and the DNAT) and
/// `PREFIXmasq-pick-N` (the masquerade mark, then the draw); prefix "" for Service
/// addresses, "np-" for NodePorts (slots keyed without the address).
fn pick_rules(prefix: &str, n: usize) -> [(String, Vec<String>); 2] {
    let dnat = if prefix.is_empty() {
        "dnat ip to ip daddr . meta l4proto . th dport . ct mark map @endpoints"
    } else {
        "dnat ip to meta l4proto . th dport . ct mark map @nodeport-endpoints"
    };
    let pick = format!("{prefix}pick-{n}");
    [
        (
            pick.clone(),
            vec![format!("ct mark set numgen random mod {n}"), dnat.into()],
        ),
        (
            format!("{prefix}masq-pick-{n}"),
            vec!["jump mark-for-masquerade".into(), format!("goto {pick}")],
        ),
    ]
}

/// A Service port with sessionAffinity ClientIP: a chain of its own that sends a
/// known client to its endpoint's chain (a timed set of clients per endpoint), else
/// picks one; each endpoint's chain remembers the client and DNATs.
fn render_affinity_port(cfg: &ProxyConfig, sp: &ServicePort, rs: &mut Ruleset) {
    let id = sp.id();
    let proto = sp.protocol.nft();
    let internal = usable(&sp.endpoints, sp.internal_local);
    let external = usable(&sp.endpoints, sp.external_local);
    let has_external = sp.node_port.is_some() || !sp.external_ips.is_empty();
    // Endpoint chains, one per endpoint either side uses.
    let mut ep_chains: BTreeMap<(Ipv4Addr, u16), String> = BTreeMap::new();
    for e in internal.iter().chain(if has_external {
        external.iter()
    } else {
        [].iter()
    }) {
        let name = format!("ep-{id}__{}/{}", e.ip, e.port);
        if ep_chains.contains_key(&(e.ip, e.port)) {
            continue;
        }
        let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", e.ip)];
        if let Some(t) = sp.affinity_timeout {
            let set = affinity_set(&name);
            rs.sets.insert(set.clone(), t);
            rules.push(format!("update @{set} {{ ip saddr }}"));
        }
        rules.push(format!(
            "meta l4proto {proto} dnat ip to {}:{}",
            e.ip, e.port
        ));
        rs.chains.insert(name.clone(), rules);
        ep_chains.insert((e.ip, e.port), name);
    }
    let pick = |eps: &[&Endpoint]| -> Vec<String> {
        let mut rules = Vec::new();
        if sp.affinity_timeout.is_some() {
            for e in eps {
                let chain = &ep_chains[&(e.ip, e.port)];
                rules.push(format!("ip saddr @{} goto {}", affinity_set(chain), chain));
            }
        }
        let targets: Vec<String> = eps
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i} : goto {}", ep_chains[&(e.ip, e.port)]))
            .collect();
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            eps.len(),
            targets.join(", ")
        ));
        rules
    };
    let svc_chain = format!("svc-{id}");
    let ext_chain = format!("ext-{id}");
    let ips = rs.elements.get_mut("service-ips").expect("map");
    let mut no_ep: Vec<(String, String)> = Vec::new();
    let mut no_ep_nodeport: Vec<(String, String)> = Vec::new();
    if internal.is_empty() {
        for ip in &sp.cluster_ips {
            no_ep.push((
                format!("{ip} . {proto} . {}", sp.port),
                "goto reject-chain".into(),
            ));
        }
    } else {
        let mut rules = Vec::new();
        for ip in &sp.cluster_ips {
            // From outside the pod network: masqueraded, so the reply comes back here.
            match cfg.cluster_cidr {
                Some(c) => rules.push(format!(
                    "ip daddr {ip} {proto} dport {} ip saddr != {c} jump mark-for-masquerade",
                    sp.port
                )),
                None => rules.push(format!(
                    "ip daddr {ip} {proto} dport {} jump mark-for-masquerade",
                    sp.port
                )),
            }
        }
        rules.extend(pick(&internal));
        rs.chains.insert(svc_chain.clone(), rules);
        for ip in &sp.cluster_ips {
            ips.insert(
                format!("{ip} . {proto} . {}", sp.port),
                format!("goto {}", svc_chain),
            );
        }
    }
    if has_external {
        let target = if external.is_empty() {
            None
        } else if sp.external_local {
            // The client's address kept: no masquerade, this node's endpoints only.
            let rules = pick(&external);
            rs.chains.insert(ext_chain.clone(), rules);
            Some(ext_chain.clone())
        } else {
            let mut rules = vec!["jump mark-for-masquerade".to_string()];
            rules.extend(pick(&external));
            rs.chains.insert(ext_chain.clone(), rules);
            Some(ext_chain.clone())
        };
        let ips = rs.elements.get_mut("service-ips").expect("map");
        for ip in &sp.external_ips {
            let key = format!("{ip} . {proto} . {}", sp.port);
            match &target {
                Some(t) => {
                    ips.insert(key, format!("goto {}", t));
                }
                None => no_ep.push((key, "goto reject-chain".into())),
            }
        }
        if let Some(np) = sp.node_port {
            let key = format!("{proto} . {np}");
            match &target {
                Some(t) => {
                    rs.elements
                        .get_mut("service-nodeports")
                        .expect("map")
                        .insert(key, format!("goto {}", t));
                }
                None => no_ep_nodeport.push((key, "goto reject-chain".into())),
            }
        }
    }
    rs.elements
        .get_mut("no-endpoint-services")
        .expect("map")
        .extend(no_ep);
    rs.elements
        .get_mut("no-endpoint-nodeports")
        .expect("map")
        .extend(no_ep_nodeport);
}

fn affinity_set(endpoint_chain: &str) -> String {
    format!("affinity-{}", &endpoint_chain["ep-".len()..])
}

/// The nft script that turns `old` into `new` (everything, over a fresh table, when
/// `old` is None), in an order nft accepts in one transaction: chains and sets made
/// first, rules written, map elements changed, then what is gone deleted.
pub fn script(cfg: &ProxyConfig, old: Option<&Ruleset>, new: &Ruleset) -> String {
    let t = TABLE;
    let mut s = String::new();
    let empty = Ruleset::default();
    let old = match old {
        Some(o) => o,
        None => {
            // Replaced in one go: made if missing, so the delete always has something.
            s.push_str(&format!("add table ip {t}\ndelete table ip {t}\n"));
            s.push_str(&base(cfg));
            &empty
        }
    };
    for (set, timeout) in &new.sets {
        if old.sets.get(set) != Some(timeout) {
            if old.sets.contains_key(set) {
                let _ = writeln!(s, "delete set ip {t} {}", set);
            }
            let _ = writeln!(
                s,
                "add set ip {t} {} {{ type ipv4_addr; flags dynamic,timeout; timeout {timeout}s; }}",
                set
            );
        }
    }
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            let _ = writeln!(s, "add chain ip {t} {}", name);
        }
    }
    for (name, rules) in &new.chains {
        if old.chains.get(name) == Some(rules) {
            continue;
        }
        if old.chains.contains_key(name) {
            let _ = writeln!(s, "flush chain ip {t} {}", name);
        }
        for r in rules {
            let _ = writeln!(s, "add rule ip {t} {} {r}", name);
        }
    }
    // Element deletions (gone, or changing value) first, then additions, each in
    // batches: nft parses one long element list much faster than as many statements.
    let mut deletes: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    let mut adds: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (map, elems) in &new.elements {
        let before = old.elements.get(map);
        for (k, v) in elems {
            match before.and_then(|b| b.get(k)) {
                Some(ov) if ov == v => {}
                Some(_) => {
                    deletes.entry(map).or_default().push(k);
                    adds.entry(map).or_default().push(element(map, k, v));
                }
                None => adds.entry(map).or_default().push(element(map, k, v)),
            }
        }
    }
    for (map, elems) in &old.elements {
        let after = new.elements.get(map);
        for k in elems.keys() {
            if after.is_none_or(|a| !a.contains_key(k)) {
                deletes.entry(map).or_default().push(k);
            }
        }
    }
    for (map, keys) in &deletes {
        for chunk in keys.chunks(ELEMENTS_PER_LINE) {
            let list: Vec<&str> = chunk.iter().map(|k| k.as_str()).collect();
            let _ = writeln!(s, "delete element ip {t} {map} {{ {} }}", list.join(", "));
        }
    }
    for (map, elems) in &adds {
        for chunk in elems.chunks(ELEMENTS_PER_LINE) {
            let _ = writeln!(s, "add element ip {t} {map} {{ {} }}", chunk.join(", "));
        }
    }
    // Chains that go are emptied first (they may jump to each other), then deleted.
    let gone: Vec<&String> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .collect();
    for name in &gone {
        let _ = writeln!(s, "flush chain ip {t} {}", name);
    }
    for name in &gone {
        let _ = writeln!(s, "delete chain ip {t} {}", name);
    }
    let gone_sets: BTreeSet<&String> = old
        .sets
        .keys()
        .filter(|n| !new.sets.contains_key(*n))
        .collect();
    for set in gone_sets {
        let _ = writeln!(s, "delete set ip {t} {}", set);
    }
    s
}

/// An element as nft writes it: `KEY : VALUE` in a map, `KEY` in a set.
fn element(map: &str, k: &str, v: &str) -> String {
    if is_set(map) {
        k.to_string()
    } else {
        format!("{k} : {v}")
    }
}

/// Keeps the kernel's table in step with the Services: what each Service port put
/// there last, so that a sync renders and compares only the ports that changed.
#[derive(Default)]
pub struct Proxy {
    /// None until the first sync, and after a failed one: the next writes it all.
    cache: Option<PortCache>,
}

/// Each port's last rendering, and how many ports use each object they may share (the
/// pick chains past the permanent ones, hairpin pairs).
#[derive(Default)]
struct PortCache {
    by_id: HashMap<String, (ServicePort, Ruleset)>,
    users: HashMap<String, usize>,
}

/// What one sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Lines sent to nft (0: nothing changed).
    pub lines: usize,
    /// Whether the whole table was written.
    pub full: bool,
}

/// The objects of a port's rendering that another port may hold too.
fn shared_of(rs: &Ruleset) -> Vec<String> {
    let chains = rs
        .chains
        .keys()
        .filter(|c| c.contains("pick-"))
        .map(|c| format!("chain:{c}"));
    let pairs = rs
        .elements
        .get("hairpin")
        .into_iter()
        .flat_map(|h| h.keys())
        .map(|k| format!("hairpin:{k}"));
    chains.chain(pairs).collect()
}

/// Drops a shared object from a partial ruleset.
fn drop_shared(rs: &mut Ruleset, key: &str) {
    if let Some(chain) = key.strip_prefix("chain:") {
        rs.chains.remove(chain);
    } else if let Some(pair) = key.strip_prefix("hairpin:") {
        if let Some(h) = rs.elements.get_mut("hairpin") {
            h.remove(pair);
        }
    }
}

/// Adds `b`'s objects to `a`.
fn merge(a: &mut Ruleset, b: &Ruleset) {
    for (k, v) in &b.chains {
        a.chains.insert(k.clone(), v.clone());
    }
    for (m, elems) in &b.elements {
        let into = a.elements.entry(m).or_default();
        for (k, v) in elems {
            into.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in &b.sets {
        a.sets.insert(k.clone(), *v);
    }
}

fn render_one(cfg: &ProxyConfig, sp: &ServicePort) -> Ruleset {
    render(cfg, std::slice::from_ref(sp))
}

impl Proxy {
    /// Makes the table match `services`.
    pub fn sync(&mut self, cfg: &ProxyConfig, services: &[ServicePort]) -> Result<SyncStats> {
        let Some(cache) = self.cache.as_mut() else {
            return self.full_sync(cfg, services);
        };
        let mut wanted: HashMap<String, &ServicePort> = HashMap::new();
        for sp in services {
            wanted.insert(sp.id(), sp);
        }
        let mut changed: Vec<String> = wanted
            .iter()
            .filter(|(id, sp)| cache.by_id.get(*id).is_none_or(|(old, _)| old != **sp))
            .map(|(id, _)| id.clone())
            .collect();
        changed.extend(
            cache
                .by_id
                .keys()
                .filter(|id| !wanted.contains_key(*id))
                .cloned(),
        );
        if changed.is_empty() {
            return Ok(SyncStats::default());
        }
        let mut old = Ruleset::default();
        let mut new = Ruleset::default();
        let mut fresh: Vec<(String, Option<(ServicePort, Ruleset)>)> = Vec::new();
        let mut users = cache.users.clone();
        let mut touched: Vec<String> = Vec::new();
        for id in &changed {
            if let Some((_, before)) = cache.by_id.get(id) {
                merge(&mut old, before);
                for k in shared_of(before) {
                    *users.entry(k.clone()).or_default() -= 1;
                    touched.push(k);
                }
            }
            match wanted.get(id) {
                Some(sp) => {
                    let after = render_one(cfg, sp);
                    merge(&mut new, &after);
                    for k in shared_of(&after) {
                        *users.entry(k.clone()).or_default() += 1;
                        touched.push(k);
                    }
                    fresh.push((id.clone(), Some(((*sp).clone(), after))));
                }
                None => fresh.push((id.clone(), None)),
            }
        }
        // A shared object others still use is neither made nor removed; one this
        // change starts (or stops) using is made (or removed) once.
        touched.sort();
        touched.dedup();
        for k in &touched {
            let before = cache.users.get(k).copied().unwrap_or(0);
            let after = users.get(k).copied().unwrap_or(0);
            if before > 0 {
                drop_shared(&mut new, k);
            }
            if after > 0 {
                drop_shared(&mut old, k);
            }
        }
        let text = script(cfg, Some(&old), &new);
        if let Err(e) = crate::nft::apply(&text) {
            self.cache = None;
            return Err(e);
        }
        users.retain(|_, n| *n > 0);
        cache.users = users;
        for (id, entry) in fresh {
            match entry {
                Some(e) => {
                    cache.by_id.insert(id, e);
                }
                None => {
                    cache.by_id.remove(&id);
                }
            }
        }
        Ok(SyncStats {
            lines: text.lines().count(),
            full: false,
        })
    }

    /// Writes the whole table, and remembers each port's part.
    fn full_sync(&mut self, cfg: &ProxyConfig, services: &[ServicePort]) -> Result<SyncStats> {
        let want = render(cfg, services);
        let text = script(cfg, None, &want);
        crate::nft::apply(&text)?;
        let mut cache = PortCache::default();
        for sp in services {
            let part = render_one(cfg, sp);
            for k in shared_of(&part) {
                *cache.users.entry(k).or_default() += 1;
            }
            cache.by_id.insert(sp.id(), (sp.clone(), part));
        }
        self.cache = Some(cache);
        Ok(SyncStats {
            lines: text.lines().count(),
            full: true,
        })
    }

    /// Forgets what was applied: the next sync writes the whole table.
    pub fn invalidate(&mut self) {
        self.cache = None;
    }
}

/// Removes the table.
pub fn remove() {
    let _ = crate::nft::apply(&format!("delete table ip {TABLE}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8, ready: bool, local: bool) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::new(10, 42, 1, last),
            port: 8080,
            ready,
            serving: ready,
            terminating: false,
            local,
        }
    }

    fn svc(eps: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            name: "web".into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ips: vec![Ipv4Addr::new(10, 43, 0, 10)],
            port: 80,
            node_port: None,
            external_ips: vec![],
            affinity_timeout: None,
            internal_local: false,
            external_local: false,
            endpoints: eps,
        }
    }

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
        }
    }

    #[test]
    fn a_service_picks_among_its_ready_endpoints() {
        let rs = render(
            &cfg(),
            &[svc(vec![
                ep(2, true, false),
                ep(3, true, true),
                ep(4, false, false),
            ])],
        );
        assert_eq!(
            rs.elements["service-ips"]["10.43.0.10 . tcp . 80"],
            "goto pick-2"
        );
        assert!(rs.chains.is_empty(), "pick-2 is a permanent chain");
        assert_eq!(
            pick_rules("", 2)[0].1,
            [
                "ct mark set numgen random mod 2",
                "dnat ip to ip daddr . meta l4proto . th dport . ct mark map @endpoints"
            ]
        );
        let slots = &rs.elements["endpoints"];
        assert_eq!(slots["10.43.0.10 . tcp . 80 . 0"], "10.42.1.2 . 8080");
        assert_eq!(slots["10.43.0.10 . tcp . 80 . 1"], "10.42.1.3 . 8080");
        assert_eq!(slots.len(), 2, "the unready endpoint has no slot");
        assert!(rs.elements["cluster-ips"].contains_key("10.43.0.10 . tcp . 80"));
        // Only the local endpoint can reach itself through the Service.
        assert_eq!(
            rs.elements["hairpin"].keys().collect::<Vec<_>>(),
            ["10.42.1.3 . 10.42.1.3"]
        );
    }

    #[test]
    fn no_ready_endpoint_means_terminating_ones_then_reject() {
        let mut t = ep(5, false, false);
        t.serving = true;
        t.terminating = true;
        let rs = render(&cfg(), &[svc(vec![t, ep(6, false, false)])]);
        assert_eq!(
            rs.elements["endpoints"]["10.43.0.10 . tcp . 80 . 0"],
            "10.42.1.5 . 8080"
        );
        let rs = render(&cfg(), &[svc(vec![ep(6, false, false)])]);
        assert!(rs.chains.is_empty());
        assert_eq!(
            rs.elements["no-endpoint-services"]["10.43.0.10 . tcp . 80"],
            "goto reject-chain"
        );
        assert!(rs.elements["service-ips"].is_empty());
        assert!(rs.elements["cluster-ips"].is_empty());
    }

    #[test]
    fn node_ports_masquerade_unless_external_traffic_is_local() {
        let mut s = svc(vec![ep(2, true, false), ep(3, true, true)]);
        s.node_port = Some(30080);
        let rs = render(&cfg(), &[s.clone()]);
        assert_eq!(
            rs.elements["service-nodeports"]["tcp . 30080"],
            "goto np-masq-pick-2"
        );
        assert_eq!(
            pick_rules("np-", 2)[1].1,
            ["jump mark-for-masquerade", "goto np-pick-2"]
        );
        assert_eq!(
            rs.elements["nodeport-endpoints"]["tcp . 30080 . 1"],
            "10.42.1.3 . 8080"
        );
        s.external_local = true;
        let rs = render(&cfg(), &[s.clone()]);
        assert_eq!(
            rs.elements["service-nodeports"]["tcp . 30080"], "goto np-pick-1",
            "no masquerade, the local endpoint only"
        );
        assert_eq!(
            rs.elements["nodeport-endpoints"]["tcp . 30080 . 0"],
            "10.42.1.3 . 8080"
        );
        // No local endpoint: external traffic is refused, internal still served.
        s.endpoints = vec![ep(2, true, false)];
        let rs = render(&cfg(), &[s]);
        assert_eq!(
            rs.elements["no-endpoint-nodeports"]["tcp . 30080"],
            "goto reject-chain"
        );
        assert!(rs.elements["service-ips"].contains_key("10.43.0.10 . tcp . 80"));
    }

    #[test]
    fn affinity_remembers_clients_per_endpoint() {
        let mut s = svc(vec![ep(2, true, false)]);
        s.affinity_timeout = Some(10800);
        let rs = render(&cfg(), &[s]);
        assert_eq!(
            rs.sets["affinity-default/web/tcp/http__10.42.1.2/8080"],
            10800
        );
        let chain = &rs.chains["svc-default/web/tcp/http"];
        assert!(
            chain
                .iter()
                .any(|r| r
                    .starts_with("ip saddr @affinity-default/web/tcp/http__10.42.1.2/8080 goto"))
        );
        assert!(rs.chains["ep-default/web/tcp/http__10.42.1.2/8080"]
            .iter()
            .any(|r| r == "update @affinity-default/web/tcp/http__10.42.1.2/8080 { ip saddr }"));
        assert_eq!(
            rs.elements["service-ips"]["10.43.0.10 . tcp . 80"],
            "goto svc-default/web/tcp/http"
        );
    }

    #[test]
    fn one_endpoint_changed_sends_a_few_lines() {
        let mut many: Vec<ServicePort> = (0..100)
            .map(|i| {
                let mut s = svc(vec![ep(2, true, false), ep(3, true, false)]);
                s.name = format!("web{i}");
                s.cluster_ips = vec![Ipv4Addr::new(10, 43, 1, i as u8)];
                s
            })
            .collect();
        let c = cfg();
        let old = render(&c, &many);
        assert_eq!(
            script(&c, Some(&old), &old),
            "",
            "nothing changed, nothing sent"
        );
        many[7].endpoints.push(ep(9, true, false));
        let new = render(&c, &many);
        let diff = script(&c, Some(&old), &new);
        assert_eq!(diff.lines().count(), 3, "{diff}");
        assert!(!diff.contains("chain"), "{diff}");
        assert!(
            diff.contains("10.43.1.7 . tcp . 80 . 2 : 10.42.1.9 . 8080"),
            "{diff}"
        );
        assert!(diff.contains("delete element ip berth-proxy service-ips { 10.43.1.7 . tcp . 80 }"));
        // Back again: the slot goes. Past the permanent counts, a chain is made and
        // goes when nobody uses it, after the elements that send packets to it.
        let back = script(&c, Some(&new), &old);
        assert!(
            back.contains("delete element ip berth-proxy endpoints"),
            "{back}"
        );
        many[7].endpoints = (1..=20).map(|i| ep(i, true, false)).collect();
        let big = render(&c, &many);
        assert!(script(&c, Some(&old), &big).contains("add chain ip berth-proxy pick-20"));
        let back = script(&c, Some(&big), &old);
        let elem = back
            .find("delete element ip berth-proxy service-ips")
            .unwrap();
        let chain = back.find("delete chain ip berth-proxy pick-20").unwrap();
        assert!(elem < chain, "{back}");
        // The first sync replaces the whole table.
        let full = script(&c, None, &old);
        assert!(full.starts_with("add table ip berth-proxy\ndelete table ip berth-proxy\n"));
    }
}
