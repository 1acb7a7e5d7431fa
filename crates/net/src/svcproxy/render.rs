//! The wanted ruleset: the fixed part of the table, and each Service port's chains,
//! map elements and sets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::{is_set, usable, Endpoint, ProxyConfig, Ruleset, ServicePort, MAPS, MASQ_MARK, TABLE};

/// The fixed part: hooked chains, maps, the masquerade marks.
pub(super) fn base(cfg: &ProxyConfig) -> String {
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
pub(super) fn pick_rules(prefix: &str, n: usize) -> [(String, Vec<String>); 2] {
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
