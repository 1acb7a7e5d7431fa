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
}
