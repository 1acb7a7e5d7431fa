//! Preemption, as kube-scheduler's DefaultPreemption decides it: when a pod fits
//! nowhere, find a node where deleting pods of lower priority would make it fit —
//! all of them removed, then as many as possible given back ("reprieved"): first
//! those whose deletion would break a PodDisruptionBudget, then the others, each
//! group highest priority first — and of those nodes the one whose victims matter
//! least: the fewest budgets broken, the lowest highest victim priority, the lowest
//! sum of priorities, the fewest victims. What victims hold on their node
//! (resources, pod count, host ports) is freed by deleting them, and so are the
//! topology domains their presence closed to the pod: its anti-affinity to them,
//! theirs to it (while its own affinity must still be met without them), and the
//! skew they add to their domain under its DoNotSchedule spread constraints. A node
//! refused for another reason is not a candidate.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::cache::{self, Cache, Needs, Taken};
use crate::filter;

/// A pod to delete so that the preemptor fits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID (the deletion's precondition).
    pub uid: String,
    /// Its priority.
    pub priority: i32,
}

/// How much a node's victims matter: the budgets they break, their highest priority,
/// the sum of their priorities, their number (the lower the better, in that order).
type Rank = (usize, i32, i64, usize);

/// The node to nominate and the pods to delete there, if preemption can help;
/// `budgets` are the cluster's PodDisruptionBudgets.
pub fn find(
    cache: &Cache,
    pod: &Pod,
    needs: &Needs,
    budgets: &[Arc<PodDisruptionBudget>],
) -> Option<(String, Vec<Victim>)> {
    let spec = pod.spec.as_ref()?;
    if spec.preemption_policy.as_deref() == Some("Never") {
        return None;
    }
    let prio = cache::priority(pod);
    let by_node = cache.placed_by_node();
    // Victims of an earlier round still going: wait for them rather than take more.
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref());
    if let Some(placed) = nominated.and_then(|n| by_node.get(n)) {
        if placed
            .iter()
            .any(|(_, t)| t.facts.deleting && t.facts.priority < prio)
        {
            return None;
        }
    }
    // Inter-pod terms, worked out once; per node, as they would be without victims.
    let inter = crate::interpod::InterPod::of(pod, cache);
    let spread = crate::spread::Spread::of(pod, cache);
    let fits_without = |info: &cache::NodeInfo, trial: &cache::NodeInfo, gone: &[&Taken]| {
        if filter::fits(pod, needs, trial).is_err() {
            return false;
        }
        let facts: Vec<&cache::PodFacts> = gone.iter().map(|t| &*t.facts).collect();
        spread
            .as_ref()
            .is_none_or(|s| s.filter_without(&info.node, &facts).is_ok())
            && inter.as_ref().is_none_or(|i| {
                i.without(pod, cache, &info.node, &facts)
                    .filter(&info.node)
                    .is_ok()
            })
    };
    let mut best: Option<(Rank, String, Vec<Victim>)> = None;
    for info in cache.nodes() {
        let name = info.node.metadata.name.as_deref().unwrap_or_default();
        let Some(placed) = by_node.get(name) else {
            continue;
        };
        let mut lower: Vec<&(&str, &Taken)> = placed
            .iter()
            .filter(|(_, t)| t.facts.priority < prio && !t.facts.deleting)
            .collect();
        if lower.is_empty() {
            continue;
        }
        let mut trial = info.clone();
        for (_, t) in &lower {
            trial.remove(t);
        }
        let mut gone: Vec<&Taken> = lower.iter().map(|(_, t)| *t).collect();
        if !fits_without(info, &trial, &gone) {
            continue;
        }
        // Give back the most important first while the pod still fits: those a budget
        // protects before the others.
        lower.sort_by_key(|(_, t)| std::cmp::Reverse(t.facts.priority));
        let (violating, others) = split_by_budgets(&lower, budgets);
        let mut victims = Vec::new();
        let mut broken = 0;
        for (group, breaks) in [(violating, true), (others, false)] {
            for (uid, t) in group {
                trial.add(t);
                let back = gone.iter().position(|g| std::ptr::eq(*g, *t));
                let spared = back.map(|i| gone.swap_remove(i));
                if fits_without(info, &trial, &gone) {
                    continue;
                }
                gone.extend(spared);
                trial.remove(t);
                broken += usize::from(breaks);
                victims.push(Victim {
                    namespace: t.facts.namespace.clone(),
                    name: t.facts.name.clone(),
                    uid: uid.to_string(),
                    priority: t.facts.priority,
                });
            }
        }
        let rank = (
            broken,
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(v.priority)).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
            best = Some((rank, name.to_string(), victims));
        }
    }
    best.map(|(_, node, victims)| (node, victims))
}

/// A potential victim: its UID and what it holds on its node.
type Candidate<'a> = &'a (&'a str, &'a Taken);

/// Splits potential victims (most important first) into those whose deletion, in
/// that order, would take a budget they are covered by below zero disruptions
/// allowed, and the others (kube's filterPodsWithPDBViolation).
fn split_by_budgets<'a>(
    pods: &[Candidate<'a>],
    budgets: &[Arc<PodDisruptionBudget>],
) -> (Vec<Candidate<'a>>, Vec<Candidate<'a>>) {
    let mut allowed: Vec<i32> = budgets
        .iter()
        .map(|b| b.status.as_ref().map_or(0, |s| s.disruptions_allowed))
        .collect();
    let (mut violating, mut others) = (Vec::new(), Vec::new());
    for p in pods {
        let facts = &p.1.facts;
        let mut breaks = false;
        for (i, b) in budgets.iter().enumerate() {
            let already = b
                .status
                .as_ref()
                .and_then(|s| s.disrupted_pods.as_ref())
                .is_some_and(|d| d.contains_key(&facts.name));
            if already || !berth_pods::disruption::covers_labels(b, &facts.namespace, &facts.labels)
            {
                continue;
            }
            allowed[i] -= 1;
            breaks |= allowed[i] < 0;
        }
        if breaks {
            violating.push(*p);
        } else {
            others.push(*p);
        }
    }
    (violating, others)
}
