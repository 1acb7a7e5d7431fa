//! The node's side of the local-path provisioner: a volume the provisioner made on
//! this node is a directory (created when a pod first mounts it, as hostPath
//! DirectoryOrCreate); once the volume is deleted — its claim gone, reclaim policy
//! Delete — this removes the directory, as k3s's provisioner does with a helper pod.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use berth_pods::storage;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;

use crate::Ctx;

/// The directory of a local-path volume of this node, if `pv` is one.
fn local_dir(pv: &PersistentVolume, node: &str) -> Option<String> {
    let provisioned = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(storage::PROVISIONED_BY))
        .is_some_and(|p| p == storage::LOCAL_PATH_PROVISIONER);
    let spec = pv.spec.as_ref()?;
    let here = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
        .is_some_and(|r| {
            r.node_selector_terms.iter().any(|t| {
                t.match_expressions.iter().flatten().any(|e| {
                    e.key == "kubernetes.io/hostname"
                        && e.operator == "In"
                        && e.values.iter().flatten().any(|v| v == node)
                })
            })
        });
    let path = spec.host_path.as_ref()?.path.clone();
    // Only what the provisioner names (pvc-UID_NS_NAME) is ever removed.
    let named = Path::new(&path)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("pvc-"));
    (provisioned && here && named).then_some(path)
}

fn remove(path: &str) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => tracing::info!(path, "removed a deleted local-path volume"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path, error = %e, "removing a deleted local-path volume"),
    }
}

/// Watches volumes until the task is dropped, removing the directories of this
/// node's local-path volumes as they are deleted (or found gone by a relist).
pub async fn run(ctx: Arc<Ctx>) {
    let node = ctx.cfg.node_name.clone();
    let mut known: HashMap<String, String> = HashMap::new();
    let mut listed: HashMap<String, String> = HashMap::new();
    let mut events = watcher(
        Api::<PersistentVolume>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .backoff(berth_watch::backoff())
    .boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pv)) => {
                if let Some(d) = local_dir(&pv, &node) {
                    listed.insert(pv.metadata.name.clone().unwrap_or_default(), d);
                }
            }
            Ok(Event::InitDone) => {
                for (name, dir) in &known {
                    if !listed.contains_key(name) {
                        remove(dir);
                    }
                }
                known = std::mem::take(&mut listed);
            }
            Ok(Event::Apply(pv)) => {
                if let Some(d) = local_dir(&pv, &node) {
                    known.insert(pv.metadata.name.clone().unwrap_or_default(), d);
                }
            }
            Ok(Event::Delete(pv)) => {
                let name = pv.metadata.name.clone().unwrap_or_default();
                if let Some(d) = known.remove(&name).or_else(|| local_dir(&pv, &node)) {
                    remove(&d);
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching persistent volumes"),
        }
    }
}
