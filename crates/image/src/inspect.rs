//! What `berth images`, `image inspect` and `image history` show, in docker's shapes.

use serde_json::{json, Value};

use crate::digest::Digest;
use crate::error::Result;
use crate::image::ResolvedImage;
use crate::oci::Platform;
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

/// One row of `berth images`.
#[derive(Clone, Debug)]
pub struct ImageSummary {
    /// Repository (`busybox`, `localhost:5000/app`), `<none>` when untagged.
    pub repository: String,
    /// Tag, `<none>` when untagged or pinned by digest.
    pub tag: String,
    /// Config digest (docker's image ID).
    pub id: Digest,
    /// Manifest digest.
    pub digest: Digest,
    /// Config's `created`.
    pub created: String,
    /// Bytes (unpacked layers where known, else compressed).
    pub size: u64,
}

/// Parses an RFC 3339 time into unix seconds (enough for display).
pub fn parse_time(s: &str) -> Option<u64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let hms: Vec<i64> = rest
        .get(..8)?
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]).max(0) as u64)
}

/// "3 minutes ago", as docker prints ages.
pub fn human_age(created: &str) -> String {
    let Some(t) = parse_time(created) else {
        return "N/A".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let s = now.saturating_sub(t);
    let (n, unit) = match s {
        0 => return "Less than a second ago".into(),
        1..=59 => (s, "second"),
        60..=119 => return "About a minute ago".into(),
        120..=3599 => (s / 60, "minute"),
        3600..=86399 => (s / 3600, "hour"),
        86400..=1_209_599 => (s / 86400, "day"),
        1_209_600..=5_183_999 => (s / 604_800, "week"),
        5_184_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// "4.26MB", as docker prints sizes (decimal units).
pub fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{:.3}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[i]
    }
}

impl Store {
    /// The layer sizes of an image: unpacked sizes where the snapshot exists, else the
    /// compressed blob sizes.
    fn layer_sizes(&self, img: &ResolvedImage) -> Vec<u64> {
        img.manifest
            .layers()
            .iter()
            .zip(&img.chain_ids)
            .map(|(l, c)| match self.snapshot(c) {
                Ok(Some(s)) if s.size > 0 => s.size,
                _ => l.size(),
            })
            .collect()
    }

    /// The rows of `berth images`.
    pub fn summaries(&self) -> Result<Vec<ImageSummary>> {
        let mut out = Vec::new();
        for rec in self.images()? {
            let Ok(img) = self.resolve_stored_digest(&rec.digest) else {
                continue;
            };
            let (repository, tag) = repo_tag(&rec);
            out.push(ImageSummary {
                repository,
                tag,
                id: img.config_digest.clone(),
                digest: rec.digest.clone(),
                created: img
                    .config
                    .get("created")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                size: self.layer_sizes(&img).iter().sum(),
            });
        }
        Ok(out)
    }

    /// `docker image inspect` output for one image.
    pub fn inspect(&self, what: &str, platform: Option<&Platform>) -> Result<Value> {
        let rec = self.find_image(what)?;
        let img = self.resolve_for(what, platform)?;
        let mut tags = Vec::new();
        let mut digests = Vec::new();
        for r in self.images()? {
            if r.digest != rec.digest {
                continue;
            }
            if let Ok(reference) = r.name.parse::<Reference>() {
                if reference.tag.is_some() {
                    tags.push(format!(
                        "{}:{}",
                        reference.familiar_name(),
                        reference.tag.clone().unwrap_or_default()
                    ));
                }
                digests.push(format!("{}@{}", reference.familiar_name(), r.digest));
            }
        }
        digests.sort();
        digests.dedup();
        let c = &img.config;
        let size: u64 = self.layer_sizes(&img).iter().sum();
        Ok(json!({
            "Id": img.config_digest.to_string(),
            "RepoTags": tags,
            "RepoDigests": digests,
            "Parent": "",
            "Comment": c.pointer("/history").and_then(|h| h.as_array()).and_then(|h| h.last()).and_then(|h| h.get("comment")).cloned().unwrap_or(json!("")),
            "Created": c.get("created").cloned().unwrap_or(json!("")),
            "DockerVersion": c.get("docker_version").cloned().unwrap_or(json!("")),
            "Author": c.get("author").cloned().unwrap_or(json!("")),
            "Config": c.get("config").cloned().unwrap_or(json!({})),
            "Architecture": c.get("architecture").cloned().unwrap_or(json!("")),
            "Variant": c.get("variant").cloned().unwrap_or(Value::Null),
            "Os": c.get("os").cloned().unwrap_or(json!("")),
            "Size": size,
            "VirtualSize": size,
            "GraphDriver": {
                "Name": "overlay",
                "Data": {
                    "LowerDir": img.chain_ids.iter().rev()
                        .filter_map(|ch| self.snapshot(ch).ok().flatten())
                        .map(|s| self.snapshot_dir(s.id).display().to_string())
                        .collect::<Vec<_>>().join(":"),
                },
            },
            "RootFS": {
                "Type": "layers",
                "Layers": img.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            },
            "Metadata": {"LastTagTime": crate::commit::rfc3339(rec.created.max(0) as u64)},
            "Descriptor": {
                "mediaType": rec.media_type,
                "digest": rec.digest.to_string(),
                "manifest": img.manifest_digest.to_string(),
            },
        }))
    }

    /// `docker image history` rows, newest first.
    pub fn history(&self, what: &str, platform: Option<&Platform>) -> Result<Vec<HistoryRow>> {
        let img = self.resolve_for(what, platform)?;
        let sizes = self.layer_sizes(&img);
        let mut layer = 0;
        let mut rows = Vec::new();
        let history = img
            .config
            .get("history")
            .and_then(|h| h.as_array())
            .cloned()
            .unwrap_or_default();
        for h in &history {
            let empty = h
                .get("empty_layer")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let size = if empty {
                0
            } else {
                let s = sizes.get(layer).copied().unwrap_or(0);
                layer += 1;
                s
            };
            let s = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            rows.push(HistoryRow {
                id: "<missing>".to_string(),
                created: s("created"),
                created_by: s("created_by"),
                size,
                comment: s("comment"),
            });
        }
        rows.reverse();
        if let Some(first) = rows.first_mut() {
            first.id = img.config_digest.short().to_string();
        }
        Ok(rows)
    }
}

/// One row of `berth history`.
#[derive(Clone, Debug)]
pub struct HistoryRow {
    /// The image ID on the newest row, `<missing>` below (as docker shows).
    pub id: String,
    /// When the step ran (RFC 3339).
    pub created: String,
    /// The command that made it.
    pub created_by: String,
    /// Bytes of its layer (0 for config-only steps).
    pub size: u64,
    /// Its comment.
    pub comment: String,
}

/// The repository and tag columns of an image name.
pub fn repo_tag(rec: &ImageRecord) -> (String, String) {
    match rec.name.parse::<Reference>() {
        Ok(r) if !rec.name.starts_with("sha256:") => {
            (r.familiar_name(), r.tag.unwrap_or_else(|| "<none>".into()))
        }
        _ => ("<none>".into(), "<none>".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.261MB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.123456789Z"),
            Some(1_700_000_000)
        );
        assert_eq!(human_age("garbage"), "N/A");
    }
}
