//! Ending a connection from this side without resetting it. A socket closed while
//! input from the peer is still unread makes the kernel answer with a reset, and a
//! reset can erase what the peer has received but not yet read: the last frames of a
//! session, which are the ones that matter (a refused port's error, an exit status).
//! HTTP servers guard against the same with a lingering close (RFC 9112 §9.6): after
//! their last write they read and drop input until the peer closes, for a while.

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a session this side ended waits for the peer to close its side.
pub const LINGER: Duration = Duration::from_secs(5);

/// Reads and drops what the peer still sends until it closes (end of input or an
/// error), for [`LINGER`] at most.
pub async fn drain_bytes(mut from_peer: impl AsyncRead + Unpin) {
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = from_peer.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// How long, at most, the last frames may take to go out before the lingering starts
/// anyway.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(60);

/// Reads and drops what the peer sends while `sending` (the last frames going out)
/// runs — a slow peer may take long to take them, and keeps sending meanwhile
/// (window updates, pings) — for [`FLUSH_LIMIT`] at most; then [`drain_bytes`].
pub async fn drain_bytes_after(mut from_peer: impl AsyncRead + Unpin, sending: impl Future) {
    let mut buf = vec![0u8; 16 * 1024];
    let reading = async {
        while let Ok(n) = from_peer.read(&mut buf).await {
            if n == 0 {
                return true;
            }
        }
        true
    };
    let peer_closed = tokio::time::timeout(FLUSH_LIMIT, async {
        tokio::pin!(sending);
        tokio::select! {
            _ = &mut sending => false,
            closed = reading => closed,
        }
    })
    .await
    .unwrap_or(false);
    if !peer_closed {
        drain_bytes(from_peer).await;
    }
}

/// [`drain_bytes`] for a WebSocket's messages: until the close handshake ends the
/// stream (the peer's answering close) or it fails, for [`LINGER`] at most.
pub async fn drain_messages<T, E>(mut from_peer: impl Stream<Item = Result<T, E>> + Unpin) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(_)) = from_peer.next().await {}
    })
    .await;
}
