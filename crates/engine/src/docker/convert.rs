//! docker's flags (a [`RunConfig`]) as the core's CRI-shaped configs: a lean sandbox
//! for the container's namespaces and network, and the container's own config.

use std::path::{Path, PathBuf};

use berth_cgroups::naming;

use crate::core::user;
use crate::cri::{
    Capabilities, ContainerConfig, ContainerMetadata, Device, DnsConfig, KeyValue, Mount,
    MountKind, PidNamespace, PortMapping, Protocol, Resources, Rlimit, SandboxConfig,
    SandboxMetadata, SandboxNamespaces, SandboxNetwork, Seccomp, SecurityContext, SharedNamespace,
};
use crate::error::{Context, Error, Result};

use super::config::RunConfig;
use super::Engine;

/// The lean sandbox of container `name` (ID `id`).
pub fn sandbox_config(e: &Engine, cfg: &RunConfig, id: &str, name: &str) -> Result<SandboxConfig> {
    let hostname = cfg.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    let other_sandbox = |flag: &str, what: &str| -> Result<String> {
        let c = e
            .find(what)
            .map_err(|err| Error::Invalid(format!("--{flag} container:{what}: {err}")))?;
        Ok(c.sandbox_id)
    };
    let rootless = crate::rootless::active();
    if rootless {
        if let Some(n) = cfg.networks.first() {
            return Err(Error::Invalid(format!(
                "--network {n}: a rootless container has one network (pasta, none, host or \
                 container:NAME); further networks are bridges on the host, which need root"
            )));
        }
    }
    let network = match cfg.network.as_str() {
        "host" => SandboxNetwork::Node,
        "none" | "" | "private" => SandboxNetwork::Loopback,
        "pasta" => SandboxNetwork::Pasta,
        berth_net::network::DEFAULT if rootless => SandboxNetwork::Pasta,
        n if rootless && !n.starts_with("container:") => {
            return Err(Error::Invalid(format!(
                "--network {n}: networks of their own are bridges on the host, which need root; \
                 a rootless container has pasta (the default), none, host or container:NAME"
            )))
        }
        n => match (n.strip_prefix("container:"), n.strip_prefix("cni:")) {
            (Some(other), _) => SandboxNetwork::Sandbox(other_sandbox("network", other)?),
            (_, Some(cni)) => SandboxNetwork::Cni(cni.to_string()),
            _ => {
                let mut aliases = vec![name.to_string()];
                if hostname != name {
                    aliases.push(hostname.clone());
                }
                SandboxNetwork::Network {
                    name: n.to_string(),
                    aliases,
                }
            }
        },
    };
    let shared = |flag: &str, mode: &str| -> Result<SharedNamespace> {
        Ok(match mode {
            "" | "private" | "shareable" => SharedNamespace::Pod,
            "host" => SharedNamespace::Node,
            m => match m.strip_prefix("container:") {
                Some(o) => SharedNamespace::Sandbox(other_sandbox(flag, o)?),
                None => {
                    return Err(Error::Invalid(format!(
                        "--{flag} {m:?}: use host, private or container:NAME"
                    )))
                }
            },
        })
    };
    let uts = shared("uts", &cfg.uts)?;
    if uts == SharedNamespace::Node && cfg.hostname.is_some() {
        return Err(Error::Invalid("-h cannot be used with --uts=host".into()));
    }
    if !matches!(cfg.pid.as_str(), "" | "host" | "private") && !cfg.pid.starts_with("container:") {
        return Err(Error::Invalid(format!(
            "--pid {:?}: use host, private or container:NAME",
            cfg.pid
        )));
    }
    let port_mappings = cfg
        .publish
        .iter()
        .map(|p| {
            let m = berth_net::ports::parse(p)?;
            Ok(PortMapping {
                protocol: match m.proto {
                    berth_net::ports::Proto::Tcp => Protocol::Tcp,
                    berth_net::ports::Proto::Udp => Protocol::Udp,
                },
                container_port: m.container_port,
                host_port: m.host_port,
                host_ip: m.host_ip.map(|i| i.to_string()).unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let extra_hosts = cfg
        .add_hosts
        .iter()
        .map(|(n, ip)| {
            Ok((
                n.clone(),
                ip.parse().map_err(|_| {
                    Error::Invalid(format!("--add-host {n}:{ip}: {ip:?} is not an IP address"))
                })?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SandboxConfig {
        metadata: SandboxMetadata {
            name: name.to_string(),
            ..Default::default()
        },
        hostname: if uts == SharedNamespace::Node {
            String::new()
        } else {
            hostname
        },
        dns_config: (!cfg.dns.is_empty()).then(|| DnsConfig {
            servers: cfg.dns.clone(),
            ..Default::default()
        }),
        port_mappings,
        cgroup_parent: crate::rootless::cgroup_parent()
            .unwrap_or_else(|| naming::ENGINE_PARENT.to_string()),
        namespaces: SandboxNamespaces {
            network,
            ipc: shared("ipc", &cfg.ipc)?,
            uts,
            share_pid: false,
            host_pid: cfg.pid == "host",
        },
        extra_hosts,
        extra_networks: cfg.networks.clone(),
        privileged: cfg.privileged,
        infra: false,
        ..Default::default()
    })
}

/// The container's config.
pub fn container_config(e: &Engine, cfg: &RunConfig, name: &str) -> Result<ContainerConfig> {
    let (command, args) = match &cfg.entrypoint {
        Some(ep) if ep.is_empty() => {
            if cfg.cmd.is_empty() {
                return Err(Error::Invalid(format!(
                    "no command to run: --entrypoint \"\" clears the image's, and no command follows {}",
                    cfg.image
                )));
            }
            (cfg.cmd.clone(), Vec::new())
        }
        Some(ep) => (vec![ep.clone()], cfg.cmd.clone()),
        None => (Vec::new(), cfg.cmd.clone()),
    };
    let mut envs = Vec::new();
    for kv in &cfg.env {
        match kv.split_once('=') {
            Some((k, v)) => envs.push(KeyValue {
                key: k.into(),
                value: v.into(),
            }),
            // `-e KEY`: the caller's value, if it has one.
            None => {
                if let Ok(v) = std::env::var(kv) {
                    envs.push(KeyValue {
                        key: kv.clone(),
                        value: v,
                    });
                }
            }
        }
    }
    let mut mounts = Vec::new();
    for m in &cfg.mounts {
        match m.kind.as_str() {
            "bind" => {
                let src = Path::new(&m.source);
                if !src.exists() {
                    // As docker does for -v: a missing host directory is created.
                    std::fs::create_dir_all(src)
                        .ctx(|| format!("-v {}: create the host directory", m.source))?;
                }
                mounts.push(Mount {
                    container_path: m.destination.clone(),
                    host_path: PathBuf::from(&m.source),
                    readonly: m.readonly,
                    ..Default::default()
                });
            }
            "tmpfs" => mounts.push(Mount {
                container_path: m.destination.clone(),
                readonly: m.readonly,
                kind: MountKind::Tmpfs(m.options.clone()),
                ..Default::default()
            }),
            other => {
                return Err(Error::Invalid(format!(
                    "mount type {other:?}: use bind or tmpfs"
                )))
            }
        }
    }
    let devices = cfg
        .devices
        .iter()
        .map(|(h, c, p)| Device {
            container_path: c.clone(),
            host_path: PathBuf::from(h),
            permissions: p.clone(),
        })
        .collect();
    let mut resources = Resources {
        cpu_shares: cfg.cpu_shares,
        cpuset_cpus: cfg.cpuset_cpus.clone(),
        memory_limit_in_bytes: cfg.memory,
        memory_swap_limit_in_bytes: match (cfg.memory, cfg.memory_swap) {
            (Some(_), Some(s)) => Some(s),
            // docker's default: as much swap as memory.
            (Some(m), None) => Some(m * 2),
            (None, Some(_)) => return Err(Error::Invalid("--memory-swap needs -m".into())),
            (None, None) => None,
        },
        pids_limit: cfg.pids_limit,
        cpu_period: cfg.cpu_period,
        cpu_quota: cfg.cpu_quota,
        ..Default::default()
    };
    if let Some(milli) = cfg.cpus_milli {
        if cfg.cpu_quota.is_some() || cfg.cpu_period.is_some() {
            return Err(Error::Invalid(
                "--cpus cannot be combined with --cpu-quota or --cpu-period".into(),
            ));
        }
        resources.cpu_period = Some(100_000);
        resources.cpu_quota = Some((milli * 100) as i64);
    }
    if cfg.memory.is_some_and(|m| m < 6 << 20) {
        return Err(Error::Invalid(format!(
            "-m {}: the minimum memory limit is 6m",
            cfg.memory.unwrap_or(0)
        )));
    }
    let pid = match cfg.pid.strip_prefix("container:") {
        Some(other) => PidNamespace::Target(e.find(other)?.id),
        None => PidNamespace::Sandbox,
    };
    let seccomp = match cfg.seccomp.as_deref() {
        None => Seccomp::RuntimeDefault,
        Some("unconfined") => Seccomp::Unconfined,
        Some(file) => Seccomp::Localhost(PathBuf::from(file)),
    };
    Ok(ContainerConfig {
        metadata: ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        },
        image: cfg.image.clone(),
        command,
        args,
        working_dir: cfg.workdir.clone(),
        envs,
        mounts,
        devices,
        labels: cfg.labels.iter().cloned().collect(),
        annotations: Default::default(),
        log_path: None,
        stdin: cfg.interactive,
        stdin_once: false,
        tty: cfg.tty,
        resources,
        security: SecurityContext {
            capabilities: Capabilities {
                add: cfg.cap_add.clone(),
                drop: cfg.cap_drop.clone(),
                add_ambient: Vec::new(),
            },
            privileged: cfg.privileged,
            user: cfg.user.as_deref().map(user::parse).unwrap_or_default(),
            readonly_rootfs: cfg.read_only,
            no_new_privs: cfg.no_new_privileges,
            seccomp,
            ..Default::default()
        },
        pid,
        rlimits: cfg
            .ulimits
            .iter()
            .map(|(n, s, h)| Rlimit {
                name: n.clone(),
                soft: *s,
                hard: *h,
            })
            .collect(),
        init: cfg.init,
        stop_signal: cfg.stop_signal,
        procview: cfg.procview,
        restart: cfg.restart.clone(),
        auto_remove: cfg.auto_remove,
    })
}
