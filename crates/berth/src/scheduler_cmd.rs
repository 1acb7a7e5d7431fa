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
    /// Act only while holding the kube-system/kube-scheduler Lease (one of several
    /// schedulers acts at a time).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    #[command(flatten)]
    election: crate::elected::LeaderElectionArgs,
}

/// The scheduler, acting while it holds the kube-system/kube-scheduler Lease, until
/// `stop` (then the Lease is given up).
pub async fn elected(
    client: kube::Client,
    cfg: berth_scheduler::SchedulerConfig,
    election: berth_watch::leader::Election,
    stop: impl std::future::Future<Output = ()>,
) {
    let c = client.clone();
    let work = move || berth_scheduler::run(c.clone(), cfg.clone());
    berth_watch::leader::run(client, election, work, stop).await
}

/// Runs the scheduler until interrupted.
pub async fn scheduler(a: SchedulerArgs) -> anyhow::Result<()> {
    crate::server_cmd::init_logging("text");
    let client = crate::agent_cmd::client(&a.kubeconfig, a.server.as_deref()).await?;
    let cfg = berth_scheduler::SchedulerConfig {
        name: a.scheduler_name,
    };
    let c = client.clone();
    let work = move || berth_scheduler::run(c.clone(), cfg.clone());
    let election = a
        .leader_elect
        .then(|| a.election.election("kube-scheduler"))
        .transpose()?;
    crate::elected::until_interrupted(client, election, "the scheduler", work).await
}
