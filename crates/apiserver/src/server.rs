//! The HTTPS front: TLS (HTTP/2 and HTTP/1.1 by ALPN) with optional client
//! certificates, body limits, query decoding and authentication, handing each request
//! to the API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::User;
use crate::error::Error;
use crate::request::{self, Body, Request, RespBody};
use crate::state::Api;
use crate::status::ApiError;

/// Builds the TLS configuration: the serving certificate, and client certificates
/// verified against the CA when offered.
pub fn tls_config(pki: &crate::pki::Pki) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> = rustls_pemfile::certs(&mut pki.serving_cert.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Setup(format!("serving certificate: {e}")))?;
    let key = rustls_pemfile::private_key(&mut pki.serving_key.as_bytes())
        .map_err(|e| Error::Setup(format!("serving key: {e}")))?
        .ok_or_else(|| Error::Setup("serving key: no key in the file".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_cert.as_bytes()) {
        let c = c.map_err(|e| Error::Setup(format!("CA certificate: {e}")))?;
        roots
            .add(c)
            .map_err(|e| Error::Setup(format!("CA certificate: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Setup(format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Setup(format!("TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| Error::Setup(format!("TLS: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts connections until the listener fails.
pub async fn serve(api: Arc<Api>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (sock, _peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await {
                    Ok(Ok(s)) => s,
                    _ => return,
                };
            let cert_user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::auth::CertIdentity::of(c));
            let svc = hyper::service::service_fn(move |req| {
                let api = api.clone();
                let identity = cert_user.clone();
                async move {
                    let user = match identity {
                        Some(id) if id.expired() => {
                            let e = ApiError::unauthorized();
                            return Ok::<_, Infallible>(to_http(
                                request::Response::error(&e),
                                false,
                            ));
                        }
                        Some(id) => Some(id.user),
                        None => None,
                    };
                    Ok::<_, Infallible>(handle(api, user, req).await)
                }
            });
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http2().max_concurrent_streams(1000);
            let _ = b
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn to_http(r: request::Response, head: bool) -> http::Response<RespBody> {
    let body = match r.body {
        _ if head => RespBody::Full(None),
        Body::Full(b) => RespBody::Full(Some(b)),
        Body::Stream(rx) => RespBody::Stream(rx),
    };
    let mut resp = http::Response::new(body);
    *resp.status_mut() =
        http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::try_from(k),
            http::HeaderValue::try_from(v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

async fn handle(
    api: Arc<Api>,
    cert_user: Option<User>,
    req: http::Request<Incoming>,
) -> http::Response<RespBody> {
    let path = req.uri().path().to_string();
    if let Some(target) = crate::nodeproxy::target(&path) {
        let allowed = match authenticate(&api, cert_user, req.headers()).await {
            Ok(Some(user)) => authorize_proxy(&api, user, &req, &target),
            Ok(None) if api.authn.anonymous => {
                authorize_proxy(&api, request::User::anonymous(), &req, &target)
            }
            Ok(None) => Err(ApiError::unauthorized()),
            Err(e) => Err(e),
        };
        return match allowed {
            Ok(()) => crate::nodeproxy::proxy(api, req, target).await,
            Err(e) => to_http(request::Response::error(&e), false),
        };
    }
    respond(api, cert_user, req).await
}

/// Whether `user` (or whom it impersonates) may make a node-agent request: pods/log
/// is read with get; exec, attach and portforward need create (kube asks create of
/// websocket upgrades too); a node's proxy takes the method's verb.
fn authorize_proxy(
    api: &Api,
    user: User,
    req: &http::Request<Incoming>,
    target: &crate::nodeproxy::Target<'_>,
) -> Result<(), ApiError> {
    use crate::nodeproxy::Target;
    let user =
        crate::authz::impersonate::resolve(&api.authz, user, req.uri().path(), req.headers())?;
    let verb = crate::authz::non_resource_verb(req.method());
    let verb = match (target, verb) {
        (Target::Pod { sub: "log", .. }, _) => "get",
        (Target::Pod { .. }, _) => "create",
        (Target::Node { .. }, "post") => "create",
        (Target::Node { .. }, "put") => "update",
        (Target::Node { .. }, v) => v,
    };
    let (ns, resource, name, sub) = match target {
        Target::Pod { ns, pod, sub } => (Some(*ns), "pods", *pod, *sub),
        Target::Node { node, .. } => (None, "nodes", *node, "proxy"),
    };
    api.authz.check(&crate::authz::Attributes {
        user: &user,
        verb,
        namespace: ns,
        api_group: "",
        resource,
        subresource: Some(sub),
        name: Some(name),
        path: req.uri().path(),
        resource_request: true,
    })
}

/// Reads one API request's body (up to the limit), authenticates it (the transport's
/// user, else its bearer token) and answers it: the path every API request but the
/// node proxy's takes, over HTTPS or in process.
pub(crate) async fn respond<B>(
    api: Arc<Api>,
    cert_user: Option<User>,
    req: http::Request<B>,
) -> http::Response<RespBody>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let head = parts.method == http::Method::HEAD;
    let body = match Limited::new(body, request::MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!(
                        "the request body is larger than {} bytes",
                        request::MAX_BODY
                    ),
                )
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            };
            return to_http(request::Response::error(&err), head);
        }
    };
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let user = match authenticate(&api, cert_user, &parts.headers).await {
        Ok(Some(u)) => Some(u),
        // No credentials: system:anonymous, authorized as anyone is (kube's default
        // roles let it read /version, /healthz and the like; berth's, cluster-info).
        Ok(None) if api.authn.anonymous => Some(request::User::anonymous()),
        // `/cacerts` is everyone's, whatever --anonymous-auth says.
        Ok(None) if path == "/cacerts" => None,
        Ok(None) => return to_http(request::Response::error(&ApiError::unauthorized()), head),
        Err(e) => return to_http(request::Response::error(&e), head),
    };
    let req = Request {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body,
        user,
    };
    to_http(api.handle(req).await, head)
}

/// Who is asking: the client certificate's user, else a bearer token's (a
/// ServiceAccount token only while its ServiceAccount exists); None for anonymous.
async fn authenticate(
    api: &Arc<Api>,
    cert_user: Option<User>,
    headers: &http::HeaderMap,
) -> Result<Option<User>, ApiError> {
    let mut user = cert_user;
    if user.is_none() {
        if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
            let token = auth.strip_prefix("Bearer ").map(str::trim);
            if let Some(found) = match token {
                Some(t) => crate::certificates::bootstrap::authenticate(api, t),
                None => None,
            } {
                return found.map(Some);
            }
            match token.and_then(|t| api.authn.token(t)) {
                Some((u, claims)) => match claims {
                    None => user = Some(u),
                    Some(c) => {
                        // A ServiceAccount token is good while its ServiceAccount is.
                        let sa =
                            crate::resources::find("", "v1", "serviceaccounts").expect("served");
                        let ok = match crate::objects::read(
                            api,
                            sa,
                            Some(&c.kube.namespace),
                            &c.kube.serviceaccount.name,
                        )
                        .await
                        {
                            Ok((o, _)) => {
                                o.pointer("/metadata/uid").and_then(|v| v.as_str())
                                    == Some(c.kube.serviceaccount.uid.as_str())
                            }
                            Err(_) => false,
                        };
                        if ok {
                            user = Some(u);
                        } else {
                            return Err(ApiError::unauthorized());
                        }
                    }
                },
                None => return Err(ApiError::unauthorized()),
            }
        }
    }
    Ok(user)
}
