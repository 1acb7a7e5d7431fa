//! The wanted table, the nft script from one table to another, and the enforcer that
//! remembers what the kernel holds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::error::Result;
use crate::nft::ELEMENTS_PER_LINE;
use crate::svcproxy::SyncStats;

use super::{merge_ranges, PortMatch, Rule, Wanted, NODE_PROXIES_SET, NODE_PROXY_DSCP, TABLE};

/// The two verdict maps, by direction.
const MAPS: [&str; 2] = ["egress-pods", "ingress-pods"];

/// The table as nft objects: chains with their rules, interval sets with their
/// elements, verdict map elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Regular chains and their rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Interval sets and their elements (`A` or `A-B`).
    pub sets: BTreeMap<String, Vec<String>>,
    /// Map name -> pod address -> verdict.
    pub maps: BTreeMap<&'static str, BTreeMap<Ipv4Addr, String>>,
}

/// The hooked chains and the maps.
fn base() -> String {
    let t = TABLE;
    let mut s = format!("add table ip {t}\n");
    for m in MAPS {
        let _ = writeln!(s, "add map ip {t} {m} {{ type ipv4_addr : verdict; }}");
    }
    let _ = writeln!(
        s,
        "add set ip {t} {NODE_PROXIES_SET} {{ type ipv4_addr; flags interval; }}"
    );
    for (chain, prio, dir, map) in [
        ("egress", 0, "saddr", "egress-pods"),
        ("ingress", 1, "daddr", "ingress-pods"),
    ] {
        let _ = writeln!(
            s,
            "add chain ip {t} {chain} {{ type filter hook forward priority {prio}; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain ip {t} {chain}");
        let _ = writeln!(
            s,
            "add rule ip {t} {chain} ct state established,related accept"
        );
        if chain == "ingress" {
            let _ = writeln!(
                s,
                "add rule ip {t} {chain} ip saddr @{NODE_PROXIES_SET} ip dscp {NODE_PROXY_DSCP:#04x} accept"
            );
        }
        let _ = writeln!(s, "add rule ip {t} {chain} ip {dir} vmap @{map}");
    }
    s
}

/// The rules of one allow rule, as matched on a packet going `dir` (`saddr` for
/// ingress: the peer sends; `daddr` for egress).
fn rule_lines(dir: &str, rule: &Rule) -> Vec<String> {
    let peer = match &rule.peers {
        Some(set) => format!("ip {dir} @{set} "),
        None => String::new(),
    };
    if rule.ports.is_empty() {
        return vec![format!("{peer}accept")];
    }
    rule.ports
        .iter()
        .map(|PortMatch { protocol, ports }| {
            let p = protocol.nft();
            match ports {
                None => format!("{peer}meta l4proto {p} accept"),
                Some((a, b)) if a == b => format!("{peer}meta l4proto {p} th dport {a} accept"),
                Some((a, b)) => format!("{peer}meta l4proto {p} th dport {a}-{b} accept"),
            }
        })
        .collect()
}

/// The table for `wanted`.
pub fn render(wanted: &Wanted) -> Table {
    let mut t = Table::default();
    for m in MAPS {
        t.maps.insert(m, BTreeMap::new());
    }
    let proxies = (NODE_PROXIES_SET.to_string(), wanted.node_proxies.clone());
    for (name, ranges) in wanted.sets.iter().chain([(&proxies.0, &proxies.1)]) {
        let elems = merge_ranges(ranges)
            .into_iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        t.sets.insert(name.clone(), elems);
    }
    for (map, prefix, dir, pods) in [
        ("ingress-pods", "in", "saddr", &wanted.ingress),
        ("egress-pods", "out", "daddr", &wanted.egress),
    ] {
        for (ip, rules) in pods {
            let chain = format!("{prefix}-{ip}");
            let mut lines: Vec<String> = rules.iter().flat_map(|r| rule_lines(dir, r)).collect();
            lines.dedup();
            lines.push("drop".into());
            t.maps
                .get_mut(map)
                .expect("made above")
                .insert(*ip, format!("goto {chain}"));
            t.chains.insert(chain, lines);
        }
    }
    t
}

fn add_elements(s: &mut String, what: &str, name: &str, elems: &[String]) {
    for chunk in elems.chunks(ELEMENTS_PER_LINE) {
        let _ = writeln!(
            s,
            "{what} element ip {TABLE} {name} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// The nft script that turns `old` into `new` (the whole table, replaced, when `old`
/// is None), in an order nft takes in one transaction: sets and chains made and
/// filled, map elements changed, then what is gone deleted.
pub fn script(old: Option<&Table>, new: &Table) -> String {
    let t = TABLE;
    let mut s = String::new();
    let empty = Table::default();
    let old = match old {
        Some(o) => o,
        None => {
            s.push_str(&crate::nft::replace_table(t));
            s.push_str(&base());
            &empty
        }
    };
    for (name, elems) in &new.sets {
        match old.sets.get(name) {
            Some(before) if before == elems => continue,
            Some(_) => {
                let _ = writeln!(s, "flush set ip {t} {name}");
            }
            None => {
                let _ = writeln!(
                    s,
                    "add set ip {t} {name} {{ type ipv4_addr; flags interval; }}"
                );
            }
        }
        add_elements(&mut s, "add", name, elems);
    }
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            let _ = writeln!(s, "add chain ip {t} {name}");
        }
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(before) if before == rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain ip {t} {name}");
            }
            None => {}
        }
        for r in rules {
            let _ = writeln!(s, "add rule ip {t} {name} {r}");
        }
    }
    for map in MAPS {
        let (before, after) = (old.maps.get(map), new.maps.get(map));
        let gone: Vec<String> = before
            .into_iter()
            .flatten()
            .filter(|(ip, v)| after.and_then(|a| a.get(ip)) != Some(v))
            .map(|(ip, _)| ip.to_string())
            .collect();
        let added: Vec<String> = after
            .into_iter()
            .flatten()
            .filter(|(ip, v)| before.and_then(|b| b.get(ip)) != Some(v))
            .map(|(ip, v)| format!("{ip} : {v}"))
            .collect();
        add_elements(&mut s, "delete", map, &gone);
        add_elements(&mut s, "add", map, &added);
    }
    crate::nft::delete_gone(
        &mut s,
        t,
        (&old.chains, &new.chains),
        (&old.sets, &new.sets),
    );
    s
}

/// Keeps the kernel's table in step with the policies: what it holds, so that a sync
/// sends only the difference.
#[derive(Default)]
pub struct Enforcer {
    /// None until the first sync, and after a failed one: the next writes it all.
    last: Option<Table>,
}

impl Enforcer {
    /// Makes the kernel's table what `wanted` asks.
    pub fn sync(&mut self, wanted: &Wanted) -> Result<SyncStats> {
        let new = render(wanted);
        let full = self.last.is_none();
        let s = script(self.last.as_ref(), &new);
        self.last = None;
        let lines = s.lines().count();
        if lines > 0 {
            crate::nft::apply(&s)?;
        }
        self.last = Some(new);
        Ok(SyncStats { lines, full })
    }
}
