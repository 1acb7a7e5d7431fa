//! Simulated nodes, as KWOK makes them, without another tool: Node objects that
//! register, renew their Leases in kube-node-lease and report the pods bound to them
//! as running (or, for pods that do not restart always, as finished), without running
//! anything. The scheduler and controllers are tested and measured on thousands of
//! them (`berth sim nodes --count 5000`).
//!
//! A simulated pod's end is set by annotations: `sim.berth.dev/exit-code` (default 0)
//! and `sim.berth.dev/run-seconds` (default: the config's `run_seconds`); pods whose
//! restartPolicy is Always run until deleted.

mod nodes;
mod pods;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use nodes::SIM_LABEL;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How many nodes.
    pub count: usize,
    /// Their names' prefix: PREFIX-0, PREFIX-1, ...
    pub prefix: String,
    /// Each node's CPU capacity (a quantity: "32", "500m").
    pub cpu: String,
    /// Each node's memory capacity (a quantity: "256Gi").
    pub memory: String,
    /// The most pods each node takes.
    pub pods: u32,
    /// Labels every node gets besides the usual ones.
    pub labels: BTreeMap<String, String>,
    /// Zones to spread the nodes over (topology.kubernetes.io/zone = zone-I, node by
    /// node in turn); 0 for none.
    pub zones: usize,
    /// How long pods that do not restart always run before they end, unless their
    /// `sim.berth.dev/run-seconds` annotation says otherwise.
    pub run_seconds: f64,
    /// Leave the nodes registered when stopped (they go NotReady as their Leases age).
    pub keep: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            count: 1,
            prefix: "sim".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            labels: BTreeMap::new(),
            zones: 0,
            run_seconds: 1.0,
            keep: false,
        }
    }
}

impl SimConfig {
    /// The name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// The index of the simulated node named `name`, if it is one of these.
    fn node_index(&self, name: &str) -> Option<usize> {
        let i: usize = name
            .strip_prefix(&self.prefix)?
            .strip_prefix('-')?
            .parse()
            .ok()?;
        (i < self.count && self.node_name(i) == name).then_some(i)
    }
}

/// Why the simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request (what was being done, and why).
    #[error("{0}: {1}")]
    Api(String, #[source] Box<kube::Error>),
    /// The configuration cannot be simulated.
    #[error("{0}")]
    Config(String),
}

/// How often each node's Lease is renewed (the kubelet's 10 s).
const LEASE_RENEW: Duration = Duration::from_secs(10);

/// Registers the nodes, then keeps their Leases and their pods' status until `stop`
/// completes; then removes the nodes and their Leases unless `keep`.
pub async fn run(
    client: kube::Client,
    cfg: SimConfig,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    if cfg.count == 0 || cfg.count > nodes::MAX_NODES {
        return Err(Error::Config(format!(
            "--count {}: simulate between 1 and {} nodes",
            cfg.count,
            nodes::MAX_NODES
        )));
    }
    let cfg = Arc::new(cfg);
    let started = std::time::Instant::now();
    nodes::register_all(&client, &cfg).await?;
    // On stdout, for the user (and for scripts that wait for it).
    println!(
        "{} simulated nodes registered ({} to {}) in {:.1} s; Ctrl-C removes them",
        cfg.count,
        cfg.node_name(0),
        cfg.node_name(cfg.count - 1),
        started.elapsed().as_secs_f64()
    );
    let leases = tokio::spawn(nodes::renew_leases(client.clone(), cfg.clone()));
    let pods = tokio::spawn(pods::run(client.clone(), cfg.clone()));
    stop.await;
    leases.abort();
    pods.abort();
    if !cfg.keep {
        nodes::remove_all(&client, &cfg).await;
        tracing::info!(count = cfg.count, "simulated nodes removed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_known_by_name() {
        let cfg = SimConfig {
            count: 3,
            prefix: "sim-a".into(),
            ..Default::default()
        };
        assert_eq!(cfg.node_name(2), "sim-a-2");
        assert_eq!(cfg.node_index("sim-a-2"), Some(2));
        assert_eq!(cfg.node_index("sim-a-3"), None);
        assert_eq!(cfg.node_index("sim-a-02"), None);
        assert_eq!(cfg.node_index("sim-b-1"), None);
        assert_eq!(cfg.node_index("sim-a"), None);
    }
}
