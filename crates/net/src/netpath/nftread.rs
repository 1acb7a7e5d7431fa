//! Reading berth's own nftables tables back (`nft get element`, `nft list chain`): map
//! elements with their counters, a chain's rules. (`nft -j get element` prints text in
//! nft 1.0, so the text form is parsed.)

use std::process::Command;

use crate::error::{Error, Result};

/// One map element read back: key, counter, value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// The key, as nft prints it.
    pub key: String,
    /// Packets counted on it.
    pub packets: u64,
    /// The value (a verdict, or an address and port).
    pub value: String,
}

pub(super) fn nft(args: &[&str]) -> Result<Option<String>> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .map_err(|e| Error::io("run nft", e))?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such file or directory") {
        return Ok(None);
    }
    Err(Error::Nft(format!(
        "nft {}: {}",
        args.join(" "),
        err.trim()
    )))
}

/// Parses the elements of a map listing (`elements = { K counter packets N bytes B : V,
/// ... }`).
pub fn parse_elements(listing: &str) -> Vec<Element> {
    let Some(start) = listing.find("elements = {") else {
        return Vec::new();
    };
    let body = &listing[start + "elements = {".len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split(',')
        .filter_map(|e| {
            let e = e.trim();
            let (left, value) = e.split_once(" : ")?;
            let (key, packets) = match left.split_once(" counter packets ") {
                Some((k, rest)) => (
                    k,
                    rest.split_whitespace()
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0),
                ),
                None => (left, 0),
            };
            Some(Element {
                key: key.trim().to_string(),
                packets,
                value: value.trim().to_string(),
            })
        })
        .collect()
}

/// The elements of `map` in `table` with these keys (those that exist).
pub(super) fn get(table: &str, map: &str, keys: &[String]) -> Result<Vec<Element>> {
    let set = format!("{{ {} }}", keys.join(", "));
    Ok(nft(&["get", "element", "ip", table, map, &set])?
        .map(|l| parse_elements(&l))
        .unwrap_or_default())
}

/// The rules of `chain` in `table` as nft prints them (empty when it does not exist).
pub(super) fn chain_rules(table: &str, chain: &str) -> Result<Vec<String>> {
    Ok(nft(&["list", "chain", "ip", table, chain])?
        .map(|l| {
            l.lines()
                .map(str::trim)
                .filter(|r| {
                    !r.is_empty() && !r.starts_with("table") && !r.starts_with("chain") && *r != "}"
                })
                .map(String::from)
                .collect()
        })
        .unwrap_or_default())
}
