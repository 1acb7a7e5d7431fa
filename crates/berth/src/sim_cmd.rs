//! `berth sim nodes`: simulated nodes against any API server (what KWOK does), for
//! trying and measuring the scheduler and controllers on thousands of nodes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

/// `berth sim` subcommands.
#[derive(Subcommand)]
pub enum SimCommand {
    /// Register simulated nodes and keep them (their Leases, their pods' status) until
    /// interrupted; then remove them unless --keep.
    Nodes(NodesArgs),
}

/// `berth sim nodes` options.
#[derive(Args)]
pub struct NodesArgs {
    /// The kubeconfig to reach the API server with.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The API server's URL, over the kubeconfig's.
    #[arg(long)]
    server: Option<String>,
    /// How many nodes.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Their names' prefix: PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Each node's CPU capacity.
    #[arg(long, default_value = "32")]
    cpu: String,
    /// Each node's memory capacity.
    #[arg(long, default_value = "256Gi")]
    memory: String,
    /// The most pods each node takes.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// A label every node gets (KEY=VALUE; repeat for more).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Spread the nodes over this many zones (topology.kubernetes.io/zone=zone-I).
    #[arg(long, default_value_t = 0)]
    zones: usize,
    /// Seconds a pod that does not restart always runs before it ends (its
    /// sim.berth.dev/run-seconds annotation wins; sim.berth.dev/exit-code sets how).
    #[arg(long, default_value_t = 1.0)]
    run_seconds: f64,
    /// Leave the nodes registered on exit.
    #[arg(long)]
    keep: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Runs a `berth sim` subcommand.
pub async fn sim(c: SimCommand) -> anyhow::Result<()> {
    let SimCommand::Nodes(a) = c;
    crate::server_cmd::init_logging("text");
    if !(a.run_seconds.is_finite() && a.run_seconds >= 0.0) {
        anyhow::bail!(
            "--run-seconds {}: give a number of seconds, 0 or more",
            a.run_seconds
        );
    }
    let client = crate::agent_cmd::client(&a.kubeconfig, a.server.as_deref()).await?;
    let cfg = berth_sim::SimConfig {
        count: a.count,
        prefix: a.prefix,
        cpu: a.cpu,
        memory: a.memory,
        pods: a.pods,
        labels: a.labels.into_iter().collect::<BTreeMap<_, _>>(),
        zones: a.zones,
        run_seconds: a.run_seconds,
        keep: a.keep,
    };
    let stop = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    berth_sim::run(client, cfg, stop)
        .await
        .context("simulated nodes")
}
