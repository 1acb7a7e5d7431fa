//! `berth controller-manager`: the controllers alone, against any API server (`berth
//! server` runs them in process unless `--disable controllers`).

use std::path::PathBuf;

use clap::Args;

/// `berth controller-manager` options.
#[derive(Args)]
pub struct ControllerManagerArgs {
    /// The kubeconfig to reach the API server with.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The API server's URL, over the kubeconfig's.
    #[arg(long)]
    server: Option<String>,
}

/// Runs the controllers until interrupted.
pub async fn controller_manager(a: ControllerManagerArgs) -> anyhow::Result<()> {
    crate::server_cmd::init_logging("text");
    let client = crate::agent_cmd::client(&a.kubeconfig, a.server.as_deref()).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = berth_controllers::run(client) => anyhow::bail!("the controllers stopped"),
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
