//! `berth`: the command line. Images today (pull, push, load, save, import, inspect,
//! prune...); containers, networks and the cluster as they land.

#![forbid(unsafe_code)]

mod image_cmd;
mod registry_cmd;
mod rootfs_cmd;
mod table;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use berth_image::Store;

/// berth: containers and Kubernetes, light.
#[derive(Parser)]
#[command(name = "berth", version, about, disable_help_subcommand = true)]
struct Cli {
    /// Where berth keeps its state.
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth"
    )]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage images.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// List images.
    Images(image_cmd::LsArgs),
    /// Pull an image from a registry.
    Pull(registry_cmd::PullArgs),
    /// Push an image to a registry.
    Push(registry_cmd::PushArgs),
    /// Log in to a registry.
    Login(registry_cmd::LoginArgs),
    /// Log out from a registry.
    Logout(registry_cmd::LogoutArgs),
    /// Load images from an archive (docker archive or OCI layout).
    Load(image_cmd::LoadArgs),
    /// Save images to an archive.
    Save(image_cmd::SaveArgs),
    /// Create an image from a root filesystem tarball.
    Import(image_cmd::ImportArgs),
    /// Remove images.
    Rmi(image_cmd::RmArgs),
    /// Give an image another name.
    Tag(image_cmd::TagArgs),
    /// Show an image's history.
    History(image_cmd::HistoryArgs),
    /// Manage berth's storage.
    #[command(subcommand)]
    System(image_cmd::SystemCommand),
    /// Container root filesystems built from images (the snapshot layer, low level).
    #[command(subcommand)]
    Rootfs(rootfs_cmd::RootfsCommand),
}

/// What every command gets.
pub struct Ctx {
    /// berth's state directory.
    pub root: PathBuf,
}

impl Ctx {
    /// The image store.
    pub fn store(&self) -> anyhow::Result<Arc<Store>> {
        Ok(Arc::new(Store::open(self.root.join("image"))?))
    }
}

fn main() {
    let cli = Cli::parse();
    let ctx = Ctx { root: cli.root };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Image(c) => image_cmd::run(&ctx, c).await,
            Command::Images(a) => image_cmd::ls(&ctx, a),
            Command::Pull(a) => registry_cmd::pull(&ctx, a).await,
            Command::Push(a) => registry_cmd::push(&ctx, a).await,
            Command::Login(a) => registry_cmd::login(a).await,
            Command::Logout(a) => registry_cmd::logout(a),
            Command::Load(a) => image_cmd::load(&ctx, a),
            Command::Save(a) => image_cmd::save(&ctx, a),
            Command::Import(a) => image_cmd::import(&ctx, a),
            Command::Rmi(a) => image_cmd::rm(&ctx, a),
            Command::Tag(a) => image_cmd::tag(&ctx, a),
            Command::History(a) => image_cmd::history(&ctx, a),
            Command::System(c) => image_cmd::system(&ctx, c),
            Command::Rootfs(c) => rootfs_cmd::run(&ctx, c),
        }
    });
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        // docker's exit status for errors of the tool itself.
        std::process::exit(125);
    }
}
