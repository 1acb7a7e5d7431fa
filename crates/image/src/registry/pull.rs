//! Pull: manifest (and index) → config → layers, downloaded at once and each unpacked
//! as soon as it is complete; the name is set only when every piece is in the store.

use std::io::Write;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;

use super::{status_error, Client, Endpoint, Idempotent};
use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::image::ResolvedImage;
use crate::oci::{self, Parsed, Platform};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::Store;

/// The first byte of a 206 response's `Content-Range: bytes START-END/TOTAL`.
fn range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    v.strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Feeds a blob's bytes, as they arrive, to an unpacker on a blocking thread.
pub(super) type Tee = tokio::sync::mpsc::Sender<std::result::Result<Vec<u8>, String>>;

/// The unpacker's side of a [`Tee`]: a `Read` over the chunks.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::result::Result<Vec<u8>, String>>,
    cur: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Largest manifest accepted (the distribution spec's suggested limit).
const MAX_MANIFEST: usize = 4 << 20;

/// What a pull stored.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The name set in the store.
    pub name: String,
    /// The top-level digest (index or manifest) the name points to.
    pub digest: Digest,
    /// The image ID (config digest) for the platform.
    pub id: Digest,
    /// Whether anything had to be downloaded.
    pub downloaded: bool,
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

impl Client {
    /// Fetches a manifest by tag or digest; returns its bytes, media type and digest
    /// (checked against the digest asked for, and the registry's Docker-Content-Digest).
    pub(super) async fn fetch_manifest(
        &self,
        ep: &Endpoint,
        repo: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String, Digest)> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", ep.base);
        let resp = self
            .send(ep, &pull_scope(repo), Idempotent::Yes, &|h| {
                Ok(h.get(url.as_str())
                    .header(reqwest::header::ACCEPT, oci::ACCEPT))
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(format!(
                "registry {}: manifest {repo}:{reference} not found",
                ep.registry
            )));
        }
        if !resp.status().is_success() {
            return Err(status_error(ep, &format!("get manifest {repo}:{reference}"), resp).await);
        }
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
            .unwrap_or_default();
        let claimed = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<Digest>().ok());
        let mut bytes = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Error::Registry(format!(
                    "registry {}: read manifest: {}",
                    ep.registry,
                    super::chain(&e)
                ))
            })?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_MANIFEST {
                return Err(Error::invalid(format!(
                    "registry {}: manifest {repo}:{reference} is larger than 4 MiB",
                    ep.registry
                )));
            }
        }
        let digest = Digest::of(&bytes);
        if let Ok(want) = reference.parse::<Digest>() {
            if want != digest {
                return Err(Error::DigestMismatch(format!(
                    "registry {}: manifest {repo}@{want} arrived with digest {digest}; refusing it",
                    ep.registry
                )));
            }
        } else if let Some(c) = claimed {
            if c != digest {
                return Err(Error::DigestMismatch(format!(
                    "registry {}: manifest {repo}:{reference} hashes to {digest} but the registry says {c}",
                    ep.registry
                )));
            }
        }
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(String::from)
            })
            .unwrap_or(media_type);
        Ok((bytes, media_type, digest))
    }

    /// Downloads one blob into the store, verified against its digest; resumes with a
    /// Range request when the connection drops mid-blob.
    pub(super) async fn fetch_blob(
        &self,
        ep: &Endpoint,
        store: &Store,
        repo: &str,
        (digest, size): (&Digest, u64),
        bar: &crate::progress::Bar,
        mut tee: Option<Tee>,
    ) -> Result<()> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", ep.base);
        let mut ingest = store.ingest()?;
        let mut attempt = 0u32;
        loop {
            let offset = ingest.written();
            if offset > 0 && offset == size {
                // The connection broke after the last byte: nothing is left to fetch.
                break;
            }
            let resp = self
                .send(ep, &pull_scope(repo), Idempotent::Yes, &|h| {
                    let r = h.get(url.as_str());
                    Ok(if offset > 0 {
                        r.header(reqwest::header::RANGE, format!("bytes={offset}-"))
                    } else {
                        r
                    })
                })
                .await?;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if offset > 0 && range_start(&resp) == Some(offset) => {}
                StatusCode::OK | StatusCode::PARTIAL_CONTENT if offset > 0 => {
                    // No range support (200: the whole blob follows), or a range other
                    // than the one asked for (206: ask again from the start). A streaming
                    // unpack cannot follow either.
                    let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
                    ingest = store.ingest()?;
                    bar.reset(0);
                    if let Some(t) = tee.take() {
                        let _ = t.send(Err("the download restarted".into())).await;
                    }
                    if partial {
                        attempt += 1;
                        if attempt >= self.opts.attempts {
                            return Err(Error::Registry(format!(
                                "registry {}: blob {digest}: the registry keeps answering with the wrong range",
                                ep.registry
                            )));
                        }
                        continue;
                    }
                }
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => {
                    return Err(Error::NotFound(format!(
                        "registry {}: blob {digest} of {repo} not found (the manifest names a missing blob)",
                        ep.registry
                    )))
                }
                _ => return Err(status_error(ep, &format!("get blob {digest}"), resp).await),
            }
            let mut stream = resp.bytes_stream();
            let mut failed = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        ingest
                            .write_all(&c)
                            .ctx(|| format!("write blob {digest}"))?;
                        if let Some(t) = &tee {
                            if t.send(Ok(c.to_vec())).await.is_err() {
                                // The unpacker stopped (it says why when awaited).
                                tee = None;
                            }
                        }
                        bar.inc(c.len() as u64);
                        if size > 0 && ingest.written() > size {
                            return Err(Error::DigestMismatch(format!(
                                "registry {}: blob {digest} is larger than the {size} bytes its descriptor says",
                                ep.registry
                            )));
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => break,
                Some(e) if attempt + 1 < self.opts.attempts => {
                    let _ = e;
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                }
                Some(e) => {
                    return Err(Error::Registry(format!(
                        "registry {}: download of blob {digest} broke off after {} bytes: {} ({} tries)",
                        ep.registry,
                        ingest.written(),
                        super::chain(&e),
                        attempt + 1
                    )))
                }
            }
        }
        let d = digest.clone();
        tokio::task::block_in_place(|| ingest.commit(Some(&d)))?;
        store.add_blob_source(digest, &ep.registry, repo)?;
        Ok(())
    }

    /// Pulls an image for `platform` into the store and (with `unpack`) unpacks its
    /// layers; without, the first `prepare` unpacks them.
    pub async fn pull(
        &self,
        store: &Arc<Store>,
        r: &Reference,
        platform: &Platform,
        progress: &Progress,
        unpack: bool,
    ) -> Result<Pulled> {
        let _lock = store.shared_lock()?;
        let ep = self.endpoint(&r.registry).await?;
        let repo = r.repository.as_str();
        let (bytes, media_type, top) = self.fetch_manifest(&ep, repo, &r.manifest_ref()).await?;
        let mut downloaded = false;
        let mut manifest_bytes = bytes.clone();
        let mut manifest_media = media_type.clone();
        let mut manifest_digest = top.clone();
        match oci::parse_manifest(&bytes, Some(&media_type))? {
            Parsed::Manifest(_) => {}
            Parsed::Index(idx) => {
                let d = oci::choose(&idx, platform)?;
                let md = oci::digest_of(&d)?;
                let (b, mt, _) = self.fetch_manifest(&ep, repo, &md.to_string()).await?;
                manifest_bytes = b;
                manifest_media = mt;
                manifest_digest = md;
            }
        }
        let Parsed::Manifest(manifest) =
            oci::parse_manifest(&manifest_bytes, Some(&manifest_media))?
        else {
            return Err(Error::invalid(format!(
                "{r}: the index for {platform} points to another index"
            )));
        };
        let config = manifest.config();
        let config_digest = oci::digest_of(config)?;
        if !store.has_blob(&config_digest) {
            let bar = progress.bar(
                &format!("Copying config {}", config_digest.short()),
                config.size(),
            );
            self.fetch_blob(
                &ep,
                store,
                repo,
                (&config_digest, config.size()),
                &bar,
                None,
            )
            .await?;
            bar.finish("done");
            downloaded = true;
        }
        let config_json: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&config_digest)?)
                .map_err(|e| Error::invalid(format!("{r}: image config is not JSON: {e}")))?;
        let diff_ids = oci::diff_ids(&config_json)?;
        let img = ResolvedImage {
            name: None,
            index: (top != manifest_digest).then(|| top.clone()),
            manifest_digest: manifest_digest.clone(),
            chain_ids: crate::digest::chain_ids(&diff_ids),
            manifest: manifest.clone(),
            config_digest: config_digest.clone(),
            config: config_json,
            diff_ids,
        };
        let layers = img.layers()?;
        for (_, mt, _, _) in &layers {
            crate::compress::Compression::from_media_type(mt)?;
        }
        // Download every missing layer at once (bounded). A layer that is downloaded is
        // unpacked as its bytes arrive, on a blocking thread, and put in place once both
        // its digest and its diff ID check out; layers already here are unpacked after.
        let img = Arc::new(img);
        let jobs = layers.iter().enumerate().map(|(i, (blob, _, size, _))| {
            let ep = ep.clone();
            let store = store.clone();
            let img = img.clone();
            async move {
                if store.has_blob(blob) {
                    store.add_blob_source(blob, &ep.registry, repo)?;
                    return Ok::<(bool, Option<usize>), Error>((false, Some(i)));
                }
                let streaming = unpack && store.layer_missing(&img, i)?;
                let (tee, unpacker) = if streaming {
                    let (tx, rx) = tokio::sync::mpsc::channel(64);
                    let s = store.clone();
                    let b = blob.clone();
                    let reader = ChannelReader {
                        rx,
                        cur: Vec::new(),
                        pos: 0,
                    };
                    (
                        Some(tx),
                        Some(tokio::task::spawn_blocking(move || {
                            s.unpack_to_tmp(&b, reader)
                        })),
                    )
                } else {
                    (None, None)
                };
                let bar = progress.bar(&format!("Copying blob {}", blob.short()), *size);
                let fetched = self
                    .fetch_blob(&ep, &store, repo, (blob, *size), &bar, tee)
                    .await;
                let pending = match unpacker {
                    Some(h) => Some(
                        h.await
                            .map_err(|e| Error::invalid(format!("unpack task failed: {e}")))?,
                    ),
                    None => None,
                };
                fetched?;
                bar.finish("done");
                match pending {
                    Some(Ok(p)) => {
                        let s = store.clone();
                        let img = img.clone();
                        tokio::task::spawn_blocking(move || s.install_layer_at(&img, i, p))
                            .await
                            .map_err(|e| Error::invalid(format!("unpack task failed: {e}")))??;
                        Ok((true, None))
                    }
                    // Not unpacked on the way (the download restarted, or the layer is
                    // broken or hostile): unpack from the verified blob, which says why.
                    _ => Ok((true, unpack.then_some(i))),
                }
            }
        });
        let results: Vec<(bool, Option<usize>)> = futures_util::stream::iter(jobs)
            .buffer_unordered(self.opts.concurrency.max(1))
            .try_collect()
            .await?;
        let fetched: Vec<bool> = results.iter().map(|r| r.0).collect();
        if unpack {
            let rest: Vec<usize> = results.iter().filter_map(|r| r.1).collect();
            let unpacks = rest.into_iter().map(|i| {
                let s = store.clone();
                let img = img.clone();
                async move {
                    tokio::task::spawn_blocking(move || s.unpack_layer_at(&img, i))
                        .await
                        .map_err(|e| Error::invalid(format!("unpack task failed: {e}")))?
                }
            });
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            futures_util::stream::iter(unpacks)
                .buffer_unordered(threads)
                .try_collect::<Vec<i64>>()
                .await?;
        }
        downloaded |= fetched.iter().any(|f| *f);
        // Manifests last: a blob is never named by a stored manifest before it is there.
        store.put_blob(&manifest_bytes)?;
        if top != manifest_digest {
            store.put_blob(&bytes)?;
        }
        let name = r.to_string();
        let prev = store.image(&name)?;
        store.set_image(&name, &top, &media_type)?;
        downloaded |= prev.is_none_or(|p| p.digest != top);
        Ok(Pulled {
            name,
            digest: top,
            id: config_digest,
            downloaded,
        })
    }
}
