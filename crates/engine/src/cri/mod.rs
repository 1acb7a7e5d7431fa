//! The seam between berth's engine and whoever drives it: Rust traits with the verbs
//! and shapes of the Container Runtime Interface (CRI v1's RuntimeService and
//! ImageService). The node agent calls them in process as kubelet calls CRI; berth's
//! docker-shaped CLI goes through the same core; a CRI gRPC endpoint adapts them for
//! crictl and kubelets.
//!
//! The calls are synchronous: each is a few system calls and short-lived helper
//! processes, and async callers run them on blocking threads.

pub mod container;
pub mod image;
pub mod sandbox;

use std::time::Duration;

pub use container::*;
pub use image::*;
pub use sandbox::*;

use crate::error::Result;
use crate::exec::{AttachSession, ExecSession};

/// The runtime's name and versions (CRI `VersionResponse`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// "berth".
    pub runtime_name: String,
    /// berth's version.
    pub runtime_version: String,
    /// The CRI version the shapes follow.
    pub runtime_api_version: String,
}

/// Whether the runtime and its network can take pods (CRI `RuntimeStatus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeCondition {
    /// `RuntimeReady` or `NetworkReady`.
    pub kind: String,
    /// Whether it holds.
    pub status: bool,
    /// Why not (CamelCase), when it does not.
    pub reason: String,
    /// Details.
    pub message: String,
}

/// Pods and containers (CRI v1 `RuntimeService`).
pub trait RuntimeService {
    /// The runtime's name and versions.
    fn version(&self) -> VersionInfo;
    /// Whether the runtime and the pod network are ready.
    fn status(&self) -> Vec<RuntimeCondition>;
    /// Sets the node's pod CIDR: pods' addresses come from it from now on.
    fn update_runtime_config(&self, pod_cidr: &str) -> Result<()>;

    /// Makes a sandbox — namespaces, network, cgroup, infra process — and returns
    /// its ID once it is ready.
    fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<String>;
    /// Stops the sandbox's containers and infra process and releases its network
    /// (its address and published ports). Repeatable.
    fn stop_pod_sandbox(&self, id: &str) -> Result<()>;
    /// Removes a sandbox, stopping and removing its containers first. Repeatable: a
    /// sandbox that is gone is not an error.
    fn remove_pod_sandbox(&self, id: &str) -> Result<()>;
    /// A sandbox in full.
    fn pod_sandbox_status(&self, id: &str) -> Result<SandboxStatus>;
    /// Sandboxes matching the filter.
    fn list_pod_sandbox(&self, filter: &SandboxFilter) -> Result<Vec<SandboxSummary>>;

    /// Creates a container in a ready sandbox (its root filesystem and runtime
    /// config), not started.
    fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String>;
    /// Starts a created (or exited) container under its monitor.
    fn start_container(&self, id: &str) -> Result<()>;
    /// Sends the stop signal, then SIGKILL after `timeout`; returns once it ended.
    fn stop_container(&self, id: &str, timeout: Duration) -> Result<()>;
    /// Removes a container (killing it if it runs). Repeatable.
    fn remove_container(&self, id: &str) -> Result<()>;
    /// Containers matching the filter.
    fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerSummary>>;
    /// A container in full.
    fn container_status(&self, id: &str) -> Result<ContainerStatus>;
    /// Changes a running container's limits.
    fn update_container_resources(&self, id: &str, resources: &Resources) -> Result<()>;
    /// Makes the monitor reopen the container's log file (after the caller rotated it).
    fn reopen_container_log(&self, id: &str) -> Result<()>;

    /// Runs a command in a running container and returns its output and exit code; a
    /// timeout kills it.
    fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecSyncResponse>;
    /// Starts a process in a running container with its stdio as streams.
    fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecSession>;
    /// Attaches to a running container's stdio (made with stdin or tty).
    fn attach(&self, id: &str, terminal_size: Option<(u16, u16)>) -> Result<AttachSession>;
    /// Opens a TCP connection to `port` on the sandbox's loopback, from inside its
    /// network namespace.
    fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<std::net::TcpStream>;

    /// A container's resource use.
    fn container_stats(&self, id: &str) -> Result<ContainerStats>;
    /// Resource use of the containers matching the filter.
    fn list_container_stats(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStats>>;
    /// Container events as they happen (CRI `GetContainerEvents`), from the monitors'
    /// records, without polling.
    fn container_events(&self) -> Result<crate::events::EventStream>;
}

/// Images (CRI v1 `ImageService`).
pub trait ImageService {
    /// Pulls an image (with credentials) and returns its ID.
    fn pull_image(&self, image: &str, auth: Option<&AuthConfig>) -> Result<String>;
    /// A stored image, or None.
    fn image_status(&self, image: &str) -> Result<Option<Image>>;
    /// Stored images (only those matching `filter`, a reference, when given).
    fn list_images(&self, filter: Option<&str>) -> Result<Vec<Image>>;
    /// Removes an image with all its names, given any of them or its ID (as CRI's
    /// RemoveImage); refused while a container uses it. Repeatable.
    fn remove_image(&self, image: &str) -> Result<()>;
    /// Space used by the image store.
    fn image_fs_info(&self) -> Result<Vec<FilesystemUsage>>;
}

/// How long `stop_container` gives a container by default (docker's 10 s).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
