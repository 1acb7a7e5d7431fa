//! The engine's core: pod sandboxes and containers as CRI shapes them (see
//! [`crate::cri`]), kept on disk (see [`dirs`]) and read back from the kernel, so that
//! any number of callers — the docker-shaped CLI, the node agent, a CRI endpoint — can
//! use one state root at once, and a caller killed at any point leaves nothing half
//! made behind (see [`recover`]).

pub mod container;
pub mod dirs;
pub mod images;
pub mod infra;
pub mod lock;
pub mod names;
pub mod nspin;
pub mod ocispec;
pub mod records;
pub mod recover;
pub mod runtime_service;
pub mod sandbox;
pub mod sandbox_net;
pub mod security;
pub mod start;
pub mod stats;
pub mod status;
pub(crate) mod sys;
pub mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_image::Store;

use crate::error::{Context, Result};
use dirs::StateDirs;

/// The engine over a state root.
#[derive(Clone)]
pub struct Core {
    dirs: StateDirs,
    images: Arc<Store>,
    runtime: PathBuf,
    monitor: PathBuf,
}

/// A helper binary: `$var`, else next to the running program, else on PATH, else
/// /usr/local/bin.
fn find_tool(name: &str, var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name(name);
        if sibling.is_file() {
            return sibling;
        }
    }
    for d in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return p;
        }
    }
    Path::new("/usr/local/bin").join(name)
}

/// Fault injection for the crash tests: with `BERTH_FAULT=POINT` the process kills
/// itself (SIGKILL, as a crash or `kill -9` would) when it reaches `point`.
pub(crate) fn fault(point: &str) {
    if std::env::var("BERTH_FAULT").is_ok_and(|v| v == point) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

impl Core {
    /// Opens the state under `root` (making its directories), and undoes whatever a
    /// caller that died left half made.
    pub fn open(root: &Path) -> Result<Core> {
        let dirs = StateDirs::new(root);
        for d in dirs.all() {
            std::fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
        }
        let core = Core {
            images: Arc::new(Store::open(dirs.images())?),
            dirs,
            runtime: find_tool("berth-runtime", "BERTH_RUNTIME"),
            monitor: find_tool("berth-monitor", "BERTH_MONITOR"),
        };
        recover::sweep(&core);
        Ok(core)
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        self.dirs.root()
    }

    /// The state's directories.
    pub fn dirs(&self) -> &StateDirs {
        &self.dirs
    }

    /// The image store.
    pub fn images(&self) -> &Arc<Store> {
        &self.images
    }

    /// A berth-runtime command with the engine's runtime state root.
    pub fn runtime(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.runtime);
        c.arg("--root").arg(self.dirs.runtime()).args(args);
        c
    }

    /// The berth-runtime binary in use.
    pub fn runtime_path(&self) -> &Path {
        &self.runtime
    }

    /// The berth-monitor binary in use.
    pub fn monitor_path(&self) -> &Path {
        &self.monitor
    }
}
