//! What runs on the node, proxied to the node agent's HTTPS endpoint (the kubelet's
//! port, from the Node's daemonEndpoints, at its InternalIP), as kube-apiserver proxies
//! it: the pod subresources log, exec, attach and portforward, and `nodes/NAME/proxy/…`
//! (the agent's stats and metrics). The request is passed on with the server's own
//! kubelet client certificate, and a protocol upgrade (WebSocket or SPDY) is spliced
//! through once the agent accepts it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::request::RespBody;
use crate::resources;
use crate::state::Api;
use crate::status::ApiError;

/// What a path asks of a node agent.
pub enum Target<'a> {
    /// A pod's log, exec, attach or portforward.
    Pod {
        /// The pod's namespace.
        ns: &'a str,
        /// The pod.
        pod: &'a str,
        /// The subresource.
        sub: &'a str,
    },
    /// `nodes/NAME/proxy/PATH`: PATH on the node's agent (stats, metrics).
    Node {
        /// The node.
        node: &'a str,
        /// The path on the agent, with its leading slash.
        path: String,
    },
}

/// The node-agent request a path names, if it is one.
pub fn target(path: &str) -> Option<Target<'_>> {
    if let Some(rest) = path.strip_prefix("/api/v1/nodes/") {
        let (node, rest) = rest.split_once('/')?;
        let tail = rest.strip_prefix("proxy")?;
        if !(tail.is_empty() || tail.starts_with('/')) || node.is_empty() {
            return None;
        }
        let path = if tail.is_empty() { "/" } else { tail };
        return Some(Target::Node {
            node,
            path: path.to_string(),
        });
    }
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut it = rest.split('/');
    let ns = it.next()?;
    if it.next()? != "pods" {
        return None;
    }
    let pod = it.next()?;
    let sub = it.next()?;
    if it.next().is_some() || !matches!(sub, "log" | "exec" | "attach" | "portforward") {
        return None;
    }
    Some(Target::Pod { ns, pod, sub })
}

/// Accepts whatever certificate the agent serves: kube-apiserver does the same unless
/// given --kubelet-certificate-authority, and berth's agents serve a self-signed
/// certificate until node certificates come from the cluster CA. Signatures are still
/// checked, so the handshake is real TLS.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client config the server reaches agents with: its kubelet client
/// certificate (issued by the cluster CA).
pub fn kubelet_client_config(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, crate::error::Error> {
    let setup =
        |what: &str, e: &dyn std::fmt::Display| crate::error::Error::Setup(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| setup("kubelet client certificate", &e))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| setup("kubelet client key", &e))?
        .ok_or_else(|| crate::error::Error::Setup("kubelet client key: none".into()))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup("TLS", &e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| setup("kubelet client certificate", &e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn str_at<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

/// Which node runs the pod and the agent path of the subresource: (node, path).
async fn pod_target(
    api: &Api,
    ns: &str,
    pod: &str,
    sub: &str,
    query: &[(String, String)],
) -> Result<(String, String), ApiError> {
    let pods = resources::find("", "v1", "pods").expect("served");
    let (p, _) = crate::objects::read(api, pods, Some(ns), pod).await?;
    let node = str_at(&p, "/spec/nodeName").unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {pod} does not have a host assigned"
        )));
    }
    let names: Vec<&str> = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            p.pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let app: Vec<&str> = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let asked = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.as_str());
    let container = match asked {
        Some(c) if !c.is_empty() => {
            if !names.contains(&c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod}"
                )));
            }
            c.to_string()
        }
        _ if sub == "portforward" => String::new(),
        _ if app.len() == 1 => app[0].to_string(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod}, choose one of: [{}]",
                app.join(" ")
            )))
        }
    };
    let rest: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter().filter(|(k, _)| k != "container"))
        .finish();
    let path = match sub {
        "log" => format!("/containerLogs/{ns}/{pod}/{container}"),
        "exec" => format!("/exec/{ns}/{pod}/{container}"),
        "attach" => format!("/attach/{ns}/{pod}/{container}"),
        _ => format!("/portForward/{ns}/{pod}"),
    };
    Ok((
        node.to_string(),
        if rest.is_empty() {
            path
        } else {
            format!("{path}?{rest}")
        },
    ))
}

/// Where a node's agent listens: host:port, from the Node's InternalIP and
/// daemonEndpoints.
pub async fn agent_address(api: &Api, node: &str) -> Result<String, ApiError> {
    let nodes = resources::find("", "v1", "nodes").expect("served");
    let (n, _) = crate::objects::read(api, nodes, None, node)
        .await
        .map_err(|_| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node \"{node}\" is not registered (is its agent running?)"),
            )
        })?;
    let addr = n
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x["type"] == "InternalIP")
                .or_else(|| a.first())
                .and_then(|x| x["address"].as_str())
        })
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node \"{node}\" has no address"),
            )
        })?;
    let port = n
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(10250);
    let host = if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    };
    Ok(host)
}

/// Relays an upgraded connection both ways, each direction on its own: one side
/// going away (a write failing on it) never cuts what the other side still has to
/// deliver. copy_bidirectional ends both at the first error, and so lost, now and
/// then, the agent's last frames — a port-forward's error, sent just before the agent
/// closed — when the client's data met the closed agent side first.
///
/// When the agent's side ends, the client's is not dropped at once either: what the
/// client still sends is read (and dropped, once the agent takes no more) until it
/// closes, for [`LINGER`] at most. A socket closed with input unread is reset, and the
/// reset can erase the last frames before the client reads them (RFC 9112 §9.6).
async fn splice<A, B>(client: A, agent: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut agent_rd, mut agent_wr) = tokio::io::split(agent);
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut agent_open = true;
        while let Ok(n @ 1..) = client_rd.read(&mut buf).await {
            if agent_open {
                agent_open =
                    agent_wr.write_all(&buf[..n]).await.is_ok() && agent_wr.flush().await.is_ok();
            }
        }
        let _ = agent_wr.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut agent_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
    };
    // Whatever the agent sends reaches the client; the client's side ends with it,
    // after lingering.
    let mut up = tokio::spawn(up);
    down.await;
    if tokio::time::timeout(LINGER, &mut up).await.is_err() {
        up.abort();
    }
}

/// How long a relayed connection whose agent side ended waits for the client to
/// close its side.
const LINGER: Duration = Duration::from_secs(5);

/// Headers passed on to the agent: the upgrade handshake's.
const PASSED: [&str; 7] = [
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
    "accept",
];

fn error(e: &ApiError) -> http::Response<RespBody> {
    let body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
    let mut r = http::Response::new(RespBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = http::StatusCode::from_u16(e.code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// An HTTP/1.1 connection to a node's agent over TLS with the server's kubelet client
/// certificate (upgrades allowed); what went wrong otherwise, to follow "the node
/// agent at HOST".
async fn connect(
    api: &Api,
    host: &str,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let Some(tls) = api.kubelet_client.clone() else {
        return Err("cannot be reached: this server has no kubelet client certificate".into());
    };
    let sock = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(host),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("is unreachable: {e}")),
        Err(_) => return Err("did not answer within 10 s".into()),
    };
    let server_name = rustls::pki_types::ServerName::try_from(
        host.rsplit_once(':')
            .map_or(host, |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string(),
    )
    .unwrap_or_else(|_| rustls::pki_types::ServerName::try_from("localhost").expect("a name"));
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, sock)
        .await
        .map_err(|e| format!("refused the TLS handshake: {e}"))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("failed: {e}"))?;
    tokio::spawn(conn.with_upgrades());
    Ok(sender)
}

/// GETs a path from a node's agent (its Summary API, for metrics.k8s.io); the body of
/// a 200 answer.
pub async fn get_from_agent(
    api: &Api,
    node: &str,
    path: &str,
    timeout: Duration,
) -> Result<Bytes, String> {
    let host = agent_address(api, node).await.map_err(|e| e.message)?;
    let work = async {
        let mut sender = connect(api, &host)
            .await
            .map_err(|e| format!("the node agent at {host} {e}"))?;
        let req = http::Request::get(path)
            .header("host", &host)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("the node agent at {host} failed: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("the node agent at {host} failed: {e}"))?
            .to_bytes();
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!(
                "the node agent at {host} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ))
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("the node agent at {host} did not answer in time")))
}

/// Proxies one request to a node's agent.
pub async fn proxy(
    api: Arc<Api>,
    mut req: http::Request<Incoming>,
    target: Target<'_>,
) -> http::Response<RespBody> {
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let (node, path, what) = match target {
        Target::Pod { ns, pod, sub } => match pod_target(&api, ns, pod, sub, &query).await {
            Ok((node, path)) => (node, path, format!("{sub} of pod {ns}/{pod}")),
            Err(e) => return error(&e),
        },
        Target::Node { node, path } => {
            let path = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            (node.to_string(), path, format!("proxy of node {node}"))
        }
    };
    let host = match agent_address(&api, &node).await {
        Ok(h) => h,
        Err(e) => return error(&e),
    };
    let unreachable = |what_went_wrong: String| {
        error(&ApiError::new(
            502,
            "BadGateway",
            format!("{what}: the node agent at {host} {what_went_wrong}"),
        ))
    };
    let mut sender = match connect(&api, &host).await {
        Ok(s) => s,
        Err(e) => return unreachable(e),
    };
    let mut out = http::Request::builder()
        .method(req.method().clone())
        .uri(&path)
        .header("host", &host);
    for h in PASSED {
        for v in req.headers().get_all(h) {
            out = out.header(h, v);
        }
    }
    let Ok(out) = out.body(Empty::new()) else {
        return error(&ApiError::bad_request("the request could not be passed on"));
    };
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return unreachable(format!("failed: {e}")),
    };
    let status = resp.status();
    let mut answer = http::Response::new(RespBody::Full(None));
    *answer.status_mut() = status;
    for (k, v) in resp.headers() {
        if k != "transfer-encoding" && k != "content-length" {
            answer.headers_mut().append(k, v.clone());
        }
    }
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        let client_up = hyper::upgrade::on(&mut req);
        let agent_up = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(a), Ok(b)) = (client_up.await, agent_up.await) else {
                return;
            };
            splice(TokioIo::new(a), TokioIo::new(b)).await;
        });
        return answer;
    }
    if !status.is_success() {
        // The agent's plain-text error as a Status, as kubectl shows it.
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let code = status.as_u16();
        let reason = match code {
            400 => "BadRequest",
            404 => "NotFound",
            _ => "InternalError",
        };
        return error(&ApiError::new(
            code,
            reason,
            String::from_utf8_lossy(&body).trim().to_string(),
        ));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut body = resp.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    *answer.body_mut() = RespBody::Stream(rx);
    answer
}
