//! The pace at which nodes that stopped being Ready get their NoExecute taints (and
//! so lose their pods), zone by zone, as kube's node lifecycle controller paces it:
//! one node per 10 s in a healthy zone (`--node-eviction-rate 0.1`); in a zone where
//! most nodes are down (`--unhealthy-zone-threshold`, 55%, and more than two) the
//! fault is likelier the network's than the nodes', so a large zone goes at a tenth
//! of that (`--secondary-node-eviction-rate`) and a small one (50 nodes or fewer,
//! `--large-cluster-size-threshold`) not at all; and when no node of any zone is
//! Ready, nothing is tainted. NoSchedule taints are never paced.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;

/// The labels a node's zone is read from (region and zone): the deprecated beta ones
/// first, then the GA ones, in kube's order.
const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";
const BETA_REGION: &str = "failure-domain.beta.kubernetes.io/region";
const BETA_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";

/// The wait of a rate too small to have a finite interval.
const FAR: Duration = Duration::from_secs(100 * 365 * 86400);

/// How soon a zone whose rate is zero is looked at again.
const RECHECK: Duration = Duration::from_secs(10);

/// The rates and thresholds (kube-controller-manager's flags of these names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvictionRates {
    /// Nodes per second tainted in a zone that is not partially disrupted.
    pub primary: f64,
    /// Nodes per second tainted in a partially disrupted zone of a large cluster.
    pub secondary: f64,
    /// The share of a zone's nodes down (with more than two) that makes it partially
    /// disrupted.
    pub unhealthy_zone_threshold: f64,
    /// Up to this many nodes, a partially disrupted zone taints none.
    pub large_cluster_size_threshold: usize,
}

impl Default for EvictionRates {
    fn default() -> Self {
        EvictionRates {
            primary: 0.1,
            secondary: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
        }
    }
}

/// A zone's health, by its nodes' Ready conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Few nodes down.
    Normal,
    /// Most nodes down (past the threshold, and more than two).
    PartialDisruption,
    /// Every node down.
    FullDisruption,
}

/// The zone of `state` whose nodes are `ready` and `down`.
pub fn zone_state(ready: usize, down: usize, threshold: f64) -> ZoneState {
    if ready == 0 && down > 0 {
        ZoneState::FullDisruption
    } else if down > 2 && down as f64 / (ready + down) as f64 >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

impl EvictionRates {
    /// Nodes per second tainted in a zone of `size` nodes in `state`; `all_down`:
    /// no node of any zone is Ready.
    pub fn rate(&self, state: ZoneState, size: usize, all_down: bool) -> f64 {
        if all_down {
            return 0.0;
        }
        match state {
            ZoneState::Normal | ZoneState::FullDisruption => self.primary,
            ZoneState::PartialDisruption if size > self.large_cluster_size_threshold => {
                self.secondary
            }
            ZoneState::PartialDisruption => 0.0,
        }
    }
}

/// The zone a node is in, keyed as kube keys it (`REGION:\0:ZONE`, the NUL because
/// neither may hold one; the key is the `zone` label of kube's node_collector
/// metrics): "" for nodes without zone labels, one zone of their own.
pub fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str, beta: &str| {
        labels
            .and_then(|l| l.get(beta).or_else(|| l.get(k)))
            .map_or("", String::as_str)
    };
    match (get(REGION, BETA_REGION), get(ZONE, BETA_ZONE)) {
        ("", "") => String::new(),
        (region, zone) => format!("{region}:\0:{zone}"),
    }
}

/// Every zone's (Ready, not Ready) node counts among `nodes`, by [`zone_of`].
pub fn zone_counts(nodes: &[std::sync::Arc<Node>]) -> BTreeMap<String, (usize, usize)> {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for n in nodes {
        let c = counts.entry(zone_of(n)).or_default();
        if berth_pods::readiness::node_is_ready(n) {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
    }
    counts
}

/// Per zone, when its next node may be tainted (a token bucket of one, as kube's).
#[derive(Default)]
pub struct Pacer {
    next: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    /// Whether `node` may get its NoExecute taint now, among `nodes` (every node):
    /// Ok takes its zone's turn; Err says when to ask again.
    pub fn take(
        &self,
        rates: &EvictionRates,
        node: &Node,
        nodes: &[std::sync::Arc<Node>],
        now: Instant,
    ) -> Result<(), Duration> {
        let zone = zone_of(node);
        let counts = zone_counts(nodes);
        let any_ready = counts.values().any(|&(ready, _)| ready > 0);
        let (ready, down) = counts.get(&zone).copied().unwrap_or_default();
        let state = zone_state(ready, down, rates.unhealthy_zone_threshold);
        let rate = rates.rate(state, ready + down, !any_ready);
        if rate <= 0.0 {
            tracing::debug!(zone, ?state, "no NoExecute taints in this zone for now");
            return Err(RECHECK);
        }
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let at = next.entry(zone).or_insert(now);
        if *at > now {
            return Err(*at - now);
        }
        // A rate so small the interval overflows waits as long as can be said.
        let interval = Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::MAX);
        *at = now.checked_add(interval).unwrap_or(now + FAR);
        Ok(())
    }

    /// Gives `node`'s zone its turn back (its taint was not written after all).
    pub fn refund(&self, node: &Node, now: Instant) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = next.get_mut(&zone_of(node)) {
            *at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: Option<&str>, ready: bool) -> std::sync::Arc<Node> {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "Unknown" }}]},
        }))
        .unwrap();
        if let Some(z) = zone {
            n.metadata.labels = Some([(ZONE.to_string(), z.to_string())].into());
        }
        std::sync::Arc::new(n)
    }

    #[test]
    fn zones_are_keyed_as_kube_keys_them() {
        let labelled = |l: &[(&str, &str)]| {
            let mut n = (*node("n", None, true)).clone();
            n.metadata.labels = Some(
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            zone_of(&n)
        };
        assert_eq!(labelled(&[]), "");
        assert_eq!(labelled(&[(REGION, "r"), (ZONE, "z")]), "r:\0:z");
        assert_eq!(labelled(&[(ZONE, "z")]), ":\0:z");
        assert_eq!(
            labelled(&[(BETA_REGION, "br"), (BETA_ZONE, "bz"), (ZONE, "z")]),
            "br:\0:bz"
        );
        assert_eq!(labelled(&[(BETA_REGION, "br"), (ZONE, "z")]), "br:\0:z");
    }

    #[test]
    fn zones_are_judged_as_kube_judges_them() {
        assert_eq!(zone_state(5, 0, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(1, 2, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(3, 3, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        let r = EvictionRates::default();
        assert_eq!(r.rate(ZoneState::Normal, 5, false), 0.1);
        assert_eq!(r.rate(ZoneState::PartialDisruption, 5, false), 0.0);
        assert_eq!(r.rate(ZoneState::PartialDisruption, 60, false), 0.01);
        assert_eq!(r.rate(ZoneState::FullDisruption, 5, false), 0.1);
        assert_eq!(r.rate(ZoneState::Normal, 5, true), 0.0);
    }

    #[test]
    fn each_zone_taints_one_node_per_interval() {
        let rates = EvictionRates::default();
        let nodes = vec![
            node("a1", Some("a"), false),
            node("a2", Some("a"), false),
            node("a3", Some("a"), true),
            node("a4", Some("a"), true),
            node("a5", Some("a"), true),
            node("b1", Some("b"), false),
            node("b2", Some("b"), true),
        ];
        let pacer = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(pacer.take(&rates, &nodes[0], &nodes, t0), Ok(()));
        // The zone's next turn is 10 s on; another zone has its own.
        assert_eq!(
            pacer.take(&rates, &nodes[1], &nodes, t0 + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        assert_eq!(pacer.take(&rates, &nodes[5], &nodes, t0), Ok(()));
        assert_eq!(
            pacer.take(&rates, &nodes[1], &nodes, t0 + Duration::from_secs(10)),
            Ok(())
        );
        // Nothing Ready anywhere: nothing tainted.
        let down: Vec<_> = nodes
            .iter()
            .map(|n| node(n.metadata.name.as_deref().unwrap(), Some("a"), false))
            .collect();
        assert_eq!(
            pacer.take(&rates, &down[0], &down, t0 + Duration::from_secs(60)),
            Err(RECHECK)
        );
    }
}
