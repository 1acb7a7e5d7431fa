//! PodTopologySpread, as kube-scheduler's plugin decides it: for each of the pod's
//! topologySpreadConstraints, the matching pods are counted per domain (the values of
//! the topology key among the nodes the pod could go to); a DoNotSchedule constraint
//! keeps the pod out of domains where it would raise the skew — its domain's count
//! minus the emptiest's — above maxSkew, a ScheduleAnyway one makes fuller domains
//! score lower. A pod without constraints that has a controller is spread by
//! hostname among its controller's pods, as kube's default constraints do.

use std::collections::{BTreeMap, HashMap};

use berth_pods::labels;
use k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::cache::{Cache, PodFacts};
use crate::filter::{self, Reason};

/// One constraint with the pod counts of its domains.
struct Counted {
    key: String,
    max_skew: i64,
    /// The count in the emptiest domain (0 when there are fewer than minDomains).
    min: i64,
    /// Whether the pod itself matches the selector (it adds one where it goes).
    own: i64,
    counts: HashMap<String, i64>,
    /// How much the constraint weighs in the score (kube's log of the domain count).
    weight: f64,
    /// Which pods count, and in which namespace.
    selector: LabelSelector,
    namespace: String,
}

/// What a pod's spreading decides, worked out once for all nodes.
pub struct Spread<'a> {
    hard: Vec<Counted>,
    soft: Vec<Counted>,
    /// Default spreading: node → pods of the pod's controller there.
    by_controller: Option<&'a HashMap<String, u32>>,
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a String> {
    node.metadata.labels.as_ref()?.get(key)
}

/// The constraint's selector with its matchLabelKeys taken from the pod's labels.
fn selector(c: &TopologySpreadConstraint, pod_labels: &BTreeMap<String, String>) -> LabelSelector {
    let mut sel = c.label_selector.clone().unwrap_or_default();
    for k in c.match_label_keys.iter().flatten() {
        if let Some(v) = pod_labels.get(k) {
            sel.match_labels
                .get_or_insert_with(Default::default)
                .insert(k.clone(), v.clone());
        }
    }
    sel
}

fn count(c: &TopologySpreadConstraint, pod: &Pod, facts: &PodFacts, cache: &Cache) -> Counted {
    let sel = selector(c, &facts.labels);
    let honour_affinity = c.node_affinity_policy.as_deref() != Some("Ignore");
    let honour_taints = c.node_taints_policy.as_deref() == Some("Honor");
    let key = c.topology_key.clone();
    // The domains: the key's values among the nodes the pod may be placed on.
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut eligible: HashMap<&str, &String> = HashMap::new();
    for info in cache.nodes() {
        let Some(v) = label(&info.node, &key) else {
            continue;
        };
        if honour_affinity && filter::node_affinity(pod, &info.node).is_err() {
            continue;
        }
        if honour_taints && filter::taint_toleration(pod, &info.node).is_err() {
            continue;
        }
        counts.entry(v.clone()).or_default();
        eligible.insert(info.node.metadata.name.as_deref().unwrap_or_default(), v);
    }
    for (node, other) in cache.placed() {
        if other.deleting || other.namespace != facts.namespace {
            continue;
        }
        if let Some(v) = eligible.get(node) {
            if labels::matches(&sel, &other.labels) {
                *counts.entry((*v).clone()).or_default() += 1;
            }
        }
    }
    let min_domains = c.min_domains.unwrap_or(1).max(1) as usize;
    let min = if counts.len() < min_domains {
        0
    } else {
        counts.values().copied().min().unwrap_or(0)
    };
    Counted {
        key,
        max_skew: i64::from(c.max_skew.max(1)),
        min,
        own: i64::from(labels::matches(&sel, &facts.labels)),
        weight: ((counts.len() + 2) as f64).ln(),
        counts,
        selector: sel,
        namespace: facts.namespace.clone(),
    }
}

impl<'a> Spread<'a> {
    /// The spreading of `pod`, or None when it has neither constraints nor a
    /// controller.
    pub fn of(pod: &Pod, cache: &'a Cache) -> Option<Spread<'a>> {
        let facts = PodFacts::of(pod);
        let constraints = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or_default();
        if constraints.is_empty() {
            let mine = cache.controller_pods(facts.controller.as_deref()?)?;
            return Some(Spread {
                hard: Vec::new(),
                soft: Vec::new(),
                by_controller: Some(mine),
            });
        }
        let (mut hard, mut soft) = (Vec::new(), Vec::new());
        for c in constraints {
            let counted = count(c, pod, &facts, cache);
            if c.when_unsatisfiable == "ScheduleAnyway" {
                soft.push(counted);
            } else {
                hard.push(counted);
            }
        }
        Some(Spread {
            hard,
            soft,
            by_controller: None,
        })
    }

    /// Whether the pod may go to `node` under the DoNotSchedule constraints.
    pub fn filter(&self, node: &Node) -> Result<(), Reason> {
        self.filter_without(node, &[])
    }

    /// Whether the pod may go to `node` once the pods `gone` (placed on `node`) are
    /// deleted, as preemption asks: they no longer count in the node's domain, which
    /// may become the emptiest.
    pub fn filter_without(&self, node: &Node, gone: &[&PodFacts]) -> Result<(), Reason> {
        for c in &self.hard {
            let Some(v) = label(node, &c.key) else {
                return Err(
                    "node(s) didn't match pod topology spread constraints (missing required label)"
                        .into(),
                );
            };
            let leaving = gone
                .iter()
                .filter(|g| {
                    !g.deleting
                        && g.namespace == c.namespace
                        && labels::matches(&c.selector, &g.labels)
                })
                .count() as i64;
            let here = c.counts.get(v).copied().unwrap_or(0) - leaving;
            if here + c.own - c.min.min(here) > c.max_skew {
                return Err("node(s) didn't match pod topology spread constraints".into());
            }
        }
        Ok(())
    }

    /// Whether anything here scores nodes.
    pub fn scores(&self) -> bool {
        !self.soft.is_empty() || self.by_controller.is_some()
    }

    /// The node's raw spreading score: higher is fuller (worse).
    pub fn crowding(&self, node: &Node) -> f64 {
        if let Some(mine) = &self.by_controller {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            return f64::from(mine.get(name).copied().unwrap_or(0));
        }
        self.soft
            .iter()
            .map(|c| match label(node, &c.key) {
                Some(v) => c.counts.get(v).copied().unwrap_or(0) as f64 * c.weight,
                None => 0.0,
            })
            .sum()
    }
}
