//! exec and attach at the kubelet's paths (`/exec/NAMESPACE/POD/CONTAINER?command=...`,
//! `/attach/...`): the container found here, the protocols (WebSocket channels as
//! kubectl 1.32 speaks them, SPDY as older clients do) spoken by
//! [`berth_streams::remotecommand`].

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::server::{error_response, find_container, query, text, Body};
use crate::Ctx;

/// What the client asked for.
struct Options {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn options(q: &[(String, String)]) -> Options {
    let flag = |k: &str| q.iter().any(|(n, v)| n == k && (v == "true" || v == "1"));
    Options {
        command: q
            .iter()
            .filter(|(n, _)| n == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        tty: flag("tty"),
    }
}

/// Upgrades an exec or attach request and runs the session.
pub(crate) async fn handle(
    ctx: Arc<Ctx>,
    mut req: http::Request<Incoming>,
    kind: &str,
    ns: &str,
    pod: &str,
    container: &str,
) -> http::Response<Body> {
    let o = options(&query(req.uri()));
    if kind == "exec" && o.command.is_empty() {
        return text(400, "exec needs a command (command=...)");
    }
    let c = match find_container(&ctx, ns, pod, container, false).await {
        Ok(c) if c.summary.state.is_running() => c,
        Ok(_) => {
            return text(
                400,
                format!("container {container} is not running in pod {ns}/{pod}"),
            )
        }
        Err(e) => return error_response(&e),
    };
    let session = berth_streams::remotecommand::Session {
        engine: Arc::new(ctx.core.clone()),
        request: berth_streams::remotecommand::Request {
            container_id: c.summary.id.clone(),
            kind: if kind == "exec" {
                berth_streams::remotecommand::Kind::Exec(o.command)
            } else {
                berth_streams::remotecommand::Kind::Attach
            },
            stdin: o.stdin,
            stdout: o.stdout,
            stderr: o.stderr,
            tty: o.tty,
        },
    };
    berth_streams::remotecommand::upgrade(&mut req, session).map(|b| b.boxed())
}
