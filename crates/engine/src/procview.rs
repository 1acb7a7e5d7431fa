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

/// Makes sure a server is serving the view: if none is (or a dead one left its mount),
/// starts `berth system procview-serve` from the running berth binary, detached, and
/// waits until the view answers.
pub fn ensure() -> Result<()> {
    let mp = &mountpoint();
    if is_served(mp) {
        return Ok(());
    }
    let lock_path = mp.with_extension("lock");
    if let Some(dir) = lock_path.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .ctx(|| format!("open {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .ctx(|| format!("lock {}", lock_path.display()))?;
    if is_served(mp) {
        return Ok(());
    }
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
                "the /proc view server exited ({st}) before serving {}: is /dev/fuse available (modprobe fuse)? Or run with --procview=false", mp.display()
            )));
        }
        if Instant::now() > end {
            return Err(Error::Runtime(format!(
                "the /proc view server did not serve {} within 5 s; run with --procview=false to do without it", mp.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
