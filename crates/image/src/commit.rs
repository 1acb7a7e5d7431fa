//! New images: from a container's changes (`commit`), from a rootfs tarball (`import`),
//! and the manifest and config writing they share.

use std::io::Write;

use oci_spec::image::Descriptor;
use serde_json::{json, Value};

use crate::compress::{self, Compression};
use crate::diff;
use crate::digest::{Digest, HashingWriter};
use crate::error::{Context, Error, Result};
use crate::image::ResolvedImage;
use crate::oci;
use crate::reference::Reference;
use crate::snapshot::INIT_FILES;
use crate::store::Store;

/// What to record in a new image.
#[derive(Clone, Debug, Default)]
pub struct NewImage {
    /// Name to tag it with.
    pub reference: Option<Reference>,
    /// Author (config.author, history.author).
    pub author: Option<String>,
    /// Commit message (history.comment).
    pub comment: Option<String>,
    /// What made the layer (history.created_by).
    pub created_by: String,
    /// Config changes: keys of config.config (Cmd, Env, Entrypoint, ...) replaced.
    pub config_changes: serde_json::Map<String, Value>,
}

/// A new layer stored as a blob.
pub struct StoredLayer {
    /// Compressed blob digest.
    pub blob: Digest,
    /// Its size.
    pub size: u64,
    /// Uncompressed digest.
    pub diff_id: Digest,
}

/// The RFC 3339 time now (UTC, seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Formats unix seconds as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Applies `--change` values to an image's `config` as docker does: `Env` entries
/// replace the variable of the same name and add the rest, maps (`Labels`,
/// `ExposedPorts`, `Volumes`) gain keys, everything else (`Healthcheck` too) is
/// replaced.
fn apply_changes(config: &mut Value, changes: &serde_json::Map<String, Value>) {
    for (k, v) in changes {
        match (k.as_str(), config.get_mut(k), v) {
            ("Env", Some(Value::Array(old)), Value::Array(new)) => {
                for n in new {
                    let name = n.as_str().and_then(|s| s.split('=').next()).unwrap_or("");
                    let same =
                        |o: &Value| o.as_str().and_then(|s| s.split('=').next()) == Some(name);
                    match old.iter_mut().find(|o| same(o)) {
                        Some(o) => *o = n.clone(),
                        None => old.push(n.clone()),
                    }
                }
            }
            // A new health check replaces the old one whole, as docker's does.
            ("Healthcheck", _, _) => config[k] = v.clone(),
            (_, Some(Value::Object(old)), Value::Object(new)) => {
                old.extend(new.iter().map(|(a, b)| (a.clone(), b.clone())));
            }
            _ => config[k] = v.clone(),
        }
    }
}

impl Store {
    /// Writes a gzip-compressed layer blob from a tar producer; returns its digests.
    pub fn store_layer(
        &self,
        produce: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<StoredLayer> {
        let ingest = self.ingest()?;
        let mut tar = HashingWriter::new(compress::gzip_writer(ingest));
        produce(&mut tar)?;
        let (diff_id, _, gz) = tar.finish();
        let ingest = gz.finish().ctx(|| "finish the layer compression")?;
        let (blob, size) = ingest.commit(None)?;
        Ok(StoredLayer {
            blob,
            size,
            diff_id,
        })
    }

    /// Stores a config and a manifest over `layers`; tags it; returns the manifest digest.
    pub fn store_image(
        &self,
        config: &Value,
        layers: Vec<Descriptor>,
        reference: Option<&Reference>,
    ) -> Result<Digest> {
        let config_bytes = serde_json::to_vec(config).expect("JSON serializes");
        let config_digest = self.put_blob(&config_bytes)?;
        let manifest = oci::image_manifest(&config_digest, config_bytes.len() as u64, layers)?;
        let bytes = serde_json::to_vec(&manifest).expect("manifests serialize");
        let digest = self.put_blob(&bytes)?;
        let name = match reference {
            Some(r) => r.to_string(),
            None => digest.to_string(),
        };
        self.set_image(&name, &digest, oci::OCI_MANIFEST)?;
        Ok(digest)
    }

    /// Commits a container's changes as a new image on top of its own.
    pub fn commit(&self, container: &str, base: &ResolvedImage, opts: &NewImage) -> Result<Digest> {
        let _lock = self.shared_lock()?;
        let rec = self
            .container(container)?
            .ok_or_else(|| Error::not_found(format!("no rootfs for container {container}")))?;
        if rec.mode != "overlay" {
            return Err(Error::Unsupported(format!(
                "container {container} uses the copy snapshotter; commit needs its changes, which only overlay keeps apart"
            )));
        }
        let (upper, _, _) = self.container_paths(container);
        let layer = self.store_layer(|w| diff::write_layer(&upper, INIT_FILES, w).map(drop))?;
        self.derive(base, Some(&layer), opts)
    }

    /// A new image from `base`: its layers plus `layer` (if any; without one, history
    /// marks the step as an empty layer, as docker does for ENV or CMD), with the config
    /// changes and a history entry from `opts`.
    pub fn derive(
        &self,
        base: &ResolvedImage,
        layer: Option<&StoredLayer>,
        opts: &NewImage,
    ) -> Result<Digest> {
        let mut config = base.config.clone();
        let now = now_rfc3339();
        config["created"] = json!(now);
        if let Some(a) = &opts.author {
            config["author"] = json!(a);
        }
        if config.get("rootfs").is_none() {
            config["rootfs"] = json!({"type": "layers", "diff_ids": []});
        }
        if let Some(layer) = layer {
            config["rootfs"]["diff_ids"]
                .as_array_mut()
                .ok_or_else(|| Error::invalid("image config rootfs.diff_ids is not a list"))?
                .push(json!(layer.diff_id.to_string()));
        }
        let mut hist = json!({"created": now, "created_by": opts.created_by});
        if let Some(c) = &opts.comment {
            hist["comment"] = json!(c);
        }
        if let Some(a) = &opts.author {
            hist["author"] = json!(a);
        }
        if layer.is_none() {
            hist["empty_layer"] = json!(true);
        }
        match config.get_mut("history").and_then(|h| h.as_array_mut()) {
            Some(h) => h.push(hist),
            None => config["history"] = json!([hist]),
        }
        if !opts.config_changes.is_empty() {
            if !config.get("config").is_some_and(|c| c.is_object()) {
                config["config"] = json!({});
            }
            apply_changes(&mut config["config"], &opts.config_changes);
        }
        let mut layers: Vec<Descriptor> = base
            .manifest
            .layers()
            .iter()
            .map(|l| {
                let mt = Compression::from_media_type(&oci::media_type(l))?.oci_media_type();
                Ok(oci::descriptor(mt, &oci::digest_of(l)?, l.size()))
            })
            .collect::<Result<_>>()?;
        if let Some(layer) = layer {
            layers.push(oci::descriptor(
                Compression::Gzip.oci_media_type(),
                &layer.blob,
                layer.size,
            ));
        }
        self.store_image(&config, layers, opts.reference.as_ref())
    }

    /// Imports a root filesystem tarball (any compression) as a one-layer image.
    pub fn import(&self, tarball: impl std::io::Read, opts: &NewImage) -> Result<Digest> {
        let _lock = self.shared_lock()?;
        let mut src = compress::decompress(tarball)?;
        let layer = self.store_layer(|w| {
            std::io::copy(&mut src, w)
                .ctx(|| "read the tarball")
                .map(drop)
        })?;
        // A tarball that is not tar would only fail at unpack: check it now.
        let mut check = tar::Archive::new(compress::decompress(self.open_blob(&layer.blob)?)?);
        for e in check
            .entries()
            .map_err(|e| Error::invalid(format!("not a tar archive: {e}")))?
        {
            e.map_err(|e| Error::invalid(format!("not a tar archive: {e}")))?;
        }
        let now = now_rfc3339();
        let platform = oci::Platform::host();
        let mut config = json!({
            "created": now,
            "architecture": platform.arch,
            "os": platform.os,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id.to_string()]},
            "history": [{"created": now, "created_by": opts.created_by, "comment": opts.comment.clone().unwrap_or_default()}],
        });
        apply_changes(&mut config["config"], &opts.config_changes);
        let layers = vec![oci::descriptor(
            Compression::Gzip.oci_media_type(),
            &layer.blob,
            layer.size,
        )];
        self.store_image(&config, layers, opts.reference.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_merge_like_docker() {
        let mut c = json!({"Env": ["PATH=/bin", "A=1"], "Labels": {"x": "1"}, "Cmd": ["sh"]});
        let ch = json!({"Env": ["A=2", "B=3"], "Labels": {"y": "2"}, "Cmd": ["ls"]});
        apply_changes(&mut c, ch.as_object().unwrap());
        assert_eq!(c["Env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(c["Labels"], json!({"x": "1", "y": "2"}));
        assert_eq!(c["Cmd"], json!(["ls"]));
        // A new health check is not merged into the old one.
        let mut c = json!({"Healthcheck": {"Test": ["CMD", "a"], "Interval": 5}});
        let ch = json!({"Healthcheck": {"Test": ["CMD", "b"]}});
        apply_changes(&mut c, ch.as_object().unwrap());
        assert_eq!(c["Healthcheck"], json!({"Test": ["CMD", "b"]}));
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
