//! `berth volume`: named volumes (directories under ROOT/volumes), and which
//! containers use them.

use anyhow::bail;
use serde_json::{json, Value};

use berth_engine::Engine;

use crate::container_cmd::engine;
use crate::table::Table;
use crate::Ctx;

/// `berth volume` subcommands.
#[derive(clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        /// Name (default: a random one).
        name: Option<String>,
    },
    /// List volumes.
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes.
    Rm {
        /// Remove even if a container uses it.
        #[arg(short, long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes no container uses.
    Prune {
        /// Accepted for docker compatibility.
        #[arg(short, long)]
        force: bool,
    },
}

fn volume_users(e: &Engine, dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let d = dir.join("_data").display().to_string();
    Ok(e.list()?
        .into_iter()
        .filter(|r| r.config.mounts.iter().any(|m| m.source == d))
        .map(|r| r.name)
        .collect())
}

/// `berth volume ...`.
pub fn volume(ctx: &Ctx, c: VolumeCommand) -> anyhow::Result<()> {
    let base = ctx.root.join("volumes");
    std::fs::create_dir_all(&base)?;
    let e = engine(ctx)?;
    let info = |name: &str| -> Value {
        json!({"Name": name, "Driver": "local", "Mountpoint": base.join(name).join("_data"), "Scope": "local", "Labels": {}, "Options": {}})
    };
    match c {
        VolumeCommand::Create { name } => {
            let name = name.unwrap_or_else(berth_engine::core::names::new_id);
            berth_engine::core::names::check_name(&name).map_err(|_| {
                anyhow::anyhow!("volume name {name:?}: use letters, digits, '_', '.', '-'")
            })?;
            std::fs::create_dir_all(base.join(&name).join("_data"))?;
            println!("{name}");
        }
        VolumeCommand::Ls { quiet } => {
            let mut names: Vec<String> = std::fs::read_dir(&base)?
                .flatten()
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            if quiet {
                for n in names {
                    println!("{n}");
                }
            } else {
                let mut t = Table::new(&["DRIVER", "VOLUME NAME"]);
                for n in names {
                    t.row(vec!["local".into(), n]);
                }
                print!("{}", t.render());
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                if !base.join(n).is_dir() {
                    bail!("no such volume: {n}");
                }
                out.push(info(n));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Rm { force, names } => {
            for n in &names {
                let dir = base.join(n);
                if !dir.is_dir() {
                    bail!("no such volume: {n}");
                }
                let users = volume_users(&e, &dir)?;
                if !users.is_empty() && !force {
                    bail!("volume {n} is in use by container {}: remove the container first, or use -f", users.join(", "));
                }
                std::fs::remove_dir_all(&dir)?;
                println!("{n}");
            }
        }
        VolumeCommand::Prune { .. } => {
            println!("Deleted Volumes:");
            for d in std::fs::read_dir(&base)?.flatten() {
                if volume_users(&e, &d.path())?.is_empty() {
                    std::fs::remove_dir_all(d.path())?;
                    println!("{}", d.file_name().to_string_lossy());
                }
            }
        }
    }
    Ok(())
}
