//! A container's state, read from the kernel and the monitor's records: whether its
//! monitor and its init are alive (by pid and start time, so a reused pid is not
//! mistaken for them), its exit record, its cgroup's freezer. Reading changes nothing.

use std::time::{Duration, Instant};

use berth_monitor::record::{read_json, start_time, ExitRecord, Paths};

use crate::cri::ContainerState;

use super::records::ContainerRecord;
use super::Core;

/// Whether process `pid` is alive and (with `start`) the same process as then.
pub fn alive(pid: i32, start: Option<u64>) -> bool {
    // A zombie has ended; whoever reaps it may take its time.
    if pid <= 0 || is_zombie(pid) {
        return false;
    }
    match (start_time(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        _ => false,
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s.get(i + 2..i + 3).map(|c| c == "Z"))
        })
        .unwrap_or(false)
}

/// The monitor's pid and start time, from `monitor.pid`.
pub fn monitor_of(paths: &Paths) -> Option<(i32, Option<u64>)> {
    let m: serde_json::Value = read_json(&paths.monitor_pid()).ok().flatten()?;
    let pid = m["pid"].as_i64().unwrap_or(0) as i32;
    Some((pid, m["start"].as_u64()))
}

/// The container init's pid (written by the runtime), if it is alive.
pub fn init_of(paths: &Paths) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(paths.init_pid())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (start_time(pid).is_some() && !is_zombie(pid)).then_some(pid)
}

/// The last exit record.
pub fn exit_of(paths: &Paths) -> Option<ExitRecord> {
    read_json(&paths.exit()).ok().flatten()
}

/// Waits (up to `timeout`) until the monitor of `paths` is gone; true if it is.
pub fn wait_monitor_gone(paths: &Paths, timeout: Duration) -> bool {
    let Some((pid, start)) = monitor_of(paths) else {
        return true;
    };
    let end = Instant::now() + timeout;
    // The monitor is not our child (it left our process tree): a pidfd tells us when
    // it ends, without polling.
    let Some(pidfd) = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
    else {
        return true;
    };
    while alive(pid, start) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        let _ = rustix::event::poll(&mut fds, Some(&ts));
    }
    true
}

impl Core {
    /// The state of container `rec`.
    pub fn container_state(&self, rec: &ContainerRecord) -> ContainerState {
        let paths = self.dirs().container(&rec.id);
        state_of(&paths, &rec.cgroup)
    }
}

/// The state of the container whose files are `paths` and whose cgroup is `cgroup`.
pub fn state_of(paths: &Paths, cgroup: &str) -> ContainerState {
    let monitor = monitor_of(paths);
    let monitor_alive = monitor.is_some_and(|(p, s)| alive(p, s));
    let init = init_of(paths);
    let exit = exit_of(paths);
    match (monitor.is_some(), monitor_alive, init) {
        (false, _, _) => ContainerState::Created,
        (_, true, Some(pid)) if frozen(cgroup) => ContainerState::Paused(pid),
        (_, true, Some(pid)) => ContainerState::Running(pid),
        (_, true, None) => match exit {
            Some(x) if x.will_restart => ContainerState::Restarting,
            // Ended for good; the monitor is still releasing what it held.
            Some(_) => ContainerState::Exited,
            // Between the monitor's start and the runtime's pid file.
            None => ContainerState::Running(0),
        },
        (_, false, Some(pid)) => ContainerState::Orphaned(pid),
        (_, false, None) => match exit {
            Some(_) => ContainerState::Exited,
            None => ContainerState::Unknown,
        },
    }
}

/// Whether a cgroup is frozen (v1 freezer or cgroup2 cgroup.freeze).
pub fn frozen(cgroup: &str) -> bool {
    berth_cgroups::naming::paths_of(berth_cgroups::Layout::shared(), cgroup)
        .is_ok_and(|p| p.is_frozen())
}
