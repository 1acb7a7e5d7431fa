//! What berth keeps per container, under its state directory:
//!
//! ```text
//! container.json   the engine's record of the container (see berth-engine)
//! supervise.json   the engine's instructions to the monitor (see `supervise`)
//! config.json      the OCI bundle config given to berth-runtime
//! monitor.pid      the monitor's pid and start time (is it still alive?)
//! init.pid         the container init's pid (written by the runtime)
//! exit.json        written by the monitor when the container's init ends
//! ```
//!
//! Records are written whole to a temporary file and renamed, so a crash leaves the old
//! or the new one, never half of either.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// How a container's last run ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code (128 + signal when killed).
    pub exit_code: i32,
    /// Whether the OOM killer acted in its cgroup.
    pub oom_killed: bool,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// Why it could not start, if it could not.
    pub error: String,
    /// Stopped by the user (`stop`/`kill`), which `unless-stopped` respects.
    pub stopped_by_user: bool,
    /// Why output stopped reaching the log (a full disk), if it did.
    #[serde(default)]
    pub log_error: String,
    /// How many times the monitor had restarted the container before this run.
    #[serde(default)]
    pub restart_count: u32,
    /// Whether the monitor is about to start it again (its restart policy).
    #[serde(default)]
    pub will_restart: bool,
}

/// Writes JSON atomically (temp file + rename).
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(v).expect("records serialize"),
    )
    .ctx(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("write {}", path.display()))
}

/// Reads a JSON record; `None` if the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{} is damaged: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// The files of one container.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The container's directory.
    pub dir: PathBuf,
}

impl Paths {
    /// `container.json`.
    pub fn record(&self) -> PathBuf {
        self.dir.join("container.json")
    }
    /// `config.json` (the directory is the runtime's bundle).
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// The default log file, when the config names none.
    pub fn default_log(&self) -> PathBuf {
        self.dir.join("ctr.log")
    }
    /// `exit.json`.
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    /// `monitor.pid`.
    pub fn monitor_pid(&self) -> PathBuf {
        self.dir.join("monitor.pid")
    }
    /// The socket where berth-runtime sends the container's seccomp listeners
    /// (`linux.seccomp.listenerPath`), served by the monitor.
    pub fn seccomp_socket(&self) -> PathBuf {
        self.dir.join("seccomp.sock")
    }
    /// The container init's pid file (written by the runtime).
    pub fn init_pid(&self) -> PathBuf {
        self.dir.join("init.pid")
    }
}

/// RFC 3339 with nanoseconds, UTC (docker's and CRI's timestamps).
pub fn now_rfc3339_nanos() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Nanoseconds since the epoch of an RFC 3339 time.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(s)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos() as i64)
}

/// Unix seconds of an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(s)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// The start time of a process (clock ticks since boot), to tell a pid from its reuse.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}
