//! Containers: `ContainerConfig` and `LinuxContainerResources` in; `Container`,
//! `ContainerStatus` and `ContainerStats` out.

use berth_engine::cri as engine;
use k8s_cri::v1 as pb;
use tonic::Status;

use super::{btree, fit, hash, selected};

/// The engine's limits from CRI's, where CRI's zero means unset.
pub fn resources(r: pb::LinuxContainerResources) -> Result<engine::Resources, Status> {
    if !r.hugepage_limits.is_empty() && r.hugepage_limits.iter().any(|h| h.limit > 0) {
        return Err(Status::unimplemented(
            "berth does not limit hugepages yet (hugepage_limits)",
        ));
    }
    let pos = |v: i64| (v > 0).then_some(v);
    Ok(engine::Resources {
        cpu_period: pos(r.cpu_period).map(|v| v as u64),
        cpu_quota: (r.cpu_quota != 0).then_some(r.cpu_quota),
        cpu_shares: pos(r.cpu_shares).map(|v| v as u64),
        memory_limit_in_bytes: pos(r.memory_limit_in_bytes),
        memory_swap_limit_in_bytes: (r.memory_swap_limit_in_bytes != 0)
            .then_some(r.memory_swap_limit_in_bytes),
        oom_score_adj: (r.oom_score_adj != 0).then_some(r.oom_score_adj),
        cpuset_cpus: (!r.cpuset_cpus.is_empty()).then_some(r.cpuset_cpus),
        cpuset_mems: (!r.cpuset_mems.is_empty()).then_some(r.cpuset_mems),
        pids_limit: None,
        unified: btree(r.unified),
    })
}

/// CRI's limits from the engine's.
pub fn resources_out(r: &engine::Resources) -> pb::LinuxContainerResources {
    pb::LinuxContainerResources {
        cpu_period: r.cpu_period.unwrap_or(0) as i64,
        cpu_quota: r.cpu_quota.unwrap_or(0),
        cpu_shares: r.cpu_shares.unwrap_or(0) as i64,
        memory_limit_in_bytes: r.memory_limit_in_bytes.unwrap_or(0),
        oom_score_adj: r.oom_score_adj.unwrap_or(0),
        cpuset_cpus: r.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: r.cpuset_mems.clone().unwrap_or_default(),
        hugepage_limits: Vec::new(),
        unified: hash(&r.unified),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes.unwrap_or(0),
    }
}

/// A seccomp profile from the field CRI has now, or the deprecated path form.
fn seccomp(profile: Option<pb::SecurityProfile>, path: &str) -> Result<engine::Seccomp, Status> {
    if let Some(p) = profile {
        return match pb::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(pb::security_profile::ProfileType::RuntimeDefault) => {
                Ok(engine::Seccomp::RuntimeDefault)
            }
            Ok(pb::security_profile::ProfileType::Unconfined) => Ok(engine::Seccomp::Unconfined),
            Ok(pb::security_profile::ProfileType::Localhost) => localhost_profile(&p.localhost_ref),
            Err(_) => Err(Status::invalid_argument(format!(
                "seccomp: unknown profile type {}",
                p.profile_type
            ))),
        };
    }
    match path {
        // CRI: an unset profile "is identical with unconfined" (the kubelet always
        // sends one; crictl and critest may not).
        "" | "unconfined" => Ok(engine::Seccomp::Unconfined),
        "runtime/default" | "docker/default" => Ok(engine::Seccomp::RuntimeDefault),
        p => match p.strip_prefix("localhost/") {
            Some(rest) => localhost_profile(rest),
            None => Err(Status::invalid_argument(format!(
                "seccomp_profile_path {p:?} is not runtime/default, unconfined or localhost/PATH"
            ))),
        },
    }
}

fn localhost_profile(path: &str) -> Result<engine::Seccomp, Status> {
    if !path.starts_with('/') {
        return Err(Status::invalid_argument(format!(
            "seccomp: a Localhost profile is an absolute path on the node (got {path:?})"
        )));
    }
    Ok(engine::Seccomp::Localhost(path.into()))
}

/// The engine's security settings from CRI's.
fn security(
    s: pb::LinuxContainerSecurityContext,
) -> Result<(engine::SecurityContext, engine::PidNamespace), Status> {
    let caps = s.capabilities.unwrap_or_default();
    let user = if !s.run_as_username.is_empty() {
        engine::User::Name {
            name: s.run_as_username,
            group: s.run_as_group.map(|g| g.value.to_string()),
        }
    } else if let Some(u) = s.run_as_user {
        engine::User::Id {
            uid: fit("run_as_user", u.value)?,
            gid: s
                .run_as_group
                .map(|g| fit("run_as_group", g.value))
                .transpose()?,
        }
    } else if s.run_as_group.is_some() {
        return Err(Status::invalid_argument(
            "run_as_group needs run_as_user or run_as_username",
        ));
    } else {
        engine::User::Image
    };
    let mut supplemental_groups = Vec::new();
    for g in s.supplemental_groups {
        supplemental_groups.push(fit("supplemental_groups", g)?);
    }
    let ns = s.namespace_options.unwrap_or_default();
    let pid = if ns.pid == pb::NamespaceMode::Target as i32 {
        if ns.target_id.is_empty() {
            return Err(Status::invalid_argument(
                "namespace_options.pid TARGET needs target_id",
            ));
        }
        engine::PidNamespace::Target(ns.target_id)
    } else {
        engine::PidNamespace::Sandbox
    };
    if s.apparmor
        .as_ref()
        .is_some_and(|a| a.profile_type == pb::security_profile::ProfileType::Localhost as i32)
    {
        return Err(Status::unimplemented(
            "berth does not apply AppArmor profiles (AppArmor is off on this host)",
        ));
    }
    Ok((
        engine::SecurityContext {
            capabilities: engine::Capabilities {
                add: caps.add_capabilities,
                drop: caps.drop_capabilities,
                add_ambient: caps.add_ambient_capabilities,
            },
            privileged: s.privileged,
            user,
            run_as_non_root: false,
            readonly_rootfs: s.readonly_rootfs,
            supplemental_groups,
            no_new_privs: s.no_new_privs,
            // CRI sends no list for "the runtime's default" (an empty repeated field).
            masked_paths: (!s.masked_paths.is_empty()).then_some(s.masked_paths),
            readonly_paths: (!s.readonly_paths.is_empty()).then_some(s.readonly_paths),
            // Older kubelets and crictl still send the deprecated path form.
            #[allow(deprecated)]
            seccomp: seccomp(s.seccomp, &s.seccomp_profile_path)?,
        },
        pid,
    ))
}

fn propagation(p: i32) -> Result<engine::Propagation, Status> {
    match pb::MountPropagation::try_from(p) {
        Ok(pb::MountPropagation::PropagationPrivate) => Ok(engine::Propagation::Private),
        Ok(pb::MountPropagation::PropagationHostToContainer) => {
            Ok(engine::Propagation::HostToContainer)
        }
        Ok(pb::MountPropagation::PropagationBidirectional) => {
            Ok(engine::Propagation::Bidirectional)
        }
        Err(_) => Err(Status::invalid_argument(format!(
            "mounts: unknown propagation {p}"
        ))),
    }
}

/// The engine's container config from CRI's, and the CDI devices it asks for (see
/// [`berth_engine::cdi`]; the caller resolves them).
pub fn config(c: pb::ContainerConfig) -> Result<(engine::ContainerConfig, Vec<String>), Status> {
    let meta = c
        .metadata
        .ok_or_else(|| crate::status::missing("config.metadata"))?;
    if meta.name.is_empty() {
        return Err(crate::status::missing("config.metadata.name"));
    }
    let image = c.image.map(|i| i.image).unwrap_or_default();
    if image.is_empty() {
        return Err(crate::status::missing("config.image.image"));
    }
    let mut mounts = Vec::new();
    for m in c.mounts {
        if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
            return Err(Status::unimplemented(format!(
                "mount {}: berth does not mount images as volumes yet",
                m.container_path
            )));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(Status::unimplemented(format!(
                "mount {}: berth does not map mount ids yet",
                m.container_path
            )));
        }
        if m.container_path.is_empty() || m.host_path.is_empty() {
            return Err(Status::invalid_argument(format!(
                "a mount needs container_path and host_path (got {:?} and {:?})",
                m.container_path, m.host_path
            )));
        }
        mounts.push(engine::Mount {
            container_path: m.container_path,
            host_path: m.host_path.into(),
            readonly: m.readonly,
            propagation: propagation(m.propagation)?,
            kind: engine::MountKind::Bind,
        });
    }
    let linux = c.linux.unwrap_or_default();
    let (security, pid) = security(linux.security_context.unwrap_or_default())?;
    let cdi: Vec<String> = c.cdi_devices.into_iter().map(|d| d.name).collect();
    let cfg = engine::ContainerConfig {
        metadata: engine::ContainerMetadata {
            name: meta.name,
            attempt: meta.attempt,
        },
        image,
        command: c.command,
        args: c.args,
        working_dir: (!c.working_dir.is_empty()).then_some(c.working_dir),
        envs: c
            .envs
            .into_iter()
            .map(|e| engine::KeyValue {
                key: e.key,
                value: e.value,
            })
            .collect(),
        mounts,
        devices: c
            .devices
            .into_iter()
            .map(|d| engine::Device {
                container_path: d.container_path,
                host_path: d.host_path.into(),
                permissions: d.permissions,
            })
            .collect(),
        labels: btree(c.labels),
        annotations: btree(c.annotations),
        log_path: (!c.log_path.is_empty()).then(|| c.log_path.into()),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        resources: linux
            .resources
            .map(resources)
            .transpose()?
            .unwrap_or_default(),
        security,
        pid,
        ..Default::default()
    };
    let cdi = berth_engine::cdi::requested(&cdi, &cfg.annotations);
    Ok((cfg, cdi))
}

fn metadata(m: &engine::ContainerMetadata) -> pb::ContainerMetadata {
    pb::ContainerMetadata {
        name: m.name.clone(),
        attempt: m.attempt,
    }
}

/// CRI's state of a container.
pub fn state(s: &engine::ContainerState) -> pb::ContainerState {
    match s {
        engine::ContainerState::Created => pb::ContainerState::ContainerCreated,
        engine::ContainerState::Exited => pb::ContainerState::ContainerExited,
        engine::ContainerState::Unknown => pb::ContainerState::ContainerUnknown,
        _ => pb::ContainerState::ContainerRunning,
    }
}

fn image_spec(image: &str) -> pb::ImageSpec {
    pb::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

/// A container as `ListContainers` shows it.
pub fn summary(c: &engine::ContainerSummary) -> pb::Container {
    pb::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.sandbox_id.clone(),
        metadata: Some(metadata(&c.metadata)),
        image: Some(image_spec(&c.image)),
        image_ref: c.image_id.clone(),
        state: state(&c.state) as i32,
        created_at: c.created_at,
        labels: hash(&c.labels),
        annotations: hash(&c.annotations),
        image_id: c.image_id.clone(),
    }
}

/// A container in full, as `ContainerStatus` shows it.
pub fn status(c: &engine::ContainerStatus) -> pb::ContainerStatus {
    let s = &c.summary;
    let mounts = c
        .config
        .mounts
        .iter()
        .filter(|m| m.kind == engine::MountKind::Bind)
        .map(|m| pb::Mount {
            container_path: m.container_path.clone(),
            host_path: m.host_path.display().to_string(),
            readonly: m.readonly,
            propagation: match m.propagation {
                engine::Propagation::Private => pb::MountPropagation::PropagationPrivate,
                engine::Propagation::HostToContainer => {
                    pb::MountPropagation::PropagationHostToContainer
                }
                engine::Propagation::Bidirectional => {
                    pb::MountPropagation::PropagationBidirectional
                }
            } as i32,
            ..Default::default()
        })
        .collect();
    pb::ContainerStatus {
        id: s.id.clone(),
        metadata: Some(metadata(&s.metadata)),
        state: state(&s.state) as i32,
        created_at: s.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(image_spec(&s.image)),
        image_ref: if c.image_ref.is_empty() {
            s.image_id.clone()
        } else {
            c.image_ref.clone()
        },
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: hash(&s.labels),
        annotations: hash(&s.annotations),
        mounts,
        log_path: c.log_path.display().to_string(),
        resources: Some(pb::ContainerResources {
            linux: Some(resources_out(&c.config.resources)),
            windows: None,
        }),
        user: None,
        image_id: s.image_id.clone(),
    }
}

/// The engine's container filter from CRI's; [`keep`] checks what it leaves in.
pub fn filter(f: &Option<pb::ContainerFilter>) -> engine::ContainerFilter {
    let Some(f) = f else {
        return engine::ContainerFilter::default();
    };
    engine::ContainerFilter {
        id: (!f.id.is_empty()).then(|| f.id.clone()),
        sandbox_id: (!f.pod_sandbox_id.is_empty()).then(|| f.pod_sandbox_id.clone()),
        running: f
            .state
            .as_ref()
            .filter(|s| s.state == pb::ContainerState::ContainerRunning as i32)
            .map(|_| true),
        labels: btree(f.label_selector.clone()),
    }
}

/// Whether a listed container passes CRI's filter: the state asked for exactly
/// (the engine's filter knows only running or not).
pub fn keep(c: &pb::Container, f: &Option<pb::ContainerFilter>) -> bool {
    let Some(f) = f else { return true };
    f.state.as_ref().is_none_or(|s| s.state == c.state)
        && selected(&btree(c.labels.clone()), &f.label_selector)
}

/// CRI's stats of a container.
pub fn stats(
    s: &engine::ContainerStats,
    c: Option<&engine::ContainerSummary>,
) -> pb::ContainerStats {
    let v = |value: u64| Some(pb::UInt64Value { value });
    pb::ContainerStats {
        attributes: Some(pb::ContainerAttributes {
            id: s.id.clone(),
            metadata: c.map(|c| metadata(&c.metadata)),
            labels: c.map(|c| hash(&c.labels)).unwrap_or_default(),
            annotations: c.map(|c| hash(&c.annotations)).unwrap_or_default(),
        }),
        cpu: Some(pb::CpuUsage {
            timestamp: s.timestamp,
            usage_core_nano_seconds: v(s.cpu_usage_ns),
            usage_nano_cores: None,
        }),
        memory: Some(pb::MemoryUsage {
            timestamp: s.timestamp,
            working_set_bytes: v(s.memory_working_set),
            available_bytes: s.memory_limit.map(|l| pb::UInt64Value {
                value: l.saturating_sub(s.memory_working_set),
            }),
            usage_bytes: v(s.memory_usage),
            rss_bytes: None,
            page_faults: None,
            major_page_faults: None,
        }),
        writable_layer: Some(pb::FilesystemUsage {
            timestamp: s.timestamp,
            fs_id: None,
            used_bytes: v(s.writable_layer_bytes),
            inodes_used: None,
        }),
        swap: None,
    }
}
