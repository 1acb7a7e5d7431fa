//! Scheduled snapshots of the datastore, as k3s's servers take them
//! (`--etcd-snapshot-schedule-cron`, `--etcd-snapshot-retention`): `berth server`
//! takes one on a cron schedule (every 12 hours by default) into the snapshot
//! directory, named `scheduled-YYYYMMDDHHMMSS`, and keeps the newest few of them;
//! snapshots taken by hand are never pruned.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

/// The name scheduled snapshots carry (before their time); no other may start with
/// it.
pub const SCHEDULED: &str = "scheduled";

/// `berth server`'s snapshot schedule.
#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// When to take a snapshot: a cron schedule ("0 */12 * * *", in UTC) or
    /// "@every DURATION" ("@every 6h")
    #[arg(
        long,
        alias = "etcd-snapshot-schedule-cron",
        default_value = "0 */12 * * *"
    )]
    snapshot_schedule_cron: String,
    /// How many scheduled snapshots to keep (the oldest are deleted)
    #[arg(long, alias = "etcd-snapshot-retention", default_value_t = 5)]
    snapshot_retention: usize,
    /// Take no scheduled snapshots
    #[arg(long, alias = "etcd-disable-snapshots")]
    disable_snapshots: bool,
    /// Where snapshots are kept [default: DATA_DIR/snapshots]
    #[arg(long, alias = "etcd-snapshot-dir")]
    pub snapshot_dir: Option<PathBuf>,
}

/// When snapshots are due.
enum When {
    Cron(berth_cron::Schedule),
    Every(Duration),
}

impl When {
    fn parse(spec: &str) -> anyhow::Result<When> {
        if let Some(d) = spec.strip_prefix("@every ") {
            let every = humantime::parse_duration(d.trim()).with_context(|| {
                format!("--snapshot-schedule-cron {spec:?}: not a duration after @every (\"@every 6h\")")
            })?;
            // Names carry the second they were taken in: one a second at most.
            if every < Duration::from_secs(1) {
                bail!("--snapshot-schedule-cron {spec:?}: snapshots at most once a second");
            }
            return Ok(When::Every(every));
        }
        berth_cron::Schedule::parse(spec, None)
            .map(When::Cron)
            .map_err(|e| anyhow::anyhow!("--snapshot-schedule-cron {spec:?}: {e}"))
    }

    /// How long from now until the next snapshot (None: never).
    fn wait(&self) -> Option<Duration> {
        match self {
            When::Every(d) => Some(*d),
            When::Cron(s) => {
                let now = jiff::Timestamp::now();
                let next = s.next_after(now)?;
                let ms = next.duration_since(now).as_millis().max(0) as u64;
                Some(Duration::from_millis(ms))
            }
        }
    }
}

/// The schedule's loop, to run beside the server (None when snapshots are off).
/// A bad schedule is an error now, before the server starts.
pub fn scheduled(
    a: &ScheduleArgs,
    data_dir: &Path,
    endpoints: &[String],
) -> anyhow::Result<Option<impl std::future::Future<Output = ()> + Send + 'static>> {
    if a.disable_snapshots {
        return Ok(None);
    }
    let when = When::parse(&a.snapshot_schedule_cron)?;
    if a.snapshot_retention == 0 {
        bail!("--snapshot-retention 0 would delete every snapshot it takes: keep at least 1, or --disable-snapshots");
    }
    let dir = a
        .snapshot_dir
        .clone()
        .unwrap_or_else(|| crate::snapshot_cmd::default_dir(data_dir));
    let keep = a.snapshot_retention;
    let data_dir = data_dir.to_path_buf();
    let endpoints = endpoints.to_vec();
    Ok(Some(async move {
        while let Some(wait) = when.wait() {
            tokio::time::sleep(wait).await;
            let taken = async {
                crate::snapshot_cmd::make_dir(&dir)?;
                let saved = crate::snapshot_cmd::take(&dir, SCHEDULED, &data_dir, &endpoints).await?;
                tracing::info!("scheduled snapshot {saved}");
                for gone in prune(&dir, keep)? {
                    tracing::info!(snapshot = %gone.display(), "scheduled snapshot removed (retention {keep})");
                }
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = taken {
                tracing::warn!("scheduled snapshot failed: {e:#}");
            }
        }
    }))
}

/// Deletes the oldest scheduled snapshots in `dir` beyond the newest `keep`;
/// returns the files deleted.
fn prune(dir: &Path, keep: usize) -> anyhow::Result<Vec<PathBuf>> {
    // Exactly scheduled-YYYYMMDDHHMMSS (UTC): by name is oldest first.
    let scheduled: Vec<PathBuf> = crate::snapshot_cmd::list(dir)?
        .into_iter()
        .filter(|(name, _)| {
            name.strip_prefix(SCHEDULED)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|stamp| stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|(_, p)| p)
        .collect();
    let excess = scheduled.len().saturating_sub(keep);
    let mut gone = Vec::new();
    for p in scheduled.into_iter().take(excess) {
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        gone.push(p);
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_or_say_why() {
        assert!(
            matches!(When::parse("@every 6h").unwrap(), When::Every(d) if d == Duration::from_secs(6 * 3600))
        );
        let cron = When::parse("0 */12 * * *").unwrap();
        assert!(cron.wait().unwrap() <= Duration::from_secs(12 * 3600));
        for (bad, why) in [
            ("@every soon", "not a duration"),
            ("@every 10ms", "at most once a second"),
            ("0 */12 * *", "--snapshot-schedule-cron"),
        ] {
            let err = When::parse(bad).err().unwrap().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn only_the_oldest_scheduled_snapshots_go() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "scheduled-20261201000000.db",
            "scheduled-20261202000000.db",
            "scheduled-20261203000000.etcd",
            "on-demand-20261130000000.db",
            "scheduled-weekly-20261130000000.db",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let gone = prune(dir.path(), 2).unwrap();
        assert_eq!(gone, [dir.path().join("scheduled-20261201000000.db")]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "notes.txt",
                "on-demand-20261130000000.db",
                "scheduled-20261202000000.db",
                "scheduled-20261203000000.etcd",
                "scheduled-weekly-20261130000000.db"
            ]
        );
    }
}
