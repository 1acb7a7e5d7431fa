//! The DaemonSet controller, as kube's: one pod on every node the template fits (its
//! nodeSelector and node affinity, the node's taints against its tolerations plus the
//! ones kube adds to daemon pods), placed through the scheduler with an affinity to
//! that node's name; pods go from nodes that stop fitting; a new template replaces the
//! pods node by node within maxUnavailable (or starts the new pod first within
//! maxSurge), or waits for their deletion with OnDelete. Revisions are kept as
//! ControllerRevisions, so `kubectl rollout history/undo` work.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_pods::readiness;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::informer::Change;
use crate::{owner, podcontrol, revisions, Error, Shared};

type Ctx = crate::RevisionedOwner;

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let (base, queue) = crate::pod_owner(
        shared,
        &shared.daemonsets,
        "daemonset-controller",
        berth_pods::identities::DAEMONSET,
    );
    // Any node change may change where every DaemonSet runs.
    let all = shared.daemonsets.store();
    let nodes = shared.nodes.trigger(move |c: &Change<'_, Node>| {
        let relevant = match c {
            Change::Applied { old: Some(o), new } => {
                o.metadata.labels != new.metadata.labels || o.spec != new.spec
            }
            _ => true,
        };
        if !relevant {
            return Vec::new();
        }
        all.state()
            .iter()
            .map(|d| ObjectRef::from_obj(d.as_ref()))
            .collect()
    });
    let ctx = Arc::new(crate::RevisionedOwner {
        base,
        revisions: shared.revisions_by_owner.clone(),
    });
    let queue = futures_util::stream::select(queue, nodes);
    let node_store = shared.nodes.store();
    let reconcile = move |ds, ctx| reconcile(ds, ctx, node_store.clone());
    crate::drive(
        "daemonset",
        shared.daemonsets.store(),
        queue,
        reconcile,
        ctx,
    )
}

/// The tolerations kube adds to every daemon pod (so it stays on nodes that are not
/// ready, unreachable, under pressure, or cordoned).
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// The daemon pod's template with kube's tolerations added.
fn with_tolerations(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(spec) = t.spec.as_mut() {
        let extra = daemon_tolerations(spec.host_network == Some(true));
        let tols = spec.tolerations.get_or_insert_with(Vec::new);
        for e in extra {
            if !tols.iter().any(|x| x.key == e.key && x.effect == e.effect) {
                tols.push(e);
            }
        }
    }
    t
}

/// Whether the pod should start on the node, and whether one there should stay (a
/// NoSchedule taint keeps new pods off but leaves running ones).
fn fits(pod: &Pod, node: &Node) -> (bool, bool) {
    if berth_scheduler::filter::node_affinity(pod, node).is_err() {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let tolerated = |effect: &str| {
        taints.iter().filter(|t| t.effect == effect).all(|t| {
            tols.iter()
                .any(|tol| berth_scheduler::filter::tolerates(tol, t))
        })
    };
    let stays = tolerated("NoExecute");
    (stays && tolerated("NoSchedule"), stays)
}

/// The node a daemon pod is for: its nodeName, or the name its affinity requires.
fn node_of(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields
            .iter()
            .flatten()
            .find(|f| f.key == "metadata.name" && f.operator == "In")
            .and_then(|f| f.values.as_ref()?.first().cloned())
    })
}

/// A daemon pod for `node`: placed by the scheduler through a required affinity to
/// the node's name (replacing the template's required terms, already checked).
fn pod_for(template: &PodTemplateSpec, node: &str) -> Pod {
    let mut pod = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: template.spec.clone(),
        status: None,
    };
    if let Some(spec) = pod.spec.as_mut() {
        let term = NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            match_expressions: None,
        };
        let aff = spec.affinity.get_or_insert_with(Affinity::default);
        let na = aff.node_affinity.get_or_insert_with(NodeAffinity::default);
        na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: vec![term],
        });
    }
    pod
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>, nodes: Store<Node>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.metadata.name.clone().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let template = with_tolerations(&spec.template);

    // The current revision; its hash labels the pods made from it.
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    let (existing, cur) = ctx
        .revisions(ds.as_ref(), &spec.template, collisions)
        .await?;
    let hash = cur
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(revisions::HASH_LABEL))
        .cloned()
        .unwrap_or_default();
    let generation = ds.metadata.generation.unwrap_or(0).to_string();

    // Expectations before the pods: a creation seen in between must not satisfy them
    // while an older list is used.
    let satisfied = ctx.expectations.satisfied(&uid);
    let pods = ctx.pods.owned(&uid);
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        by_node
            .entry(node_of(p).unwrap_or_default())
            .or_default()
            .push(p.clone());
    }
    let is_current = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(revisions::HASH_LABEL))
            == Some(&hash)
    };
    // The template as a pod, its own node affinity intact, to test nodes with.
    let probe = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: template.spec.clone(),
        status: None,
    };
    let nodes = nodes.state();
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    // Whether surging (a node may hold an old and a new pod): by the nodes the
    // template fits now, a count that only moves with the nodes.
    let ru_surge = rolling(&spec, nodes.len() as i32).1;
    let mut create: Vec<String> = Vec::new();
    let mut delete: Vec<Arc<Pod>> = Vec::new();
    let mut wanted: Vec<(String, Vec<Arc<Pod>>)> = Vec::new();
    let mut misscheduled = 0;
    let mut known: HashSet<String> = HashSet::new();
    for node in &nodes {
        let n = node.metadata.name.clone().unwrap_or_default();
        known.insert(n.clone());
        let (run, stay) = fits(&probe, node);
        let mut here = by_node.remove(&n).unwrap_or_default();
        if run || (stay && !here.is_empty()) {
            // Failed pods are replaced; of several, the oldest stays.
            let (failed, mut live): (Vec<_>, Vec<_>) = here.drain(..).partition(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
            });
            delete.extend(failed);
            live.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let surge = ru_surge > 0;
            // Under surge, an old and a new pod may share a node for a while.
            let keep = if surge { 2 } else { 1 };
            if live.len() > keep {
                delete.extend(live.drain(keep..));
            }
            if live.is_empty() && run {
                create.push(n.clone());
            }
            wanted.push((n, live));
        } else if !here.is_empty() {
            misscheduled += here.len();
            delete.extend(here);
        }
    }
    // Pods for nodes that are gone.
    for (n, ps) in by_node {
        if !known.contains(&n) {
            delete.extend(ps);
        }
    }

    // Rolling update: old pods go within maxUnavailable, or new ones start first
    // within maxSurge.
    let desired = wanted.len() as i32;
    let (max_unavailable, max_surge) = rolling(&spec, desired);
    let on_delete = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete");
    if !on_delete {
        let available = |p: &Pod| readiness::is_available(p, min_ready, now);
        let unavailable_nodes = wanted
            .iter()
            .filter(|(_, ps)| !ps.iter().any(|p| available(p)))
            .count() as i32;
        let mut budget = (max_unavailable - unavailable_nodes).max(0);
        let mut surge_budget = max_surge;
        for (n, ps) in &wanted {
            let (new, old): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
                ps.iter().partition(|p| is_current(p));
            if old.is_empty() {
                continue;
            }
            if max_surge > 0 {
                match new.first() {
                    Some(np) if available(np) => delete.extend(old.into_iter().cloned()),
                    Some(_) => {}
                    None if surge_budget > 0 => {
                        surge_budget -= 1;
                        create.push(n.clone());
                    }
                    None => {}
                }
                continue;
            }
            // An old pod that is not available anyway costs nothing to replace.
            let free = old.iter().all(|p| !available(p));
            if free || budget > 0 {
                if !free {
                    budget -= 1;
                }
                delete.extend(old.into_iter().cloned());
            }
        }
    }

    if satisfied {
        if let Some(msg) = ctx.delete_pods(ds.as_ref(), &delete).await {
            return Err(Error::Failed(format!("deleting pods: {msg}")));
        }
        let reference = owner::reference_to(ds.as_ref());
        let prefix = crate::generate_prefix(&name);
        let failed = ctx
            .create_pods(ds.as_ref(), create.len(), |i| {
                let mut t = template.clone();
                let m = t.metadata.get_or_insert_with(Default::default);
                let l = m.labels.get_or_insert_with(BTreeMap::new);
                l.insert(revisions::HASH_LABEL.into(), hash.clone());
                l.insert("pod-template-generation".into(), generation.clone());
                let p = pod_for(&t, &create[i]);
                let mut pod = podcontrol::from_template(
                    &PodTemplateSpec {
                        metadata: Some(p.metadata),
                        spec: p.spec,
                    },
                    reference.clone(),
                    &ns,
                    None,
                    Some(prefix.clone()),
                );
                pod.metadata.namespace = Some(ns.clone());
                pod
            })
            .await;
        if failed.is_some() {
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    }

    // Old revisions beyond the limit go (not those pods still carry).
    let in_use: HashSet<String> = pods
        .iter()
        .filter_map(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get(revisions::HASH_LABEL)
                .cloned()
        })
        .collect();
    revisions::trim(
        &ctx.client,
        &existing,
        cur.metadata.name.as_deref().unwrap_or_default(),
        &in_use,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    let on = |f: &dyn Fn(&Pod) -> bool| {
        wanted
            .iter()
            .filter(|(_, ps)| ps.iter().any(|p| f(p)))
            .count() as i32
    };
    let scheduled = wanted.iter().filter(|(_, ps)| !ps.is_empty()).count() as i32;
    let ready = on(&|p| readiness::is_ready(p));
    let available = on(&|p| readiness::is_available(p, min_ready, now));
    let status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: scheduled,
        number_misscheduled: misscheduled as i32,
        number_ready: ready,
        number_available: Some(available),
        number_unavailable: Some((desired - available).max(0)),
        updated_number_scheduled: Some(on(&|p| is_current(p))),
        observed_generation: ds.metadata.generation,
        collision_count: collisions,
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    if crate::status_differs(&ds.status.clone().unwrap_or_default(), &status) {
        Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(crate::status_patch(&status, &[])),
            )
            .await?;
    }
    if min_ready > 0 && ready > available {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

/// maxUnavailable and maxSurge as numbers of nodes, of `desired` (both rounded up,
/// as kube resolves them for DaemonSets; never both 0).
fn rolling(spec: &k8s_openapi::api::apps::v1::DaemonSetSpec, desired: i32) -> (i32, i32) {
    let ru = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let scaled = |v| crate::deployment::util::scaled(v, desired, true);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()));
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()));
    if unavailable == 0 && surge == 0 {
        (1, 0)
    } else {
        (unavailable, surge)
    }
}
