//! `berth scheduler`: the scheduler alone, against any API server (`berth server` runs
//! it in process unless `--disable scheduler`).

use std::path::PathBuf;

use clap::Args;

/// `berth scheduler` options.
#[derive(Args)]
pub struct SchedulerArgs {
    /// The kubeconfig to reach the API server with.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The API server's URL, over the kubeconfig's.
    #[arg(long)]
    server: Option<String>,
    /// The schedulerName this scheduler places pods for.
    #[arg(long, default_value = "default-scheduler")]
    scheduler_name: String,
}

/// Runs the scheduler until interrupted.
pub async fn scheduler(a: SchedulerArgs) -> anyhow::Result<()> {
    crate::server_cmd::init_logging("text");
    let client = crate::agent_cmd::client(&a.kubeconfig, a.server.as_deref()).await?;
    let cfg = berth_scheduler::SchedulerConfig {
        name: a.scheduler_name,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = berth_scheduler::run(client, cfg) => anyhow::bail!("the scheduler stopped"),
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
