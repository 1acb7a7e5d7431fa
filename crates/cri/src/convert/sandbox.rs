//! Pod sandboxes: `PodSandboxConfig` in; `PodSandbox` and `PodSandboxStatus` out.

use berth_engine::cri as engine;
use k8s_cri::v1 as pb;
use tonic::Status;

use super::container::resources;
use super::{btree, fit, hash, selected};

/// The engine's sandbox config from CRI's.
pub fn config(c: pb::PodSandboxConfig) -> Result<engine::SandboxConfig, Status> {
    let meta = c
        .metadata
        .ok_or_else(|| crate::status::missing("config.metadata"))?;
    if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
        return Err(Status::invalid_argument(
            "config.metadata needs a name, a namespace and a uid",
        ));
    }
    let linux = c.linux.unwrap_or_default();
    let security = linux.security_context.unwrap_or_default();
    let ns = security.namespace_options.unwrap_or_default();
    let mut namespaces = engine::SandboxNamespaces::default();
    let mut hostname = c.hostname;
    if ns.network == pb::NamespaceMode::Node as i32 {
        namespaces.network = engine::SandboxNetwork::Node;
        // A pod on the host's network has the host's name too, as on every runtime:
        // the hostname the kubelet sends then (the node's) is not set.
        namespaces.uts = engine::SharedNamespace::Node;
        hostname.clear();
    }
    if ns.ipc == pb::NamespaceMode::Node as i32 {
        namespaces.ipc = engine::SharedNamespace::Node;
    }
    match pb::NamespaceMode::try_from(ns.pid) {
        Ok(pb::NamespaceMode::Pod) => namespaces.share_pid = true,
        Ok(pb::NamespaceMode::Node) => namespaces.host_pid = true,
        Ok(pb::NamespaceMode::Container) => {}
        Ok(pb::NamespaceMode::Target) => {
            return Err(Status::invalid_argument(
                "a sandbox's pid namespace cannot be TARGET (that is a container's choice)",
            ))
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown pid namespace mode {}",
                ns.pid
            )))
        }
    }
    if ns
        .userns_options
        .as_ref()
        .is_some_and(|u| u.mode == pb::NamespaceMode::Pod as i32)
    {
        return Err(Status::unimplemented(
            "berth does not make pods in user namespaces yet (hostUsers: false)",
        ));
    }
    let mut port_mappings = Vec::new();
    // The kubelet sends every containerPort; only those with a hostPort are published
    // (as containerd's CNI port mappings skip the rest).
    for p in c.port_mappings.into_iter().filter(|p| p.host_port > 0) {
        port_mappings.push(engine::PortMapping {
            protocol: match pb::Protocol::try_from(p.protocol) {
                Ok(pb::Protocol::Tcp) => engine::Protocol::Tcp,
                Ok(pb::Protocol::Udp) => engine::Protocol::Udp,
                Ok(pb::Protocol::Sctp) => engine::Protocol::Sctp,
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "port_mappings: unknown protocol {}",
                        p.protocol
                    )))
                }
            },
            container_port: fit("port_mappings.container_port", p.container_port.into())?,
            host_port: fit("port_mappings.host_port", p.host_port.into())?,
            host_ip: p.host_ip,
        });
    }
    Ok(engine::SandboxConfig {
        metadata: engine::SandboxMetadata {
            name: meta.name,
            uid: meta.uid,
            namespace: meta.namespace,
            attempt: meta.attempt,
        },
        hostname,
        domain: None,
        log_directory: (!c.log_directory.is_empty()).then(|| c.log_directory.into()),
        dns_config: c.dns_config.map(|d| engine::DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings,
        labels: btree(c.labels),
        annotations: btree(c.annotations),
        cgroup_parent: linux.cgroup_parent,
        resources: linux.resources.map(resources).transpose()?,
        namespaces,
        sysctls: linux.sysctls.into_iter().collect(),
        extra_hosts: Vec::new(),
        extra_networks: Vec::new(),
        privileged: security.privileged,
        infra: true,
    })
}

fn metadata(m: &engine::SandboxMetadata) -> pb::PodSandboxMetadata {
    pb::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

fn state(s: engine::SandboxState) -> pb::PodSandboxState {
    match s {
        engine::SandboxState::Ready => pb::PodSandboxState::SandboxReady,
        engine::SandboxState::NotReady => pb::PodSandboxState::SandboxNotready,
    }
}

/// A sandbox as `ListPodSandbox` shows it.
pub fn summary(s: &engine::SandboxSummary) -> pb::PodSandbox {
    pb::PodSandbox {
        id: s.id.clone(),
        metadata: Some(metadata(&s.metadata)),
        state: state(s.state) as i32,
        created_at: s.created_at,
        labels: hash(&s.labels),
        annotations: hash(&s.annotations),
        runtime_handler: String::new(),
    }
}

/// The attributes CRI's sandbox stats carry.
pub fn attributes(s: &engine::SandboxSummary) -> pb::PodSandboxAttributes {
    pb::PodSandboxAttributes {
        id: s.id.clone(),
        metadata: Some(metadata(&s.metadata)),
        labels: hash(&s.labels),
        annotations: hash(&s.annotations),
    }
}

/// A sandbox in full, as `PodSandboxStatus` shows it.
pub fn status(s: &engine::SandboxStatus) -> pb::PodSandboxStatus {
    let ns = &s.config.namespaces;
    let mode = |node: bool| {
        if node {
            pb::NamespaceMode::Node
        } else {
            pb::NamespaceMode::Pod
        }
    };
    let pid = if ns.host_pid {
        pb::NamespaceMode::Node
    } else if ns.share_pid {
        pb::NamespaceMode::Pod
    } else {
        pb::NamespaceMode::Container
    };
    pb::PodSandboxStatus {
        id: s.summary.id.clone(),
        metadata: Some(metadata(&s.summary.metadata)),
        state: state(s.summary.state) as i32,
        created_at: s.summary.created_at,
        network: Some(pb::PodSandboxNetworkStatus {
            ip: s.ip.map(|i| i.to_string()).unwrap_or_default(),
            additional_ips: s
                .additional_ips
                .iter()
                .map(|i| pb::PodIp { ip: i.to_string() })
                .collect(),
        }),
        linux: Some(pb::LinuxPodSandboxStatus {
            namespaces: Some(pb::Namespace {
                options: Some(pb::NamespaceOption {
                    network: mode(ns.network == engine::SandboxNetwork::Node) as i32,
                    pid: pid as i32,
                    ipc: mode(ns.ipc == engine::SharedNamespace::Node) as i32,
                    target_id: String::new(),
                    userns_options: None,
                }),
            }),
        }),
        labels: hash(&s.summary.labels),
        annotations: hash(&s.summary.annotations),
        runtime_handler: String::new(),
    }
}

/// The engine's filter from CRI's; labels and state are checked by [`keep`] too.
pub fn filter(f: &Option<pb::PodSandboxFilter>) -> engine::SandboxFilter {
    let Some(f) = f else {
        return engine::SandboxFilter::default();
    };
    engine::SandboxFilter {
        id: (!f.id.is_empty()).then(|| f.id.clone()),
        state: f.state.as_ref().map(|s| {
            if s.state == pb::PodSandboxState::SandboxReady as i32 {
                engine::SandboxState::Ready
            } else {
                engine::SandboxState::NotReady
            }
        }),
        labels: btree(f.label_selector.clone()),
        include_lean: false,
    }
}

/// Whether a listed sandbox passes CRI's filter (the engine's already does; this
/// keeps the adapter right whatever the engine's filter leaves in).
pub fn keep(s: &pb::PodSandbox, f: &Option<pb::PodSandboxFilter>) -> bool {
    let Some(f) = f else { return true };
    f.state.as_ref().is_none_or(|st| st.state == s.state)
        && selected(&btree(s.labels.clone()), &f.label_selector)
}
