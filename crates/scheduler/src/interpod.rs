//! InterPodAffinity, as kube-scheduler's plugin decides it: a pod's required
//! affinity (run in a topology domain — a node, a zone — where pods matching each
//! term run), its required anti-affinity (never in a domain with a matching pod), the
//! anti-affinity of the pods already placed (they keep matching pods out of their
//! domains too), and the preferred terms as a score. Worked out once per attempt from
//! the cache, then asked per node.

use std::collections::{BTreeMap, HashMap, HashSet};

use berth_pods::labels;
use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm};

use crate::cache::{Cache, PodFacts};
use crate::filter::Reason;

/// A (topology key, value) pair: one domain.
type Domain = (String, String);

/// The namespaces a term reaches.
enum Namespaces {
    All,
    /// Only the namespace of the term's pod (the common case, without allocating).
    Own,
    These(HashSet<String>),
}

impl Namespaces {
    /// kube's rules: the listed namespaces plus those the namespaceSelector picks (an
    /// empty selector picks all); neither given, the namespace of the term's pod.
    fn of(term: &PodAffinityTerm, own: &str, cache: &Cache) -> Namespaces {
        if term.namespace_selector.is_none() && term.namespaces.as_ref().is_none_or(Vec::is_empty) {
            return Namespaces::Own;
        }
        let mut set: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        match &term.namespace_selector {
            Some(sel) if labels::is_empty(sel) => return Namespaces::All,
            Some(sel) => set.extend(
                cache
                    .namespaces()
                    .iter()
                    .filter(|(_, l)| labels::matches(sel, l))
                    .map(|(n, _)| n.clone()),
            ),
            None if set.is_empty() => {
                set.insert(own.to_string());
            }
            None => {}
        }
        Namespaces::These(set)
    }

    fn contains(&self, own: &str, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Own => own == ns,
            Namespaces::These(s) => s.contains(ns),
        }
    }
}

/// A term with the namespaces it reaches resolved.
struct Term<'a> {
    term: &'a PodAffinityTerm,
    /// The namespace of the pod the term is of.
    own: &'a str,
    namespaces: Namespaces,
}

impl<'a> Term<'a> {
    fn new(term: &'a PodAffinityTerm, own: &'a str, cache: &Cache) -> Term<'a> {
        Term {
            term,
            own,
            namespaces: Namespaces::of(term, own, cache),
        }
    }

    /// Whether the term selects a pod (a term without a label selector selects none).
    fn selects(&self, pod: &PodFacts) -> bool {
        self.namespaces.contains(self.own, &pod.namespace)
            && self
                .term
                .label_selector
                .as_ref()
                .is_some_and(|s| labels::matches(s, &pod.labels))
    }

    fn key(&self) -> &str {
        &self.term.topology_key
    }
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a String> {
    node.metadata.labels.as_ref()?.get(key)
}

/// Domain → how many placed pods put it in a set (so that preemption can tell when
/// taking some away empties it).
type Counted = HashMap<Domain, u32>;

fn count(set: &mut Counted, d: Domain) {
    *set.entry(d).or_default() += 1;
}

fn uncount(set: &mut Counted, d: &Domain) {
    if let Some(n) = set.get_mut(d) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            set.remove(d);
        }
    }
}

/// What one pod's placement must respect, worked out once for all nodes.
#[derive(Clone, Default)]
pub struct InterPod {
    /// The topology keys of the pod's required affinity terms.
    affinity_keys: Vec<String>,
    /// Domains holding a pod that matches all the affinity terms.
    affinity: Counted,
    /// The pod matches all its own affinity terms (the first of a group may go
    /// anywhere while no pod matches).
    matches_own_affinity: bool,
    /// Domains the pod's anti-affinity forbids.
    anti: Counted,
    /// Domains the anti-affinity of placed pods forbids to this one.
    existing_anti: Counted,
    /// Domain → the preferred terms' weight there (negative for anti-affinity).
    preferred: HashMap<Domain, i64>,
}

/// The pod's required terms, resolved.
struct Required<'a> {
    affinity: Vec<Term<'a>>,
    anti: Vec<Term<'a>>,
}

impl<'a> Required<'a> {
    fn of(pod: &'a Pod, own: &'a str, cache: &Cache) -> Required<'a> {
        let aff = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let terms = |t: Option<&'a Vec<PodAffinityTerm>>| -> Vec<Term<'a>> {
            t.into_iter()
                .flatten()
                .map(|t| Term::new(t, own, cache))
                .collect()
        };
        Required {
            affinity: terms(aff.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            anti: terms(
                aff.and_then(|a| a.pod_anti_affinity.as_ref())
                    .and_then(|a| {
                        a.required_during_scheduling_ignored_during_execution
                            .as_ref()
                    }),
            ),
        }
    }
}

impl InterPod {
    /// The constraints on `pod`, or None when it has none and no placed pod keeps
    /// any away (the common case costs nothing).
    pub fn of(pod: &Pod, cache: &Cache) -> Option<InterPod> {
        let facts = PodFacts::of(pod);
        let aff = pod.spec.as_ref()?.affinity.as_ref();
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        let own = facts.namespace.as_str();
        let Required {
            affinity: required,
            anti,
        } = Required::of(pod, own, cache);
        let preferred: Vec<(Term, i64)> = pa
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .map(|w| {
                (
                    Term::new(&w.pod_affinity_term, own, cache),
                    i64::from(w.weight),
                )
            })
            .chain(
                paa.and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .into_iter()
                .flatten()
                .map(|w| {
                    (
                        Term::new(&w.pod_affinity_term, own, cache),
                        -i64::from(w.weight),
                    )
                }),
            )
            .collect();
        let mut out = InterPod {
            affinity_keys: required.iter().map(|t| t.key().to_string()).collect(),
            matches_own_affinity: required.iter().all(|t| t.selects(&facts)),
            ..Default::default()
        };
        // Placed pods whose anti-affinity reaches this pod.
        for (node, other) in cache.placed_with_anti_affinity() {
            let Some(n) = cache.node(node) else { continue };
            for t in &other.anti_affinity {
                let term = Term::new(t, &other.namespace, cache);
                if term.selects(&facts) {
                    if let Some(v) = label(&n.node, term.key()) {
                        count(&mut out.existing_anti, (term.key().to_string(), v.clone()));
                    }
                }
            }
        }
        if required.is_empty() && anti.is_empty() && preferred.is_empty() {
            return (!out.existing_anti.is_empty()).then_some(out);
        }
        for (node, other) in cache.placed() {
            let Some(n) = cache.node(node) else { continue };
            let domain = |key: &str| label(&n.node, key).map(|v| (key.to_string(), v.clone()));
            if !required.is_empty() && required.iter().all(|t| t.selects(other)) {
                for d in required.iter().filter_map(|t| domain(t.key())) {
                    count(&mut out.affinity, d);
                }
            }
            for t in anti.iter().filter(|t| t.selects(other)) {
                if let Some(d) = domain(t.key()) {
                    count(&mut out.anti, d);
                }
            }
            for (t, w) in preferred.iter().filter(|(t, _)| t.selects(other)) {
                if let Some(d) = domain(t.key()) {
                    *out.preferred.entry(d).or_default() += w;
                }
            }
        }
        Some(out)
    }

    /// Whether the pod may go to `node` (kube's reasons, in kube's order).
    pub fn filter(&self, node: &Node) -> Result<(), Reason> {
        let mut all_keys = true;
        let mut present = true;
        for k in &self.affinity_keys {
            match label(node, k) {
                Some(v) => present &= self.affinity.contains_key(&(k.clone(), v.clone())),
                None => all_keys = false,
            }
        }
        let first_of_group = self.affinity.is_empty() && self.matches_own_affinity;
        if !all_keys || (!present && !first_of_group) {
            return Err("node(s) didn't match pod affinity rules".into());
        }
        let forbidden = |set: &Counted| {
            node.metadata.labels.iter().flatten().any(|(k, v)| {
                // A pair lookup per label; sets are small or empty.
                !set.is_empty() && set.contains_key(&(k.clone(), v.clone()))
            })
        };
        if forbidden(&self.anti) {
            return Err("node(s) didn't match pod anti-affinity rules".into());
        }
        if forbidden(&self.existing_anti) {
            return Err("node(s) didn't satisfy existing pods anti-affinity rules".into());
        }
        Ok(())
    }

    /// The constraints as they would be once `gone` (pods placed on `node`) are
    /// deleted: what preemption asks of each node it might take victims on. Each
    /// pod only ever added to the domains of its own node, so those are all it takes
    /// away.
    pub fn without(&self, pod: &Pod, cache: &Cache, node: &Node, gone: &[&PodFacts]) -> InterPod {
        let mut out = self.clone();
        let facts = PodFacts::of(pod);
        let required = Required::of(pod, &facts.namespace, cache);
        let domain = |key: &str| label(node, key).map(|v| (key.to_string(), v.clone()));
        for other in gone {
            if !required.affinity.is_empty() && required.affinity.iter().all(|t| t.selects(other)) {
                for d in required.affinity.iter().filter_map(|t| domain(t.key())) {
                    uncount(&mut out.affinity, &d);
                }
            }
            for t in required.anti.iter().filter(|t| t.selects(other)) {
                if let Some(d) = domain(t.key()) {
                    uncount(&mut out.anti, &d);
                }
            }
            for t in &other.anti_affinity {
                let term = Term::new(t, &other.namespace, cache);
                if term.selects(&facts) {
                    if let Some(d) = domain(term.key()) {
                        uncount(&mut out.existing_anti, &d);
                    }
                }
            }
        }
        out
    }

    /// Whether the pod has preferred terms to score by.
    pub fn prefers(&self) -> bool {
        !self.preferred.is_empty()
    }

    /// The node's raw preference score: the weights of the domains it is in.
    pub fn score(&self, node: &Node) -> i64 {
        let labels: &BTreeMap<String, String> = match node.metadata.labels.as_ref() {
            Some(l) => l,
            None => return 0,
        };
        self.preferred
            .iter()
            .filter(|((k, v), _)| labels.get(k) == Some(v))
            .map(|(_, w)| w)
            .sum()
    }
}
