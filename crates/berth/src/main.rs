//! `berth`: the command line: containers (run, ps, logs, stop, rm...) and images (pull,
//! push, load, save, import, inspect, prune...); networks and the cluster as they land.

#![forbid(unsafe_code)]
// docker's inspect JSON is one large json! literal.
#![recursion_limit = "256"]

mod agent_cmd;
mod apiserver_endpoints;
mod build;
mod cluster_cmd;
mod container_cmd;
mod controller_cmd;
mod cp_cmd;
mod create_args;
mod cri_cmd;
mod elected;
mod explain_cmd;
mod explain_path;
mod image_cmd;
mod in_root;
mod network_cmd;
mod registry_cmd;
mod rootfs_cmd;
mod scheduler_cmd;
mod server_cmd;
mod server_join;
mod session;
mod sim_cmd;
mod snapshot_cmd;
mod snapshot_schedule;
mod stats_cmd;
mod table;
mod token_cmd;
mod volume_cmd;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use berth_image::Store;

/// berth: containers and Kubernetes, light.
#[derive(Parser)]
#[command(name = "berth", version, about, disable_help_subcommand = true)]
struct Cli {
    /// Where berth keeps its state.
    /// The state root [default: /var/lib/berth; a rootless user's
    /// $XDG_DATA_HOME/berth]
    #[arg(long, global = true, env = "BERTH_ROOT")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create and start a container.
    #[command(disable_help_flag = true)]
    Run(container_cmd::RunArgs),
    /// Create a container.
    #[command(disable_help_flag = true)]
    Create(create_args::CreateArgs),
    /// Start containers.
    Start(container_cmd::StartArgs),
    /// Stop containers (stop signal, then SIGKILL).
    Stop(container_cmd::StopArgs),
    /// Restart containers.
    Restart(container_cmd::StopArgs),
    /// Send a signal to containers.
    Kill(container_cmd::KillArgs),
    /// Remove containers.
    Rm(container_cmd::RmArgs),
    /// List containers.
    Ps(container_cmd::PsArgs),
    /// Show a container's output.
    Logs(container_cmd::LogsArgs),
    /// Wait for containers to end and print their exit codes.
    Wait(container_cmd::Names),
    /// Show containers or images as JSON.
    Inspect(container_cmd::InspectArgs),
    /// Run a command in a running container.
    Exec(container_cmd::ExecArgs),
    /// Attach to a running container's input and output (created with -i or -t).
    Attach(session::AttachArgs),
    /// Freeze containers' processes.
    Pause(container_cmd::Names),
    /// Thaw paused containers.
    Unpause(container_cmd::Names),
    /// Rename a container.
    Rename(container_cmd::RenameArgs),
    /// Make an image of a container's changes.
    Commit(container_cmd::CommitArgs),
    /// Show a container's processes.
    Top(container_cmd::Names),
    /// Show containers' CPU, memory and process use.
    Stats(stats_cmd::StatsArgs),
    /// Show what a container changed in its filesystem.
    Diff(container_cmd::Names),
    /// Copy files between a container and the host.
    Cp(cp_cmd::CpArgs),
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume_cmd::VolumeCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network_cmd::NetworkCommand),

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
    /// Run the Kubernetes API server (embedded SQLite store, or etcd) with this
    /// machine's node agent.
    Server(Box<server_cmd::ServerArgs>),
    /// Run the node agent alone (what the kubelet is).
    Agent(agent_cmd::AgentArgs),
    /// Serve the Container Runtime Interface (CRI v1 over gRPC) for crictl and kubelets.
    Cri(cri_cmd::CriArgs),
    /// Run the scheduler alone (`berth server` runs one unless --disable scheduler).
    Scheduler(scheduler_cmd::SchedulerArgs),
    /// Run the controllers alone (`berth server` runs them unless --disable controllers).
    ControllerManager(controller_cmd::ControllerManagerArgs),
    /// Show how a pod on this node is made, read from the kernel.
    #[command(subcommand)]
    Explain(explain_cmd::ExplainCommand),
    /// Simulated nodes (what KWOK makes), against any API server.
    #[command(subcommand)]
    Sim(sim_cmd::SimCommand),
    /// Clusters of several nodes on this machine (as kind and k3d make them).
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Bootstrap tokens nodes join with (as kubeadm token and k3s token).
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
}

/// What every command gets.
pub struct Ctx {
    /// berth's state directory.
    pub root: PathBuf,
}

impl Ctx {
    /// The image store.
    pub fn store(&self) -> anyhow::Result<Arc<Store>> {
        self.check_access()?;
        Ok(Arc::new(Store::open(self.root.join("image"))?))
    }

    /// A user other than root cannot use root's state directory: said plainly, before
    /// a permission error deep in the store would be.
    pub fn check_access(&self) -> anyhow::Result<()> {
        let rootless = berth_engine::rootless::active();
        if rustix::process::geteuid().is_root() && !rootless {
            return Ok(());
        }
        let mut existing = self.root.as_path();
        while !existing.exists() {
            match existing.parent() {
                Some(p) => existing = p,
                None => break,
            }
        }
        if rustix::fs::access(existing, rustix::fs::Access::WRITE_OK).is_ok() {
            return Ok(());
        }
        anyhow::bail!(
            "{} is not yours to write: without root, berth keeps a store of your own in \
             $XDG_DATA_HOME/berth (leave out --root and BERTH_ROOT), or run as root (sudo berth ...)",
            self.root.display()
        )
    }
}

/// mimalloc rather than glibc's malloc: the API server, scheduler and controllers
/// build and drop JSON trees all day, and glibc's allocator spent a fifth of the
/// server's time on them with two busy threads.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `berth image ls | head`: output cut short by the reader ends the command quietly
/// with the status a SIGPIPE gives (141), as `ls | head` does, not with a panic
/// report. Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE and
/// `print!` panics on that failure; every other panic is reported as before.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info)
    }));
}

fn main() {
    quiet_on_closed_stdout();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == berth_engine::rootless::PAUSE_ARG)
    {
        berth_engine::rootless::pause_main();
    }
    let cli = Cli::parse();
    // Before any thread starts: a process with threads cannot join a user namespace.
    let session = match berth_engine::rootless::enter(cli.root.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("berth: {e}");
            std::process::exit(1);
        }
    };
    let root = cli.root.unwrap_or_else(|| match session {
        Some(s) => s.state_root,
        None => PathBuf::from(berth_hostdirs::DEFAULT_STATE_ROOT),
    });
    let ctx = Ctx { root };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result: anyhow::Result<i32> = runtime.block_on(async move {
        let ok = |r: anyhow::Result<()>| r.map(|()| 0);
        match cli.command {
            Command::Run(a) => container_cmd::run(&ctx, a).await,
            Command::Create(a) => ok(container_cmd::create(&ctx, a).await),
            Command::Start(a) => container_cmd::start(&ctx, a).await,
            Command::Stop(a) => ok(container_cmd::stop(&ctx, a)),
            Command::Restart(a) => ok(container_cmd::restart(&ctx, a)),
            Command::Kill(a) => ok(container_cmd::kill(&ctx, a)),
            Command::Rm(a) => ok(container_cmd::rm(&ctx, a)),
            Command::Ps(a) => ok(container_cmd::ps(&ctx, a)),
            Command::Logs(a) => ok(container_cmd::logs(&ctx, a).await),
            Command::Wait(a) => ok(container_cmd::wait(&ctx, a)),
            Command::Inspect(a) => ok(container_cmd::inspect(&ctx, a)),
            Command::Exec(a) => container_cmd::exec(&ctx, a),
            Command::Attach(a) => session::attach(&ctx, a),
            Command::Pause(a) => ok(container_cmd::pause(&ctx, a, true)),
            Command::Unpause(a) => ok(container_cmd::pause(&ctx, a, false)),
            Command::Rename(a) => ok(container_cmd::rename(&ctx, a)),
            Command::Commit(a) => ok(container_cmd::commit(&ctx, a)),
            Command::Top(a) => ok(container_cmd::top(&ctx, a)),
            Command::Stats(a) => ok(stats_cmd::stats(&ctx, a)),
            Command::Diff(a) => ok(container_cmd::diff(&ctx, a)),
            Command::Cp(a) => ok(cp_cmd::cp(&ctx, a)),
            Command::Build(a) => ok(build::build(&ctx, a)),
            Command::Volume(c) => ok(volume_cmd::volume(&ctx, c)),
            Command::Network(c) => ok(network_cmd::network(&ctx, c)),
            Command::Image(c) => ok(image_cmd::run(&ctx, c).await),
            Command::Images(a) => ok(image_cmd::ls(&ctx, a)),
            Command::Pull(a) => ok(registry_cmd::pull(&ctx, a).await),
            Command::Push(a) => ok(registry_cmd::push(&ctx, a).await),
            Command::Login(a) => ok(registry_cmd::login(a).await),
            Command::Logout(a) => ok(registry_cmd::logout(a)),
            Command::Load(a) => ok(image_cmd::load(&ctx, a)),
            Command::Save(a) => ok(image_cmd::save(&ctx, a)),
            Command::Import(a) => ok(image_cmd::import(&ctx, a)),
            Command::Rmi(a) => ok(image_cmd::rm(&ctx, a)),
            Command::Tag(a) => ok(image_cmd::tag(&ctx, a)),
            Command::History(a) => ok(image_cmd::history(&ctx, a)),
            Command::System(c) => ok(image_cmd::system(&ctx, c)),
            Command::Rootfs(c) => ok(rootfs_cmd::run(&ctx, c)),
            Command::Server(a) => ok(server_cmd::server(&ctx, *a).await),
            Command::Agent(a) => ok(agent_cmd::agent(&ctx, a).await),
            Command::Cri(a) => ok(cri_cmd::cri(&ctx, a).await),
            Command::Scheduler(a) => ok(scheduler_cmd::scheduler(a).await),
            Command::ControllerManager(a) => ok(controller_cmd::controller_manager(a).await),
            Command::Explain(c) => ok(explain_cmd::explain(&ctx, c).await),
            Command::Sim(c) => ok(sim_cmd::sim(c).await),
            Command::Cluster(c) => ok(cluster_cmd::run(&ctx, c).await),
            Command::Token(c) => ok(token_cmd::run(&ctx, c).await),
        }
    });
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            // docker's exit status for errors of the tool itself.
            std::process::exit(125);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
