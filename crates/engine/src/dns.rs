//! Starting berth-net's network helper (one per network state root: the DNS resolver
//! of its user-defined networks, and the one that takes unused bridges and firewall
//! tables away after the last container) when a container joins a bridge network and
//! none is running.

use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};

/// Makes sure the network helper runs, and with `answer_on` (a user network's gateway,
/// which it binds within a moment of the bridge appearing) that it answers DNS there.
/// Returns a hold to keep until the container started: the helper does not retire
/// (and prune) under a start.
pub fn ensure(answer_on: Option<std::net::Ipv4Addr>) -> Result<Hold> {
    let nets = berth_net::network::Networks::host();
    let hold_path = berth_net::dns::hold_path(&nets);
    std::fs::create_dir_all(nets.state_dir())
        .ctx(|| format!("create {}", nets.state_dir().display()))?;
    let hold = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&hold_path)
        .ctx(|| format!("open {}", hold_path.display()))?;
    rustix::fs::flock(&hold, rustix::fs::FlockOperation::LockShared)
        .ctx(|| format!("lock {}", hold_path.display()))?;
    let running = || berth_net::dns::is_running(&berth_net::network::Networks::host());
    if !running() {
        crate::helper::start(
            "network-helper",
            "berth's network helper",
            "",
            Duration::from_secs(3),
            running,
        )?;
    }
    if let Some(gateway) = answer_on {
        let end = Instant::now() + Duration::from_secs(3);
        while std::net::UdpSocket::bind((gateway, 53)).is_ok() {
            if Instant::now() > end {
                return Err(Error::Runtime(format!(
                    "berth's DNS resolver does not answer on {gateway}:53 (is another program using port 53 there?)"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(Hold(hold))
}

/// Keeps the network helper from retiring until the container being started exists.
pub struct Hold(#[allow(dead_code)] std::fs::File);
