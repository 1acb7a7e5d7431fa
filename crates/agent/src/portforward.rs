//! Port forwarding into a pod's network namespace at the kubelet's path
//! (`/portForward/NAMESPACE/POD`): the pod's sandbox found here, the protocols
//! (SPDY, SPDY in a WebSocket, WebSocket channels) spoken by
//! [`berth_streams::portforward`]. The connection is made from inside the sandbox's
//! network namespace to its loopback, as the kubelet's is, so ports a program binds
//! to 127.0.0.1 are reachable too.

use std::sync::Arc;

use berth_engine::cri::{RuntimeService, SandboxFilter, SandboxState};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::server::{error_response, Body};
use crate::{labels, Ctx};

/// The sandbox a pod runs in on this node.
async fn sandbox_of(ctx: &Ctx, ns: &str, pod: &str) -> Result<String> {
    let labels = std::collections::BTreeMap::from([
        (labels::POD_NAMESPACE.to_string(), ns.to_string()),
        (labels::POD_NAME.to_string(), pod.to_string()),
        (labels::NODE.to_string(), ctx.cfg.node_name.clone()),
    ]);
    let mut all = ctx
        .engine(move |core| {
            core.list_pod_sandbox(&SandboxFilter {
                labels,
                state: Some(SandboxState::Ready),
                ..Default::default()
            })
        })
        .await?;
    all.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    all.into_iter().next().map(|s| s.id).ok_or_else(|| {
        Error::Missing(format!(
            "pod {ns}/{pod} has no running sandbox on node {}",
            ctx.cfg.node_name
        ))
    })
}

/// Answers a port-forward request with an upgrade and serves the session.
pub(crate) async fn handle(
    ctx: Arc<Ctx>,
    mut req: http::Request<Incoming>,
    ns: &str,
    pod: &str,
) -> http::Response<Body> {
    let sandbox = match sandbox_of(&ctx, ns, pod).await {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let name = format!("{ns}/{pod}");
    let pod = name.clone();
    let connect: berth_streams::portforward::Connect = Arc::new(move |port| {
        let (ctx, sandbox, pod) = (ctx.clone(), sandbox.clone(), pod.clone());
        Box::pin(async move {
            ctx.engine(move |core| core.port_forward(&sandbox, port))
                .await
                .and_then(|s| {
                    s.set_nonblocking(true)
                        .map_err(|e| Error::Io("a port-forward socket".into(), e))?;
                    TcpStream::from_std(s).map_err(|e| Error::Io("a port-forward socket".into(), e))
                })
                .map_err(|e| format!("error forwarding port {port} to pod {pod}: {e}"))
        })
    });
    let target = berth_streams::portforward::Target { name, connect };
    berth_streams::portforward::upgrade(&mut req, target).map(|b| b.boxed())
}
