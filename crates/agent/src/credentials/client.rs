//! An API client whose client certificate can be replaced while it runs: rustls asks
//! [`ClientCert`] at each new connection, and a replacement also starts a new
//! connection pool ([`Identity::replace`]) — the API server checks a certificate's
//! expiry on every request, as kube-apiserver does, so connections opened with the
//! old one must not be reused. kube's own TLS setup fixes the certificate when the
//! client is built, hence this one.

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

fn setup(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{what}: {e}"))
}

/// A certificate and key from PEM.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| setup("the certificate", e))?;
    if certs.is_empty() {
        return Err(setup("the certificate", "no CERTIFICATE block"));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| setup("the key", e))?
        .ok_or_else(|| setup("the key", "no PRIVATE KEY block"))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| setup("the key", e))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

/// The client certificate presented on new connections.
#[derive(Debug)]
pub struct ClientCert(RwLock<Arc<CertifiedKey>>);

impl ClientCert {
    /// Starts with `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Arc<ClientCert> {
        Arc::new(ClientCert(RwLock::new(key)))
    }

    /// Presents `key` from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The trust roots of a CA bundle (PEM).
pub fn roots(ca_pem: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let c = c.map_err(|e| setup("the cluster CA", e))?;
        roots.add(c).map_err(|e| setup("the cluster CA", e))?;
    }
    if roots.is_empty() {
        return Err(setup("the cluster CA", "no CERTIFICATE block"));
    }
    Ok(roots)
}

fn base_config(url: &str) -> Result<kube::Config> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| setup(&format!("the server URL {url:?}"), e))?;
    Ok(kube::Config::new(uri))
}

type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;
type Hyper = hyper_util::client::legacy::Client<Timed, kube::client::Body>;

/// How long a connection to a server may take, TCP and TLS together: a server whose
/// machine is gone answers no SYN (the kernel would try for minutes), and one whose
/// process is stopped never finishes the handshake; past this, the request goes to
/// the next server.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The HTTPS connector, bounded by [`CONNECT_TIMEOUT`].
#[derive(Clone)]
struct Timed(Https);

type TimedFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<
                    <Https as tower::Service<http::Uri>>::Response,
                    tower::BoxError,
                >,
            > + Send,
    >,
>;

impl tower::Service<http::Uri> for Timed {
    type Response = <Https as tower::Service<http::Uri>>::Response;
    type Error = tower::BoxError;
    type Future = TimedFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri.clone());
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(done) => done,
                Err(_) => Err(format!(
                    "connecting to {uri} took over {} s",
                    CONNECT_TIMEOUT.as_secs()
                )
                .into()),
            }
        })
    }
}

/// Connections to the server, all opened with the current certificate.
#[derive(Clone)]
pub struct Pool(Arc<PoolInner>);

struct PoolInner {
    current: RwLock<Hyper>,
    tls: rustls::ClientConfig,
    servers: Arc<super::servers::Servers>,
}

fn hyper_client(tls: rustls::ClientConfig) -> Hyper {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(Timed(https))
}

impl Pool {
    /// New requests go over new connections from now on (those under way finish on
    /// theirs).
    fn renew(&self) {
        let mut tls = self.0.tls.clone();
        // A resumed TLS session would carry the old certificate: the server sees the
        // certificate of the session resumed, not the one the resolver now gives.
        tls.resumption = rustls::client::Resumption::default();
        let fresh = hyper_client(tls);
        *self.0.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }
}

type PoolFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<
                    http::Response<hyper::body::Incoming>,
                    hyper_util::client::legacy::Error,
                >,
            > + Send,
    >,
>;

impl tower::Service<http::Request<kube::client::Body>> for Pool {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = PoolFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let client = self
            .0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let servers = self.0.servers.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            // A request whose connection could not be made never reached a server,
            // so it goes to the next (each server once; a streamed body cannot be
            // sent twice). So does a read whose connection broke before the answer
            // (a server killed mid-request), as client-go retries a GET on a reset
            // or EOF: reading twice changes nothing. A write that failed after it
            // was sent is not resent: it may have been carried out, and the agent's
            // loops try again on their own.
            let spare = body.try_clone();
            let read = (parts.method == http::Method::GET || parts.method == http::Method::HEAD)
                && !parts.headers.contains_key(http::header::UPGRADE);
            let unreachable = |res: &std::result::Result<_, hyper_util::client::legacy::Error>| matches!(res, Err(e) if e.is_connect() || (read && cut_off(e)));
            let mut server = servers.current();
            let mut res = client
                .request(http::Request::from_parts(
                    aimed(parts.clone(), &server),
                    body,
                ))
                .await;
            let others: Vec<_> = servers.all().into_iter().filter(|s| s != &server).collect();
            for next in others {
                if !unreachable(&res) {
                    break;
                }
                let Some(again) = spare.as_ref().and_then(kube::client::Body::try_clone) else {
                    break;
                };
                servers.failed(&server);
                server = next;
                res = client
                    .request(http::Request::from_parts(
                        aimed(parts.clone(), &server),
                        again,
                    ))
                    .await;
            }
            if unreachable(&res) {
                servers.failed(&server);
            }
            res
        })
    }
}

/// Whether `e` is a connection that ended before its answer (closed, reset, cut
/// short), as when a server is killed mid-request; not a refusal the server made
/// (a TLS alert for a certificate it does not take is the same from every server).
fn cut_off(e: &hyper_util::client::legacy::Error) -> bool {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return true;
            }
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            );
        }
        cause = c.source();
    }
    false
}

/// The request's parts aimed at `server` (kube gives a path; the scheme and host
/// are ours).
fn aimed(mut parts: http::request::Parts, server: &http::uri::Authority) -> http::request::Parts {
    let mut uri = parts.uri.clone().into_parts();
    uri.scheme = Some(http::uri::Scheme::HTTPS);
    uri.authority = Some(server.clone());
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(u) = http::Uri::from_parts(uri) {
        parts.uri = u;
    }
    parts
}

/// The node's client identity: the certificate presented, the connections made
/// with it, and the servers they go to.
pub struct Identity {
    cert: Arc<ClientCert>,
    pool: Pool,
}

impl Identity {
    /// The API servers requests go to.
    pub fn servers(&self) -> Arc<super::servers::Servers> {
        self.pool.0.servers.clone()
    }

    /// Presents `key` from now on, over new connections.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.cert.replace(key);
        self.pool.renew();
    }
}

/// A client of the server at `url` (and of the other servers the cluster lists, see
/// [`super::servers`]) trusting `ca_pem`, presenting `key` (replaced through the
/// [`Identity`] returned beside it).
pub fn with_cert(
    url: &str,
    ca_pem: &str,
    key: Arc<CertifiedKey>,
) -> Result<(kube::Client, Arc<Identity>)> {
    use tower::ServiceBuilder;
    let servers = super::servers::Servers::new(url)?;
    let cert = ClientCert::new(key);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup("TLS", e))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_cert_resolver(cert.clone());
    let pool = Pool(Arc::new(PoolInner {
        current: RwLock::new(hyper_client(tls.clone())),
        tls,
        servers,
    }));
    let service = ServiceBuilder::new()
        .map_err(tower::BoxError::from)
        .service(pool.clone());
    Ok((
        kube::Client::new(service, "default"),
        Arc::new(Identity { cert, pool }),
    ))
}

/// A client of the server at `url` trusting `ca_pem`, authenticating with a bearer
/// token (a bootstrap token, while joining).
pub fn with_token(url: &str, ca_pem: &str, token: &str) -> Result<kube::Client> {
    let mut cfg = base_config(url)?;
    let ders = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| setup("the cluster CA", e))?;
    cfg.root_cert = Some(ders);
    let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| setup("the token", e))?;
    cfg.headers.push((http::header::AUTHORIZATION, value));
    kube::Client::try_from(cfg).map_err(|e| setup("the API client", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// A CA, and a certificate and key it signed for `names`: (CA PEM, cert PEM, key PEM).
    fn pki(names: &[&str]) -> (String, String, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = p.self_signed(&ca_key).unwrap();
        let ca_pem = ca.pem();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca_pem, cert.pem(), key.serialize_pem())
    }

    /// TLS serving `cert` with `key`.
    fn acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
        let certs = rustls_pemfile::certs(&mut cert.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key.as_bytes())
            .unwrap()
            .unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(tls))
    }

    /// The TLS stream of one connection to a test server.
    type Conn = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

    /// An HTTPS server on loopback handing each connection to `conn`; returns its
    /// address.
    async fn serve<F, Fut>(cert: &str, key: &str, conn: F) -> std::net::SocketAddr
    where
        F: Fn(Conn) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let acceptor = acceptor(cert, key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, conn) = (acceptor.clone(), conn.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        conn(tls).await;
                    }
                });
            }
        });
        addr
    }

    /// An HTTPS server on loopback answering every request with its method and body
    /// length; returns its address.
    async fn echo_server(cert: &str, key: &str) -> std::net::SocketAddr {
        serve(cert, key, |tls: Conn| async move {
            let svc = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let method = req.method().clone();
                    let len = req.into_body().collect().await?.to_bytes().len();
                    Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(format!("{method} {len}")),
                    )))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
        })
        .await
    }

    #[tokio::test]
    async fn a_request_that_cannot_reach_a_server_goes_to_the_next() {
        let (ca, cert, key) = pki(&["127.0.0.1"]);
        let live = echo_server(&cert, &key).await;
        // A port nothing listens on: connections to it are refused.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (client, identity) = with_cert(
            &format!("https://{dead}"),
            &ca,
            certified_key(&cert, &key).unwrap(),
        )
        .unwrap();
        let servers = identity.servers();
        servers.set(vec![live.to_string().parse().unwrap()]);
        assert_eq!(servers.current().to_string(), dead.to_string());

        // A write with a body: refused by the first, carried out by the second.
        let req = http::Request::post("/api/v1/namespaces/default/configmaps")
            .body(br#"{"kind":"ConfigMap"}"#.to_vec())
            .unwrap();
        let answer = client.request_text(req).await.unwrap();
        assert_eq!(answer, "POST 20");
        assert_eq!(
            servers.current().to_string(),
            live.to_string(),
            "the server that answered is the one in use"
        );
        let answer = client
            .request_text(http::Request::get("/version").body(Vec::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(answer, "GET 0");
    }

    /// An HTTPS server on loopback that reads each request's head and closes the
    /// connection without answering, as a server killed mid-request; returns its
    /// address.
    async fn dropping_server(cert: &str, key: &str) -> std::net::SocketAddr {
        serve(cert, key, |mut tls: Conn| async move {
            use tokio::io::AsyncReadExt;
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            // Dropped: the connection closes with no answer.
        })
        .await
    }

    #[tokio::test]
    async fn a_read_cut_off_mid_request_goes_to_the_next_and_a_write_is_not_resent() {
        let (ca, cert, key) = pki(&["127.0.0.1"]);
        let live = echo_server(&cert, &key).await;
        let dying = dropping_server(&cert, &key).await;
        let (client, identity) = with_cert(
            &format!("https://{dying}"),
            &ca,
            certified_key(&cert, &key).unwrap(),
        )
        .unwrap();
        let servers = identity.servers();
        servers.set(vec![live.to_string().parse().unwrap()]);
        // A write reached the dying server: it may have been carried out there, so
        // it fails rather than being made twice.
        let req = http::Request::post("/api/v1/namespaces/default/configmaps")
            .body(br#"{"kind":"ConfigMap"}"#.to_vec())
            .unwrap();
        assert!(client.request_text(req).await.is_err());
        assert_eq!(servers.current().to_string(), dying.to_string());
        // A read is asked again of the next server, which stays in use.
        let answer = client
            .request_text(http::Request::get("/version").body(Vec::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(answer, "GET 0");
        assert_eq!(servers.current().to_string(), live.to_string());
    }

    #[tokio::test]
    async fn a_server_that_never_finishes_connecting_is_left_after_the_timeout() {
        let (ca, cert, key) = pki(&["127.0.0.1"]);
        let live = echo_server(&cert, &key).await;
        // Its kernel completes the TCP handshake (the backlog) but nothing answers
        // TLS, as with a stopped server process.
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hung_at = hung.local_addr().unwrap();
        let (client, identity) = with_cert(
            &format!("https://{hung_at}"),
            &ca,
            certified_key(&cert, &key).unwrap(),
        )
        .unwrap();
        identity
            .servers()
            .set(vec![live.to_string().parse().unwrap()]);
        let t = std::time::Instant::now();
        let answer = client
            .request_text(http::Request::get("/version").body(Vec::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(answer, "GET 0");
        let took = t.elapsed();
        assert!(
            took >= CONNECT_TIMEOUT && took < CONNECT_TIMEOUT * 2,
            "took {took:?}"
        );
        assert_eq!(identity.servers().current().to_string(), live.to_string());
        drop(hung);
    }
}
