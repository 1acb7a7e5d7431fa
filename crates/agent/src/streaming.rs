//! exec and attach as kubectl 1.32 speaks them: a WebSocket with Kubernetes' channel
//! protocol (v5.channel.k8s.io, or v4): each binary message starts with its channel —
//! 0 stdin, 1 stdout, 2 stderr, 3 the final status (a Status object), 4 terminal
//! resizes (JSON {"Width","Height"}), and in v5 255 to close a channel (stdin's end).

use std::io::{Read, Write};
use std::sync::Arc;

use berth_engine::cri::{ExecRequest, RuntimeService};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

use crate::server::{error_response, find_container, query, text, Body};
use crate::Ctx;

const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// What the client asked for.
struct Options {
    command: Vec<String>,
    stdin: bool,
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
        tty: flag("tty"),
    }
}

/// Upgrades an exec or attach request to a WebSocket and runs the session.
pub(crate) async fn handle(
    ctx: Arc<Ctx>,
    mut req: http::Request<Incoming>,
    kind: &str,
    ns: &str,
    pod: &str,
    container: &str,
) -> http::Response<Body> {
    let offered = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(protocol) = PROTOCOLS
        .iter()
        .find(|p| offered.split(',').any(|o| o.trim() == **p))
    else {
        return text(
            400,
            format!(
                "berth's agent streams {kind} over WebSocket ({}); offered: {offered:?} (SPDY is not supported)",
                PROTOCOLS.join(", ")
            ),
        );
    };
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return text(400, "a WebSocket upgrade needs Sec-WebSocket-Key");
    };
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
    let upgrade = hyper::upgrade::on(&mut req);
    let kind = kind.to_string();
    let v5 = *protocol == PROTOCOLS[0];
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(up),
            Role::Server,
            None,
        )
        .await;
        if let Err(e) = session(ctx, ws, &kind, c.summary.id.clone(), o, v5).await {
            tracing::debug!(error = %e, "stream session ended with an error");
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    http::Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", *protocol)
        .body(crate::server::full(Bytes::new()))
        .unwrap_or_else(|_| text(500, "response"))
}

/// The close message that ends a session: a normal closure is the end of every
/// stream to client-go; a close without a code is an error to it.
pub(crate) fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// A binary message of the channel protocol: the channel's number, then the bytes.
pub(crate) fn on_channel(ch: u8, data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(ch);
    m.extend_from_slice(data);
    Message::Binary(m.into())
}

/// What reaches the client: (channel, bytes).
type Out = (u8, Vec<u8>);

fn pump(
    mut r: impl Read + Send + 'static,
    channel: u8,
    tx: mpsc::Sender<Out>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send((channel, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

fn status_json(code: Option<i32>, cmd: &[String]) -> Vec<u8> {
    let v = match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(c) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {cmd:?}, exit code {c}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]},
        }),
        None => json!({"metadata": {}, "status": "Success"}),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Input from the client, as the session applies it.
enum In {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(u16, u16),
}

async fn session(
    ctx: Arc<Ctx>,
    ws: tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    kind: &str,
    id: String,
    o: Options,
    v5: bool,
) -> Result<(), String> {
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    let (in_tx, in_rx) = std::sync::mpsc::channel::<In>();
    let core = ctx.core.clone();
    let cmd = o.command.clone();
    // The process side runs on threads: the engine's streams are blocking files.
    let done = if kind == "exec" {
        let req = ExecRequest {
            cmd: o.command.clone(),
            tty: o.tty,
            stdin: o.stdin,
            ..Default::default()
        };
        let mut s = tokio::task::spawn_blocking(move || core.exec(&id, &req))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut pumps = Vec::new();
        if let Some(t) = &s.terminal {
            let r = t.try_clone().map_err(|e| e.to_string())?;
            pumps.push(pump(r, 1, out_tx.clone()));
        }
        if let Some(r) = s.stdout.take() {
            pumps.push(pump(r, 1, out_tx.clone()));
        }
        if let Some(r) = s.stderr.take() {
            pumps.push(pump(r, 2, out_tx.clone()));
        }
        let mut stdin = s.stdin.take();
        let mut term_in = s.terminal.as_ref().and_then(|t| t.try_clone().ok());
        let term_size = s.terminal.as_ref().and_then(|t| t.try_clone().ok());
        std::thread::spawn(move || {
            while let Ok(m) = in_rx.recv() {
                match m {
                    In::Stdin(b) => {
                        if let Some(t) = term_in.as_mut() {
                            let _ = t.write_all(&b);
                        } else if let Some(w) = stdin.as_mut() {
                            let _ = w.write_all(&b);
                        }
                    }
                    In::CloseStdin => {
                        stdin = None;
                    }
                    In::Resize(w, h) => {
                        if let Some(t) = &term_size {
                            let _ = rustix::termios::tcsetwinsize(
                                t,
                                rustix::termios::Winsize {
                                    ws_row: h,
                                    ws_col: w,
                                    ws_xpixel: 0,
                                    ws_ypixel: 0,
                                },
                            );
                        }
                    }
                }
            }
        });
        let out = out_tx.clone();
        tokio::task::spawn_blocking(move || {
            let code = s.wait().ok();
            // All output before the status.
            for p in pumps {
                let _ = p.join();
            }
            let _ = out.blocking_send((3, status_json(code, &cmd)));
        })
    } else {
        let size = None;
        let s = tokio::task::spawn_blocking(move || core.attach(&id, size))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let reader = s.stream.try_clone().map_err(|e| e.to_string())?;
        let mut writer = s.stream.try_clone().map_err(|e| e.to_string())?;
        let out = out_tx.clone();
        let t = tokio::task::spawn_blocking(move || {
            let mut r = reader;
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out.blocking_send((1, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = out.blocking_send((3, status_json(Some(0), &[])));
        });
        std::thread::spawn(move || {
            while let Ok(m) = in_rx.recv() {
                match m {
                    In::Stdin(b) => {
                        let _ = writer.write_all(&b);
                    }
                    In::CloseStdin => {
                        let _ = writer.shutdown(std::net::Shutdown::Write);
                    }
                    In::Resize(w, h) => {
                        let _ = s.resize(h, w);
                    }
                }
            }
        });
        t
    };
    drop(out_tx);
    let reader = async {
        while let Some(Ok(m)) = stream.next().await {
            let data = match m {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, rest)) = data.split_first() else {
                continue;
            };
            let msg = match ch {
                0 => In::Stdin(rest.to_vec()),
                4 => {
                    let v: serde_json::Value = serde_json::from_slice(rest).unwrap_or_default();
                    In::Resize(
                        v["Width"].as_u64().unwrap_or(80) as u16,
                        v["Height"].as_u64().unwrap_or(24) as u16,
                    )
                }
                255 if v5 && rest.first() == Some(&0) => In::CloseStdin,
                _ => continue,
            };
            if in_tx.send(msg).is_err() {
                break;
            }
        }
    };
    let writer = async {
        while let Some((ch, data)) = out_rx.recv().await {
            if sink
                .send(crate::streaming::on_channel(ch, &data))
                .await
                .is_err()
            {
                return;
            }
            if ch == 3 {
                break;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    drop(done);
    Ok(())
}
