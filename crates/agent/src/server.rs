//! The agent's HTTPS endpoint, where the kubelet's is (port 10250): container logs,
//! exec and attach as WebSocket streams (see [`crate::streaming`]), port-forward
//! ([`crate::portforward`]), for the API server's pod subresources to proxy to; and
//! the Summary API and metrics ([`crate::stats`]). Only clients with a
//! certificate from the cluster's CA get in (the API server's kubelet client); the
//! serving certificate is the agent's own, self-signed, as the kubelet's is when it is
//! not given one.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_engine::cri::{ContainerFilter, ContainerStatus, RuntimeService};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};
use crate::labels;
use crate::Ctx;

/// A response body: whole, or streamed.
pub type Body = BoxBody<Bytes, Infallible>;

/// A whole body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A plain-text response.
pub fn text(status: u16, msg: impl Into<String>) -> http::Response<Body> {
    let mut r = http::Response::new(full(msg.into()));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON response.
fn json(v: &serde_json::Value) -> http::Response<Body> {
    let mut r = http::Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A Prometheus text response.
fn prometheus(body: String) -> http::Response<Body> {
    let mut r = http::Response::new(full(body));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The TLS config: the serving certificate `serving` holds (self-signed until the
/// cluster signs one), client certificates checked against the cluster CA.
pub fn tls_config(
    serving: Arc<crate::credentials::rotate::ServingCert>,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>> {
    let setup = |what: &str, e: &dyn std::fmt::Display| Error::Internal(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = crate::credentials::client::roots(client_ca_pem)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| setup("client verifier", &e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup("TLS", &e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves until the listener fails.
pub(crate) async fn serve(ctx: Arc<Ctx>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(ctx, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds the endpoint; the port actually bound (0 asks for any).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Io(
            format!("listen on {addr} (the agent's endpoint; --kubelet-port changes it)"),
            e,
        )
    })
}

/// Query parameters, decoded (repeated keys kept in order).
pub fn query(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

async fn route(ctx: Arc<Ctx>, req: http::Request<Incoming>) -> http::Response<Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["healthz"] => text(200, "ok"),
        ["stats", "summary"] => match ctx.stats.pair(&ctx).await {
            Ok((before, now)) => json(&crate::stats::summary(&ctx, &before, &now)),
            Err(e) => error_response(&e),
        },
        ["metrics", "resource"] => match ctx.stats.pair(&ctx).await {
            Ok((before, now)) => prometheus(crate::stats::resource_metrics(
                &crate::stats::summary(&ctx, &before, &now),
            )),
            Err(e) => error_response(&e),
        },
        ["metrics"] => match crate::stats::agent_metrics(&ctx).await {
            Ok(m) => prometheus(m),
            Err(e) => error_response(&e),
        },
        ["containerLogs", ns, pod, container] => {
            let (head, _) = req.into_parts();
            match logs(&ctx, &head, ns, pod, container).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
        [kind @ ("exec" | "attach"), ns, pod, container] => {
            crate::streaming::handle(ctx, req, kind, ns, pod, container).await
        }
        [kind @ ("exec" | "attach"), ns, pod, _uid, container] => {
            crate::streaming::handle(ctx, req, kind, ns, pod, container).await
        }
        ["netpath"] => match crate::netpath::handle(ctx, query(req.uri())).await {
            Ok(t) => json(&serde_json::to_value(t).unwrap_or_default()),
            Err(e) => error_response(&e),
        },
        ["portForward", ns, pod] | ["portForward", ns, pod, _] => {
            crate::portforward::handle(ctx, req, ns, pod).await
        }
        _ => text(404, format!("no such endpoint: {path}")),
    }
}

/// An error as the kubelet answers it.
pub fn error_response(e: &Error) -> http::Response<Body> {
    let status = match e {
        Error::Missing(_) => 404,
        Error::Spec(_) => 400,
        _ => 500,
    };
    text(status, e.to_string())
}

/// A container of a pod by names: its newest attempt, or the one before with
/// `previous`.
pub(crate) async fn find_container(
    ctx: &Ctx,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<ContainerStatus> {
    let labels = BTreeMap::from([
        (labels::POD_NAMESPACE.to_string(), ns.to_string()),
        (labels::POD_NAME.to_string(), pod.to_string()),
        (labels::CONTAINER_NAME.to_string(), container.to_string()),
        (labels::NODE.to_string(), ctx.cfg.node_name.clone()),
    ]);
    let mut all = ctx
        .engine(move |core| {
            let mut v = Vec::new();
            for c in core.list_containers(&ContainerFilter {
                labels,
                ..Default::default()
            })? {
                if let Ok(st) = core.container_status(&c.id) {
                    v.push(st);
                }
            }
            Ok(v)
        })
        .await?;
    all.sort_by_key(|c| std::cmp::Reverse((c.summary.created_at, c.summary.metadata.attempt)));
    let idx = usize::from(previous);
    all.into_iter().nth(idx).ok_or_else(|| {
        Error::Missing(if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is not available")
        })
    })
}

/// Log options as the kubelet takes them.
#[derive(Debug, Default)]
struct LogOptions {
    follow: bool,
    previous: bool,
    since: Option<jiff::Timestamp>,
    tail: Option<usize>,
    timestamps: bool,
    limit_bytes: Option<usize>,
}

fn log_options(q: &[(String, String)]) -> Result<LogOptions> {
    let flag = |k: &str| q.iter().any(|(n, v)| n == k && (v == "true" || v == "1"));
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let num = |k: &str| -> Result<Option<i64>> {
        get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| Error::Spec(format!("{k}={v:?} is not a number")))
            })
            .transpose()
    };
    let mut since = None;
    if let Some(s) = num("sinceSeconds")? {
        since = Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(s));
    }
    if let Some(t) = get("sinceTime") {
        since = Some(
            t.parse::<jiff::Timestamp>()
                .map_err(|e| Error::Spec(format!("sinceTime={t:?}: {e}")))?,
        );
    }
    Ok(LogOptions {
        follow: flag("follow"),
        previous: flag("previous"),
        since,
        tail: num("tailLines")?.map(|n| n.max(0) as usize),
        timestamps: flag("timestamps"),
        limit_bytes: num("limitBytes")?.map(|n| n.max(0) as usize),
    })
}

/// Renders complete log entries from CRI lines (partial lines joined).
fn render(text: &str, o: &LogOptions) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut first_time: Option<&str> = None;
    for l in text.lines().filter_map(crate::logs::parse) {
        if first_time.is_none() {
            first_time = Some(l.time);
        }
        pending.push_str(l.content);
        if !l.full {
            continue;
        }
        let time = first_time.take().unwrap_or(l.time);
        let keep = o
            .since
            .is_none_or(|s| time.parse::<jiff::Timestamp>().is_ok_and(|t| t >= s));
        if keep {
            out.push(if o.timestamps {
                format!("{time} {pending}\n")
            } else {
                format!("{pending}\n")
            });
        }
        pending.clear();
    }
    out
}

async fn logs(
    ctx: &Arc<Ctx>,
    head: &http::request::Parts,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<http::Response<Body>> {
    let o = log_options(&query(&head.uri))?;
    let c = find_container(ctx, ns, pod, container, o.previous).await?;
    let path = c.log_path.clone();
    let content = std::fs::read_to_string(&path).unwrap_or_default();
    let mut entries = render(&content, &o);
    if let Some(t) = o.tail {
        let n = entries.len();
        entries.drain(..n.saturating_sub(t));
    }
    let mut body: Vec<u8> = entries.concat().into_bytes();
    if let Some(l) = o.limit_bytes {
        body.truncate(l);
    }
    let mut resp = http::Response::builder()
        .status(200)
        .header("content-type", "text/plain; charset=utf-8");
    if !o.follow || o.limit_bytes.is_some_and(|l| body.len() >= l) {
        return Ok(resp
            .body(full(body))
            .unwrap_or_else(|_| text(500, "response")));
    }
    // Following: what is written from here on, until the container ends.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let _ = tx.send(Ok(Frame::data(Bytes::from(body)))).await;
    let start = content.len() as u64;
    let id = c.summary.id.clone();
    let core = ctx.core.clone();
    let timestamps = o.timestamps;
    tokio::spawn(async move {
        let mut offset = start;
        let mut pending = String::new();
        loop {
            let chunk = tokio::fs::read(&path).await.unwrap_or_default();
            if (chunk.len() as u64) > offset {
                let new = String::from_utf8_lossy(&chunk[offset as usize..]).into_owned();
                // Only whole lines; the rest waits for its end.
                let cut = new.rfind('\n').map_or(0, |i| i + 1);
                offset += cut as u64;
                pending.push_str(&new[..cut]);
                let o = LogOptions {
                    timestamps,
                    ..Default::default()
                };
                let out = render(&pending, &o).concat();
                pending.clear();
                if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                    return;
                }
                continue;
            }
            let id2 = id.clone();
            let core2 = core.clone();
            let running = tokio::task::spawn_blocking(move || {
                core2
                    .container_status(&id2)
                    .map(|s| s.summary.state.is_running())
            })
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or(false);
            if !running {
                // One last read for what was written as it ended.
                let chunk = tokio::fs::read(&path).await.unwrap_or_default();
                if (chunk.len() as u64) > offset {
                    let new = String::from_utf8_lossy(&chunk[offset as usize..]).into_owned();
                    let o = LogOptions {
                        timestamps,
                        ..Default::default()
                    };
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from(render(&new, &o).concat()))))
                        .await;
                }
                return;
            }
            if tx.is_closed() {
                return;
            }
            // The monitor appends as output comes; a short wait between reads keeps a
            // follower within a fraction of a second of the container.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    resp = resp.header("transfer-encoding", "chunked");
    let stream = tokio_stream_of(rx);
    Ok(resp
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| text(500, "response")))
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_render_with_options() {
        let text = "2026-12-04T10:00:00.000000001Z stdout F one\n2026-12-04T10:00:01Z stderr P tw\n2026-12-04T10:00:01.5Z stderr F o\n2026-12-04T10:00:02Z stdout F three\n";
        let all = render(text, &LogOptions::default());
        assert_eq!(all, vec!["one\n", "two\n", "three\n"]);
        let ts = render(
            text,
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
        );
        assert_eq!(ts[1], "2026-12-04T10:00:01Z two\n");
        let since = render(
            text,
            &LogOptions {
                since: Some("2026-12-04T10:00:01Z".parse().unwrap()),
                ..Default::default()
            },
        );
        assert_eq!(since, vec!["two\n", "three\n"]);
        let q = vec![("tailLines".to_string(), "x".to_string())];
        assert!(log_options(&q)
            .unwrap_err()
            .to_string()
            .contains("tailLines"));
    }
}
