//! The proxy's serving threads, shaped as nginx's workers are: each thread runs its
//! own single-threaded runtime with its own pool of connections to endpoints, and
//! serves the client connections handed to it. A request, the upstream connection it
//! is sent on and both responses stay on one thread; on a runtime with work stealing
//! the two connections' tasks wake each other across threads, which cost the proxy a
//! quarter of its requests per second on two cores (`berth-bench net`).
//!
//! Connections are handed to the threads in turn from one accept loop: the kernel's
//! SO_REUSEPORT hashing put six of eight connections on one thread often enough to
//! make throughput vary by a third between runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::{Handler, Proxy};

/// How many serving threads a node runs: one per CPU it may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A client connection on its way to a thread: the socket, the client's address,
/// whether it speaks TLS.
type Handoff = (std::net::TcpStream, SocketAddr, bool);

/// The running threads. They stop once this and every [`Workers::serve`] task using
/// it are dropped (each closes its connections when its runtime goes).
#[derive(Debug)]
pub struct Workers {
    threads: Vec<mpsc::UnboundedSender<Handoff>>,
    next: AtomicUsize,
}

impl Proxy {
    /// Starts `count` serving threads (at least one). Each builds its runtime itself
    /// (a runtime must not be dropped on an async thread, as one would be if a
    /// thread failed to start with it).
    pub fn spawn_workers(self: &Arc<Self>, count: usize) -> std::io::Result<Arc<Workers>> {
        let mut threads = Vec::new();
        for i in 0..count.max(1) {
            let handler = Arc::new(Handler::new(self.clone()));
            let (tx, mut rx) = mpsc::unbounded_channel::<Handoff>();
            std::thread::Builder::new()
                .name(format!("ingress-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::warn!(error = %e, thread = i, "the Ingress proxy cannot start a serving thread's runtime");
                            return;
                        }
                    };
                    rt.block_on(async move {
                        while let Some((sock, peer, tls)) = rx.recv().await {
                            match tokio::net::TcpStream::from_std(sock) {
                                Ok(sock) => {
                                    tokio::spawn(
                                        handler.clone().serve_connection(sock, peer, tls),
                                    );
                                }
                                Err(e) => tracing::debug!(error = %e, %peer, "ingress handoff"),
                            }
                        }
                    });
                })?;
            threads.push(tx);
        }
        Ok(Arc::new(Workers {
            threads,
            next: AtomicUsize::new(0),
        }))
    }
}

impl Workers {
    /// Accepts HTTP (or HTTPS, with `tls`) connections on `listener` until the task
    /// is dropped, handing them to the threads in turn.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: bool) {
        loop {
            let (sock, peer) = crate::accept(&listener).await;
            let sock = match sock.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "ingress handoff");
                    continue;
                }
            };
            // In turn, passing over threads that have gone (their runtime failed).
            let mut handoff = Some((sock, peer, tls));
            for _ in 0..self.threads.len() {
                let n = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
                match self.threads[n].send(handoff.take().expect("put back on failure")) {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(back)) => handoff = Some(back),
                }
            }
            if handoff.is_some() {
                tracing::warn!(%peer, "ingress: no serving thread is left; connection closed");
            }
        }
    }
}
