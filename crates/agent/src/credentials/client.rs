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
type Hyper = hyper_util::client::legacy::Client<Https, kube::client::Body>;

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
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
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

    fn call(&mut self, mut req: http::Request<kube::client::Body>) -> Self::Future {
        let client = self
            .0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // To the server in use (kube gives a path; the scheme and host are ours).
        let server = self.0.servers.current();
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(server.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        let servers = self.0.servers.clone();
        Box::pin(async move {
            let out = client.request(req).await;
            if let Err(e) = &out {
                if e.is_connect() {
                    servers.failed(&server);
                }
            }
            out
        })
    }
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
