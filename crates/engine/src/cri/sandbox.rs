//! Pod sandboxes as CRI v1 describes them (`PodSandboxConfig`, `PodSandboxStatus`),
//! typed, with the few things berth's docker-shaped client needs beyond CRI marked as
//! such.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::container::Resources;

/// Who a sandbox is (CRI `PodSandboxMetadata`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxMetadata {
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// How many sandboxes of this pod came before this one.
    pub attempt: u32,
}

/// DNS settings of a sandbox's /etc/resolv.conf (CRI `DNSConfig`). Empty: the host's,
/// less loopback servers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// resolv.conf options (`ndots:5`).
    pub options: Vec<String>,
}

/// A transport protocol of a port mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The lower-case name (`tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A host port published to the sandbox (CRI `PortMapping`; a pod's `hostPort`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The protocol.
    pub protocol: Protocol,
    /// The port inside the sandbox.
    pub container_port: u16,
    /// The port on the host (0: any free one).
    pub host_port: u16,
    /// The host address to listen on (empty: all).
    pub host_ip: String,
}

/// Where a sandbox's network namespace comes from (CRI: network NamespaceMode POD or
/// NODE; the other choices are berth's, for its docker-shaped client).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxNetwork {
    /// The node's pod network (CRI POD): the CNI configuration when there is one,
    /// otherwise the pod bridge network for this node's pod CIDR.
    #[default]
    Pod,
    /// The host's network namespace (CRI NODE; `hostNetwork: true`).
    Node,
    /// A berth network by name (`--network NAME`), answering DNS for `aliases`.
    Network {
        /// The network's name.
        name: String,
        /// Names the sandbox answers to on the network.
        aliases: Vec<String>,
    },
    /// A CNI network configuration list by name.
    Cni(String),
    /// A namespace of its own with only loopback (`--network none`).
    Loopback,
    /// Another sandbox's namespace (`--network container:NAME`).
    Sandbox(String),
    /// A namespace of its own reached through pasta: a rootless container's network
    /// (`--network pasta`, the default without root).
    Pasta,
}

/// Whether a namespace is the sandbox's own, the node's, or another sandbox's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharedNamespace {
    /// The sandbox's own, shared by its containers (CRI POD).
    #[default]
    Pod,
    /// The host's (CRI NODE: `hostIPC`, or `--uts=host`).
    Node,
    /// Another sandbox's (berth: `--ipc container:NAME`).
    Sandbox(String),
}

/// The namespaces of a sandbox (CRI `NamespaceOption` at the pod level).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxNamespaces {
    /// The network namespace.
    pub network: SandboxNetwork,
    /// The IPC namespace.
    pub ipc: SharedNamespace,
    /// The UTS namespace (hostname).
    pub uts: SharedNamespace,
    /// Whether the containers share one PID namespace, the infra process's
    /// (`shareProcessNamespace: true`, CRI pid mode POD).
    pub share_pid: bool,
    /// The host's PID namespace for every container (`hostPID`, CRI pid mode NODE).
    pub host_pid: bool,
}

/// What a sandbox is made of (CRI `PodSandboxConfig`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Who it is.
    pub metadata: SandboxMetadata,
    /// The hostname of its UTS namespace (empty: the pod's name, else the ID's first
    /// 12 characters).
    pub hostname: String,
    /// The sandbox's DNS domain, when it has one (a pod's subdomain:
    /// `SUB.NAMESPACE.svc.cluster.local`): /etc/hosts names the address
    /// `HOSTNAME.DOMAIN` first, then the hostname, as the kubelet writes it.
    #[serde(default)]
    pub domain: Option<String>,
    /// Where container logs go, when a container's log path is relative (CRI
    /// `log_directory`).
    pub log_directory: Option<PathBuf>,
    /// /etc/resolv.conf (None: the host's).
    pub dns_config: Option<DnsConfig>,
    /// Host ports published to the sandbox.
    pub port_mappings: Vec<PortMapping>,
    /// Labels (listed and filtered on).
    pub labels: BTreeMap<String, String>,
    /// Annotations (kept, not interpreted).
    pub annotations: BTreeMap<String, String>,
    /// The cgroup the sandbox's infra process and containers go under (CRI
    /// `linux.cgroup_parent`; see berth-cgroups' `naming`). Empty: berth's own parent.
    pub cgroup_parent: String,
    /// Pod-level limits written to the parent cgroup (CRI `linux.resources`).
    pub resources: Option<Resources>,
    /// Namespaces (CRI `linux.security_context.namespace_options`).
    pub namespaces: SandboxNamespaces,
    /// Sysctls set in the sandbox's namespaces (`net.*`, `kernel.shm*`...).
    pub sysctls: BTreeMap<String, String>,
    /// Extra /etc/hosts lines (a pod's hostAliases, docker's `--add-host`).
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// Further berth networks joined after the first, as eth1, eth2... (berth:
    /// `network connect`, remembered across restarts).
    pub extra_networks: Vec<String>,
    /// Whether a privileged container may run in it.
    pub privileged: bool,
    /// Whether the sandbox has an infra process (berth). Pods do (it holds the PID
    /// namespace and tells the sandbox alive); berth's own containers each get a lean
    /// sandbox without one: its namespaces are held by bind mounts alone.
    pub infra: bool,
}

/// A sandbox's state (CRI `PodSandboxState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// Its namespaces and network exist (and its infra process runs).
    Ready,
    /// Stopped, or its infra process died.
    NotReady,
}

/// What `list_pod_sandbox` shows of a sandbox (CRI `PodSandbox`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxSummary {
    /// The sandbox ID.
    pub id: String,
    /// Who it is.
    pub metadata: SandboxMetadata,
    /// Ready or not.
    pub state: SandboxState,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// A sandbox in full (CRI `PodSandboxStatus` with its `info`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxStatus {
    /// The summary fields.
    pub summary: SandboxSummary,
    /// The pod IP (None: host network, loopback only, or not ready).
    pub ip: Option<IpAddr>,
    /// Further IPs (the IPv6 address of a dual-stack network).
    pub additional_ips: Vec<IpAddr>,
    /// The network it is on (`pods`, a berth network, `cni:NAME`, `host`, `none`).
    pub network: String,
    /// The infra process, when it runs.
    pub infra_pid: Option<i32>,
    /// The namespace files its containers join, by kind (`net`, `ipc`, `uts`,
    /// `pid`); a kind missing is the host's.
    pub namespace_paths: BTreeMap<String, PathBuf>,
    /// The cgroup parent.
    pub cgroup_parent: String,
    /// The config it was made from.
    pub config: SandboxConfig,
}

/// Which sandboxes `list_pod_sandbox` returns (CRI `PodSandboxFilter`).
#[derive(Clone, Debug, Default)]
pub struct SandboxFilter {
    /// An ID or unique ID prefix.
    pub id: Option<String>,
    /// Only in this state.
    pub state: Option<SandboxState>,
    /// Only with all these labels.
    pub labels: BTreeMap<String, String>,
    /// Also berth's lean sandboxes of its own containers (not pods): CRI clients do not
    /// see them.
    pub include_lean: bool,
}
