//! Container log rotation, as the kubelet's container log manager does it: every
//! 10 s each running container's log is measured; past `--container-log-max-size` it
//! is renamed (`0.log.20261204-134501`) and the engine's monitor asked to reopen the
//! log (CRI ReopenContainerLog), older rotated files are gzipped, and no more than
//! `--container-log-max-files` files (the live one included) are kept. A container
//! that writes without end so fills at most that much disk.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_engine::cri::{ContainerFilter, RuntimeService};

use crate::{labels, Ctx};

/// How often logs are measured.
const INTERVAL: Duration = Duration::from_secs(10);

/// When and how logs are rotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The size past which a log is rotated, bytes.
    pub max_size: u64,
    /// Files kept per container, the live one included (at least 2).
    pub max_files: usize,
}

impl Default for Policy {
    /// The kubelet's defaults: 10 MiB, 5 files.
    fn default() -> Policy {
        Policy {
            max_size: 10 << 20,
            max_files: 5,
        }
    }
}

/// A size as a quantity ("10Mi"), above zero.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity(s.to_string());
    crate::qos::value(&q)
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?}: a size above zero, as a quantity (10Mi)"))
}

/// Rotates until the task is aborted.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        let c = ctx.clone();
        let r = tokio::task::spawn_blocking(move || rotate_all(&c)).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "rotating container logs failed");
        }
    }
}

fn rotate_all(ctx: &Ctx) -> berth_engine::Result<()> {
    let policy = ctx.cfg.container_logs;
    let filter = ContainerFilter {
        labels: BTreeMap::from([(labels::NODE.to_string(), ctx.cfg.node_name.clone())]),
        running: Some(true),
        ..Default::default()
    };
    for c in ctx.core.list_containers(&filter)? {
        let Ok(st) = ctx.core.container_status(&c.id) else {
            continue;
        };
        let log = st.log_path.clone();
        if std::fs::metadata(&log).map_or(0, |m| m.len()) <= policy.max_size {
            continue;
        }
        let stamp = jiff::Timestamp::now()
            .strftime("%Y%m%d-%H%M%S%.6f")
            .to_string();
        let rotated = PathBuf::from(format!("{}.{stamp}", log.display()));
        if let Err(e) = std::fs::rename(&log, &rotated) {
            tracing::warn!(log = %log.display(), error = %e, "rotating a container log failed");
            continue;
        }
        if let Err(e) = ctx.core.reopen_container_log(&c.id) {
            // The container has just ended: its last log is the rotated one.
            tracing::debug!(container = %c.id, error = %e, "reopening a container log failed");
        }
        if let Err(e) = tidy(&log, policy.max_files) {
            tracing::warn!(log = %log.display(), error = %e, "tidying rotated logs failed");
        }
    }
    Ok(())
}

/// The rotated files of a log, oldest first.
fn rotated_files(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    // The timestamps sort as text; ".gz" does not change the order among them.
    v.sort_by_key(|p| p.to_string_lossy().trim_end_matches(".gz").to_string());
    v
}

/// Keeps the newest rotated file as is, gzips the others, and removes the oldest
/// beyond `max_files` (the live log counting as one).
fn tidy(log: &Path, max_files: usize) -> std::io::Result<()> {
    let files = rotated_files(log);
    let keep = max_files.max(2) - 1;
    let (old, kept) = files.split_at(files.len().saturating_sub(keep));
    for f in old {
        std::fs::remove_file(f)?;
    }
    for f in kept.iter().take(kept.len().saturating_sub(1)) {
        if f.extension().is_some_and(|e| e == "gz") {
            continue;
        }
        let gz = PathBuf::from(format!("{}.gz", f.display()));
        let tmp = PathBuf::from(format!("{}.tmp", gz.display()));
        let data = std::fs::read(f)?;
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&tmp)?,
            flate2::Compression::fast(),
        );
        enc.write_all(&data)?;
        enc.finish()?.sync_all()?;
        std::fs::rename(&tmp, &gz)?;
        std::fs::remove_file(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_keeps_the_newest_plain_gzips_the_rest_and_drops_the_oldest() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("0.log");
        std::fs::write(&log, "live").unwrap();
        for s in [
            "20261204-100000",
            "20261204-100010",
            "20261204-100020",
            "20261204-100030",
        ] {
            std::fs::write(d.path().join(format!("0.log.{s}")), format!("old {s}\n")).unwrap();
        }
        tidy(&log, 3).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["0.log", "0.log.20261204-100020.gz", "0.log.20261204-100030"]
        );
        let gz = std::fs::read(d.path().join("0.log.20261204-100020.gz")).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .unwrap();
        assert_eq!(text, "old 20261204-100020\n");
        // Again: nothing more to do.
        tidy(&log, 3).unwrap();
        assert_eq!(rotated_files(&log).len(), 2);
    }
}
