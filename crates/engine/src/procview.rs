//! The engine's side of the /proc view (berth-procview): containers get its files
//! bind-mounted over /proc and /sys (unless `--procview=false`), and the one server per
//! host is started when a container needs it and none is serving.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use berth_procview::{is_served, mountpoint, TARGETS};

use crate::error::{Context, Error, Result};

/// The bind mounts of the view for config.json.
pub fn mounts() -> Vec<Value> {
    TARGETS
        .iter()
        .map(|(file, target)| {
            json!({
                "destination": target,
                "type": "bind",
                "source": mountpoint().join(file),
                "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
            })
        })
        .collect()
}

/// Holds the view for a container being started: the server does not retire while
/// any start holds this (see berth-procview's `serve`), and the container's cgroup —
/// which keeps the server alive after that — exists once the start is done.
pub struct Hold(#[allow(dead_code)] std::fs::File);

/// Makes sure a server is serving the view: if none is (or a dead one left its mount),
/// starts `berth system procview-serve` from the running berth binary, detached, and
/// waits until the view answers. Returns a hold to keep until the container started.
pub fn ensure() -> Result<Hold> {
    let mp = &mountpoint();
    let lock_path = berth_procview::lock_path(mp);
    if let Some(dir) = lock_path.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .ctx(|| format!("open {}", lock_path.display()))?;
    let flock = |op| rustix::fs::flock(&lock, op).ctx(|| format!("lock {}", lock_path.display()));
    flock(rustix::fs::FlockOperation::LockShared)?;
    if is_served(mp) {
        return Ok(Hold(lock));
    }
    flock(rustix::fs::FlockOperation::LockExclusive)?;
    if !is_served(mp) {
        start_server(mp)?;
    }
    flock(rustix::fs::FlockOperation::LockShared)?;
    Ok(Hold(lock))
}

fn start_server(mp: &std::path::Path) -> Result<()> {
    // A server that died leaves a mount answering ENOTCONN: clear it first.
    let _ = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH);
    let exe = std::env::current_exe().ctx(|| "find the berth binary")?;
    let mut cmd = Command::new(&exe);
    cmd.args(["system", "procview-serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .ctx(|| format!("start the /proc view server ({})", exe.display()))?;
    let end = Instant::now() + Duration::from_secs(5);
    while !is_served(mp) {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(Error::Runtime(format!(
                "the /proc view server exited ({st}) before serving {}: is /dev/fuse available (modprobe fuse)? Or run with --procview=false",
                mp.display()
            )));
        }
        if Instant::now() > end {
            return Err(Error::Runtime(format!(
                "the /proc view server did not serve {} within 5 s; run with --procview=false to do without it",
                mp.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
