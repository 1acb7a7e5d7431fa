//! The streaming side of exec, attach and port-forward, as Kubernetes clients speak
//! it, over the engine's CRI-shaped traits:
//!
//! - [`remotecommand`]: exec and attach over a WebSocket with the channel protocol
//!   (v5/v4.channel.k8s.io: kubectl 1.32, kube-rs) or over SPDY/3.1 with one stream
//!   per stdio (crictl, critest, kubectl with websockets turned off);
//! - [`portforward`]: SPDY, SPDY tunnelled in a WebSocket, or WebSocket channels;
//! - [`spdy`]: the SPDY/3.1 framing both use;
//! - [`linger`]: closing a session without a reset that loses its last frames.
//!
//! The node agent serves them at the kubelet's paths for the API server to proxy to;
//! the CRI endpoint serves them at the one-time URLs its Exec, Attach and PortForward
//! hand out. Each caller finds its target (a pod's container, a token's request) and
//! hands the upgrade request here.

pub mod channel;
pub mod linger;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;

use std::sync::Arc;

use bytes::Bytes;

/// A response body (upgrades have none; refusals say why).
pub type Body = http_body_util::Full<Bytes>;

/// The engine the sessions run processes through.
pub type Engine = Arc<dyn berth_engine::cri::RuntimeService + Send + Sync>;

/// A plain-text response.
pub fn text(status: u16, msg: impl Into<String>) -> http::Response<Body> {
    let mut r = http::Response::new(Body::from(msg.into()));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Query parameters, decoded (repeated keys kept in order).
pub fn query(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// A request header's value ("" when absent or not text).
pub(crate) fn header<'a, B>(req: &'a http::Request<B>, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The 101 answer to a WebSocket upgrade with subprotocol `protocol`.
pub(crate) fn websocket_accept(key: &str, protocol: &str) -> http::response::Builder {
    http::Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header(
            "sec-websocket-accept",
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
        )
        .header("sec-websocket-protocol", protocol)
}
