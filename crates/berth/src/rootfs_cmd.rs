//! `berth rootfs ...`: container root filesystems straight from the snapshot layer —
//! what the engine does for `run` and `commit`, usable on its own for inspection and
//! for benchmarks.

use anyhow::Context as _;
use clap::{Args, Subcommand};

use berth_image::commit::NewImage;
use berth_image::oci::Platform;
use berth_image::snapshot::Snapshotter;
use berth_image::Reference;

use crate::table::Table;
use crate::Ctx;

/// `berth rootfs` subcommands.
#[derive(Subcommand)]
pub enum RootfsCommand {
    /// Build a container rootfs from an image and print its path.
    Prepare(PrepareArgs),
    /// Mount a prepared rootfs again (after a reboot) and print its path.
    Mount {
        /// Container id.
        id: String,
    },
    /// Make an image of a rootfs's changes (the init layer left out).
    Commit(CommitArgs),
    /// Unmount and remove a rootfs.
    Rm {
        /// Container ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List prepared root filesystems.
    Ls,
}

/// Arguments of `rootfs prepare`.
#[derive(Args)]
pub struct PrepareArgs {
    /// overlay, copy, or auto (overlay where possible).
    #[arg(long, default_value = "auto")]
    snapshotter: String,
    /// Hostname written to /etc/hostname in the init layer.
    #[arg(long)]
    hostname: Option<String>,
    /// Container id (letters, digits, '_', '-', '.').
    id: String,
    /// Image.
    image: String,
}

/// Arguments of `rootfs commit`.
#[derive(Args)]
pub struct CommitArgs {
    /// Author.
    #[arg(short, long)]
    author: Option<String>,
    /// Message.
    #[arg(short, long)]
    message: Option<String>,
    /// Dockerfile-style config change (see `berth import --help`).
    #[arg(short, long = "change")]
    change: Vec<String>,
    /// Container id.
    id: String,
    /// Name of the new image.
    reference: Option<String>,
}

/// Dispatches `berth rootfs ...`.
pub fn run(ctx: &Ctx, c: RootfsCommand) -> anyhow::Result<()> {
    let store = ctx.store()?;
    match c {
        RootfsCommand::Prepare(a) => {
            let snap = match a.snapshotter.as_str() {
                "auto" => Snapshotter::Auto,
                "overlay" => Snapshotter::Overlay,
                "copy" => Snapshotter::Copy,
                other => anyhow::bail!("--snapshotter {other:?}: use auto, overlay or copy"),
            };
            let img = store.resolve_stored(&a.image)?;
            let short: String = a.id.chars().take(12).collect();
            let hostname = format!("{}\n", a.hostname.as_deref().unwrap_or(&short));
            let hosts = format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}",
                hostname
            );
            let files: [(&str, &[u8]); 3] = [
                ("etc/hostname", hostname.as_bytes()),
                ("etc/hosts", hosts.as_bytes()),
                ("etc/resolv.conf", b""),
            ];
            let r = store.prepare(&a.id, &img, &files, snap)?;
            if let Some(n) = r.note {
                eprintln!("note: {n}");
            }
            println!("{}", r.path.display());
        }
        RootfsCommand::Mount { id } => println!("{}", store.mount_container(&id)?.display()),
        RootfsCommand::Commit(a) => {
            let rec = store
                .container(&a.id)?
                .with_context(|| format!("no rootfs for container {:?}", a.id))?;
            let base = store.resolve_digest(&rec.image, &Platform::host())?;
            let opts = NewImage {
                reference: a
                    .reference
                    .as_deref()
                    .map(str::parse::<Reference>)
                    .transpose()?,
                author: a.author,
                comment: a.message,
                created_by: format!("berth rootfs commit {}", a.id),
                config_changes: crate::image_cmd::changes(&a.change)?,
            };
            let d = store.commit(&a.id, &base, &opts)?;
            println!(
                "{}",
                store.resolve_digest(&d, &Platform::host())?.config_digest
            );
        }
        RootfsCommand::Rm { ids } => {
            for id in ids {
                store.remove_container(&id)?;
                println!("{id}");
            }
        }
        RootfsCommand::Ls => {
            let mut t = Table::new(&["ID", "IMAGE", "MODE", "PATH"]);
            for c in store.containers()? {
                let path = store.container_paths(&c.id).2;
                t.row(vec![
                    c.id,
                    c.image.short().to_string(),
                    c.mode,
                    path.display().to_string(),
                ]);
            }
            print!("{}", t.render());
        }
    }
    Ok(())
}
