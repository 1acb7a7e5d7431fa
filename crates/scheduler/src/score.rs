//! Scores, as kube-scheduler's default plugins weigh feasible nodes: NodeResourcesFit
//! with LeastAllocated (the emptier node wins) and NodeResourcesBalancedAllocation
//! (CPU and memory used in like proportion), each 0 to 100, weight 1; and the
//! preference plugins with kube's weights, each normalized over the feasible nodes.

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::cache::{Needs, NodeInfo};
use crate::interpod::InterPod;
use crate::quantities::{CPU, MEMORY};
use crate::spread::Spread;

/// What kube counts for a pod that requests no CPU or memory when scoring (its
/// "non-zero" requests: 100 millicores, 200 MiB), so that such pods still spread.
const DEFAULT_CPU_MILLI: i128 = 100;
const DEFAULT_MEMORY: i128 = 200 << 20;

fn non_zero(needs: &Needs, slot: usize, default: i128) -> i128 {
    match needs.requests.fixed(slot) {
        0 => default,
        v => v,
    }
}

/// The node's score for a pod needing `needs` (higher is better), 0 to 200.
pub fn score(needs: &Needs, info: &NodeInfo) -> i64 {
    let (requested, allocatable) = (info.requested_all(), info.allocatable_all());
    let fraction = |slot: usize, default: i128| {
        let alloc = allocatable.fixed(slot);
        if alloc <= 0 {
            return 1.0;
        }
        let used = requested.fixed(slot) + non_zero(needs, slot, default);
        (used as f64 / alloc as f64).min(1.0)
    };
    let fractions = [
        fraction(CPU, DEFAULT_CPU_MILLI),
        fraction(MEMORY, DEFAULT_MEMORY),
    ];
    let n = fractions.len() as f64;
    let least_allocated = fractions.iter().map(|f| (1.0 - f) * 100.0).sum::<f64>() / n;
    let mean = fractions.iter().sum::<f64>() / n;
    let std = (fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / n).sqrt();
    let balanced = (1.0 - std) * 100.0;
    (least_allocated + balanced).round() as i64
}

/// kube's plugin weights for the preference scores (its default profile).
const NODE_AFFINITY_WEIGHT: i64 = 2;
const TAINT_TOLERATION_WEIGHT: i64 = 3;
const INTER_POD_AFFINITY_WEIGHT: i64 = 2;
const TOPOLOGY_SPREAD_WEIGHT: i64 = 2;

/// `raw` scores scaled to 0-100 over the feasible nodes, higher raw better (or
/// lower, with `reverse`), as kube's plugins normalize theirs.
fn normalize(raw: &[f64], reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().fold(f64::MIN, f64::max);
    let min = raw.iter().copied().fold(f64::MAX, f64::min);
    raw.iter()
        .map(|&r| {
            if max <= min {
                return 0;
            }
            let f = (r - min) / (max - min);
            ((if reverse { 1.0 - f } else { f }) * 100.0).round() as i64
        })
        .collect()
}

/// The preferred node affinity terms' weights that hold on the node.
fn node_affinity_preference(pod: &Pod, node: &Node) -> f64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| crate::filter::term_matches(node, &t.preference))
        .map(|t| f64::from(t.weight))
        .sum()
}

/// The node's PreferNoSchedule taints the pod does not tolerate.
fn intolerable_preferences(pod: &Pod, node: &Node) -> f64 {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| {
            !tolerations
                .iter()
                .any(|tol| crate::filter::tolerates(tol, t))
        })
        .count() as f64
}

/// A preference plugin: its weight, whether lower raw scores are better, and its
/// raw score of a node.
type Plugin<'a> = (i64, bool, Box<dyn Fn(&Node) -> f64 + 'a>);

/// Adds the preference plugins' weighted, normalized scores to `feasible` (node,
/// resource score): node affinity preferences, PreferNoSchedule taints, preferred
/// pod (anti-)affinity and topology spreading. Each is computed only when it can
/// tell the nodes apart.
pub fn add_preferences(
    pod: &Pod,
    feasible: &mut [(&NodeInfo, i64)],
    inter: Option<&InterPod>,
    spread: Option<&Spread<'_>>,
) {
    let mut plugins: Vec<Plugin<'_>> = Vec::new();
    let has_node_prefs = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .is_some_and(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .is_some()
        });
    if has_node_prefs {
        plugins.push((
            NODE_AFFINITY_WEIGHT,
            false,
            Box::new(|n| node_affinity_preference(pod, n)),
        ));
    }
    let tainted = feasible.iter().any(|(i, _)| {
        i.node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.effect == "PreferNoSchedule"))
    });
    if tainted {
        plugins.push((
            TAINT_TOLERATION_WEIGHT,
            true,
            Box::new(|n| intolerable_preferences(pod, n)),
        ));
    }
    if let Some(i) = inter.filter(|i| i.prefers()) {
        plugins.push((
            INTER_POD_AFFINITY_WEIGHT,
            false,
            Box::new(|n| i.score(n) as f64),
        ));
    }
    if let Some(s) = spread.filter(|s| s.scores()) {
        plugins.push((TOPOLOGY_SPREAD_WEIGHT, true, Box::new(|n| s.crowding(n))));
    }
    for (weight, reverse, raw) in plugins {
        let raws: Vec<f64> = feasible.iter().map(|(i, _)| raw(&i.node)).collect();
        for ((_, total), s) in feasible.iter_mut().zip(normalize(&raws, reverse)) {
            *total += weight * s;
        }
    }
}
