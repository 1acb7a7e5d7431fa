//! Containers as CRI v1 describes them (`ContainerConfig`, `ContainerStatus`), typed,
//! with the settings of berth's docker-shaped client that CRI lacks marked as berth's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Who a container is within its sandbox (CRI `ContainerMetadata`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    /// The container's name in the pod (or, for berth's own containers, its name).
    pub name: String,
    /// How many containers of this name came before this one in the sandbox.
    pub attempt: u32,
}

/// An environment variable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
}

/// How a mount propagates (CRI `MountPropagation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    /// No propagation (rprivate).
    #[default]
    Private,
    /// Host mounts appear inside (rslave).
    HostToContainer,
    /// Both ways (rshared).
    Bidirectional,
}

/// What a mount is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host path bound in (CRI's only kind).
    #[default]
    Bind,
    /// A fresh tmpfs with these options (`size=64m`, `mode=1777`) — berth's, for
    /// `--tmpfs`; the agent gives memory-backed emptyDirs this way.
    Tmpfs(Vec<String>),
}

/// A mount into the container (CRI `Mount`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The path inside the container.
    pub container_path: String,
    /// The host path (binds).
    pub host_path: PathBuf,
    /// Read-only.
    pub readonly: bool,
    /// Propagation.
    pub propagation: Propagation,
    /// Bind or tmpfs.
    pub kind: MountKind,
}

/// A host device made available (CRI `Device`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The path inside the container.
    pub container_path: String,
    /// The host device node.
    pub host_path: PathBuf,
    /// cgroup permissions: any of `r`, `w`, `m`.
    pub permissions: String,
}

/// Resource limits (CRI `LinuxContainerResources`, plus berth's pids limit). For a
/// sandbox they are the pod-level limits of its parent cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds per period (-1: none).
    pub cpu_quota: Option<i64>,
    /// Relative CPU weight (cgroup v1 shares, 2-262144).
    pub cpu_shares: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit_in_bytes: Option<i64>,
    /// Memory plus swap limit in bytes (-1: unlimited swap).
    pub memory_swap_limit_in_bytes: Option<i64>,
    /// The container's oom_score_adj. Clamped to the engine's own: raising the OOM
    /// priority needs CAP_SYS_RESOURCE, which the engine may lack.
    pub oom_score_adj: Option<i64>,
    /// CPUs the container may run on (`0-1`).
    pub cpuset_cpus: Option<String>,
    /// Memory nodes.
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes (berth; the pod's `podPidsLimit`).
    pub pids_limit: Option<i64>,
    /// cgroup v2 files to write as they are (CRI `unified`).
    pub unified: BTreeMap<String, String>,
}

/// A seccomp profile (CRI `SecurityProfile`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    /// berth's default profile (docker's effect): CRI `RuntimeDefault`.
    #[default]
    RuntimeDefault,
    /// No filter.
    Unconfined,
    /// An OCI seccomp profile (JSON) from this file.
    Localhost(PathBuf),
}

/// Capabilities added and dropped from the default set (CRI `Capability`); `ALL`
/// names every capability.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Added (`NET_ADMIN` or `CAP_NET_ADMIN`).
    pub add: Vec<String>,
    /// Dropped.
    pub drop: Vec<String>,
    /// Added as ambient capabilities too.
    pub add_ambient: Vec<String>,
}

/// The user a process runs as: CRI's `run_as_user`/`run_as_username`/`run_as_group`
/// in one type, so that both can't be set at once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum User {
    /// The image's `User` (root when it has none).
    #[default]
    Image,
    /// A uid, and a gid (else the uid's primary group in the image's /etc/passwd).
    Id {
        /// The uid.
        uid: u32,
        /// The gid.
        gid: Option<u32>,
    },
    /// A user name from the image's /etc/passwd, and a group by name or number
    /// (docker's `-u name:group`).
    Name {
        /// The user name.
        name: String,
        /// The group, by name or number.
        group: Option<String>,
    },
}

/// How a container's processes run (CRI `LinuxContainerSecurityContext`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityContext {
    /// Capabilities against the default set.
    pub capabilities: Capabilities,
    /// Privileged: every capability and device, no seccomp or masked paths.
    pub privileged: bool,
    /// The user.
    pub user: User,
    /// Refuse to start when the user resolves to root (`runAsNonRoot`).
    pub run_as_non_root: bool,
    /// A read-only root filesystem.
    pub readonly_rootfs: bool,
    /// Further groups.
    pub supplemental_groups: Vec<u32>,
    /// no_new_privs (`allowPrivilegeEscalation: false`).
    pub no_new_privs: bool,
    /// /proc and /sys paths masked (None: the default list; empty: none).
    pub masked_paths: Option<Vec<String>>,
    /// Paths made read-only (None: the default list).
    pub readonly_paths: Option<Vec<String>>,
    /// The seccomp profile.
    pub seccomp: Seccomp,
}

/// The PID namespace of a container (CRI `NamespaceOption.pid`; the sandbox decides
/// POD and NODE).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PidNamespace {
    /// As the sandbox says: its own, the pod's shared one, or the node's.
    #[default]
    Sandbox,
    /// Another container's (CRI TARGET; `--pid container:NAME`).
    Target(String),
}

/// An rlimit (berth: docker's `--ulimit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `nofile`, `nproc`...
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// What the monitor does when the container's init exits (berth: docker's
/// `--restart`; CRI leaves restarts to the kubelet).
pub use berth_monitor::supervise::RestartPolicy;

/// What a container is made of (CRI `ContainerConfig`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Who it is.
    pub metadata: ContainerMetadata,
    /// The image: a reference, ID or digest of a stored image.
    pub image: String,
    /// Replaces the image's entrypoint (CRI `command`).
    pub command: Vec<String>,
    /// Replaces the image's command (CRI `args`).
    pub args: Vec<String>,
    /// The working directory (None: the image's, else /).
    pub working_dir: Option<String>,
    /// Environment over the image's.
    pub envs: Vec<KeyValue>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Devices.
    pub devices: Vec<Device>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// The log file: relative to the sandbox's log directory, or absolute (None: in
    /// the container's state directory).
    pub log_path: Option<PathBuf>,
    /// Keep stdin open for attach.
    pub stdin: bool,
    /// Close stdin after the first attach ends.
    pub stdin_once: bool,
    /// A terminal.
    pub tty: bool,
    /// Limits.
    pub resources: Resources,
    /// Security.
    pub security: SecurityContext,
    /// The PID namespace.
    pub pid: PidNamespace,
    /// rlimits (berth).
    pub rlimits: Vec<Rlimit>,
    /// berth-runtime's reaping init as pid 1 (berth: `--init`).
    pub init: bool,
    /// The signal `stop` sends first (None: SIGTERM).
    pub stop_signal: Option<i32>,
    /// Serve /proc's memory, CPU and uptime files from berth's /proc view (berth).
    pub procview: bool,
    /// What the monitor does when the init exits (berth).
    pub restart: RestartPolicy,
    /// Remove the container once it has ended for good (berth: `--rm`).
    pub auto_remove: bool,
}

/// A container's state (CRI `ContainerState`, with what docker's `ps` also tells).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Its init runs (pid).
    Running(i32),
    /// Frozen by `pause` (pid).
    Paused(i32),
    /// Between runs of a restart policy.
    Restarting,
    /// Ended.
    Exited,
    /// Its init runs but its monitor is gone: output is no longer logged; stop and
    /// remove still work.
    Orphaned(i32),
    /// Neither monitor nor init, and no exit record (the host rebooted).
    Unknown,
}

impl ContainerState {
    /// docker's state word.
    pub fn word(&self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running(_) | ContainerState::Orphaned(_) => "running",
            ContainerState::Paused(_) => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "dead",
        }
    }

    /// Whether a process of the container may be running.
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            ContainerState::Running(_)
                | ContainerState::Paused(_)
                | ContainerState::Orphaned(_)
                | ContainerState::Restarting
        )
    }

    /// The init's pid, when it runs.
    pub fn pid(&self) -> Option<i32> {
        match self {
            ContainerState::Running(p)
            | ContainerState::Paused(p)
            | ContainerState::Orphaned(p) => Some(*p),
            _ => None,
        }
    }
}

/// What `list_containers` shows (CRI `Container`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerSummary {
    /// The container ID.
    pub id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// Who it is.
    pub metadata: ContainerMetadata,
    /// Its unique name on this host.
    pub name: String,
    /// The image as given.
    pub image: String,
    /// The image's ID (config digest).
    pub image_id: String,
    /// The state.
    pub state: ContainerState,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A container in full (CRI `ContainerStatus`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// The summary fields.
    pub summary: ContainerSummary,
    /// When its init last started (ns since the epoch, 0: never).
    pub started_at: i64,
    /// When it last ended (0: not yet).
    pub finished_at: i64,
    /// The last exit code.
    pub exit_code: i32,
    /// Why it is in its state (`OOMKilled`, `Error`, `Completed`, `ContainerCannotRun`).
    pub reason: String,
    /// Details (a start error).
    pub message: String,
    /// Whether the OOM killer ended it.
    pub oom_killed: bool,
    /// Times the monitor restarted it (berth's restart policies).
    pub restart_count: u32,
    /// The image manifest digest its root filesystem came from.
    pub image_ref: String,
    /// The log file.
    pub log_path: PathBuf,
    /// Why output stopped reaching the log (a full disk), if it did.
    pub log_error: String,
    /// The command it runs (entrypoint and command resolved).
    pub args: Vec<String>,
    /// Its root filesystem on the host.
    pub rootfs: PathBuf,
    /// Its cgroup path (`PARENT/ID`).
    pub cgroup: String,
    /// The config it was made from.
    pub config: ContainerConfig,
}

/// Which containers `list_containers` returns (CRI `ContainerFilter`).
#[derive(Clone, Debug, Default)]
pub struct ContainerFilter {
    /// An ID or unique ID prefix.
    pub id: Option<String>,
    /// Only in this sandbox.
    pub sandbox_id: Option<String>,
    /// Only running (true) or not running (false) ones.
    pub running: Option<bool>,
    /// Only with all these labels.
    pub labels: BTreeMap<String, String>,
}

/// The result of `exec_sync`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecSyncResponse {
    /// What it wrote to stdout.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr.
    pub stderr: Vec<u8>,
    /// Its exit code (128+N when killed by signal N; the timeout kills with SIGKILL).
    pub exit_code: i32,
    /// Whether the timeout ended it.
    pub timed_out: bool,
}

/// A process to run in a running container (CRI `ExecRequest`, plus docker's `exec`
/// flags).
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    /// Command and arguments.
    pub cmd: Vec<String>,
    /// A terminal.
    pub tty: bool,
    /// Give the process a stdin.
    pub stdin: bool,
    /// Extra environment `KEY=VALUE`.
    pub env: Vec<String>,
    /// The user (Image: the container's).
    pub user: User,
    /// The working directory (None: the container's).
    pub workdir: Option<String>,
    /// Privileged (every capability).
    pub privileged: bool,
    /// Return once it started, its stdio discarded (berth: docker's `exec -d`).
    pub detach: bool,
}

/// Resource use of a container (CRI `ContainerStats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// The container.
    pub id: String,
    /// When read, ns since the epoch.
    pub timestamp: i64,
    /// CPU time used, ns.
    pub cpu_usage_ns: u64,
    /// Memory in use less inactive file pages (kubelet's working set), bytes.
    pub memory_working_set: u64,
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// The memory limit (None: none).
    pub memory_limit: Option<u64>,
    /// Processes.
    pub pids: u64,
    /// Bytes used by its writable layer.
    pub writable_layer_bytes: u64,
}

/// A container's state change (CRI `ContainerEventResponse`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEvent {
    /// The container.
    pub container_id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// What happened.
    pub kind: ContainerEventKind,
    /// When (ns since the epoch).
    pub at: i64,
}

/// Kinds of container events (CRI `ContainerEventType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerEventKind {
    /// Created.
    Created,
    /// Its init started.
    Started,
    /// Its init ended.
    Stopped,
    /// Removed.
    Deleted,
}
