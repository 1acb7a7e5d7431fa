//! Starting berth-net's embedded DNS resolver (one per host) when a container joins a
//! user-defined network and none is running.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};

/// Makes sure the resolver runs and answers on `gateway` (a network's bridge address,
/// which it binds within a moment of the bridge appearing): starts `berth system
/// dns-serve` from the running berth binary, detached, if none runs, then waits until
/// port 53 there is taken. Returns a hold to keep until the container started.
pub fn ensure(gateway: std::net::Ipv4Addr) -> Result<Hold> {
    std::fs::create_dir_all("/run/berth").ctx(|| "create /run/berth")?;
    let hold = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(berth_net::dns::HOLD)
        .ctx(|| format!("open {}", berth_net::dns::HOLD))?;
    rustix::fs::flock(&hold, rustix::fs::FlockOperation::LockShared)
        .ctx(|| format!("lock {}", berth_net::dns::HOLD))?;
    if !berth_net::dns::is_running() {
        start()?;
    }
    let end = Instant::now() + Duration::from_secs(3);
    while std::net::UdpSocket::bind((gateway, 53)).is_ok() {
        if Instant::now() > end {
            return Err(Error::Runtime(format!(
                "berth's DNS resolver does not answer on {gateway}:53 (is another program using port 53 there?)"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Hold(hold))
}

/// Keeps the resolver from retiring until the container being started exists.
pub struct Hold(#[allow(dead_code)] std::fs::File);

fn start() -> Result<()> {
    let exe = std::env::current_exe().ctx(|| "find the berth binary")?;
    let mut cmd = Command::new(&exe);
    cmd.args(["system", "dns-serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .ctx(|| format!("start the DNS resolver ({})", exe.display()))?;
    let end = Instant::now() + Duration::from_secs(3);
    while !berth_net::dns::is_running() {
        if let Ok(Some(st)) = child.try_wait() {
            // Another berth started one at the same moment: that one serves.
            if berth_net::dns::is_running() {
                break;
            }
            return Err(Error::Runtime(format!(
                "berth's DNS resolver exited ({st}) before serving"
            )));
        }
        if Instant::now() > end {
            return Err(Error::Runtime(
                "berth's DNS resolver did not start within 3 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
