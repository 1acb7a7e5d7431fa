//! Static pods, as the kubelet runs them from `--pod-manifest-path`: each file in the
//! directory (YAML or JSON, one Pod) is a pod this node runs whatever the API server
//! says — even with no API server at all, which is how kubeadm starts a control
//! plane. Its name gets the node's appended, its UID is a hash of the file and the
//! node (an edited file is a new pod), and a *mirror pod* of it is kept in the API
//! (annotation `kubernetes.io/config.mirror`, owned by the Node) so kubectl shows it
//! and its status: deleting the mirror only makes it come back; removing the file
//! stops the pod and removes the mirror.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::is_not_found;
use crate::Ctx;

/// Marks a mirror pod (its value: the static pod's hash).
pub const MIRROR: &str = "kubernetes.io/config.mirror";
/// Where a pod came from: "file" for a static pod.
pub const SOURCE: &str = "kubernetes.io/config.source";
/// The static pod's hash (its UID).
pub const HASH: &str = "kubernetes.io/config.hash";
/// How often the directory is read (the kubelet's file source: 20 s).
const SCAN: Duration = Duration::from_secs(2);
/// How often mirrors are checked with nothing changed.
const MIRROR_CHECK: Duration = Duration::from_secs(10);

/// What the file source tells the dispatcher.
pub(crate) enum Change {
    /// A static pod, new or the same again.
    Apply(Box<Pod>),
    /// A static pod whose file went (or changed): its UID.
    Remove(String),
}

/// Whether a pod is a static pod of this agent (from a file).
pub fn is_static(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.get(SOURCE).is_some_and(|s| s == "file"))
}

/// Whether a pod in the API is a mirror of a static pod.
pub fn is_mirror(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR))
}

/// A manifest as the pod the node runs; what is wrong with it otherwise.
pub fn load(path: &Path, node: &str) -> Result<Pod, String> {
    let text = std::fs::read(path).map_err(|e| format!("read: {e}"))?;
    let mut pod: Pod = serde_yaml::from_slice(&text).map_err(|e| format!("not a Pod: {e}"))?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name is missing")?;
    if pod.spec.as_ref().is_none_or(|s| s.containers.is_empty()) {
        return Err("spec.containers is empty".into());
    }
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update(b"\0");
    h.update(&text);
    let hash = hex::encode(&h.finalize()[..16]);
    let m = &mut pod.metadata;
    m.name = Some(format!("{name}-{node}"));
    m.namespace = Some(m.namespace.clone().unwrap_or_else(|| "default".into()));
    m.uid = Some(hash.clone());
    let a = m.annotations.get_or_insert_with(BTreeMap::new);
    a.insert(SOURCE.into(), "file".into());
    a.insert(HASH.into(), hash);
    a.insert(
        "kubernetes.io/config.seen".into(),
        k8s_openapi::jiff::Timestamp::now().to_string(),
    );
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_string());
    if spec.restart_policy.is_none() {
        spec.restart_policy = Some("Always".into());
    }
    pod.status = None;
    Ok(pod)
}

/// The manifests in the directory, by path, with their modification times.
fn scan(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    rd.flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            !n.starts_with('.')
                && (n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json"))
        })
        .filter_map(|e| {
            let m = e.metadata().ok().filter(|m| m.is_file())?;
            Some((e.path(), m.modified().ok()?))
        })
        .collect()
}

/// Reads the directory until the task is aborted, telling the dispatcher of static
/// pods as they come, change and go, and keeping their mirrors.
pub(crate) async fn run(ctx: Arc<Ctx>, dir: PathBuf, tx: mpsc::Sender<Change>) {
    let node = ctx.cfg.node_name.clone();
    let mut seen: BTreeMap<PathBuf, SystemTime> = BTreeMap::new();
    let mut pods: BTreeMap<PathBuf, Pod> = BTreeMap::new();
    let mut last_mirror_check: Option<std::time::Instant> = None;
    loop {
        let now = scan(&dir);
        let mut changed = false;
        for (path, mtime) in &now {
            if seen.get(path) == Some(mtime) {
                continue;
            }
            changed = true;
            match load(path, &node) {
                Ok(p) => {
                    let old = pods.insert(path.clone(), p.clone());
                    if let Some(o) = old.filter(|o| o.metadata.uid != p.metadata.uid) {
                        let _ = tx.send(Change::Remove(uid(&o))).await;
                        delete_mirror(&ctx, &o).await;
                    }
                    let _ = tx.send(Change::Apply(Box::new(p))).await;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "static pod manifest ignored");
                    if let Some(o) = pods.remove(path) {
                        let _ = tx.send(Change::Remove(uid(&o))).await;
                        delete_mirror(&ctx, &o).await;
                    }
                }
            }
        }
        let gone: Vec<PathBuf> = pods
            .keys()
            .filter(|p| !now.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            changed = true;
            if let Some(o) = pods.remove(&path) {
                tracing::info!(pod = ?o.metadata.name, "static pod manifest removed");
                let _ = tx.send(Change::Remove(uid(&o))).await;
                delete_mirror(&ctx, &o).await;
            }
        }
        seen = now;
        if changed || last_mirror_check.is_none_or(|t| t.elapsed() >= MIRROR_CHECK) {
            for p in pods.values() {
                ensure_mirror(&ctx, p).await;
            }
            last_mirror_check = Some(std::time::Instant::now());
        }
        tokio::time::sleep(SCAN).await;
    }
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn api(ctx: &Ctx, p: &Pod) -> Api<Pod> {
    Api::namespaced(
        ctx.client.clone(),
        p.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

/// Makes the static pod's mirror if it is missing or of another version of the file.
async fn ensure_mirror(ctx: &Ctx, p: &Pod) {
    let name = p.metadata.name.clone().unwrap_or_default();
    let hash = uid(p);
    let pods = api(ctx, p);
    match pods.get_opt(&name).await {
        Ok(Some(m)) if is_mirror(&m) => {
            let same = m
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MIRROR))
                .is_some_and(|h| *h == hash);
            if same && m.metadata.deletion_timestamp.is_none() {
                return;
            }
            let _ = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
        }
        Ok(Some(_)) => {
            tracing::warn!(pod = %name, "a pod not of this node's static pods has the static pod's name: no mirror");
            return;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(pod = %name, error = %e, "reading a mirror pod failed");
            return;
        }
    }
    let node: Option<Node> = Api::<Node>::all(ctx.client.clone())
        .get_opt(&ctx.cfg.node_name)
        .await
        .ok()
        .flatten();
    let mut m = p.clone();
    m.metadata.uid = None;
    m.metadata.resource_version = None;
    m.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(MIRROR.into(), hash);
    if let Some(n) = node {
        m.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: ctx.cfg.node_name.clone(),
            uid: n.metadata.uid.unwrap_or_default(),
            controller: Some(true),
            ..Default::default()
        }]);
    }
    match pods.create(&PostParams::default(), &m).await {
        Ok(_) => {
            tracing::info!(pod = %name, "mirror pod created");
            ctx.hub.rewrite_status(&uid(p));
        }
        Err(e) => tracing::debug!(pod = %name, error = %e, "creating a mirror pod failed"),
    }
}

async fn delete_mirror(ctx: &Ctx, p: &Pod) {
    let name = p.metadata.name.clone().unwrap_or_default();
    let pods = api(ctx, p);
    if let Ok(Some(m)) = pods.get_opt(&name).await {
        if is_mirror(&m) {
            if let Err(e) = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await
            {
                if !is_not_found(&e) {
                    tracing::debug!(pod = %name, error = %e, "deleting a mirror pod failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_becomes_a_pod_named_after_the_node_with_its_hash_as_uid() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("web.yaml");
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: x}]\n",
        )
        .unwrap();
        let p = load(&f, "n1").unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
        assert!(is_static(&p) && !is_mirror(&p));
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert_eq!(load(&f, "n1").unwrap().metadata.uid.unwrap(), uid);
        assert_ne!(load(&f, "n2").unwrap().metadata.uid.unwrap(), uid);
        std::fs::write(
            &f,
            "kind: Pod\nmetadata: {name: web}\nspec: {containers: []}\n",
        )
        .unwrap();
        assert!(load(&f, "n1").unwrap_err().contains("containers"));
        std::fs::write(&f, "{not yaml").unwrap();
        assert!(load(&f, "n1").unwrap_err().contains("not a Pod"));
    }
}
