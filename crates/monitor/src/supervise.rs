//! What the engine asks the monitor to do with a container (`supervise.json`, written
//! by the engine before it starts the monitor, never by the monitor), and the event
//! records the monitor leaves for whoever watches (`<events>/<ID>`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::record::{read_json, write_json};

/// What the monitor does when the container's init exits (docker's `--restart`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// After a non-zero exit, at most `max` times (0: no limit).
    OnFailure {
        /// Retry limit.
        max: u32,
    },
    /// Always.
    Always,
    /// Always, unless stopped by the user.
    UnlessStopped,
}

impl std::str::FromStr for RestartPolicy {
    type Err = crate::Error;

    /// docker's `--restart` values: no, on-failure[:N], always, unless-stopped.
    fn from_str(s: &str) -> Result<RestartPolicy> {
        Ok(match s.split_once(':') {
            None if s == "no" => RestartPolicy::No,
            None if s == "always" => RestartPolicy::Always,
            None if s == "unless-stopped" => RestartPolicy::UnlessStopped,
            None if s == "on-failure" => RestartPolicy::OnFailure { max: 0 },
            Some(("on-failure", n)) => RestartPolicy::OnFailure {
                max: n.parse().map_err(|_| {
                    crate::Error::Invalid(format!(
                        "--restart {s:?}: the retry count must be a number, as in on-failure:3"
                    ))
                })?,
            },
            _ => {
                return Err(crate::Error::Invalid(format!(
                    "--restart {s:?}: use no, on-failure[:N], always or unless-stopped"
                )))
            }
        })
    }
}

/// What a `--rm` container leaves to be removed once it has ended for good.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Removal {
    /// Its root filesystem mount (unmounted; then its parent directory, the image
    /// store's container directory, is removed).
    pub rootfs: PathBuf,
    /// Files and directories removed after it (state, name reservation, events,
    /// lock), in order.
    pub paths: Vec<PathBuf>,
    /// Its lean sandbox's directory, removed with it.
    pub sandbox_dir: Option<PathBuf>,
}

/// The lean sandbox (see the engine's sandboxes) a container owns: released when the
/// container has ended for good, so that its address and namespaces go with it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnedSandbox {
    /// The sandbox's ID.
    pub id: String,
    /// Its directory (holding `net.json`).
    pub dir: PathBuf,
}

/// The engine's instructions to a container's monitor.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Supervision {
    /// The container's ID (berth-runtime's too).
    pub id: String,
    /// The container's sandbox (for event records).
    pub sandbox_id: String,
    /// berth-runtime's state root (`--root`).
    pub runtime_root: PathBuf,
    /// The directory of event records.
    pub events_dir: PathBuf,
    /// The log file (CRI format).
    pub log_path: PathBuf,
    /// A terminal.
    pub tty: bool,
    /// Keep stdin open for attach.
    pub stdin: bool,
    /// Close the container's stdin once the first attached client closes its input.
    pub stdin_once: bool,
    /// The restart policy.
    pub restart: RestartPolicy,
    /// The container's cgroup path (`PARENT/ID`), where the OOM killer is counted.
    pub cgroup: String,
    /// A lean sandbox released when the container has ended for good.
    pub owned_sandbox: Option<OwnedSandbox>,
    /// `--rm`: what to remove once it has ended for good.
    pub auto_remove: Option<Removal>,
    /// The seccomp agent that answers the container's notified syscalls (the /proc
    /// view's server); set when the spec sends listeners to the monitor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_agent: Option<PathBuf>,
}

impl Supervision {
    /// Reads `supervise.json` from the container's directory.
    pub fn load(dir: &Path) -> Result<Option<Supervision>> {
        read_json(&dir.join(SUPERVISION_FILE))
    }

    /// Writes `supervise.json` into the container's directory.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join(SUPERVISION_FILE), self)
    }
}

/// The name of the instructions file in a container's directory.
pub const SUPERVISION_FILE: &str = "supervise.json";

/// The kind of a container event.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum EventKind {
    /// Created (by the engine).
    Created,
    /// Its init started (by the monitor).
    Started,
    /// Its init ended (by the monitor, after the exit record).
    Stopped,
}

/// A container's last event of one kind: `<events>/<ID>.<kind>` (`created`,
/// `started`, `stopped`), replaced whole (rename) at every such change, so that a
/// watcher of the directory (inotify) learns of each change at once and of its kind
/// from the name alone; removed with the container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventRecord {
    /// The container.
    pub container_id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// What happened.
    pub kind: EventKind,
    /// When, ns since the epoch.
    pub at: i64,
}

impl EventKind {
    /// The kind's name in event file names.
    pub fn word(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Stopped => "stopped",
        }
    }

    /// The kind an event file name ends with.
    pub fn from_word(w: &str) -> Option<EventKind> {
        [EventKind::Created, EventKind::Started, EventKind::Stopped]
            .into_iter()
            .find(|k| k.word() == w)
    }
}

/// The event files container `id` may have in `events_dir`.
pub fn event_files(events_dir: &Path, id: &str) -> Vec<std::path::PathBuf> {
    [EventKind::Created, EventKind::Started, EventKind::Stopped]
        .iter()
        .map(|k| events_dir.join(format!("{id}.{}", k.word())))
        .collect()
}

impl EventRecord {
    /// Writes the record into `events_dir` (best effort: a full disk must not stop a
    /// container; readers also look at the state itself).
    pub fn publish(&self, events_dir: &Path) {
        let _ = std::fs::create_dir_all(events_dir);
        let name = format!("{}.{}", self.container_id, self.kind.word());
        let _ = write_json(&events_dir.join(name), self);
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
