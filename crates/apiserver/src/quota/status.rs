//! Keeping every quota's `status.hard` and `status.used` current, as kube's
//! resourcequota controller does: a change to any object in a namespace has that
//! namespace's quotas recounted (changes a moment apart counted together), and
//! every quota is recounted every [`RESYNC`] besides. Usage is counted from the
//! hub's objects, so a recount reads no store; only a status that changed is
//! written.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::{quotas_prefix, scopes, show, used, Quota};
use crate::resources::{self, Resource};
use crate::state::Api;

/// How long changes are gathered before their namespaces are recounted.
const GATHER: Duration = Duration::from_millis(100);

/// How often every quota is recounted whatever changed (kube's controller resyncs
/// every 5 minutes).
const RESYNC: Duration = Duration::from_secs(300);

/// Which namespaces' quotas to recount next.
enum Due {
    /// Every namespace's.
    All,
    /// These namespaces'.
    Some(BTreeSet<String>),
}

impl Due {
    fn add(&mut self, key: &str) {
        if let Due::Some(set) = self {
            if let Some((_, Some(ns), _)) = resources::from_key(key) {
                set.insert(ns.to_string());
            }
        }
    }
}

/// Keeps the quotas' status current for as long as the server runs.
pub async fn run(api: Arc<Api>) {
    let res = resources::find("", "v1", "resourcequotas").expect("served");
    let mut due = Due::All;
    let mut live = None;
    loop {
        // Subscribed before recounting, so no change falls between the two.
        let rx = match live.take() {
            Some(rx) => rx,
            None => match api.hub.subscribe("/registry/", None).await {
                Ok(sub) => sub.live,
                Err(e) => {
                    tracing::warn!("quota status: watching changes: {}", e.message);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let mut rx = rx;
        recount(&api, res, &due).await;
        due = Due::Some(BTreeSet::new());
        let first = tokio::time::timeout(RESYNC, rx.recv()).await;
        match first {
            Err(_) => due = Due::All,
            Ok(Ok(change)) => {
                due.add(&change.key);
                let until = tokio::time::Instant::now() + GATHER;
                loop {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Ok(change)) => due.add(&change.key),
                        Ok(Err(RecvError::Lagged(_))) => due = Due::All,
                        Ok(Err(RecvError::Closed)) | Err(_) => break,
                    }
                }
            }
            // Changes were missed: everything is recounted, and the watch resumes.
            Ok(Err(RecvError::Lagged(_))) => due = Due::All,
            Ok(Err(RecvError::Closed)) => {
                due = Due::All;
                continue;
            }
        }
        live = Some(rx);
    }
}

/// Recounts the quotas `due` names, writing each status that changed.
async fn recount(api: &Arc<Api>, res: &'static Resource, due: &Due) {
    let quotas = match due {
        Due::All => api.hub.under(&res.prefix()),
        Due::Some(namespaces) => namespaces
            .iter()
            .flat_map(|ns| api.hub.under(&quotas_prefix(ns)))
            .collect(),
    };
    for (key, q) in quotas {
        let Some((_, Some(ns), name)) = resources::from_key(&key) else {
            continue;
        };
        let hard = q.pointer("/spec/hard").cloned().unwrap_or(json!({}));
        let keys: Vec<String> = hard
            .as_object()
            .map(|h| h.keys().cloned().collect())
            .unwrap_or_default();
        let refs: Vec<&String> = keys.iter().collect();
        let quota = Quota {
            name: name.to_string(),
            hard: Default::default(),
            scopes: scopes::of(&q),
        };
        let now = used(&api.hub, ns, &quota, &refs);
        let used_json: serde_json::Map<String, Value> = now
            .iter()
            .map(|(k, v)| (k.clone(), json!(show(k, *v))))
            .collect();
        let status = json!({"hard": hard, "used": used_json});
        if q.get("status") == Some(&status) {
            continue;
        }
        let Some(rev) = q
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|r| r.parse::<i64>().ok())
        else {
            continue;
        };
        let mut new = (*q).clone();
        new["status"] = status;
        // A conflict means the quota changed since: that change brings a recount.
        let _ = crate::objects::replace_internal(
            api,
            res,
            Some(ns),
            name,
            (&q, rev),
            new,
            Some("status"),
        )
        .await;
    }
}
