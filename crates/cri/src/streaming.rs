//! The streaming server of the CRI endpoint: Exec, Attach and PortForward answer with
//! a one-time URL here (as the kubelet's remote runtimes do), and the client — crictl,
//! or the kubelet proxying kubectl — upgrades a request to it. The protocols are
//! [`berth_streams`]'; this module keeps the requests by token until they are used
//! (once) or expire (after a minute, as the kubelet's streaming cache).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_streams::remotecommand::{Kind, Request, Session};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as pb;
use tokio::net::{TcpListener, TcpStream};

use crate::Engine;

/// How long a URL handed out stays good.
const TOKEN_TTL: Duration = Duration::from_secs(60);

/// A request waiting for its client.
#[derive(Clone, Debug)]
enum Pending {
    Remote(Request),
    PortForward { sandbox_id: String },
}

/// The streaming server's address and its waiting requests.
pub struct Streams {
    addr: SocketAddr,
    pending: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Streams {
    /// Listens on `addr` (port 0: any free one).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<(Arc<Streams>, TcpListener)> {
        let listener = TcpListener::bind(addr).await?;
        let streams = Streams {
            addr: listener.local_addr()?,
            pending: Mutex::new(HashMap::new()),
        };
        Ok((Arc::new(streams), listener))
    }

    /// The server's base URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn register(&self, path: &str, p: Pending) -> String {
        let token = berth_engine::core::names::new_id()[..32].to_string();
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, (at, _)| now.duration_since(*at) < TOKEN_TTL);
        pending.insert(token.clone(), (now, p));
        format!("{}/{path}/{token}", self.base())
    }

    fn take(&self, token: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (at, p) = pending.remove(token)?;
        (at.elapsed() < TOKEN_TTL).then_some(p)
    }

    /// The URL for an Exec request.
    pub fn exec(&self, r: pb::ExecRequest) -> String {
        let (stdin, stdout, stderr, tty) = (r.stdin, r.stdout, r.stderr, r.tty);
        self.remote(
            "exec",
            r.container_id,
            Kind::Exec(r.cmd),
            [stdin, stdout, stderr, tty],
        )
    }

    /// The URL for an Attach request.
    pub fn attach(&self, r: pb::AttachRequest) -> String {
        let (stdin, stdout, stderr, tty) = (r.stdin, r.stdout, r.stderr, r.tty);
        self.remote(
            "attach",
            r.container_id,
            Kind::Attach,
            [stdin, stdout, stderr, tty],
        )
    }

    /// The URL of a remote command with its stdin, stdout, stderr and tty flags.
    fn remote(&self, path: &str, container_id: String, kind: Kind, flags: [bool; 4]) -> String {
        let [stdin, stdout, stderr, tty] = flags;
        self.register(
            path,
            Pending::Remote(Request {
                container_id,
                kind,
                stdin,
                stdout,
                stderr,
                tty,
            }),
        )
    }

    /// The URL for a PortForward request.
    pub fn port_forward(&self, r: pb::PortForwardRequest) -> String {
        self.register(
            "portforward",
            Pending::PortForward {
                sandbox_id: r.pod_sandbox_id,
            },
        )
    }
}

/// Serves the streaming URLs on `listener` for as long as the task runs.
pub async fn serve<E: Engine>(streams: Arc<Streams>, listener: TcpListener, engine: Arc<E>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors, most likely: try again in a moment, not at once.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let (streams, engine) = (streams.clone(), engine.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let (streams, engine) = (streams.clone(), engine.clone());
                async move { Ok::<_, Infallible>(route(&streams, engine, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

fn route<E: Engine>(
    streams: &Streams,
    engine: Arc<E>,
    mut req: http::Request<Incoming>,
) -> http::Response<berth_streams::Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [kind @ ("exec" | "attach" | "portforward"), token] = parts.as_slice() else {
        return berth_streams::text(404, format!("no such endpoint: {path}"));
    };
    let pending = match streams.take(token) {
        Some(p) => p,
        None => {
            return berth_streams::text(
                404,
                format!("{kind} URL {path}: unknown or expired (a URL is good once, for a minute)"),
            )
        }
    };
    match pending {
        Pending::Remote(request) if *kind != "portforward" => {
            berth_streams::remotecommand::upgrade(&mut req, Session { engine, request })
        }
        Pending::PortForward { sandbox_id } if *kind == "portforward" => {
            let name = sandbox_id.clone();
            let connect: berth_streams::portforward::Connect = Arc::new(move |port| {
                let (engine, sandbox) = (engine.clone(), sandbox_id.clone());
                Box::pin(async move {
                    let s =
                        tokio::task::spawn_blocking(move || engine.port_forward(&sandbox, port))
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| format!("error forwarding port {port}: {e}"))?;
                    s.set_nonblocking(true).map_err(|e| e.to_string())?;
                    TcpStream::from_std(s).map_err(|e| e.to_string())
                })
            });
            berth_streams::portforward::upgrade(
                &mut req,
                berth_streams::portforward::Target { name, connect },
            )
        }
        _ => berth_streams::text(404, format!("{path} is not a {kind} URL")),
    }
}
