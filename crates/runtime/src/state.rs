//! Containers on disk: one directory per container under the runtime root, holding
//! `state.json`, a copy of the config, and the `exec.fifo` that `start` opens.
//!
//! The status is never stored: it is derived from the kernel each time (is the init
//! process alive and still the same process? is the fifo still there? is the cgroup
//! frozen?), so `state` tells the truth after the runtime or the container crashed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupPaths;
use crate::error::{Context, Error, Result};

/// Where containers live when `--root` is not given (runc uses /run/runc).
pub const DEFAULT_ROOT: &str = "/run/berth-runtime";
/// The OCI runtime spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";
/// Name of the fifo that blocks the container's init until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";
const STATE_FILE: &str = "state.json";
const CONFIG_FILE: &str = "config.json";

/// The lifecycle status of a container, as the OCI spec names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// `create` is still setting the container up.
    Creating,
    /// Set up and waiting for `start`.
    Created,
    /// The user process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl Status {
    /// The spec's lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What the runtime records about a container (`state.json` in its directory).
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Container id.
    pub id: String,
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Start time of the init process (clock ticks since boot), to detect pid reuse.
    pub init_start_time: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Owner (empty for root, as runc reports).
    pub owner: String,
    /// Annotations from the config.
    pub annotations: BTreeMap<String, String>,
    /// The container's cgroup directories.
    pub cgroup: CgroupPaths,
    /// Whether the container has its own pid namespace (then killing init kills all).
    pub own_pid_ns: bool,
    /// Whether the container got a session keyring of its own (`exec` joins it).
    #[serde(default)]
    pub session_keyring: bool,
}

impl Record {
    /// This container as an OCI state document, at `status` with init `pid`.
    pub fn oci_state(&self, status: Status, pid: i32) -> OciState {
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: self.id.clone(),
            status: status.as_str().to_string(),
            pid,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone(),
        }
    }

    /// This container as oci-spec's state, at `status` with init `pid`: what a seccomp
    /// agent gets in the ContainerProcessState.
    pub fn spec_state(&self, status: Status, pid: i32) -> oci_spec::runtime::State {
        let mut st = oci_spec::runtime::State::default();
        st.set_version(OCI_VERSION.to_string());
        st.set_id(self.id.clone());
        st.set_status(match status {
            Status::Creating => oci_spec::runtime::ContainerState::Creating,
            Status::Created => oci_spec::runtime::ContainerState::Created,
            Status::Running | Status::Paused => oci_spec::runtime::ContainerState::Running,
            Status::Stopped => oci_spec::runtime::ContainerState::Stopped,
        });
        st.set_pid((pid > 0).then_some(pid));
        st.set_bundle(self.bundle.clone());
        st.set_annotations(
            (!self.annotations.is_empty()).then(|| self.annotations.clone().into_iter().collect()),
        );
        st
    }

    /// The state JSON that hooks read on stdin.
    pub fn hook_state(&self, status: Status, pid: i32) -> String {
        serde_json::to_string(&self.oci_state(status, pid)).expect("state serializes")
    }

    /// The name of the container's session keyring.
    pub fn keyring_name(&self) -> String {
        format!("_ses.{}", self.id)
    }
}

/// The OCI state document printed by `state` and given to hooks on stdin.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// Spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Lifecycle status.
    pub status: String,
    /// Host pid of the init process (0 once stopped).
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path (runc prints it too).
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Owner of the container.
    pub owner: String,
    /// Annotations from the config.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// The runtime root directory (the `--root` flag).
#[derive(Clone, Debug)]
pub struct Root(pub PathBuf);

impl Root {
    /// The directory of one container.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.0.join(id)
    }

    /// Creates the root directory (mode 0700) if needed.
    pub fn ensure(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)
            .ctx(|| format!("create runtime root {}", self.0.display()))
    }

    /// Ids of all containers under the root, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let entries = match std::fs::read_dir(&self.0) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => return Err(Error::io(format!("list {}", self.0.display()), e)),
        };
        for entry in entries {
            let entry = entry.ctx(|| format!("list {}", self.0.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Dot directories are the runtime's own (the seccomp cache), not containers.
            if entry.file_type().is_ok_and(|t| t.is_dir()) && !name.starts_with('.') {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// An exclusive lock on a container directory, held while an operation changes it.
pub struct DirLock(File);

impl DirLock {
    /// Takes the lock, waiting for another runtime process to finish with the container.
    pub fn take(dir: &Path) -> Result<DirLock> {
        let f = File::open(dir).ctx(|| format!("open {}", dir.display()))?;
        rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .ctx(|| format!("lock {}", dir.display()))?;
        Ok(DirLock(f))
    }

    /// The lock's descriptor (children forked while it is held must close it).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd()
    }
}

/// Whether another process holds the directory lock (a create in progress).
fn lock_held(dir: &Path) -> bool {
    let Ok(f) = File::open(dir) else {
        return false;
    };
    rustix::fs::flock(
        f.as_fd(),
        rustix::fs::FlockOperation::NonBlockingLockExclusive,
    )
    .is_err()
}

/// A container that exists on disk.
pub struct Container {
    /// Its state directory.
    pub dir: PathBuf,
    /// What the runtime recorded at creation.
    pub record: Record,
}

impl Container {
    /// Loads a container by id; a clear error if there is none.
    pub fn load(root: &Root, id: &str) -> Result<Container> {
        crate::spec::validate_id(id)?;
        let dir = root.dir(id);
        let path = dir.join(STATE_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if dir.exists() {
                    return Err(Error::State(format!(
                        "container {id} is still being created (or its creation was interrupted: `berth-runtime delete --force {id}` removes it)"
                    )));
                }
                return Err(Error::State(format!("container {id} does not exist")));
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let record: Record = serde_json::from_slice(&data)
            .map_err(|e| Error::invalid(format!("{}: corrupt state: {e}", path.display())))?;
        Ok(Container { dir, record })
    }

    /// Writes the record atomically.
    pub fn save(&self) -> Result<()> {
        write_atomic(
            &self.dir.join(STATE_FILE),
            &serde_json::to_vec(&self.record).expect("state serializes"),
        )
    }

    /// The config the container was created with (a copy kept in its directory).
    pub fn spec(&self) -> Result<Spec> {
        let path = self.dir.join(CONFIG_FILE);
        let data = std::fs::read(&path).ctx(|| format!("read {}", path.display()))?;
        crate::spec::parse(&data).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
    }

    /// Saves the config copy (at create, and after `update`).
    pub fn save_spec(dir: &Path, spec: &Spec) -> Result<()> {
        write_atomic(
            &dir.join(CONFIG_FILE),
            &serde_json::to_vec(spec).expect("spec serializes"),
        )
    }

    /// Whether the init process still runs (and is the same process that was started).
    pub fn init_alive(&self) -> bool {
        process_alive(self.record.pid, self.record.init_start_time)
    }

    /// The current status, derived from the kernel.
    pub fn status(&self) -> Status {
        if self.record.pid == 0 && lock_held(&self.dir) {
            return Status::Creating;
        }
        self.status_locked()
    }

    /// The status, for a caller that holds the directory lock itself (so a record
    /// without an init pid is a leftover of an interrupted create, not one in progress).
    pub fn status_locked(&self) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if self.record.cgroup.is_frozen() {
            return Status::Paused;
        }
        if self.dir.join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        Status::Running
    }

    /// The OCI state document for this container.
    pub fn oci_state(&self, status: Status) -> OciState {
        let pid = if status == Status::Stopped {
            0
        } else {
            self.record.pid
        };
        self.record.oci_state(status, pid)
    }
}

/// Writes a file by writing a temporary sibling and renaming it over the target.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
    f.write_all(data)
        .ctx(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("rename {} to {}", tmp.display(), path.display()))
}

/// Fields of /proc/<pid>/stat after the command name: (state char, start time ticks).
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let data = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &data[data.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether `pid` is a live (non-zombie) process that started at `start_time`.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    match proc_stat(pid) {
        Some((state, start)) => start == start_time && state != 'Z' && state != 'X',
        None => false,
    }
}

/// The current time in RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_is_readable() {
        let me = std::process::id() as i32;
        let (state, start) = proc_stat(me).unwrap();
        assert!(matches!(state, 'R' | 'S'));
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
        assert!(!process_alive(0, 0));
    }
}
