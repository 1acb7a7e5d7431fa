//! Making and removing a controller's pods as kube's controllers do: pods from the
//! template with a controller reference, created in slow-start batches (1, 2, 4...,
//! stopping at the first failure, so a quota or admission refusal costs one call,
//! not hundreds), and the order in which surplus pods go.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

/// A pod made from `template` for the owner `owner` in `namespace`: named `name`, or
/// generated from `generate_name` by the API server.
pub fn from_template(
    template: &PodTemplateSpec,
    owner: OwnerReference,
    namespace: &str,
    name: Option<String>,
    generate_name: Option<String>,
) -> Pod {
    let t = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name,
            generate_name,
            namespace: Some(namespace.to_string()),
            labels: t.labels,
            annotations: t.annotations,
            finalizers: t.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Runs `make(i)` for `count` items in batches of 1, 2, 4...: returns how many
/// succeeded and the first error (no batch starts after one failed).
pub async fn slow_start<T, E, F, Fut>(count: usize, mut make: F) -> (Vec<T>, Option<E>)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut done = Vec::new();
    let mut next = 0;
    let mut batch = 1.min(count);
    while batch > 0 {
        let results = join_all((next..next + batch).map(&mut make)).await;
        next += batch;
        let mut failed = None;
        for r in results {
            match r {
                Ok(v) => done.push(v),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if failed.is_some() {
            return (done, failed);
        }
        batch = (batch * 2).min(count - next);
    }
    (done, None)
}

/// Creates one pod; the error says which owner it was for.
pub async fn create(client: &kube::Client, pod: &Pod) -> Result<Pod, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), pod)
        .await
}

/// Deletes one pod: true if this call deleted it, false if it was already gone (or
/// is another pod of that name now).
pub async fn delete(client: &kube::Client, pod: &Pod) -> Result<bool, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let dp = berth_watch::delete_exactly(pod.metadata.uid.clone(), None, false);
    match Api::<Pod>::namespaced(client.clone(), ns)
        .delete(name, &dp)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sorts pods so the first are the ones to delete first, as kube's ReplicaSet
/// controller ranks them: not yet on a node, then pending before unknown before
/// running, not ready before ready, on a node crowded with their siblings before one
/// alone, ready more recently, restarted more, created more recently.
pub fn rank_for_deletion(pods: &mut [Arc<Pod>]) {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods.iter() {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per_node.entry(n).or_default() += 1;
        }
    }
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
            .unwrap_or(0)
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    pods.sort_by(|a, b| {
        let (na, nb) = (node(a), node(b));
        (!na.is_empty())
            .cmp(&!nb.is_empty())
            .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
            .then_with(|| {
                berth_pods::readiness::is_ready(a).cmp(&berth_pods::readiness::is_ready(b))
            })
            .then_with(|| {
                let c = |n: &str| per_node.get(n).copied().unwrap_or(0);
                c(&nb).cmp(&c(&na))
            })
            .then_with(|| {
                // Ready more recently goes first.
                let (ra, rb) = (
                    berth_pods::readiness::ready_since(a),
                    berth_pods::readiness::ready_since(b),
                );
                rb.cmp(&ra)
            })
            .then_with(|| restarts(b).cmp(&restarts(a)))
            .then_with(|| match (created(a), created(b)) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json).unwrap())
    }

    #[test]
    fn unplaced_then_pending_then_not_ready_then_newest_go_first() {
        let ready = |t: &str| serde_json::json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]);
        let mut pods = vec![
            pod(
                serde_json::json!({"metadata": {"name": "old-ready", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"nodeName": "a", "containers": []},
                "status": {"phase": "Running", "conditions": ready("2026-01-01T00:00:10Z")}}),
            ),
            pod(
                serde_json::json!({"metadata": {"name": "new-ready", "creationTimestamp": "2026-01-02T00:00:00Z"},
                "spec": {"nodeName": "b", "containers": []},
                "status": {"phase": "Running", "conditions": ready("2026-01-02T00:00:10Z")}}),
            ),
            pod(
                serde_json::json!({"metadata": {"name": "running-not-ready"},
                "spec": {"nodeName": "c", "containers": []}, "status": {"phase": "Running"}}),
            ),
            pod(serde_json::json!({"metadata": {"name": "pending"},
                "spec": {"nodeName": "d", "containers": []}, "status": {"phase": "Pending"}})),
            pod(serde_json::json!({"metadata": {"name": "unplaced"}, "spec": {"containers": []}})),
        ];
        rank_for_deletion(&mut pods);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "unplaced",
                "pending",
                "running-not-ready",
                "new-ready",
                "old-ready"
            ]
        );
    }

    #[tokio::test]
    async fn slow_start_doubles_and_stops_at_the_first_failure() {
        let calls = std::sync::Mutex::new(Vec::new());
        let (ok, err) = slow_start(10, |i| {
            calls.lock().unwrap().push(i);
            async move {
                if i == 4 {
                    Err(i)
                } else {
                    Ok(i)
                }
            }
        })
        .await;
        // Batches 1, 2, 4: the third batch (3..7) holds the failure; no fourth.
        assert_eq!(calls.lock().unwrap().len(), 7);
        assert_eq!(ok.len(), 6);
        assert_eq!(err, Some(4));
        let (ok, err) = slow_start(5, |i| async move { Ok::<_, ()>(i) }).await;
        assert_eq!((ok.len(), err), (5, None));
    }
}
