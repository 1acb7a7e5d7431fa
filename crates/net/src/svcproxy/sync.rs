//! Keeping the kernel's table in step: each sync renders and compares only the Service
//! ports that changed.

use std::collections::HashMap;

use crate::error::Result;

use super::render::render;
use super::script::script;
use super::{ProxyConfig, Ruleset, ServicePort};

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
