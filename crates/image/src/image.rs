//! Images as the rest of berth sees them: a name or id resolved to one platform's
//! manifest, its config and its layer chain.

use oci_spec::image::ImageManifest;

use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::oci::{self, Parsed, Platform};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

/// One platform's image, resolved from the store.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The name it was found under, if it has one.
    pub name: Option<String>,
    /// The index the name points to, for multi-platform images.
    pub index: Option<Digest>,
    /// The platform manifest's digest.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config blob's digest (docker's image ID).
    pub config_digest: Digest,
    /// The config, as JSON (kept whole: docker configs carry fields OCI does not name).
    pub config: serde_json::Value,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<Digest>,
    /// Chain IDs, bottom first.
    pub chain_ids: Vec<Digest>,
}

impl ResolvedImage {
    /// The compressed layer descriptors with their diff IDs, bottom first.
    pub fn layers(&self) -> Result<Vec<(Digest, String, u64, Digest)>> {
        let layers = self.manifest.layers();
        if layers.len() != self.diff_ids.len() {
            return Err(Error::invalid(format!(
                "image {}: the manifest has {} layers but the config lists {} diff_ids",
                self.manifest_digest,
                layers.len(),
                self.diff_ids.len()
            )));
        }
        layers
            .iter()
            .zip(&self.diff_ids)
            .map(|(l, d)| Ok((oci::digest_of(l)?, oci::media_type(l), l.size(), d.clone())))
            .collect()
    }

    /// The image's architecture and OS, from its config.
    pub fn platform(&self) -> String {
        let os = self
            .config
            .get("os")
            .and_then(|v| v.as_str())
            .unwrap_or("linux");
        let arch = self
            .config
            .get("architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown");
        format!("{os}/{arch}")
    }
}

impl Store {
    /// Finds an image by reference (`busybox`, `localhost:5000/app:v1`), by digest, or by
    /// a prefix of its ID (config digest) as docker accepts.
    pub fn find_image(&self, what: &str) -> Result<ImageRecord> {
        if let Ok(r) = what.parse::<Reference>() {
            if let Some(rec) = self.image(&r.to_string())? {
                return Ok(rec);
            }
            // `repo@digest` names an image of that repository pulled by a tag too
            // (the form RepoDigests show, and CRI clients look images up by).
            if let Some(d) = &r.digest {
                let same_repo = |name: &str| {
                    name.parse::<Reference>()
                        .is_ok_and(|n| n.registry == r.registry && n.repository == r.repository)
                };
                if let Some(rec) = self
                    .images()?
                    .into_iter()
                    .find(|rec| &rec.digest == d && same_repo(&rec.name))
                {
                    return Ok(rec);
                }
            }
            // Short names also mean locally built images, as podman reads them.
            let explicit = what
                .split('/')
                .next()
                .is_some_and(|f| f.contains('.') || f.contains(':') || f == "localhost")
                && what.contains('/');
            if r.registry == "docker.io" && !explicit {
                let local = Reference {
                    registry: "localhost".into(),
                    repository: r
                        .repository
                        .strip_prefix("library/")
                        .unwrap_or(&r.repository)
                        .to_string(),
                    ..r.clone()
                };
                if let Some(rec) = self.image(&local.to_string())? {
                    return Ok(rec);
                }
            }
        }
        if let Some(rec) = self.image(what)? {
            return Ok(rec);
        }
        let hex = what.strip_prefix("sha256:").unwrap_or(what);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found: Vec<ImageRecord> = Vec::new();
            for rec in self.images()? {
                let config = self
                    .resolve_record(&rec, &Platform::host())
                    .ok()
                    .map(|r| r.config_digest);
                let matches = rec.digest.hex().starts_with(hex)
                    || config.as_ref().is_some_and(|c| c.hex().starts_with(hex));
                if matches && !found.iter().any(|f| f.digest == rec.digest) {
                    found.push(rec);
                }
            }
            match found.len() {
                1 => return Ok(found.remove(0)),
                0 => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "image ID prefix {what:?} is ambiguous: give more characters"
                    )))
                }
            }
        }
        Err(Error::not_found(format!(
            "image {what:?} is not in the store (pull, load or import it first)"
        )))
    }

    /// Resolves a name/ID to one platform's image.
    pub fn resolve(&self, what: &str, platform: &Platform) -> Result<ResolvedImage> {
        let rec = self.find_image(what)?;
        self.resolve_record(&rec, platform)
    }

    /// Resolves a stored image record for a platform.
    pub fn resolve_record(&self, rec: &ImageRecord, platform: &Platform) -> Result<ResolvedImage> {
        let mut r = self.resolve_digest(&rec.digest, platform)?;
        r.name = Some(rec.name.clone());
        Ok(r)
    }

    /// Resolves a name/ID for the host platform or, for an index pulled for another
    /// platform (`pull --platform`), the first platform whose image is in the store.
    pub fn resolve_stored(&self, what: &str) -> Result<ResolvedImage> {
        let rec = self.find_image(what)?;
        let mut r = self.resolve_stored_digest(&rec.digest)?;
        r.name = Some(rec.name);
        Ok(r)
    }

    /// [`Store::resolve`] for a platform that was asked for, else [`Store::resolve_stored`].
    pub fn resolve_for(&self, what: &str, platform: Option<&Platform>) -> Result<ResolvedImage> {
        match platform {
            Some(p) => self.resolve(what, p),
            None => self.resolve_stored(what),
        }
    }

    /// [`Store::resolve_stored`] for a top-level digest.
    pub fn resolve_stored_digest(&self, top: &Digest) -> Result<ResolvedImage> {
        let host = self.resolve_digest(top, &Platform::host());
        let Err(first_err) = host else { return host };
        let Ok(Parsed::Index(idx)) = self
            .read_blob(top)
            .and_then(|b| oci::parse_manifest(&b, None))
        else {
            return Err(first_err);
        };
        for d in idx.manifests() {
            let Some(p) = d.platform() else { continue };
            let platform = Platform {
                os: p.os().to_string(),
                arch: p.architecture().to_string(),
                variant: p.variant().clone(),
            };
            if let Ok(r) = self.resolve_digest(top, &platform) {
                if self.has_blob(&r.config_digest) {
                    return Ok(r);
                }
            }
        }
        Err(first_err)
    }

    /// Resolves a manifest or index digest for a platform.
    pub fn resolve_digest(&self, digest: &Digest, platform: &Platform) -> Result<ResolvedImage> {
        let bytes = self.read_blob(digest)?;
        let (index, manifest_digest, manifest) = match oci::parse_manifest(&bytes, None)? {
            Parsed::Manifest(m) => (None, digest.clone(), m),
            Parsed::Index(idx) => {
                let d = oci::choose(&idx, platform)?;
                let md = oci::digest_of(&d)?;
                let mbytes = self.read_blob(&md)?;
                match oci::parse_manifest(&mbytes, Some(&oci::media_type(&d)))? {
                    Parsed::Manifest(m) => (Some(digest.clone()), md, m),
                    Parsed::Index(_) => {
                        return Err(Error::invalid(format!(
                            "index {digest} points to another index for {platform}; nested indexes are not supported"
                        )))
                    }
                }
            }
        };
        let config_digest = oci::digest_of(manifest.config())?;
        let config: serde_json::Value = serde_json::from_slice(&self.read_blob(&config_digest)?)
            .map_err(|e| {
                Error::invalid(format!("image config {config_digest} is not JSON: {e}"))
            })?;
        let diff_ids = oci::diff_ids(&config)?;
        let chain_ids = chain_ids(&diff_ids);
        Ok(ResolvedImage {
            name: None,
            index,
            manifest_digest,
            manifest,
            config_digest,
            config,
            diff_ids,
            chain_ids,
        })
    }

    /// Every blob an image record references (index, manifests, configs, layers) that is
    /// present in the store; used by garbage collection and by save/push.
    pub fn referenced_blobs(&self, top: &Digest) -> Result<Vec<Digest>> {
        let mut out = vec![top.clone()];
        let bytes = match self.read_blob(top) {
            Ok(b) => b,
            // Missing, or corrupt (and now removed): nothing more is reachable from it.
            Err(Error::NotFound(_) | Error::DigestMismatch(_)) => return Ok(out),
            Err(e) => return Err(e),
        };
        let manifests: Vec<Digest> = match oci::parse_manifest(&bytes, None)? {
            Parsed::Manifest(_) => vec![top.clone()],
            Parsed::Index(idx) => idx
                .manifests()
                .iter()
                .map(oci::digest_of)
                .collect::<Result<Vec<_>>>()?,
        };
        for md in manifests {
            if md != *top {
                out.push(md.clone());
            }
            let Ok(mb) = self.read_blob(&md) else {
                continue;
            };
            if let Ok(Parsed::Manifest(m)) = oci::parse_manifest(&mb, None) {
                out.push(oci::digest_of(m.config())?);
                out.extend(oci::layer_digests(&m)?);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
