//! The definitions' controller, as kube-apiextensions-apiserver's naming,
//! establishing and finalizing controllers: each definition's status says whether
//! its names are accepted and it is established (and which versions were ever
//! stored); a definition being deleted has its objects deleted, then loses its
//! cleanup finalizer and goes. Every server runs it (as every kube-apiserver runs
//! them): its writes are idempotent, and a conflict is retried on the next pass.

use std::sync::Arc;
use std::time::Duration;

use berth_store::Store;
use serde_json::{json, Value};

use super::definition::{storage_version, CLEANUP_FINALIZER};
use super::registry::{Names, Registry, PREFIX};
use crate::objects::{self, DeleteOpts};
use crate::resources;
use crate::state::Api;
use crate::status::ApiError;

/// How often every definition is looked at even without a change (a write lost to
/// a conflict, objects whose finalizers were just removed).
const RESYNC: Duration = Duration::from_secs(5);

/// Runs the controller for as long as the server does.
pub async fn run(api: Arc<Api>, registry: Arc<Registry>) {
    loop {
        for (d, names) in registry.definitions() {
            if let Err(e) = reconcile(&api, &d, &names).await {
                if e.code != 409 && e.code != 404 {
                    let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
                    tracing::warn!(definition = %name, "custom resource definition: {}", e.message);
                }
            }
        }
        let _ = tokio::time::timeout(RESYNC, registry.changed.notified()).await;
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, since: &str) -> Value {
    json!({"type": type_, "status": if status { "True" } else { "False" },
           "lastTransitionTime": since, "reason": reason, "message": message})
}

/// The status `d` should have.
pub fn desired_status(d: &Value, names: &Names, now: &str) -> Value {
    let cur = d.get("status").cloned().unwrap_or(json!({}));
    let old = |t: &str| -> Option<Value> {
        cur.get("conditions")
            .and_then(Value::as_array)?
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
    };
    // A condition keeps its transition time while its status stays.
    let with_time = |mut c: Value| -> Value {
        if let Some(o) = old(c["type"].as_str().unwrap_or("")) {
            if o["status"] == c["status"] {
                c["lastTransitionTime"] = o["lastTransitionTime"].clone();
            }
        }
        c
    };
    let mut conditions = Vec::new();
    let accepted = *names == Names::Accepted;
    match names {
        Names::Accepted => conditions.push(with_time(condition(
            "NamesAccepted",
            true,
            "NoConflicts",
            "no conflicts found",
            now,
        ))),
        Names::Conflict(reason, message) => conditions.push(with_time(condition(
            "NamesAccepted",
            false,
            reason,
            message,
            now,
        ))),
    }
    let was_established = old("Established").is_some_and(|c| c["status"] == "True");
    if accepted || was_established {
        conditions.push(with_time(condition(
            "Established",
            true,
            "InitialNamesAccepted",
            "the initial names have been accepted",
            now,
        )));
    } else {
        conditions.push(with_time(condition(
            "Established",
            false,
            "NotAccepted",
            "not all names are accepted",
            now,
        )));
    }
    if d.pointer("/metadata/deletionTimestamp").is_some() {
        conditions.push(with_time(condition(
            "Terminating",
            true,
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
            now,
        )));
    }
    let accepted_names = if accepted {
        d.pointer("/spec/names").cloned().unwrap_or(json!({}))
    } else {
        cur.get("acceptedNames")
            .cloned()
            .unwrap_or(json!({"plural": "", "kind": ""}))
    };
    let mut stored: Vec<Value> = cur
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(v) = storage_version(d) {
        if !stored.iter().any(|s| s == v) {
            stored.push(json!(v));
        }
    }
    json!({"acceptedNames": accepted_names, "conditions": conditions, "storedVersions": stored})
}

fn comparable(status: &Value) -> Value {
    let mut s = status.clone();
    for c in s
        .get_mut("conditions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(m) = c.as_object_mut() {
            m.remove("lastTransitionTime");
        }
    }
    s
}

async fn reconcile(api: &Arc<Api>, d: &Value, names: &Names) -> Result<(), ApiError> {
    let crds =
        resources::find("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("served");
    let name = d
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let want = desired_status(d, names, &objects::now());
    if comparable(&want) != comparable(d.get("status").unwrap_or(&Value::Null)) {
        let (cur, rev) = objects::read(api, crds, None, &name).await?;
        let mut new = cur.clone();
        new["status"] = desired_status(&cur, names, &objects::now());
        objects::replace_internal(api, crds, None, &name, (&cur, rev), new, Some("status")).await?;
    }
    if d.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(());
    }
    // Being deleted: its objects first, through the delete path (their own
    // finalizers hold them as they would any object), then the definition.
    let group = d
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = d
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    let prefix = format!("/registry/{group}/{plural}/");
    let left = api.hub.under(&prefix);
    let res = resources::custom()
        .iter()
        .copied()
        .find(|r| r.group == group && r.plural == plural && r.custom.is_some_and(|c| c.storage));
    if !left.is_empty() {
        let Some(res) = res else {
            // Names not accepted: nothing of its own was ever served under them.
            return Ok(());
        };
        let opts = DeleteOpts {
            grace: None,
            propagation: "Background".into(),
            uid: None,
            rv: None,
            dry_run: false,
        };
        for (key, o) in left {
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let Some((_, ns, obj)) = resources::from_key(&key) else {
                continue;
            };
            match objects::delete(api, res, ns, obj, &opts).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
    // The hub may not have every object yet: the store says when none is left. A
    // create committed after this list finds the deletion and takes itself back.
    if !api.store.list(&prefix, 0, 1, None).await?.items.is_empty() {
        return Ok(());
    }
    let (cur, rev) = objects::read(api, crds, None, &name).await?;
    let mut new = cur.clone();
    if let Some(f) = new
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        f.retain(|x| x != CLEANUP_FINALIZER);
    }
    if new != cur {
        objects::replace_internal(api, crds, None, &name, (&cur, rev), new, None).await?;
    }
    Ok(())
}

/// Starts following the definitions: served from now on, their controller running.
pub fn start(api: &Arc<Api>) -> Arc<Registry> {
    let registry = Arc::new(Registry::default());
    api.hub.observe(PREFIX, registry.clone());
    tokio::spawn(run(api.clone(), registry.clone()));
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_acceptance_and_stored_versions() {
        let d = json!({"metadata": {"name": "a.x.io"},
                       "spec": {"names": {"plural": "a", "kind": "A"},
                                "versions": [{"name": "v1", "served": true, "storage": true}]},
                       "status": {"storedVersions": ["v1beta1"]}});
        let s = desired_status(&d, &Names::Accepted, "T");
        assert_eq!(s["acceptedNames"]["kind"], "A");
        assert_eq!(s["storedVersions"], json!(["v1beta1", "v1"]));
        let types: Vec<(&str, &str)> = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(types, [("NamesAccepted", "True"), ("Established", "True")]);
        let c = desired_status(
            &d,
            &Names::Conflict("PluralConflict", "\"a\" is already in use".into()),
            "T",
        );
        assert_eq!(c["conditions"][0]["reason"], "PluralConflict");
        assert_eq!(c["conditions"][1]["status"], "False");
        // Times stay while a condition's status does.
        let mut later = d.clone();
        later["status"] = s.clone();
        let again = desired_status(&later, &Names::Accepted, "T2");
        assert_eq!(again["conditions"][0]["lastTransitionTime"], "T");
    }
}
