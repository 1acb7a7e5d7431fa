//! A pod spec in the engine's CRI shapes: the sandbox config (hostname, DNS, ports,
//! namespaces, the pod cgroup in the kubelet's layout) and each container's config
//! (image, command, environment, mounts, limits, security), as the kubelet builds
//! them for CRI.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_engine::cri::{
    Capabilities, ContainerConfig, ContainerMetadata, DnsConfig, KeyValue, Mount, PortMapping,
    Propagation, Protocol, SandboxConfig, SandboxMetadata, SandboxNamespaces, SandboxNetwork,
    Seccomp, SecurityContext, SharedNamespace, User,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, SeccompProfile};

use crate::error::{Error, Result};
use crate::labels::{self, PodKey};
use crate::qos;
use crate::volumes::{self, Prepared};

/// The pod's spec, or an error naming the pod.
pub fn spec(pod: &Pod) -> Result<&PodSpec> {
    pod.spec
        .as_ref()
        .ok_or_else(|| Error::Spec(format!("pod {} has no spec", PodKey::of(pod))))
}

/// The node's resolv.conf (`--resolv-conf`), for dnsPolicy Default (and ClusterFirst
/// while the cluster has no DNS service).
fn host_dns(cfg: &crate::AgentConfig) -> DnsConfig {
    let text = std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default();
    let mut d = DnsConfig::default();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(s) = w.next() {
                    // Loopback servers do not answer inside a pod's network namespace.
                    if !s.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
                        d.servers.push(s.into());
                    }
                }
            }
            Some("search") | Some("domain") => d.searches.extend(w.map(str::to_string)),
            Some("options") => d.options.extend(w.map(str::to_string)),
            _ => {}
        }
    }
    d
}

/// The resolv.conf the kubelet writes for ClusterFirst: the cluster DNS server, the
/// pod's namespace's search path then the node's, and ndots:5.
fn cluster_dns(ip: IpAddr, namespace: &str, cfg: &crate::AgentConfig) -> DnsConfig {
    let domain = &cfg.cluster_domain;
    let mut searches = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.clone(),
    ];
    for s in host_dns(cfg).searches {
        if !searches.contains(&s) {
            searches.push(s);
        }
    }
    DnsConfig {
        servers: vec![ip.to_string()],
        searches,
        options: vec!["ndots:5".into()],
    }
}

/// The sandbox of the pod's `attempt`th sandbox.
pub fn sandbox_config(pod: &Pod, cfg: &crate::AgentConfig, attempt: u32) -> Result<SandboxConfig> {
    let (node, log_root) = (cfg.node_name.as_str(), cfg.log_dir.as_path());
    let key = PodKey::of(pod);
    let spec = spec(pod)?;
    let qos = qos::class(pod);
    let host_network = spec.host_network == Some(true);
    let mut hostname = spec.hostname.clone().unwrap_or_else(|| key.name.clone());
    hostname.truncate(63);
    let hostname = hostname.trim_end_matches(['-', '.']).to_string();
    // With a subdomain the pod has a name in the cluster's DNS domain; with
    // setHostnameAsFQDN its kernel hostname is that name.
    let domain = spec
        .subdomain
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(|s| format!("{s}.{}.svc.{}", key.namespace, cfg.cluster_domain));
    let hostname = match &domain {
        Some(d) if spec.set_hostname_as_fqdn == Some(true) => {
            let fqdn = format!("{hostname}.{d}");
            if fqdn.len() > 64 {
                return Err(Error::Spec(format!(
                    "Failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long (64 characters is the max, {} characters requested)",
                    fqdn.len()
                )));
            }
            fqdn
        }
        _ => hostname,
    };
    // On the node's network a pod has the node's UTS namespace, and so its hostname.
    let hostname = if host_network {
        String::new()
    } else {
        hostname
    };
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let dns = match (policy, cfg.cluster_dns) {
        ("None", _) => DnsConfig::default(),
        // ClusterFirst on the node's network means the node's resolvers, as the
        // kubelet does; ClusterFirstWithHostNet asks for the cluster's there too.
        ("ClusterFirst", Some(ip)) if !host_network => cluster_dns(ip, &key.namespace, cfg),
        ("ClusterFirstWithHostNet", Some(ip)) => cluster_dns(ip, &key.namespace, cfg),
        // No cluster DNS served: the kubelet falls back to the node's (Default).
        _ => host_dns(cfg),
    };
    let dns = match &spec.dns_config {
        Some(c) => {
            let mut d = dns;
            d.servers.extend(c.nameservers.iter().flatten().cloned());
            d.searches.extend(c.searches.iter().flatten().cloned());
            for o in c.options.iter().flatten() {
                let name = o.name.clone().unwrap_or_default();
                d.options.retain(|x| x.split(':').next() != Some(&name));
                d.options.push(match &o.value {
                    Some(v) => format!("{name}:{v}"),
                    None => name,
                });
            }
            d
        }
        None => dns,
    };
    let mut ports = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let Some(hp) = p.host_port.filter(|h| *h > 0) else {
                continue;
            };
            ports.push(PortMapping {
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                container_port: p.container_port as u16,
                host_port: hp as u16,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let mut labels_map = pod.metadata.labels.clone().unwrap_or_default();
    labels_map.extend(key.labels(node));
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .map(|v| {
            v.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let extra_hosts = spec
        .host_aliases
        .iter()
        .flatten()
        .filter_map(|a| {
            let ip: IpAddr = a.ip.parse().ok()?;
            Some(a.hostnames.iter().flatten().map(move |h| (h.clone(), ip)))
        })
        .flatten()
        .collect();
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true));
    Ok(SandboxConfig {
        metadata: SandboxMetadata {
            name: key.name.clone(),
            uid: key.uid.clone(),
            namespace: key.namespace.clone(),
            attempt,
        },
        hostname,
        domain,
        log_directory: Some(key.log_dir(log_root)),
        dns_config: Some(dns),
        port_mappings: ports,
        labels: labels_map,
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        cgroup_parent: berth_cgroups::naming::pod_parent_in(&cfg.cgroup_root, qos, &key.uid),
        resources: Some(qos::pod_resources(pod)?),
        namespaces: SandboxNamespaces {
            network: if host_network {
                SandboxNetwork::Node
            } else {
                SandboxNetwork::Pod
            },
            ipc: if spec.host_ipc == Some(true) {
                SharedNamespace::Node
            } else {
                SharedNamespace::Pod
            },
            uts: if host_network {
                SharedNamespace::Node
            } else {
                SharedNamespace::Pod
            },
            share_pid: spec.share_process_namespace == Some(true),
            host_pid: spec.host_pid == Some(true),
        },
        sysctls,
        extra_hosts,
        extra_networks: Vec::new(),
        privileged,
        infra: true,
    })
}

fn seccomp(p: Option<&SeccompProfile>, root: &Path) -> Result<Option<Seccomp>> {
    let Some(p) = p else { return Ok(None) };
    Ok(Some(match p.type_.as_str() {
        "RuntimeDefault" => Seccomp::RuntimeDefault,
        "Unconfined" => Seccomp::Unconfined,
        "Localhost" => {
            let rel = p.localhost_profile.clone().unwrap_or_default();
            if rel.is_empty() || Path::new(&rel).is_absolute() || rel.split('/').any(|c| c == "..")
            {
                return Err(Error::Spec(format!(
                    "seccompProfile Localhost needs localhostProfile, a path relative to {} without '..' (got {rel:?})",
                    root.display()
                )));
            }
            Seccomp::Localhost(root.join(rel))
        }
        other => {
            return Err(Error::Spec(format!(
                "seccompProfile type {other:?} is not RuntimeDefault, Unconfined or Localhost"
            )))
        }
    }))
}

/// Where Localhost seccomp profiles live (the kubelet's `<root>/seccomp`).
pub fn seccomp_root(pods_dir: &Path) -> PathBuf {
    pods_dir.parent().unwrap_or(pods_dir).join("seccomp")
}

/// Everything a container config is built from besides the pod.
pub struct ContainerInputs<'a> {
    /// The container.
    pub container: &'a Container,
    /// Whether it is an init container.
    pub init: bool,
    /// Its attempt (how many of its name ran before in the sandbox).
    pub attempt: u32,
    /// Its resolved environment.
    pub env: Vec<(String, String)>,
    /// The pod's prepared volumes.
    pub volumes: &'a BTreeMap<String, Prepared>,
    /// The pod's directory.
    pub pod_dir: &'a Path,
    /// The node's memory in bytes (oom_score_adj of Burstable containers).
    pub node_memory: u64,
    /// The node's name.
    pub node: &'a str,
    /// Where Localhost seccomp profiles are.
    pub seccomp_root: &'a Path,
}

/// The container's CRI config.
pub fn container_config(pod: &Pod, i: &ContainerInputs) -> Result<ContainerConfig> {
    let c = i.container;
    let key = PodKey::of(pod);
    let spec = spec(pod)?;
    let psc = spec.security_context.clone().unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let mut mounts = Vec::new();
    for (n, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let vol = i.volumes.get(&vm.name).ok_or_else(|| {
            Error::Spec(format!(
                "container {}: volumeMount {:?} names no volume of the pod",
                c.name, vm.name
            ))
        })?;
        let sub = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, Some(e)) if !e.is_empty() => {
                crate::envvars::expand_all(std::slice::from_ref(e), &i.env).remove(0)
            }
            _ => String::new(),
        };
        let host_path = volumes::mount_source(i.pod_dir, c, n, vol, &sub)?;
        mounts.push(Mount {
            container_path: vm.mount_path.clone(),
            host_path,
            readonly: vm.read_only == Some(true) || vol.read_only,
            propagation: match vm.mount_propagation.as_deref() {
                Some("HostToContainer") => Propagation::HostToContainer,
                Some("Bidirectional") => Propagation::Bidirectional,
                _ => Propagation::Private,
            },
            ..Default::default()
        });
    }
    // The termination message file, bound where the container writes it.
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let term_file = termination_file(i.pod_dir, &c.name, i.attempt);
    if let Some(p) = term_file.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::Io(format!("create {}", p.display()), e))?;
    }
    std::fs::write(&term_file, b"")
        .map_err(|e| Error::Io(format!("create {}", term_file.display()), e))?;
    mounts.push(Mount {
        container_path: term_path,
        host_path: term_file,
        ..Default::default()
    });
    let user = match (
        csc.run_as_user.or(psc.run_as_user),
        csc.run_as_group.or(psc.run_as_group),
    ) {
        (Some(u), g) => User::Id {
            uid: u as u32,
            gid: g.map(|g| g as u32),
        },
        (None, Some(g)) => {
            return Err(Error::Spec(format!(
                "container {}: runAsGroup {g} without runAsUser is not supported by berth's agent",
                c.name
            )))
        }
        (None, None) => User::Image,
    };
    let mut supplemental: Vec<u32> = psc
        .supplemental_groups
        .iter()
        .flatten()
        .map(|g| *g as u32)
        .collect();
    if let Some(fs) = psc.fs_group {
        supplemental.push(fs as u32);
    }
    let caps = csc.capabilities.clone().unwrap_or_default();
    let privileged = csc.privileged == Some(true);
    let security = SecurityContext {
        capabilities: Capabilities {
            add: caps.add.unwrap_or_default(),
            drop: caps.drop.unwrap_or_default(),
            add_ambient: Vec::new(),
        },
        privileged,
        user,
        run_as_non_root: csc.run_as_non_root.or(psc.run_as_non_root) == Some(true),
        readonly_rootfs: csc.read_only_root_filesystem == Some(true),
        supplemental_groups: supplemental,
        no_new_privs: csc.allow_privilege_escalation == Some(false),
        masked_paths: if csc.proc_mount.as_deref() == Some("Unmasked") {
            Some(Vec::new())
        } else {
            None
        },
        readonly_paths: if csc.proc_mount.as_deref() == Some("Unmasked") {
            Some(Vec::new())
        } else {
            None
        },
        // Kubernetes' default is Unconfined unless the pod or container asks.
        seccomp: seccomp(csc.seccomp_profile.as_ref(), i.seccomp_root)?
            .or(seccomp(psc.seccomp_profile.as_ref(), i.seccomp_root)?)
            .unwrap_or(Seccomp::Unconfined),
    };
    let mut labels_map = key.labels(i.node);
    labels_map.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    if i.init {
        labels_map.insert(labels::INIT_CONTAINER.into(), "true".into());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "io.kubernetes.container.terminationMessagePath".to_string(),
        c.termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into()),
    );
    Ok(ContainerConfig {
        metadata: ContainerMetadata {
            name: c.name.clone(),
            attempt: i.attempt,
        },
        image: c.image.clone().unwrap_or_default(),
        command: crate::envvars::expand_all(c.command.as_deref().unwrap_or_default(), &i.env),
        args: crate::envvars::expand_all(c.args.as_deref().unwrap_or_default(), &i.env),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        envs: i
            .env
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts,
        labels: labels_map,
        annotations,
        log_path: Some(PathBuf::from(format!("{}/{}.log", c.name, i.attempt))),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        resources: qos::container_resources(c, qos::class(pod), i.node_memory)?,
        security,
        ..Default::default()
    })
}

/// The host file a container's termination message is written to.
pub fn termination_file(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir
        .join("containers")
        .join(container)
        .join(format!("{attempt}.termination-log"))
}
