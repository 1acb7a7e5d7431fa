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
    /// A directory of CDI specs (repeatable; later ones win for a device both define)
    /// [default: /etc/cdi, /var/run/cdi].
    #[arg(long = "cdi-spec-dir")]
    cdi_spec_dirs: Vec<PathBuf>,
    /// The pod CIDR new pods get addresses from (CRI UpdateRuntimeConfig sets it too).
    #[arg(long)]
    pod_cidr: Option<String>,
}

/// The engine over `root`, opened on a blocking thread.
async fn open(root: &std::path::Path) -> anyhow::Result<berth_engine::Core> {
    let root = root.to_path_buf();
    Ok(tokio::task::spawn_blocking(move || berth_engine::Core::open(&root)).await??)
}

/// A CRI endpoint served beside the node agent (`--cri-socket`), stopped with it.
pub struct Beside {
    task: Option<tokio::task::JoinHandle<Result<(), berth_cri::Error>>>,
    stop: Arc<tokio::sync::Notify>,
    socket: Option<PathBuf>,
}

impl Beside {
    /// Starts serving on `socket` (None: nothing to serve).
    pub async fn start(root: &std::path::Path, socket: Option<PathBuf>) -> anyhow::Result<Beside> {
        let stop = Arc::new(tokio::sync::Notify::new());
        let Some(socket) = socket else {
            return Ok(Beside {
                task: None,
                stop,
                socket: None,
            });
        };
        let core = open(root).await?;
        let listen = berth_cri::Listen::on(socket.clone());
        let notified = stop.clone();
        let task = tokio::spawn(async move {
            berth_cri::serve(Arc::new(core), &listen, notified.notified_owned()).await
        });
        Ok(Beside {
            task: Some(task),
            stop,
            socket: Some(socket),
        })
    }

    /// Stops serving (the socket is removed) and says why it ended early, if it did.
    pub async fn stop(mut self) {
        let Some(task) = self.task.take() else { return };
        self.stop.notify_one();
        let abort = task.abort_handle();
        match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the CRI endpoint failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the CRI endpoint panicked"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => {
                abort.abort();
                if let Some(s) = &self.socket {
                    let _ = std::fs::remove_file(s);
                }
            }
        }
    }
}

impl Drop for Beside {
    /// On the paths that leave without [`Beside::stop`] (the agent failed): the
    /// server goes, and its socket with it.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if let Some(s) = &self.socket {
                let _ = std::fs::remove_file(s);
            }
        }
    }
}

/// Serves CRI on the state root until SIGINT or SIGTERM.
pub async fn cri(ctx: &Ctx, a: CriArgs) -> anyhow::Result<()> {
    crate::server_cmd::init_logging("text");
    ctx.check_access()?;
    let core = open(&ctx.root).await?;
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
    let mut listen = berth_cri::Listen::on(a.socket);
    listen.streaming = a.streaming_address;
    if !a.cdi_spec_dirs.is_empty() {
        listen.cdi_spec_dirs = a.cdi_spec_dirs;
    }
    berth_cri::serve(Arc::new(core), &listen, stop).await?;
    Ok(())
}
