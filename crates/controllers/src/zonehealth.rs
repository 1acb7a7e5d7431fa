//! Zone health as kube's node lifecycle controller reports it: every node monitor
//! period each zone's size, its nodes not Ready and the share that are Ready, as the
//! `node_collector_*` gauges kube-controller-manager exports, and a log line when a
//! zone changes state (Normal, PartialDisruption, FullDisruption: the states that
//! set [`crate::taintrate`]'s pace) or when no node of any zone is Ready (kube's
//! "master disruption mode", in which nothing is evicted).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;

use crate::taintrate::{zone_counts, zone_state, ZoneState};

/// How often zones are looked at (kube's --node-monitor-period).
pub const PERIOD: Duration = Duration::from_secs(5);

const SIZE: &str = "node_collector_zone_size";
const UNHEALTHY: &str = "node_collector_unhealthy_nodes_in_zone";
const HEALTH: &str = "node_collector_zone_health";
const EVICTIONS: &str = "node_collector_evictions_total";

/// What changed since the last look.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    /// A zone's state changed (from None: a zone seen for the first time not Normal).
    Zone {
        /// The zone ("" for nodes without zone labels).
        zone: String,
        /// Its state before.
        from: Option<ZoneState>,
        /// Its state now.
        to: ZoneState,
    },
    /// No node of any zone is Ready now (true), or one is again (false).
    AllDown(bool),
}

/// The zones' states as last seen.
#[derive(Default)]
pub struct ZoneHealth {
    states: HashMap<String, ZoneState>,
    all_down: bool,
}

impl ZoneHealth {
    /// Looks at `nodes`: the gauges set, and what changed.
    pub fn observe(&mut self, nodes: &[Arc<Node>], threshold: f64) -> Vec<Transition> {
        let counts = zone_counts(nodes);
        let mut out = Vec::new();
        let metrics = berth_metrics::global();
        for (zone, &(ready, down)) in &counts {
            let labels = [("zone", zone.as_str())];
            let size = ready + down;
            metrics.set(
                SIZE,
                "Gauge measuring number of registered Nodes per zones.",
                &labels,
                size as f64,
            );
            metrics.set(
                UNHEALTHY,
                "Gauge measuring number of not Ready Nodes per zones.",
                &labels,
                down as f64,
            );
            metrics.set(
                HEALTH,
                "Gauge measuring percentage of healthy nodes per zone.",
                &labels,
                if size == 0 {
                    100.0
                } else {
                    100.0 * ready as f64 / size as f64
                },
            );
            let to = zone_state(ready, down, threshold);
            let from = self.states.insert(zone.clone(), to);
            if from != Some(to) && (from.is_some() || to != ZoneState::Normal) {
                out.push(Transition::Zone {
                    zone: zone.clone(),
                    from,
                    to,
                });
            }
        }
        // Zones whose last node went: their gauges go too.
        self.states.retain(|zone, _| {
            let kept = counts.contains_key(zone);
            if !kept {
                for name in [SIZE, UNHEALTHY, HEALTH] {
                    metrics.remove(name, &[("zone", zone.as_str())]);
                }
            }
            kept
        });
        let all_down = !counts.is_empty() && counts.values().all(|&(ready, _)| ready == 0);
        if all_down != self.all_down {
            self.all_down = all_down;
            out.push(Transition::AllDown(all_down));
        }
        out
    }
}

/// Logs `t` as kube's controller does.
pub fn log(t: &Transition) {
    match t {
        Transition::AllDown(true) => tracing::warn!(
            "Controller detected that all Nodes are not-Ready. Entering master disruption mode: no pod is evicted"
        ),
        Transition::AllDown(false) => tracing::info!(
            "Controller detected that some Nodes are Ready. Exiting master disruption mode"
        ),
        Transition::Zone { zone, from, to } if *to == ZoneState::Normal => {
            tracing::info!(zone, ?from, "Controller detected that zone is now in state Normal")
        }
        Transition::Zone { zone, from, to } => {
            tracing::warn!(zone, ?from, state = ?to, "Controller detected that zone is now in a disrupted state: its nodes are tainted at a slower pace, or not at all")
        }
    }
}

/// Counts a node whose pods are now to be evicted (a NoExecute taint written, or
/// swapped), by its zone, as kube's `node_collector_evictions_total`.
pub fn evicting(zone: &str) {
    berth_metrics::global().inc(
        EVICTIONS,
        "Number of Node evictions that happened since current instance of NodeController started.",
        &[("zone", zone)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str, ready: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
                "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "Unknown" }}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn states_change_once_and_zones_that_go_are_forgotten() {
        let mut h = ZoneHealth::default();
        let a: Vec<_> = (0..4).map(|i| node(&format!("a{i}"), "a", true)).collect();
        let b = node("b0", "b", true);
        let mut all = a.clone();
        all.push(b.clone());
        assert!(
            h.observe(&all, 0.55).is_empty(),
            "all Normal: nothing to say"
        );
        // Three of four down in zone a: partially disrupted, said once.
        let mut down = vec![a[0].clone()];
        down.extend((1..4).map(|i| node(&format!("a{i}"), "a", false)));
        down.push(b.clone());
        let t = h.observe(&down, 0.55);
        assert_eq!(
            t,
            [Transition::Zone {
                zone: ":\0:a".into(),
                from: Some(ZoneState::Normal),
                to: ZoneState::PartialDisruption
            }]
        );
        assert!(h.observe(&down, 0.55).is_empty());
        // Everything down: zone a fully, b fully, and all down.
        let none: Vec<_> = (0..4)
            .map(|i| node(&format!("a{i}"), "a", false))
            .chain([node("b0", "b", false)])
            .collect();
        let t = h.observe(&none, 0.55);
        assert!(t.contains(&Transition::AllDown(true)), "{t:?}");
        assert_eq!(t.len(), 3, "{t:?}");
        // Zone b's node deleted, a's back: b forgotten, a Normal, not all down.
        let t = h.observe(&a, 0.55);
        assert!(t.contains(&Transition::AllDown(false)), "{t:?}");
        assert!(!h.states.contains_key(":\0:b"));
        let text = berth_metrics::global().render();
        assert!(
            text.contains("node_collector_zone_size{zone=\":\0:a\"} 4"),
            "{text}"
        );
        assert!(!text.contains("zone=\":\0:b\""), "{text}");
    }
}
