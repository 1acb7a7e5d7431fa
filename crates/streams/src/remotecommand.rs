//! exec and attach: a process's stdio carried to the client over a WebSocket with the
//! channel protocol ([`crate::channel`]; v5.channel.k8s.io or v4), or over SPDY/3.1
//! (v4.channel.k8s.io) with one stream per stdio: `stdin`, `stdout`, `stderr`, `resize`
//! (JSON `{"Width","Height"}` objects) and `error`, which carries the final Status.

use std::io::{Read, Write};
use std::time::Duration;

use berth_engine::cri::ExecRequest;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

use crate::channel::{failure_json, normal_close, on_channel, status_json};
use crate::{header, spdy, text, Body, Engine};

/// The WebSocket subprotocols served, best first.
const WEBSOCKET_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The SPDY stream protocol served (client-go's remotecommand offers it first).
const SPDY_PROTOCOL: &str = "v4.channel.k8s.io";
/// How long a SPDY client has to open the streams it asked for (the kubelet's).
const STREAM_CREATION: Duration = Duration::from_secs(30);

/// What runs.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A new process: command and arguments.
    Exec(Vec<String>),
    /// The container's own stdio.
    Attach,
}

/// A remote command, its target found by the caller.
pub struct Session {
    /// The engine that runs it.
    pub engine: Engine,
    /// What to run, where.
    pub request: Request,
}

/// What a remote command is: the container, exec or attach, and the stdio asked for.
#[derive(Clone, Debug)]
pub struct Request {
    /// The container.
    pub container_id: String,
    /// Exec or attach.
    pub kind: Kind,
    /// The client sends input.
    pub stdin: bool,
    /// The client wants output.
    pub stdout: bool,
    /// The client wants errors apart (not with a terminal).
    pub stderr: bool,
    /// A terminal.
    pub tty: bool,
}

/// What the client's side of the wire is.
enum Wire {
    WebSocket { key: String, protocol: &'static str },
    Spdy,
}

/// Answers an exec or attach request: the upgrade (101) when the client speaks a
/// protocol served here, with the session running once the connection is handed
/// over; otherwise a 400 that says what is spoken.
pub fn upgrade(req: &mut http::Request<Incoming>, session: Session) -> http::Response<Body> {
    let wire = match negotiate(req) {
        Ok(w) => w,
        Err((status, why)) => return text(status, why),
    };
    let on_upgrade = hyper::upgrade::on(req);
    let response = match &wire {
        Wire::WebSocket { key, protocol } => crate::websocket_accept(key, protocol),
        Wire::Spdy => http::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "SPDY/3.1")
            .header("x-stream-protocol-version", SPDY_PROTOCOL),
    };
    tokio::spawn(async move {
        let Ok(up) = on_upgrade.await else { return };
        let io = TokioIo::new(up);
        match wire {
            Wire::WebSocket { protocol, .. } => {
                let ws =
                    tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None)
                        .await;
                over_websocket(session, ws, protocol == WEBSOCKET_PROTOCOLS[0]).await
            }
            Wire::Spdy => over_spdy(session, io).await,
        }
    });
    response
        .body(Body::default())
        .unwrap_or_else(|_| text(500, "response"))
}

/// The wire the client asks for, or the status and reason of a refusal.
fn negotiate(req: &http::Request<Incoming>) -> Result<Wire, (u16, String)> {
    let upgrade = header(req, "upgrade").to_ascii_lowercase();
    if upgrade == "websocket" {
        let offered = header(req, "sec-websocket-protocol");
        let Some(protocol) = WEBSOCKET_PROTOCOLS
            .into_iter()
            .find(|p| offered.split(',').any(|o| o.trim() == *p))
        else {
            return Err((
                400,
                format!(
                    "exec and attach over WebSocket speak {}; offered: {offered:?}",
                    WEBSOCKET_PROTOCOLS.join(", ")
                ),
            ));
        };
        let key = header(req, "sec-websocket-key");
        if key.is_empty() {
            return Err((400, "a WebSocket upgrade needs Sec-WebSocket-Key".into()));
        }
        return Ok(Wire::WebSocket {
            key: key.to_string(),
            protocol,
        });
    }
    if upgrade.starts_with("spdy/3.1") {
        let offered: Vec<&str> = req
            .headers()
            .get_all("x-stream-protocol-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if !offered.contains(&SPDY_PROTOCOL) {
            return Err((
                403,
                format!("exec and attach over SPDY speak {SPDY_PROTOCOL}; offered: {offered:?}"),
            ));
        }
        return Ok(Wire::Spdy);
    }
    Err((
        400,
        "exec and attach need an upgrade: WebSocket (v5.channel.k8s.io or v4.channel.k8s.io) or SPDY/3.1 (v4.channel.k8s.io)".into(),
    ))
}

/// What reaches the client: (channel, bytes); channel 3 is the final Status.
type Out = (u8, Vec<u8>);

/// Input from the client, as the process side applies it.
enum In {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(u16, u16),
}

/// A running command: its output arrives on `out` (ending with the Status on channel
/// 3); input goes to `input`.
struct Running {
    out: mpsc::Receiver<Out>,
    input: std::sync::mpsc::Sender<In>,
}

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

fn set_size(t: &std::fs::File, width: u16, height: u16) {
    let _ = rustix::termios::tcsetwinsize(
        t,
        rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    );
}

/// Starts the command. The process side runs on threads: the engine's streams are
/// blocking files.
async fn start(s: &Session) -> Result<Running, String> {
    let (out_tx, out) = mpsc::channel::<Out>(64);
    let (input, in_rx) = std::sync::mpsc::channel::<In>();
    let engine = s.engine.clone();
    let id = s.request.container_id.clone();
    match &s.request.kind {
        Kind::Exec(cmd) => {
            let req = ExecRequest {
                cmd: cmd.clone(),
                tty: s.request.tty,
                stdin: s.request.stdin,
                ..Default::default()
            };
            let mut p = tokio::task::spawn_blocking(move || engine.exec(&id, &req))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let mut pumps = Vec::new();
            if let Some(t) = &p.terminal {
                let r = t.try_clone().map_err(|e| e.to_string())?;
                pumps.push(pump(r, 1, out_tx.clone()));
            }
            if let Some(r) = p.stdout.take() {
                pumps.push(pump(r, 1, out_tx.clone()));
            }
            if let Some(r) = p.stderr.take() {
                pumps.push(pump(r, 2, out_tx.clone()));
            }
            let mut stdin = p.stdin.take();
            let mut term_in = p.terminal.as_ref().and_then(|t| t.try_clone().ok());
            let term_size = p.terminal.as_ref().and_then(|t| t.try_clone().ok());
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
                            // A terminal's end of input is its EOF character.
                            if let Some(t) = term_in.as_mut() {
                                let _ = t.write_all(&[4]);
                            }
                        }
                        In::Resize(w, h) => {
                            if let Some(t) = &term_size {
                                set_size(t, w, h);
                            }
                        }
                    }
                }
            });
            let cmd = cmd.clone();
            tokio::task::spawn_blocking(move || {
                let waited = p.wait();
                // All output before the status.
                for t in pumps {
                    let _ = t.join();
                }
                let status = match waited {
                    Ok(code) => status_json(Some(code), &cmd),
                    Err(e) => failure_json(&format!("waiting for the command: {e}")),
                };
                let _ = out_tx.blocking_send((3, status));
            });
        }
        Kind::Attach => {
            let a = tokio::task::spawn_blocking(move || engine.attach(&id, None))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let mut reader = a.stream.try_clone().map_err(|e| e.to_string())?;
            let mut writer = a.stream.try_clone().map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out_tx.blocking_send((1, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = out_tx.blocking_send((3, status_json(Some(0), &[])));
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
                            let _ = a.resize(h, w);
                        }
                    }
                }
                // The session is over (the client went): the output thread, blocked in
                // a read until the container next writes, ends now.
                let _ = writer.shutdown(std::net::Shutdown::Both);
            });
        }
    }
    Ok(Running { out, input })
}

/// A terminal size message of the resize channel or stream.
fn resize(v: &serde_json::Value) -> In {
    In::Resize(
        v["Width"].as_u64().unwrap_or(80) as u16,
        v["Height"].as_u64().unwrap_or(24) as u16,
    )
}

async fn over_websocket<S>(s: Session, ws: tokio_tungstenite::WebSocketStream<S>, v5: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let mut run = match start(&s).await {
        Ok(r) => r,
        Err(e) => {
            let _ = sink.send(on_channel(3, &failure_json(&e))).await;
            let _ = sink.send(normal_close()).await;
            crate::linger::drain_messages(&mut stream).await;
            return;
        }
    };
    let input = run.input.clone();
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
                4 => resize(&serde_json::from_slice(rest).unwrap_or_default()),
                255 if v5 && rest.first() == Some(&0) => In::CloseStdin,
                _ => continue,
            };
            if input.send(msg).is_err() {
                break;
            }
        }
    };
    let writer = async {
        while let Some((ch, data)) = run.out.recv().await {
            if sink.send(on_channel(ch, &data)).await.is_err() {
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
        _ = writer => {
            // The status and our close are out: they must not be lost to a reset.
            crate::linger::drain_messages(&mut stream).await;
        }
        _ = reader => {}
    }
}

/// The streams a SPDY client opens, by type.
#[derive(Default)]
struct SpdyStreams {
    error: Option<spdy::Stream>,
    stdin: Option<spdy::Stream>,
    stdout: Option<spdy::Stream>,
    stderr: Option<spdy::Stream>,
    resize: Option<spdy::Stream>,
}

impl SpdyStreams {
    fn complete(&self, s: &Session) -> bool {
        self.error.is_some()
            && (!s.request.stdin || self.stdin.is_some())
            && (!s.request.stdout || self.stdout.is_some())
            && (!s.request.stderr || s.request.tty || self.stderr.is_some())
            && (!s.request.tty || self.resize.is_some())
    }
}

/// Ends a SPDY remote command as client-go waits for it: stdout and stderr end first
/// (it reads the error stream only after them), then the Status on the error stream;
/// then the connection closes, as the kubelet closes it.
async fn finish(
    outs: [&Option<spdy::StreamWriter>; 2],
    error: &Option<spdy::StreamWriter>,
    status: Vec<u8>,
    closer: &spdy::Closer,
) {
    for w in outs.into_iter().flatten() {
        w.close().await;
    }
    if let Some(e) = error {
        e.send(Bytes::from(status)).await;
        e.close().await;
    }
    closer.close();
}

async fn over_spdy(s: Session, io: impl AsyncRead + AsyncWrite + Send + 'static) {
    let (mut incoming, closer) = spdy::serve_closable(io);
    let mut streams = SpdyStreams::default();
    let gathered = tokio::time::timeout(STREAM_CREATION, async {
        while !streams.complete(&s) {
            let Some(st) = incoming.recv().await else {
                return false;
            };
            let slot = match st.header("streamType").unwrap_or("") {
                "error" => &mut streams.error,
                "stdin" => &mut streams.stdin,
                "stdout" => &mut streams.stdout,
                "stderr" => &mut streams.stderr,
                "resize" => &mut streams.resize,
                other => {
                    tracing::debug!(
                        stream = other,
                        "remote command: a stream of an unknown type"
                    );
                    continue;
                }
            };
            *slot = Some(st);
        }
        true
    })
    .await;
    let error = streams.error.take().map(|e| e.split().1);
    let stdout = streams.stdout.take().map(|st| st.split().1);
    let stderr = streams.stderr.take().map(|st| st.split().1);
    let outs = [&stdout, &stderr];
    if gathered != Ok(true) {
        let why = failure_json("the client did not open the streams it asked for within 30 s");
        return finish(outs, &error, why, &closer).await;
    }
    let mut run = match start(&s).await {
        Ok(r) => r,
        Err(e) => return finish(outs, &error, failure_json(&e), &closer).await,
    };
    if let Some(st) = streams.stdin.take() {
        let (mut rx, _) = st.split();
        let input = run.input.clone();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if input.send(In::Stdin(b.to_vec())).is_err() {
                    return;
                }
            }
            let _ = input.send(In::CloseStdin);
        });
    }
    if let Some(st) = streams.resize.take() {
        let (mut rx, _) = st.split();
        let input = run.input.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(b) = rx.recv().await {
                buf.extend_from_slice(&b);
                // Whole JSON objects, one after another, as Go's encoder writes them.
                let mut objects =
                    serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
                let mut used = 0;
                while let Some(Ok(v)) = objects.next() {
                    used = objects.byte_offset();
                    if input.send(resize(&v)).is_err() {
                        return;
                    }
                }
                buf.drain(..used);
            }
        });
    }
    let mut status = None;
    while let Some((ch, data)) = run.out.recv().await {
        let to = match ch {
            1 => stdout.as_ref(),
            2 => stderr.as_ref().or(stdout.as_ref()),
            _ => {
                status = Some(data);
                break;
            }
        };
        if let Some(w) = to {
            if !w.send(Bytes::from(data)).await {
                closer.close();
                return;
            }
        }
    }
    let status =
        status.unwrap_or_else(|| failure_json("the command's output ended without a status"));
    finish(outs, &error, status, &closer).await;
}
