//! Service IP and node port repair, as kube-apiserver's repair loops: a reservation
//! under /registry/ranges/ whose Service is gone (deleted just before a crash, say,
//! between the Service's removal and the release) is released, so the address or
//! port can be given out again. A reservation is released only when two passes in
//! a row find it unclaimed and unchanged, so one made for a Service being created
//! at that moment is never taken away.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_store::Store;
use serde_json::Value;

use crate::resources;
use crate::state::Api;

/// Where reservations are kept.
const RANGES: &str = "/registry/ranges/";

/// Reservations found unclaimed by a pass: key → its revision then.
pub type Suspects = HashMap<String, i64>;

/// The reservations a Service holds: (range, value) of its cluster IP and each
/// node port.
pub(crate) fn reservations(svc: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if ip != "None" && !ip.is_empty() {
            out.push(("serviceips", ip.to_string()));
        }
    }
    for p in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            out.push(("servicenodeports", np.to_string()));
        }
    }
    out
}

/// The owner a Service's reservations name ("namespace/name").
pub(crate) fn owner(svc: &Value) -> String {
    let m = |k: &str| {
        svc.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!("{}/{}", m("namespace"), m("name"))
}

/// What the Services hold: (range, value, owner).
fn held(api: &Api) -> HashSet<(String, String, String)> {
    let svc = resources::find("", "v1", "services").expect("served");
    let mut out = HashSet::new();
    for (_, o) in api.hub.under(&svc.prefix()) {
        let owner = owner(&o);
        for (range, value) in reservations(&o) {
            out.insert((range.to_string(), value, owner.clone()));
        }
    }
    out
}

/// One pass: releases what `suspects` (the last pass's) still finds unclaimed and
/// unchanged; returns this pass's suspects.
pub async fn pass(api: &Api, suspects: &Suspects) -> Suspects {
    let held = held(api);
    let page = match api.store.list(RANGES, 0, 0, None).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "repair: listing reservations");
            return Suspects::new();
        }
    };
    let mut next = Suspects::new();
    for kv in page.items {
        let key = kv.key.clone();
        let Some((range, value)) = key.strip_prefix(RANGES).and_then(|r| r.split_once('/')) else {
            continue;
        };
        let owner = String::from_utf8_lossy(&kv.value).into_owned();
        if held.contains(&(range.to_string(), value.to_string(), owner.clone())) {
            continue;
        }
        if suspects.get(&key) == Some(&kv.mod_revision) {
            match api.store.delete(&key, kv.mod_revision).await {
                Ok(_) => tracing::info!(
                    range,
                    value,
                    owner,
                    "repair: released a reservation whose Service is gone"
                ),
                Err(e) => tracing::debug!(key, error = %e, "repair: releasing"),
            }
        } else {
            next.insert(key, kv.mod_revision);
        }
    }
    next
}

/// Repairs until the task is dropped: soon after start, then every 3 minutes
/// (kube's interval).
pub async fn run(api: Arc<Api>) {
    let mut suspects = Suspects::new();
    let mut wait = Duration::from_secs(10);
    loop {
        suspects = pass(&api, &suspects).await;
        tokio::time::sleep(wait).await;
        wait = Duration::from_secs(180);
    }
}
