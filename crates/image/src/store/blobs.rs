//! Writing blobs: into a temporary file under ingest/, hashed on the way, and renamed
//! into blobs/ only when complete and verified, so a crash or a bad download never
//! leaves a half blob under its digest.

use std::io::{BufWriter, Write};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Context, Error, Result};

use super::Store;

/// A blob being written.
pub struct Ingest {
    w: HashingWriter<BufWriter<tempfile::NamedTempFile>>,
    blobs: std::path::PathBuf,
}

impl Ingest {
    pub(super) fn new(store: &Store) -> Result<Ingest> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(store.root().join("ingest"))
            .ctx(|| "create a file in the ingest directory")?;
        Ok(Ingest {
            w: HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp)),
            blobs: store.root().join("blobs/sha256"),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.w.written()
    }

    /// Finishes the blob: flushes and syncs it, checks it against `expected` (if given),
    /// and moves it under its digest. Returns the digest and size.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (digest, size, buf) = self.w.finish();
        let tmp = buf
            .into_inner()
            .map_err(|e| Error::io("flush blob", e.into_error()))?;
        if let Some(want) = expected {
            if want != &digest {
                return Err(Error::DigestMismatch(format!(
                    "blob {want}: the content received hashes to {digest} ({size} bytes); refusing it"
                )));
            }
        }
        tmp.as_file().sync_all().ctx(|| "sync blob")?;
        let dest = self.blobs.join(digest.hex());
        tmp.persist(&dest)
            .map_err(|e| Error::io(format!("store blob {digest}"), e.error))?;
        std::fs::File::open(&self.blobs)
            .and_then(|d| d.sync_all())
            .ctx(|| "sync the blob directory")?;
        Ok((digest, size))
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}
