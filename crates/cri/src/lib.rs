//! berth's CRI endpoint: the Container Runtime Interface (runtime.v1 RuntimeService
//! and ImageService) over gRPC on a unix socket, so that crictl, cri-tools' critest
//! and any kubelet drive berth's engine as they drive containerd or CRI-O.
//!
//! It is a thin adapter: [`convert`] turns CRI's messages into the engine's typed
//! shapes ([`berth_engine::cri`]) and back, and each RPC runs the engine's call on a
//! blocking thread. The message and service types come from the k8s-cri crate (the
//! CRI protos compiled for tonic).

pub mod client;
pub mod convert;
mod events;
mod images;
mod podstats;
mod runtime;
mod status;
pub mod streaming;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use berth_engine::cri::{ImageService, RuntimeService};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;

/// Where `berth cri` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/berth/cri.sock";

/// The one runtime handler berth has (CRI's `runtime_handler`; empty asks for it too).
pub const RUNTIME_HANDLER: &str = "berth";

/// The largest message either side sends: the kubelet's own limit (16 MiB), so a
/// list of many containers fits.
const MAX_MESSAGE: usize = 16 << 20;

/// What the endpoint needs of an engine: both CRI-shaped traits, shareable across
/// blocking threads.
pub trait Engine: RuntimeService + ImageService + Send + Sync + 'static {}
impl<T: RuntimeService + ImageService + Send + Sync + 'static> Engine for T {}

/// The gRPC services over one engine.
pub struct Cri<E> {
    engine: Arc<E>,
    streams: Arc<streaming::Streams>,
    cdi_dirs: Vec<PathBuf>,
    /// Turns true when the server stops: open event streams end then, or a graceful
    /// shutdown would wait for their clients forever.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl<E: Engine> Cri<E> {
    /// The services over `engine`, handing out URLs of `streams`, resolving CDI
    /// devices from the specs in `cdi_dirs`, ending event streams when `stopping`
    /// turns true.
    pub fn new(
        engine: Arc<E>,
        streams: Arc<streaming::Streams>,
        cdi_dirs: Vec<PathBuf>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Cri<E> {
        Cri {
            engine,
            streams,
            cdi_dirs,
            stopping,
        }
    }
}

/// Where the endpoint listens.
#[derive(Clone, Debug)]
pub struct Listen {
    /// The gRPC unix socket.
    pub socket: PathBuf,
    /// The streaming server's address (port 0: any free one).
    pub streaming: SocketAddr,
    /// Where CDI specs are, lowest priority first.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

impl Listen {
    /// `socket`, a streaming server on 127.0.0.1's free port, the default CDI
    /// directories.
    pub fn on(socket: PathBuf) -> Listen {
        Listen {
            socket,
            streaming: SocketAddr::from(([127, 0, 0, 1], 0)),
            cdi_spec_dirs: berth_engine::cdi::DEFAULT_SPEC_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
        }
    }
}

/// Why the endpoint could not serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be made.
    #[error("{what} {path}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The socket's path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Another server answers on the socket.
    #[error("another CRI server is listening on {0}: stop it, or give berth another --socket")]
    InUse(PathBuf),
    /// The streaming server could not listen.
    #[error("the streaming server cannot listen on {addr}: {source} (choose another --streaming-address)")]
    Streaming {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the CRI server on {path}: {source}")]
    Serve {
        /// The socket's path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Serves CRI on the unix socket and the streaming server until `shutdown`
/// completes, then removes the socket. A socket file left by a server that died is
/// replaced; one that answers is an error.
pub async fn serve<E: Engine>(
    engine: Arc<E>,
    listen: &Listen,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let socket = listen.socket.as_path();
    // Root's, as containerd's socket is: whoever reaches it runs anything as root.
    let listener = berth_grpc_unix::bind(socket, 0o660)
        .await
        .map_err(|e| match e {
            berth_grpc_unix::BindError::InUse(p) => Error::InUse(p),
            berth_grpc_unix::BindError::Io { what, path, source } => {
                Error::Socket { what, path, source }
            }
        })?;
    let (streams, stream_listener) =
        streaming::Streams::bind(listen.streaming)
            .await
            .map_err(|source| Error::Streaming {
                addr: listen.streaming,
                source,
            })?;
    let stream_server = tokio::spawn(streaming::serve(
        streams.clone(),
        stream_listener,
        engine.clone(),
    ));
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let cri = Arc::new(Cri::new(
        engine,
        streams.clone(),
        listen.cdi_spec_dirs.clone(),
        stopping,
    ));
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tracing::info!(socket = %socket.display(), streaming = %streams.base(), "CRI endpoint serving");
    let served = tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::from_arc(cri.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::from_arc(cri)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(berth_grpc_unix::incoming(listener), shutdown)
        .await;
    stream_server.abort();
    let _ = std::fs::remove_file(socket);
    served.map_err(|source| Error::Serve {
        path: socket.to_path_buf(),
        source,
    })
}
