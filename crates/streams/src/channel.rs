//! Kubernetes' channel protocol over WebSocket: each binary message starts with its
//! channel (0 stdin, 1 stdout, 2 stderr, 3 the final status, 4 terminal resizes; in
//! v5, 255 closes a channel), and the Status object that ends a remote command.

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// The close message that ends a session: a normal closure is the end of every
/// stream to client-go; a close without a code is an error to it.
pub fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// A binary message of the channel protocol: the channel's number, then the bytes.
pub fn on_channel(ch: u8, data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(ch);
    m.extend_from_slice(data);
    Message::Binary(m.into())
}

/// The Status a remote command ends with (its exit code, or why it could not run),
/// as client-go reads it from the error channel or stream.
pub fn status_json(code: Option<i32>, cmd: &[String]) -> Vec<u8> {
    let v = match code {
        Some(0) | None => json!({"metadata": {}, "status": "Success"}),
        Some(c) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {cmd:?}, exit code {c}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]},
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The Status of a remote command that failed to start.
pub fn failure_json(message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
    }))
    .unwrap_or_default()
}
