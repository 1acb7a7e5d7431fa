//! Running a control-plane part (the scheduler, the controllers) until interrupted,
//! acting only while it holds its kube-system Lease when elected.

use std::future::Future;
use std::time::Duration;

use clap::Args;

/// The leader election's timing (kube-scheduler's and kube-controller-manager's
/// flags of these names, and their defaults).
#[derive(Args, Clone, Debug)]
pub struct LeaderElectionArgs {
    /// How long a Lease not renewed stays its holder's: the longest a failed leader
    /// leaves the part without one.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long a leader may fail to renew before it stops acting (less than the
    /// lease duration).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// How often candidates try to take, and the leader to renew, the Lease.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    leader_elect_retry_period: Duration,
}

impl LeaderElectionArgs {
    /// The election of the Lease `kube-system/LEASE` with these timings; an error
    /// when they cannot work (a leader must stop before another may take over).
    pub fn election(&self, lease: &str) -> anyhow::Result<berth_watch::leader::Election> {
        anyhow::ensure!(
            self.leader_elect_renew_deadline < self.leader_elect_lease_duration,
            "--leader-elect-renew-deadline ({:?}) must be shorter than --leader-elect-lease-duration ({:?}): a leader must stop acting before another may take the Lease",
            self.leader_elect_renew_deadline,
            self.leader_elect_lease_duration
        );
        anyhow::ensure!(
            self.leader_elect_retry_period < self.leader_elect_renew_deadline,
            "--leader-elect-retry-period ({:?}) must be shorter than --leader-elect-renew-deadline ({:?})",
            self.leader_elect_retry_period,
            self.leader_elect_renew_deadline
        );
        let mut e = berth_watch::leader::Election::new(lease);
        e.lease_duration = self.leader_elect_lease_duration;
        e.renew_deadline = self.leader_elect_renew_deadline;
        e.retry_period = self.leader_elect_retry_period;
        Ok(e)
    }
}

/// Runs `work` until SIGINT or SIGTERM; given an election, only while holding its
/// Lease, which is given up on the way out so another takes over at once. `what` names the part in the error if `work` ends by itself.
pub async fn until_interrupted<F, Fut>(
    client: kube::Client,
    election: Option<berth_watch::leader::Election>,
    what: &str,
    work: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    if let Some(election) = election {
        berth_watch::leader::run(client, election, work, stop).await;
        return Ok(());
    }
    tokio::select! {
        () = work() => anyhow::bail!("{what} stopped"),
        () = stop => {}
    }
    Ok(())
}
