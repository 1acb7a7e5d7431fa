//! Running a control-plane part (the scheduler, the controllers) until interrupted,
//! acting only while it holds its kube-system Lease when elected.

use std::future::Future;

/// Runs `work` until SIGINT or SIGTERM; with `elect`, only while holding the Lease
/// `kube-system/LEASE`, which is given up on the way out so another takes over at
/// once. `what` names the part in the error if `work` ends by itself.
pub async fn until_interrupted<F, Fut>(
    client: kube::Client,
    lease: &str,
    elect: bool,
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
    if elect {
        let election = berth_watch::leader::Election::new(lease);
        berth_watch::leader::run(client, election, work, stop).await;
        return Ok(());
    }
    tokio::select! {
        () = work() => anyhow::bail!("{what} stopped"),
        () = stop => {}
    }
    Ok(())
}
