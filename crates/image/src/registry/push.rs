//! Push: blobs first (skipped when the registry has them, mounted from another
//! repository of the same registry when berth knows one that has them, else uploaded),
//! then manifests, then the tag.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::StatusCode;

use super::{status_error, Client, Endpoint, Idempotent};
use crate::digest::Digest;
use crate::error::{Context, Error, Result};
use crate::oci::{self, Parsed, Platform};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::Store;

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Makes a Location header absolute and appends a query parameter.
fn location_with(base: &str, loc: &str, key: &str, val: &str) -> Result<reqwest::Url> {
    let base_url = reqwest::Url::parse(&format!("{base}/"))
        .map_err(|e| Error::invalid(format!("base URL: {e}")))?;
    let mut u = base_url.join(loc).map_err(|e| {
        Error::Registry(format!("registry gave a bad upload location {loc:?}: {e}"))
    })?;
    u.query_pairs_mut().append_pair(key, val);
    Ok(u)
}

impl Client {
    async fn blob_exists(&self, ep: &Endpoint, repo: &str, d: &Digest) -> Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/{d}", ep.base);
        let resp = self
            .send(ep, &push_scope(repo), Idempotent::Yes, &|h| {
                Ok(h.head(url.as_str()))
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(ep, &format!("check blob {d}"), resp).await),
        }
    }

    /// Pushes one blob; returns what was done ("exists", "mounted", "uploaded").
    async fn push_blob(
        &self,
        ep: &Endpoint,
        store: &Store,
        repo: &str,
        d: &Digest,
    ) -> Result<&'static str> {
        if self.blob_exists(ep, repo, d).await? {
            return Ok("skipped: already exists");
        }
        let mut location = None;
        for from in store
            .blob_sources(d, &ep.registry)?
            .into_iter()
            .filter(|f| f != repo)
            .take(3)
        {
            let url = format!("{}/v2/{repo}/blobs/uploads/?mount={d}&from={from}", ep.base);
            let scope = format!("{} repository:{from}:pull", push_scope(repo));
            let resp = self
                .send(ep, &scope, Idempotent::No, &|h| {
                    Ok(h.post(url.as_str())
                        .header(reqwest::header::CONTENT_LENGTH, "0"))
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => return Ok("mounted"),
                StatusCode::ACCEPTED => {
                    location = resp
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    break;
                }
                _ => continue,
            }
        }
        let path = store.blob_path(d);
        let size = std::fs::metadata(&path)
            .ctx(|| format!("stat blob {d}"))?
            .len();
        let mut attempt = 0;
        loop {
            let loc = match location.take() {
                Some(l) => l,
                None => self.start_upload(ep, repo, d).await?,
            };
            let put_url = location_with(&ep.base, &loc, "digest", &d.to_string())?;
            // A monolithic upload streamed from the blob file. The session is single use:
            // after a broken connection the whole upload starts again in a new session.
            let sent = self
                .send(ep, &push_scope(repo), Idempotent::No, &|h| {
                    let f = std::fs::File::open(&path).ctx(|| format!("open blob {d}"))?;
                    let stream = tokio_util::io::ReaderStream::with_capacity(
                        tokio::fs::File::from_std(f),
                        1 << 20,
                    );
                    Ok(h.put(put_url.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .header(reqwest::header::CONTENT_LENGTH, size)
                        .body(reqwest::Body::wrap_stream(stream)))
                })
                .await;
            match sent {
                Ok(resp) if resp.status() == StatusCode::CREATED => break,
                Ok(resp) => return Err(status_error(ep, &format!("upload blob {d}"), resp).await),
                Err(_) if attempt + 1 < self.opts.attempts => {
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        store.add_blob_source(d, &ep.registry, repo)?;
        Ok("pushed")
    }

    /// Opens an upload session; returns its Location.
    async fn start_upload(&self, ep: &Endpoint, repo: &str, d: &Digest) -> Result<String> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", ep.base);
        let resp = self
            .send(ep, &push_scope(repo), Idempotent::Yes, &|h| {
                Ok(h.post(url.as_str())
                    .header(reqwest::header::CONTENT_LENGTH, "0"))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(ep, &format!("start upload of {d}"), resp).await);
        }
        resp.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .ok_or_else(|| {
                Error::Registry(format!(
                    "registry {}: upload started without a Location",
                    ep.registry
                ))
            })
    }

    async fn put_manifest(
        &self,
        ep: &Endpoint,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", ep.base);
        let body = bytes.to_vec();
        let resp = self
            .send(ep, &push_scope(repo), Idempotent::Yes, &|h| {
                Ok(h.put(url.as_str())
                    .header(reqwest::header::CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(status_error(ep, &format!("put manifest {repo}:{reference}"), resp).await);
        }
        Ok(Digest::of(bytes))
    }

    /// Pushes the stored image `local` to `dest`; returns the pushed digest and size.
    pub async fn push(
        &self,
        store: &Arc<Store>,
        local: &str,
        dest: &Reference,
        platform: &Platform,
        progress: &Progress,
    ) -> Result<(Digest, u64)> {
        let _lock = store.shared_lock()?;
        let rec = store.find_image(local)?;
        let ep = self.endpoint(&dest.registry).await?;
        let repo = dest.repository.as_str();
        let top = store.read_blob(&rec.digest)?;
        // The manifests to push (children first) and whether the index goes too.
        let mut manifests: Vec<(Digest, Vec<u8>, String)> = Vec::new();
        let mut push_index = false;
        match oci::parse_manifest(&top, Some(&rec.media_type))? {
            Parsed::Manifest(_) => {
                manifests.push((rec.digest.clone(), top.clone(), rec.media_type.clone()))
            }
            Parsed::Index(idx) => {
                let mut all = Vec::new();
                for d in idx.manifests() {
                    let md = oci::digest_of(d)?;
                    match store.read_blob(&md) {
                        Ok(b) if manifest_complete(store, &b) => {
                            all.push((md, b, oci::media_type(d)))
                        }
                        _ => {
                            all.clear();
                            break;
                        }
                    }
                }
                if all.is_empty() {
                    // Only some platforms are here: push the one asked for, as docker does.
                    let img = store.resolve_record(&rec, platform)?;
                    let b = store.read_blob(&img.manifest_digest)?;
                    let mt = manifest_media_type(&b);
                    manifests.push((img.manifest_digest, b, mt));
                } else {
                    manifests = all;
                    push_index = true;
                }
            }
        }
        let mut blobs: Vec<Digest> = Vec::new();
        for (_, b, mt) in &manifests {
            if let Parsed::Manifest(m) = oci::parse_manifest(b, Some(mt))? {
                blobs.push(oci::digest_of(m.config())?);
                blobs.extend(oci::layer_digests(&m)?);
            }
        }
        blobs.sort();
        blobs.dedup();
        for b in &blobs {
            if !store.has_blob(b) {
                return Err(Error::not_found(format!(
                    "image {local}: blob {b} is missing from the store; pull the image again"
                )));
            }
        }
        let ep_ref = &ep;
        futures_util::stream::iter(blobs.iter().map(|d| async move {
            let size = std::fs::metadata(store.blob_path(d))
                .map(|m| m.len())
                .unwrap_or(0);
            let bar = progress.bar(&format!("Copying blob {}", d.short()), size);
            let what = self.push_blob(ep_ref, store, repo, d).await?;
            bar.inc(size);
            bar.finish(what);
            Ok::<(), Error>(())
        }))
        .buffer_unordered(self.opts.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        let tag = dest.manifest_ref();
        progress.line("Writing manifest to image destination");
        if push_index {
            for (d, b, mt) in &manifests {
                self.put_manifest(&ep, repo, &d.to_string(), b, mt).await?;
            }
            let d = self
                .put_manifest(&ep, repo, &tag, &top, &rec.media_type)
                .await?;
            return Ok((d, top.len() as u64));
        }
        let (_, b, mt) = &manifests[0];
        let d = self.put_manifest(&ep, repo, &tag, b, mt).await?;
        Ok((d, b.len() as u64))
    }
}

fn manifest_media_type(b: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(b)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| oci::OCI_MANIFEST.to_string())
}

fn manifest_complete(store: &Store, b: &[u8]) -> bool {
    match oci::parse_manifest(b, None) {
        Ok(Parsed::Manifest(m)) => {
            oci::digest_of(m.config()).is_ok_and(|c| store.has_blob(&c))
                && oci::layer_digests(&m).is_ok_and(|ls| ls.iter().all(|l| store.has_blob(l)))
        }
        _ => false,
    }
}
