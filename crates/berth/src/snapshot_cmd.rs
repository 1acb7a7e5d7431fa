//! `berth server snapshot save|ls|restore`: snapshots of the server's datastore, as
//! `k3s etcd-snapshot` and `etcdctl snapshot` take them. On SQLite, a consistent copy
//! taken while the server runs, restored into a data directory no server uses; on
//! etcd, etcd's snapshot API (restored with etcd's own tool).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::Ctx;

/// What `berth server` does besides serving.
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Snapshots of the datastore: save, ls, restore.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `berth server snapshot` subcommands.
#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Save a snapshot of the datastore (the server may be running).
    Save(SaveArgs),
    /// List the saved snapshots.
    #[command(alias = "list")]
    Ls(Where),
    /// Restore a snapshot into a data directory no server is using.
    Restore(RestoreArgs),
}

/// Where the datastore and its snapshots are.
#[derive(Args)]
pub struct Where {
    /// The server's data directory [default: ROOT/server].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where snapshots are kept [default: DATA_DIR/snapshots].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// `berth server snapshot save` options.
#[derive(Args)]
pub struct SaveArgs {
    #[command(flatten)]
    at: Where,
    /// The snapshot's name; the time is appended (NAME-YYYYMMDDHHMMSS).
    #[arg(long, default_value = "on-demand")]
    name: String,
    /// The etcd endpoints the server uses (http://HOST:PORT, comma-separated):
    /// snapshot etcd instead of the SQLite store.
    #[arg(long = "datastore-endpoint", value_delimiter = ',')]
    datastore_endpoint: Vec<String>,
}

/// `berth server snapshot restore` options.
#[derive(Args)]
pub struct RestoreArgs {
    /// The snapshot: a file, or a name `ls` lists.
    snapshot: String,
    #[command(flatten)]
    at: Where,
    /// Set an existing store aside (renamed, not deleted) instead of refusing.
    #[arg(long)]
    force: bool,
}

/// What `berth server`'s own flags said, before the subcommand (`berth server
/// --data-dir X snapshot save`).
pub struct Parent {
    /// `berth server --data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `berth server --datastore-endpoint`.
    pub datastore_endpoint: Vec<String>,
    /// `berth server --snapshot-dir`.
    pub snapshot_dir: Option<PathBuf>,
}

/// The server's data directory when no --data-dir says otherwise.
pub(crate) fn default_data_dir(ctx: &Ctx) -> PathBuf {
    ctx.root.join("server")
}

/// Where a data directory's snapshots are kept when no --snapshot-dir says
/// otherwise.
pub(crate) fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

impl Where {
    fn data_dir(&self, ctx: &Ctx, parent: &Parent) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| parent.data_dir.clone())
            .unwrap_or_else(|| default_data_dir(ctx))
    }

    fn snapshots(&self, ctx: &Ctx, parent: &Parent) -> PathBuf {
        self.dir
            .clone()
            .or_else(|| parent.snapshot_dir.clone())
            .unwrap_or_else(|| default_dir(&self.data_dir(ctx, parent)))
    }
}

/// The SQLite snapshot suffix, and etcd's.
const SQLITE: &str = "db";
const ETCD: &str = "etcd";

/// Runs a `berth server` subcommand.
pub async fn run(ctx: &Ctx, c: ServerCommand, parent: &Parent) -> anyhow::Result<()> {
    match c {
        ServerCommand::Snapshot(SnapshotCommand::Save(a)) => save(ctx, a, parent).await,
        ServerCommand::Snapshot(SnapshotCommand::Ls(w)) => ls(ctx, &w, parent),
        ServerCommand::Snapshot(SnapshotCommand::Restore(a)) => restore(ctx, a, parent),
    }
}

async fn save(ctx: &Ctx, a: SaveArgs, parent: &Parent) -> anyhow::Result<()> {
    if a.name.is_empty() || a.name.contains('/') {
        bail!("--name {:?}: give a plain name (no slashes)", a.name);
    }
    if a.name.starts_with(crate::snapshot_schedule::SCHEDULED) {
        bail!(
            "--name {:?}: names starting with {:?} are the server's scheduled snapshots (pruned by --snapshot-retention): choose another",
            a.name,
            crate::snapshot_schedule::SCHEDULED
        );
    }
    let dir = a.at.snapshots(ctx, parent);
    make_dir(&dir)?;
    let endpoints = if a.datastore_endpoint.is_empty() {
        &parent.datastore_endpoint
    } else {
        &a.datastore_endpoint
    };
    let saved = take(&dir, &a.name, &a.at.data_dir(ctx, parent), endpoints).await?;
    println!("Snapshot {saved}");
    Ok(())
}

/// Takes a snapshot named NAME-YYYYMMDDHHMMSS (UTC) into `dir` (which exists): of the
/// SQLite store in `data_dir`, or of etcd at `endpoints` when there are some.
/// Returns what was saved, as `NAME-STAMP saved: FILE (...)`.
pub(crate) async fn take(
    dir: &Path,
    name: &str,
    data_dir: &Path,
    endpoints: &[String],
) -> anyhow::Result<String> {
    // UTC: names sort by time whatever the zone and its clock changes.
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d%H%M%S").to_string();
    let name = format!("{name}-{stamp}");
    if endpoints.is_empty() {
        let db = data_dir.join("state.db");
        let out = dir.join(format!("{name}.{SQLITE}"));
        let info = tokio::task::spawn_blocking({
            let out = out.clone();
            move || berth_store::sqlite::snapshot::save(&db, &out)
        })
        .await??;
        Ok(format!(
            "{name} saved: {} (revision {}, {} keys, {})",
            out.display(),
            info.revision,
            info.keys,
            berth_image::inspect::human_size(info.bytes)
        ))
    } else {
        let store = berth_store::etcd::EtcdStore::connect(endpoints).await?;
        let out = dir.join(format!("{name}.{ETCD}"));
        let bytes = store.snapshot(&out).await?;
        Ok(format!(
            "{name} saved: {} (etcd, {})",
            out.display(),
            berth_image::inspect::human_size(bytes)
        ))
    }
}

/// The snapshots in `dir`: (name, file), by name.
pub(crate) fn list(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut found: Vec<(String, PathBuf)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter_map(|p| {
                let ext = p.extension()?.to_str()?;
                if ext != SQLITE && ext != ETCD {
                    return None;
                }
                Some((p.file_stem()?.to_str()?.to_string(), p))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    found.sort();
    Ok(found)
}

/// Makes the snapshot directory, private as the snapshots in it (they hold Secrets).
pub(crate) fn make_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn ls(ctx: &Ctx, w: &Where, parent: &Parent) -> anyhow::Result<()> {
    let dir = w.snapshots(ctx, parent);
    let mut t = crate::table::Table::new(&["NAME", "STORE", "REVISION", "SIZE", "CREATED"]);
    let found = list(&dir)?;
    for (name, p) in found {
        // Gone since the directory was read (pruned by the server's schedule).
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let created = meta
            .modified()
            .ok()
            .and_then(|m| jiff::Timestamp::try_from(m).ok())
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        let (store, revision) = if p.extension().and_then(|e| e.to_str()) == Some(ETCD) {
            ("etcd", String::new())
        } else {
            match berth_store::sqlite::snapshot::inspect(&p) {
                Ok(i) => ("sqlite", i.revision.to_string()),
                Err(_) if !p.exists() => continue,
                Err(_) => ("sqlite", "damaged".to_string()),
            }
        };
        t.row(vec![
            name,
            store.into(),
            revision,
            berth_image::inspect::human_size(meta.len()),
            created,
        ]);
    }
    println!("{}", t.render().trim_end());
    Ok(())
}

/// The snapshot file `s` names: a path, or a name in the snapshot directory.
fn resolve(s: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let p = PathBuf::from(s);
    if p.exists() {
        return Ok(p);
    }
    for ext in [SQLITE, ETCD] {
        let q = dir.join(format!("{s}.{ext}"));
        if q.exists() {
            return Ok(q);
        }
    }
    bail!(
        "no snapshot {s}: neither a file nor a name in {} (see `berth server snapshot ls`)",
        dir.display()
    )
}

fn restore(ctx: &Ctx, a: RestoreArgs, parent: &Parent) -> anyhow::Result<()> {
    let file = resolve(&a.snapshot, &a.at.snapshots(ctx, parent))?;
    if file.extension().and_then(|e| e.to_str()) == Some(ETCD) {
        bail!(
            "{} is an etcd snapshot: etcd restores it into a new member's data directory \
             (`etcdctl snapshot restore {} --data-dir NEW-ETCD-DIR`), then the servers start on that etcd",
            file.display(),
            file.display()
        );
    }
    let data_dir = a.at.data_dir(ctx, parent);
    let db = data_dir.join("state.db");
    let (info, aside) = berth_store::sqlite::snapshot::restore(&file, &db, a.force)?;
    println!(
        "Restored {} into {}: revision {}, {} keys",
        file.display(),
        data_dir.display(),
        info.revision,
        info.keys
    );
    if let Some(old) = aside {
        println!("The store that was there is at {}", old.display());
    }
    if !data_dir.join("pki").join("ca.crt").exists() {
        println!(
            "{} has no certificates yet: the server makes a new cluster CA at its first start, \
             so the old cluster's tokens and certificates will not work there; copy the old \
             DATA_DIR/pki along to keep them",
            data_dir.display()
        );
    }
    println!("Start the server with --data-dir {}", data_dir.display());
    Ok(())
}
