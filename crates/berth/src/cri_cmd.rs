//! `berth cri`: the engine's CRI endpoint (runtime.v1 over gRPC on a unix socket), for
//! crictl, critest and kubelets, as containerd's CRI plugin serves it.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::Ctx;

/// `berth cri` options.
#[derive(Args)]
pub struct CriArgs {
    /// The unix socket to serve CRI on (crictl's --runtime-endpoint
    /// unix:///run/berth/cri.sock).
    #[arg(long, default_value = berth_cri::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where the streaming server of Exec, Attach and PortForward listens (port 0: any
    /// free one; the URLs CRI hands out name it).
    #[arg(long, default_value = "127.0.0.1:0")]
    streaming_address: std::net::SocketAddr,
    /// The pod CIDR new pods get addresses from (CRI UpdateRuntimeConfig sets it too).
    #[arg(long)]
    pod_cidr: Option<String>,
}

/// Serves CRI on the state root until SIGINT or SIGTERM.
pub async fn cri(ctx: &Ctx, a: CriArgs) -> anyhow::Result<()> {
    crate::server_cmd::init_logging("text");
    ctx.check_access()?;
    let root = ctx.root.clone();
    let core = tokio::task::spawn_blocking(move || berth_engine::Core::open(&root)).await??;
    if let Some(cidr) = &a.pod_cidr {
        berth_engine::cri::RuntimeService::update_runtime_config(&core, cidr)?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let listen = berth_cri::Listen {
        socket: a.socket,
        streaming: a.streaming_address,
    };
    berth_cri::serve(Arc::new(core), &listen, stop).await?;
    Ok(())
}
