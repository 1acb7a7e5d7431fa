//! Scores, as kube-scheduler's default plugins weigh feasible nodes: NodeResourcesFit
//! with LeastAllocated (the emptier node wins) and NodeResourcesBalancedAllocation
//! (CPU and memory used in like proportion), each 0 to 100, weight 1.

use crate::cache::{Needs, NodeInfo};

/// What kube counts for a pod that requests no CPU or memory when scoring (its
/// "non-zero" requests: 100 millicores, 200 MiB), so that such pods still spread.
const DEFAULT_CPU_MILLI: i128 = 100;
const DEFAULT_MEMORY: i128 = 200 << 20;

fn non_zero(needs: &Needs, name: &str, default: i128) -> i128 {
    match needs.request(name) {
        0 => default,
        v => v,
    }
}

/// The node's score for a pod needing `needs` (higher is better), 0 to 200.
pub fn score(needs: &Needs, info: &NodeInfo) -> i64 {
    let fractions: Vec<f64> = [("cpu", DEFAULT_CPU_MILLI), ("memory", DEFAULT_MEMORY)]
        .iter()
        .map(|(r, default)| {
            let alloc = info.allocatable(r);
            if alloc <= 0 {
                return 1.0;
            }
            let used = info.requested(r) + non_zero(needs, r, *default);
            (used as f64 / alloc as f64).min(1.0)
        })
        .collect();
    let least_allocated =
        fractions.iter().map(|f| (1.0 - f) * 100.0).sum::<f64>() / fractions.len() as f64;
    let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
    let std =
        (fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / fractions.len() as f64).sqrt();
    let balanced = (1.0 - std) * 100.0;
    (least_allocated + balanced).round() as i64
}
