//! What berth keeps per container, under `<root>/containers/<id>/`:
//!
//! ```text
//! container.json   the record: id, name, image, the RunConfig, creation time
//! config.json      the OCI bundle config given to berth-runtime
//! ctr.log          output in the CRI log format (time stream P|F line)
//! monitor.pid      the monitor's pid and start time (is it still alive?)
//! exit.json        written by the monitor when the container ends
//! ```
//!
//! Records are written whole to a temporary file and renamed, so a crash leaves the old
//! or the new one, never half of either.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::{Context, Error, Result};

/// The record of a container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The image's ID (config digest).
    pub image_id: String,
    /// The image manifest digest the rootfs was made from.
    pub image_manifest: String,
    /// The rootfs path.
    pub rootfs: String,
    /// What was asked for.
    pub config: RunConfig,
    /// The command line run (entrypoint + cmd as resolved).
    pub args: Vec<String>,
    /// Times the monitor restarted it.
    pub restart_count: u32,
}

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
    /// The bundle directory (holds config.json).
    pub fn bundle(&self) -> PathBuf {
        self.dir.clone()
    }
    /// `ctr.log`.
    pub fn log(&self) -> PathBuf {
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
    /// The container init's pid file (written by the runtime).
    pub fn init_pid(&self) -> PathBuf {
        self.dir.join("init.pid")
    }
}

/// A new random container ID (64 hex characters, as docker's).
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks a container name as docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(Error::Invalid(format!(
            "invalid container name {name:?}: use letters, digits, '_', '.', '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// A docker-style generated name (adjective_noun), unique among `taken`.
pub fn generate_name(id: &str, taken: &dyn Fn(&str) -> bool) -> String {
    const A: &[&str] = &[
        "brave", "calm", "eager", "fond", "keen", "lucid", "merry", "noble", "quiet", "swift",
        "tidy", "vivid",
    ];
    const N: &[&str] = &[
        "anchor", "buoy", "cove", "dock", "ferry", "harbor", "jetty", "keel", "mooring", "pier",
        "quay", "wharf",
    ];
    let seed = u64::from_str_radix(&id[..12], 16).unwrap_or(0);
    for i in 0..1000u64 {
        let x = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut n = format!(
            "{}_{}",
            A[(x % A.len() as u64) as usize],
            N[((x >> 8) % N.len() as u64) as usize]
        );
        if i > 0 {
            n.push_str(&format!("{}", i));
        }
        if !taken(&n) {
            return n;
        }
    }
    format!("c_{}", &id[..12])
}

/// RFC 3339 with nanoseconds, UTC (docker's and CRI's timestamps).
pub fn now_rfc3339_nanos() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
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

/// Removes berth's parent cgroup (`/berth`, the engine's `cgroupsPath` prefix) in every
/// hierarchy where it is empty. berth-runtime removes the parents a container created,
/// but when containers overlap the creator goes first and the parent stays behind; the
/// engine owns `/berth`, so it tidies it after each removal (a busy one stays).
pub fn remove_empty_cgroup_parent() {
    let mut dirs = vec![std::path::PathBuf::from("/sys/fs/cgroup/berth")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(rd.flatten().map(|e| e.path().join("berth")));
    }
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}
