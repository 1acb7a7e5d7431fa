//! berth's built-in Ingress proxy, which every node runs on its ports 80 and 443 (as
//! k3s ships Traefik): a request is routed by its Host and path through the Ingresses
//! of class [`routes::CLASS`] (or of no class) to one ready endpoint of the backend
//! Service, round robin, over pooled HTTP/1.1 connections; HTTPS is terminated with
//! the certificate the Ingress's `tls` Secret holds for the SNI name.
//!
//! A request asking to switch protocols (WebSocket) is passed on as such, and once
//! the endpoint answers 101 the two connections are joined byte for byte.
//!
//! The routes and endpoints are one immutable [`Snapshot`], swapped whole on every
//! change: connections in flight keep going, the next request sees the new routes —
//! a reload drops nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub mod connect;
pub mod routes;
pub mod tls;
pub mod workers;

pub use routes::{Endpoint, Endpoints, Routes};
pub use tls::{SecretLookup, TlsSecret};

/// A response body: a backend's, streamed, or one of the proxy's own.
type Body = BoxBody<Bytes, hyper::Error>;

/// What the proxy routes by: the compiled Ingresses and their backends' endpoints.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Host and path rules.
    pub routes: Routes,
    /// Ready endpoints per backend.
    pub endpoints: Endpoints,
}

/// State the listeners and the certificate resolver share.
pub(crate) struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    secrets: SecretLookup,
    certs: tls::Cache,
    default_cert: Arc<tokio_rustls::rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ingress proxy state")
    }
}

impl Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The proxy: its routes, its certificates, its round-robin position — what every
/// serving thread shares.
pub struct Proxy {
    shared: Arc<Shared>,
    next: AtomicUsize,
    connector: connect::Connector,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
}

/// One serving loop's side of the proxy: its own pool of connections to endpoints,
/// so that on a single-threaded runtime ([`workers`]) a request and the upstream
/// connection it travels on are served by one thread, with no wakeups across threads.
pub(crate) struct Handler {
    proxy: Arc<Proxy>,
    client: Client<connect::Connector, Incoming>,
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (a connection kept alive
/// between requests counts from the previous response): slow clients do not hold
/// connections open for good.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that belong to one connection, not passed on (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(text.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The host of a Host header, without its port.
fn host_only(h: &str) -> &str {
    if h.starts_with('[') {
        return h.split(']').next().map_or(h, |x| x.trim_start_matches('['));
    }
    h.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(h, |(host, _)| host)
}

/// The protocol a request asks to switch to (`Connection: upgrade` and `Upgrade`).
fn upgrade_asked(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// The next connection on `listener`; errors (such as too many open files) are
/// logged and retried after a pause rather than ending the proxy.
pub(crate) async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(s) => return s,
            Err(e) => {
                tracing::warn!(error = %e, "ingress accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Proxy {
    /// A proxy with no routes yet, finding TLS Secrets with `secrets`; its
    /// connections to endpoints carry `dscp` (see `berth_net::netpol::NODE_PROXY_DSCP`).
    pub fn new(secrets: SecretLookup, dscp: Option<u8>) -> Arc<Proxy> {
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            secrets,
            certs: tls::Cache::default(),
            default_cert: tls::default_cert(),
        });
        Arc::new(Proxy {
            tls: tls::server_config(shared.clone()),
            shared,
            next: AtomicUsize::new(0),
            connector: connect::Connector { dscp },
        })
    }

    /// Routes by `snapshot` from the next request on.
    pub fn update(&self, snapshot: Snapshot) {
        *self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// Serves HTTP (or HTTPS, with `tls`) on `listener` until the task is dropped,
    /// on the runtime it runs on (a node's agent uses [`Proxy::spawn_workers`]).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: bool) {
        Arc::new(Handler::new(self)).serve(listener, tls).await
    }
}

impl Handler {
    /// A handler with a connection pool of its own, whose connections are driven by
    /// tasks on the runtime of the first request that needs each.
    pub(crate) fn new(proxy: Arc<Proxy>) -> Handler {
        // The timer makes idle connections close after 90 s on their own, not only
        // when the pool is next looked at.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(proxy.connector.clone());
        Handler { proxy, client }
    }

    /// Serves HTTP (or HTTPS, with `tls`) on `listener` until the task is dropped,
    /// each connection on a task of this runtime.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener, tls: bool) {
        loop {
            let (sock, peer) = accept(&listener).await;
            tokio::spawn(self.clone().serve_connection(sock, peer, tls));
        }
    }

    /// Serves one client's connection until it closes.
    pub(crate) async fn serve_connection(
        self: Arc<Self>,
        sock: tokio::net::TcpStream,
        peer: SocketAddr,
        tls: bool,
    ) {
        let _ = sock.set_nodelay(true);
        let me = self.clone();
        let svc = hyper::service::service_fn(move |req| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req, peer, tls).await) }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let r = if tls {
            let acceptor = tokio_rustls::TlsAcceptor::from(self.proxy.tls.clone());
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                Ok(Ok(s)) => {
                    http.serve_connection(TokioIo::new(s), svc)
                        .with_upgrades()
                        .await
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        } else {
            http.serve_connection(TokioIo::new(sock), svc)
                .with_upgrades()
                .await
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, %peer, "ingress connection");
        }
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        https: bool,
    ) -> Response<Body> {
        // A request in absolute form names its host in the target, which wins over
        // the Host header (RFC 9112 3.2.2).
        let host = req
            .uri()
            .host()
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .map(host_only)
            .unwrap_or("")
            .to_string();
        if let Some(a) = req.uri().authority().cloned() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        let snapshot = self.proxy.shared.snapshot();
        let Some(backend) = snapshot.routes.route(&host, req.uri().path()) else {
            return plain(StatusCode::NOT_FOUND, "404 page not found\n");
        };
        let endpoints = match snapshot.endpoints.of(backend) {
            None => {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "Service {}/{} does not exist\n",
                        backend.namespace, backend.service
                    ),
                )
            }
            Some([]) => return plain(StatusCode::SERVICE_UNAVAILABLE, "no available server\n"),
            Some(e) => e,
        };
        let n = self.proxy.next.fetch_add(1, Ordering::Relaxed);
        let endpoint = &endpoints[n % endpoints.len()];
        let ep = endpoint.addr;
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let Ok(uri) = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(endpoint.authority.clone())
            .path_and_query(pq)
            .build()
        else {
            return plain(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        *req.uri_mut() = uri;
        // A protocol switch (WebSocket): the request keeps asking for it, and once the
        // endpoint agrees both connections are joined.
        let upgrade = upgrade_asked(req.headers());
        let client_side = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let headers = req.headers_mut();
        // Headers the Connection header names are this hop's too.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
        for h in &HOP_BY_HOP {
            headers.remove(h);
        }
        if let Some(u) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, u.clone());
        }
        let client_ip = peer.ip().to_string();
        // Every X-Forwarded-For line so far, in order, then this client.
        let mut chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        chain.push(&client_ip);
        let xff = chain.join(", ");
        for (name, value) in [
            ("x-forwarded-for", xff),
            (
                "x-forwarded-proto",
                if https { "https" } else { "http" }.to_string(),
            ),
            ("x-forwarded-host", host.clone()),
            ("x-real-ip", client_ip),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        match self.client.request(req).await {
            Ok(mut resp) => {
                let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                if let (true, Some(client_side)) = (switched, client_side) {
                    let backend_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        match (client_side.await, backend_side.await) {
                            (Ok(c), Ok(b)) => {
                                let _ = tokio::io::copy_bidirectional(
                                    &mut TokioIo::new(c),
                                    &mut TokioIo::new(b),
                                )
                                .await;
                            }
                            (c, b) => tracing::debug!(
                                client = ?c.err(), backend = ?b.err(), endpoint = %ep,
                                "ingress upgrade"
                            ),
                        }
                    });
                }
                let (mut parts, body) = resp.into_parts();
                for h in &HOP_BY_HOP {
                    if switched && (h == header::CONNECTION || h == header::UPGRADE) {
                        continue;
                    }
                    parts.headers.remove(h);
                }
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => {
                tracing::debug!(error = %e, endpoint = %ep, "ingress backend");
                plain(StatusCode::BAD_GATEWAY, "Bad Gateway\n")
            }
        }
    }
}
