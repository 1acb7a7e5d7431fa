//! The nft script that turns one ruleset into another, in one transaction.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::render::base;
use super::{is_set, ProxyConfig, Ruleset, TABLE};

use crate::nft::ELEMENTS_PER_LINE;

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
            s.push_str(&crate::nft::replace_table(t));
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
    crate::nft::delete_gone(
        &mut s,
        t,
        (&old.chains, &new.chains),
        (&old.sets, &new.sets),
    );
    s
}

/// An element as nft writes it: `KEY : VALUE` in a map, `KEY` in a set.
pub(super) fn element(map: &str, k: &str, v: &str) -> String {
    if is_set(map) {
        k.to_string()
    } else {
        format!("{k} : {v}")
    }
}
