//! berth-device-plugin-example: a device plugin (deviceplugin/v1beta1) that offers
//! the host's loop devices as an extended resource (`example.com/loop`), for trying
//! device plugins on any Linux machine and for berth's end-to-end tests.
//!
//! Devices are the `loopN` block device nodes in `--dev-dir` (or those named with
//! `--device`); one found once stays listed, healthy while its node exists and is a
//! block device, checked every `--health-interval`. A container gets its devices' nodes at /dev/NAME
//! (read-write) and their names in `EXAMPLE_LOOP_DEVICES`. The plugin registers on
//! the agent's kubelet.sock and registers again whenever that socket is made anew
//! (the agent restarted).

mod devices;
mod service;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Offers loop devices to pods as an extended resource.
#[derive(Parser, Debug)]
#[command(name = "berth-device-plugin-example", version)]
struct Args {
    /// The resource the devices are offered as.
    #[arg(long, default_value = "example.com/loop")]
    resource: String,
    /// Where the agent's kubelet.sock is, and where this plugin's socket goes.
    #[arg(long, default_value = berth_deviceplugin::DEVICE_PLUGIN_DIR)]
    plugin_dir: PathBuf,
    /// This plugin's socket's name in the plugin directory.
    #[arg(long, default_value = "berth-example-loop.sock")]
    socket_name: String,
    /// Where the device nodes are.
    #[arg(long, default_value = "/dev")]
    dev_dir: PathBuf,
    /// Offer only these devices (names in --dev-dir; repeatable) [default: every
    /// loopN block device there].
    #[arg(long = "device")]
    devices: Vec<String>,
    /// How often devices' health is checked.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    health_interval: Duration,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = berth_deviceplugin::check_resource_name(&args.resource) {
        eprintln!("berth-device-plugin-example: --resource: {e}");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(service::run(args)) {
        eprintln!("berth-device-plugin-example: {e}");
        std::process::exit(1);
    }
}
