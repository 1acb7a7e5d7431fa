//! Keeping every quota's `status.hard` and `status.used` current, as kube's
//! resourcequota controller does: a change to any object in a namespace has that
//! namespace's quotas recounted (changes a moment apart counted together), and
//! every quota is recounted every [`RESYNC`] besides. The hub tells of each change
//! as it applies it (an [`Observer`], not a watcher that can fall behind); usage
//! is counted from the hub's objects, so a recount reads no store; only a status
//! that changed is written, and a write that failed for another reason than a
//! conflict (whose change brings its own recount) is tried again a second later.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{quotas_prefix, scopes, show, used, Quota};
use crate::hub::Observer;
use crate::resources::{self, Resource};
use crate::state::Api;

/// How long changes are gathered before their namespaces are recounted.
const GATHER: Duration = Duration::from_millis(100);

/// How often every quota is recounted whatever changed (kube's controller resyncs
/// every 5 minutes).
const RESYNC: Duration = Duration::from_secs(300);

/// How long after a failed status write its namespace is recounted.
const RETRY: Duration = Duration::from_secs(1);

/// Which namespaces' quotas to recount next.
enum Due {
    /// Every namespace's.
    All,
    /// These namespaces'.
    Some(BTreeSet<String>),
}

impl Due {
    fn add(&mut self, ns: &str) {
        if let Due::Some(set) = self {
            set.insert(ns.to_string());
        }
    }
}

/// The changes seen since the last recount, and the wake-up for it.
struct Touched {
    due: Mutex<Due>,
    wake: Notify,
}

impl Touched {
    fn due(&self) -> std::sync::MutexGuard<'_, Due> {
        self.due.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is due now, leaving nothing due.
    fn take(&self) -> Due {
        std::mem::replace(&mut *self.due(), Due::Some(BTreeSet::new()))
    }
}

/// The namespace of a namespaced object's key (`/registry/GROUP/PLURAL/NS/NAME`);
/// None for a cluster-scoped one's (`/registry/GROUP/PLURAL/NAME`). Read from the
/// key's shape: this runs under the hub's lock for every change.
fn namespace_of(key: &str) -> Option<&str> {
    let mut parts = key.strip_prefix("/registry/")?.split('/');
    let (_group, _plural, ns, _name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then_some(ns)
}

impl Observer for Touched {
    fn reset(&self, _objects: &mut dyn Iterator<Item = (&str, Value)>) {
        *self.due() = Due::All;
        self.wake.notify_one();
    }

    fn changed(&self, key: &str, _object: Option<&Value>) {
        if let Some(ns) = namespace_of(key) {
            self.due().add(ns);
            self.wake.notify_one();
        }
    }
}

/// Keeps the quotas' status current for as long as the server runs.
pub async fn run(api: Arc<Api>) {
    let res = resources::find("", "v1", "resourcequotas").expect("served");
    let touched = Arc::new(Touched {
        due: Mutex::new(Due::Some(BTreeSet::new())),
        wake: Notify::new(),
    });
    // Registering resets it: everything is due at once.
    api.hub.observe("/registry/", touched.clone());
    let mut next_full = Instant::now() + RESYNC;
    let mut retry: Option<(Instant, BTreeSet<String>)> = None;
    loop {
        let retry_at = retry.as_ref().map(|(at, _)| *at);
        tokio::select! {
            _ = touched.wake.notified() => tokio::time::sleep(GATHER).await,
            _ = tokio::time::sleep_until(next_full) => *touched.due() = Due::All,
            _ = tokio::time::sleep_until(retry_at.unwrap_or(next_full)), if retry_at.is_some() => {
                if let Some((_, namespaces)) = retry.take() {
                    let mut due = touched.due();
                    for ns in &namespaces {
                        due.add(ns);
                    }
                }
            }
        }
        let due = touched.take();
        if matches!(due, Due::All) {
            next_full = Instant::now() + RESYNC;
        }
        let failed = recount(&api, res, &due).await;
        if !failed.is_empty() {
            let (_, pending) =
                retry.get_or_insert_with(|| (Instant::now() + RETRY, BTreeSet::new()));
            pending.extend(failed);
        }
    }
}

/// Recounts the quotas `due` names, writing each status that changed; returns the
/// namespaces where a write failed for another reason than a conflict.
async fn recount(api: &Arc<Api>, res: &'static Resource, due: &Due) -> BTreeSet<String> {
    let quotas = match due {
        Due::All => api.hub.under(&res.prefix()),
        Due::Some(namespaces) => namespaces
            .iter()
            .flat_map(|ns| api.hub.under(&quotas_prefix(ns)))
            .collect(),
    };
    let mut failed = BTreeSet::new();
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
        let written = crate::objects::replace_internal(
            api,
            res,
            Some(ns),
            name,
            (&q, rev),
            new,
            Some("status"),
        )
        .await;
        match written {
            // A conflict means the quota changed since: that change brings a recount.
            Err(e) if e.code != 409 => {
                tracing::warn!(
                    namespace = ns,
                    quota = name,
                    "writing quota status: {}",
                    e.message
                );
                failed.insert(ns.to_string());
            }
            _ => {}
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::namespace_of;

    #[test]
    fn namespaces_come_from_namespaced_keys_only() {
        assert_eq!(namespace_of("/registry/core/pods/web/p1"), Some("web"));
        assert_eq!(
            namespace_of("/registry/apps/deployments/default/d"),
            Some("default")
        );
        assert_eq!(namespace_of("/registry/core/nodes/n1"), None);
        assert_eq!(namespace_of("/registry/core/namespaces/web"), None);
        assert_eq!(namespace_of("/elsewhere/core/pods/web/p1"), None);
    }
}
