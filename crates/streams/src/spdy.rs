//! SPDY/3.1, the server side of what Kubernetes' port-forward, exec and attach speak
//! over it: the client opens streams (SYN_STREAM with a header block), the server
//! answers each (SYN_REPLY) and both sides send DATA frames, a FIN flag ending one
//! direction.
//!
//! Written by hand: SPDY was retired from browsers in favour of HTTP/2 and no
//! maintained Rust crate speaks it, while kubectl 1.32 still does for port-forward
//! (directly after an `Upgrade: SPDY/3.1`, or tunnelled in WebSocket binary messages),
//! and crictl, critest and older kubectls do for exec and attach.
//! Only what that client uses is here: no server push, no priorities, no flow control
//! (the Go client, moby/spdystream, neither sends nor waits for WINDOW_UPDATE).

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: the stream is refused (a protocol error on the peer's side).
const RST_PROTOCOL_ERROR: u32 = 1;
/// The largest frame accepted: a 24-bit length allows 16 MiB; no client of ours sends
/// more than 32 KiB at once.
const MAX_FRAME: usize = 1 << 20;

/// The words SPDY/3's header compression is primed with (draft-mbelshe-httpbis-spdy,
/// section 2.6.10.1): each as a 32-bit big-endian length and the word...
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// ...followed by this text, as is.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,",
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The zlib dictionary of SPDY/3 header blocks.
fn dictionary() -> &'static [u8] {
    static D: OnceLock<Vec<u8>> = OnceLock::new();
    D.get_or_init(|| {
        let mut d = Vec::with_capacity(1424);
        for w in DICTIONARY_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        d
    })
}

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
enum SpdyError {
    /// The connection failed.
    #[error("the connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not SPDY/3 as we know it.
    #[error("the peer broke the protocol: {0}")]
    Protocol(String),
}

fn protocol(m: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(m.into())
}

/// Header names and values of one stream, names in lower case as SPDY sends them.
pub type Headers = Vec<(String, String)>;

/// One stream the peer opened.
pub struct Stream {
    /// Its ID (odd: opened by the client).
    pub id: u32,
    /// The headers of its SYN_STREAM.
    pub headers: Headers,
    incoming: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Out>,
}

impl Stream {
    /// A header's value (names compare without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Splits the stream into its two directions: what the peer sends (ending when it
    /// ends its side, by FIN or reset), and the server's side.
    pub fn split(self) -> (mpsc::Receiver<Bytes>, StreamWriter) {
        (
            self.incoming,
            StreamWriter {
                id: self.id,
                out: self.out,
            },
        )
    }
}

/// The server's side of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Sends data; false once the connection is gone.
    pub async fn send(&self, data: Bytes) -> bool {
        self.out
            .send(Out::Data {
                id: self.id,
                fin: false,
                data,
            })
            .await
            .is_ok()
    }

    /// Ends the server's side of the stream.
    pub async fn close(&self) {
        let _ = self
            .out
            .send(Out::Data {
                id: self.id,
                fin: true,
                data: Bytes::new(),
            })
            .await;
    }
}

/// A frame the server sends.
enum Out {
    Reply(u32),
    Data { id: u32, fin: bool, data: Bytes },
    Ping(u32),
    Reset(u32, u32),
}

/// Serves a SPDY/3.1 connection: the streams the peer opens arrive on the returned
/// channel, each already answered. The session ends when the peer closes or breaks
/// the connection; every stream's reader then ends.
pub fn serve<IO>(io: IO) -> mpsc::Receiver<Stream>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    serve_closable(io).0
}

/// Ends a session from the server's side: its streams' readers end, and the
/// connection closes once what the stream writers queued has gone out and they are
/// dropped.
pub struct Closer(std::sync::Arc<tokio::sync::Notify>);

impl Closer {
    /// Closes the session.
    pub fn close(&self) {
        self.0.notify_one();
    }
}

/// [`serve`], with a [`Closer`] for a server that ends sessions itself (as the
/// kubelet closes a remote command's connection after its status).
pub fn serve_closable<IO>(io: IO) -> (mpsc::Receiver<Stream>, Closer)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel::<Out>(64);
    let (streams_tx, streams_rx) = mpsc::channel::<Stream>(16);
    let closed = std::sync::Arc::new(tokio::sync::Notify::new());
    let writer = tokio::spawn(write_frames(w, out_rx));
    let notified = closed.clone();
    tokio::spawn(async move {
        let mut r = r;
        tokio::select! {
            res = read_frames(&mut r, out_tx, streams_tx) => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "SPDY session ended");
                }
            }
            _ = notified.notified() => {
                // Ended from here: frames stop being read, and the writer ends once
                // every stream writer is dropped and what they queued has gone out.
                // What the peer still sends is read and dropped until then and for
                // a while after, so that no reset erases the last frames (see
                // crate::linger).
                crate::linger::drain_bytes_after(&mut r, writer).await;
            }
        }
    });
    (streams_rx, Closer(closed))
}

async fn read_frames(
    mut r: impl AsyncRead + Unpin,
    out: mpsc::Sender<Out>,
    new_streams: mpsc::Sender<Stream>,
) -> Result<(), SpdyError> {
    let mut inflate = HeaderInflater::new();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(protocol(format!("a frame of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            if !body.is_empty() {
                if let Some(tx) = open.get(&id) {
                    if tx.send(Bytes::from(body)).await.is_err() {
                        open.remove(&id);
                    }
                }
            }
            if flags & FLAG_FIN != 0 {
                open.remove(&id);
            }
            continue;
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(protocol(format!(
                "SPDY version {version}; this is SPDY/3.1"
            )));
        }
        let stream_id = |b: &[u8]| -> Result<u32, SpdyError> {
            b.get(..4)
                .map(|x| u32::from_be_bytes([x[0] & 0x7f, x[1], x[2], x[3]]))
                .ok_or_else(|| protocol("a control frame too short for its stream ID"))
        };
        match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM => {
                let id = stream_id(&body)?;
                // stream ID, associated stream ID, priority and slot: 10 bytes.
                let block = body
                    .get(10..)
                    .ok_or_else(|| protocol("SYN_STREAM too short"))?;
                let headers = inflate.headers(block)?;
                if id % 2 == 0 || open.contains_key(&id) {
                    let _ = out.send(Out::Reset(id, RST_PROTOCOL_ERROR)).await;
                    continue;
                }
                if out.send(Out::Reply(id)).await.is_err() {
                    return Ok(());
                }
                let (tx, rx) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    open.insert(id, tx);
                }
                let s = Stream {
                    id,
                    headers,
                    incoming: rx,
                    out: out.clone(),
                };
                if new_streams.send(s).await.is_err() {
                    return Ok(());
                }
            }
            // Header blocks share one zlib stream: each is inflated, even if unused.
            SYN_REPLY | HEADERS => {
                stream_id(&body)?;
                inflate.headers(&body[4..])?;
            }
            RST_STREAM => {
                open.remove(&stream_id(&body)?);
            }
            PING => {
                let id = stream_id(&body)?;
                let _ = out.send(Out::Ping(id)).await;
            }
            GOAWAY => return Ok(()),
            // SETTINGS, NOOP, WINDOW_UPDATE, CREDENTIAL: nothing this server acts on.
            _ => {}
        }
    }
}

async fn write_frames(
    mut w: impl AsyncWrite + Unpin,
    mut frames: mpsc::Receiver<Out>,
) -> Result<(), SpdyError> {
    let mut deflate = HeaderDeflater::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(f) = frames.recv().await {
        buf.clear();
        encode(&mut buf, f, &mut deflate)?;
        // Whatever else is queued goes out in the same write.
        while let Ok(f) = frames.try_recv() {
            encode(&mut buf, f, &mut deflate)?;
        }
        w.write_all(&buf).await?;
        w.flush().await?;
    }
    let _ = w.shutdown().await;
    Ok(())
}

fn control(buf: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]) {
    buf.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    buf.extend_from_slice(&kind.to_be_bytes());
    buf.push(flags);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    buf.extend_from_slice(body);
}

fn encode(buf: &mut Vec<u8>, f: Out, deflate: &mut HeaderDeflater) -> Result<(), SpdyError> {
    match f {
        Out::Reply(id) => {
            let mut body = id.to_be_bytes().to_vec();
            body.extend(deflate.headers(&[])?);
            control(buf, SYN_REPLY, 0, &body);
        }
        Out::Ping(id) => control(buf, PING, 0, &id.to_be_bytes()),
        Out::Reset(id, status) => {
            let mut body = id.to_be_bytes().to_vec();
            body.extend_from_slice(&status.to_be_bytes());
            control(buf, RST_STREAM, 0, &body);
        }
        Out::Data { id, fin, data } => {
            // Frames of at most 16 MiB - 1 (the length is 24 bits).
            let mut chunks = data.chunks(0xff_ffff).peekable();
            if chunks.peek().is_none() {
                buf.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                buf.push(if fin { FLAG_FIN } else { 0 });
                buf.extend_from_slice(&[0, 0, 0]);
            }
            while let Some(c) = chunks.next() {
                let last = chunks.peek().is_none();
                buf.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                buf.push(if fin && last { FLAG_FIN } else { 0 });
                buf.extend_from_slice(&(c.len() as u32).to_be_bytes()[1..]);
                buf.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

/// The peer's header blocks: one zlib stream across the connection.
struct HeaderInflater(Decompress);

impl HeaderInflater {
    fn new() -> Self {
        HeaderInflater(Decompress::new(true))
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity());
            }
            let before = self.0.total_in();
            let r = self
                .0
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.0.total_in() - before) as usize;
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(_) if pos >= input.len() && out.len() < out.capacity() => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(dictionary())
                        .map_err(|e| protocol(format!("the header dictionary: {e}")))?;
                }
                Err(e) => return Err(protocol(format!("a header block: {e}"))),
            }
            if out.len() > MAX_FRAME {
                return Err(protocol("a header block inflates past 1 MiB"));
            }
        }
        Ok(out)
    }

    fn headers(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let raw = self.inflate(block)?;
        let mut at = 0usize;
        let u32_at = |at: &mut usize| -> Result<usize, SpdyError> {
            let b = raw
                .get(*at..*at + 4)
                .ok_or_else(|| protocol("a truncated header block"))?;
            *at += 4;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let n = u32_at(&mut at)?;
        let mut headers = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let mut pair = [String::new(), String::new()];
            for s in &mut pair {
                let len = u32_at(&mut at)?;
                let b = raw
                    .get(at..at + len)
                    .ok_or_else(|| protocol("a truncated header block"))?;
                at += len;
                *s = String::from_utf8_lossy(b).into_owned();
            }
            let [name, value] = pair;
            headers.push((name.to_ascii_lowercase(), value));
        }
        Ok(headers)
    }
}

/// The server's header blocks: one zlib stream across the connection.
struct HeaderDeflater(Compress);

impl HeaderDeflater {
    fn new() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        // A fresh stream always takes a dictionary.
        let _ = c.set_dictionary(dictionary());
        HeaderDeflater(c)
    }

    fn headers(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, SpdyError> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (n, v) in headers {
            for s in [n.to_ascii_lowercase().as_str(), v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity());
            }
            let before = self.0.total_in();
            self.0
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| protocol(format!("compress a header block: {e}")))?;
            pos += (self.0.total_in() - before) as usize;
            if pos >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_one_spdy3_defines() {
        let d = dictionary();
        // Its length as the spec has it; kubectl's own zlib checks the rest (the
        // Adler-32 a stream names its dictionary by) in the port-forward test.
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream_each_way() {
        let mut out = HeaderDeflater::new();
        let mut inn = HeaderInflater::new();
        for i in 0..3 {
            let port = format!("{}", 8000 + i);
            let block = out
                .headers(&[("streamType", "data"), ("port", &port)])
                .unwrap();
            let h = inn.headers(&block).unwrap();
            assert_eq!(
                h,
                vec![
                    ("streamtype".to_string(), "data".to_string()),
                    ("port".to_string(), port)
                ]
            );
        }
    }

    #[test]
    fn a_session_answers_streams_echoes_pings_and_carries_data() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let mut streams = serve(server);
            let (mut cr, mut cw) = tokio::io::split(client);
            let mut deflate = HeaderDeflater::new();
            let mut frame = Vec::new();
            let mut body = 1u32.to_be_bytes().to_vec();
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            body.extend(deflate.headers(&[("streamType", "data")]).unwrap());
            control(&mut frame, SYN_STREAM, 0, &body);
            control(&mut frame, PING, 0, &7u32.to_be_bytes());
            frame.extend_from_slice(&1u32.to_be_bytes());
            frame.push(FLAG_FIN);
            frame.extend_from_slice(&5u32.to_be_bytes()[1..]);
            frame.extend_from_slice(b"hello");
            cw.write_all(&frame).await.unwrap();
            let s = streams.recv().await.unwrap();
            assert_eq!(s.header("streamType"), Some("data"));
            let (mut r, w) = s.split();
            assert_eq!(r.recv().await.unwrap(), Bytes::from_static(b"hello"));
            assert!(r.recv().await.is_none(), "FIN ends the reader");
            assert!(w.send(Bytes::from_static(b"back")).await);
            w.close().await;
            // SYN_REPLY, PING, DATA "back", DATA FIN: in that order.
            let mut inflate = HeaderInflater::new();
            let mut kinds = Vec::new();
            while kinds.len() < 4 {
                let mut head = [0u8; 8];
                cr.read_exact(&mut head).await.unwrap();
                let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
                let mut b = vec![0u8; len];
                cr.read_exact(&mut b).await.unwrap();
                if head[0] & 0x80 != 0 {
                    let kind = u16::from_be_bytes([head[2], head[3]]);
                    if kind == SYN_REPLY {
                        assert!(inflate.headers(&b[4..]).unwrap().is_empty());
                    }
                    kinds.push(format!("control {kind}"));
                } else {
                    kinds.push(format!(
                        "data {} {}",
                        String::from_utf8_lossy(&b),
                        head[4] & FLAG_FIN
                    ));
                }
            }
            assert_eq!(
                kinds,
                ["control 2", "control 6", "data back 0", "data  1"],
                "{kinds:?}"
            );
        });
    }
}
