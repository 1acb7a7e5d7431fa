//! Layer compression: gzip and zstd (and none), chosen by media type and checked against
//! the stream's own magic bytes (docker archives often hold uncompressed layers whatever
//! their name says).

use std::io::{BufRead, BufReader, Read};

use crate::error::{Error, Result};

/// A layer's compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// tar+gzip.
    Gzip,
    /// tar+zstd.
    Zstd,
}

impl Compression {
    /// The compression a layer media type names; an error for what is not a layer.
    pub fn from_media_type(mt: &str) -> Result<Compression> {
        match mt {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
            other => Err(Error::invalid(format!(
                "unknown layer media type {other:?} (supported: OCI and Docker tar, tar+gzip, tar+zstd)"
            ))),
        }
    }

    /// The OCI media type of a layer with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// What the first bytes of a stream say.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps a (possibly compressed) layer stream into its uncompressed tar stream; the
/// magic bytes decide, so a mislabelled layer still reads.
pub fn decompress<'a, R: Read + 'a>(r: R) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 * 1024, r);
    let head = br.fill_buf().map_err(|e| Error::io("read layer", e))?;
    Ok(match Compression::sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|e| Error::invalid(format!("zstd layer: {e}")))?,
        ),
        Compression::None => Box::new(br),
    })
}

/// How much the reading-ahead thread decompresses per hand-over.
const AHEAD_CHUNK: usize = 256 * 1024;

/// Hand-overs the reading-ahead thread may be ahead by (4 MiB in all).
const AHEAD_DEPTH: usize = 16;

/// Runs `consume` on a stream that another thread produces: `make` opens it there (a
/// decompressor, maybe hashing), the thread reads it ahead in chunks while `consume`
/// works on what came, and `finish` turns the source into a result once it is read
/// to its end (or `consume` is done with it). Unpacking a layer is decompression on one
/// side and file writes on the other: on two cores they overlap, as `tar --zstd`'s
/// two processes do.
pub fn read_ahead<S, T, U>(
    make: impl FnOnce() -> Result<S> + Send,
    finish: impl FnOnce(S) -> U + Send,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, U)>
where
    S: Read,
    U: Send,
{
    use std::sync::mpsc;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(AHEAD_DEPTH);
        let (spent_tx, spent_rx) = mpsc::channel::<Vec<u8>>();
        let producer = scope.spawn(move || -> Result<U> {
            let mut source = match make() {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string())));
                    return Err(e);
                }
            };
            loop {
                let mut buf = spent_rx.try_recv().unwrap_or_default();
                buf.resize(AHEAD_CHUNK, 0);
                let mut filled = 0;
                let res = loop {
                    match source.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let done = filled < AHEAD_CHUNK || res.is_err();
                let sent = match res {
                    Ok(()) if filled == 0 => true,
                    Ok(()) => tx.send(Ok(buf)).is_ok(),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        false
                    }
                };
                if done || !sent {
                    break;
                }
            }
            Ok(finish(source))
        });
        let mut reader = AheadReader {
            rx,
            spent: spent_tx,
            cur: Vec::new(),
            pos: 0,
        };
        let consumed = consume(&mut reader);
        // Unblocks a producer still waiting to hand over.
        drop(reader);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::invalid("the decompressing thread panicked")));
        match (consumed, produced) {
            (Ok(t), Ok(u)) => Ok((t, u)),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        }
    })
}

/// The consuming side of [`read_ahead`].
struct AheadReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    spent: std::sync::mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for AheadReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let spent = std::mem::replace(&mut self.cur, next);
                    let _ = self.spent.send(spent);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The producer is done: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// [`read_ahead`] of a (possibly compressed) layer stream: `consume` reads its tar.
pub fn unpack_ahead<R: Read + Send, T>(
    compressed: R,
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    read_ahead(|| decompress(compressed), drop, consume).map(|(t, ())| t)
}

/// A gzip encoder at the level docker uses for layers it writes (fast, not smallest).
pub fn gzip_writer<W: std::io::Write>(w: W) -> flate2::write::GzEncoder<W> {
    flate2::write::GzEncoder::new(w, flate2::Compression::fast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn round_trips_by_magic() {
        let mut gz = gzip_writer(Vec::new());
        gz.write_all(b"hello").unwrap();
        let data = gz.finish().unwrap();
        let mut out = String::new();
        decompress(&data[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello");
        let z = zstd::encode_all(&b"zz"[..], 3).unwrap();
        let mut out = String::new();
        decompress(&z[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "zz");
        let mut out = String::new();
        decompress(&b"plain"[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "plain");
        assert!(Compression::from_media_type("application/x-nope").is_err());
    }

    #[test]
    fn reading_ahead_gives_the_whole_stream_and_its_errors() {
        let data: Vec<u8> = (0..3 * AHEAD_CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let z = zstd::encode_all(&data[..], 3).unwrap();
        let (got, n) = read_ahead(
            || decompress(&z[..]),
            |_| 7,
            |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v).map_err(|e| Error::io("read", e))?;
                Ok(v)
            },
        )
        .unwrap();
        assert_eq!((got == data, n), (true, 7));
        // A consumer that stops early does not leave the producer waiting.
        let first = unpack_ahead(&z[..], |r| {
            let mut b = [0u8; 10];
            r.read_exact(&mut b).map_err(|e| Error::io("read", e))?;
            Ok(b)
        })
        .unwrap();
        assert_eq!(&first[..], &data[..10]);
        // A corrupt stream is the consumer's read error.
        let mut bad = z.clone();
        let mid = bad.len() / 2;
        bad.truncate(mid);
        let e = unpack_ahead(&bad[..], |r| {
            std::io::copy(r, &mut std::io::sink()).map_err(|e| Error::io("read", e))
        })
        .unwrap_err();
        assert!(e.to_string().contains("read"), "{e}");
    }
}
