//! A container's OCI runtime config (config.json), built as oci-spec types from its
//! typed config, its image's config and its sandbox — and nothing else: building it
//! touches no file (host directories for binds are the caller's business).

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimit, PosixRlimitBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use serde_json::Value;

use crate::cri::{ContainerConfig, MountKind, Propagation, Resources};
use crate::error::{Error, Result};

use super::security;
use super::user;

/// What a container takes from its sandbox.
#[derive(Clone, Debug, Default)]
pub struct SandboxView {
    /// The namespaces to join (by path) or to make (None); kinds missing are the
    /// host's.
    pub namespaces: Vec<(LinuxNamespaceType, Option<PathBuf>)>,
    /// Files bind-mounted over the image's (`/etc/hosts` → the sandbox's file).
    pub etc_files: Vec<(String, PathBuf)>,
    /// The sandbox's shared /dev/shm, if it has one.
    pub shm: Option<PathBuf>,
    /// Sysctls of the sandbox.
    pub sysctls: HashMap<String, String>,
    /// The hostname (for `HOSTNAME`).
    pub hostname: String,
    /// Whether privileged containers may run in it.
    pub privileged_allowed: bool,
}

/// The rest of what a spec is built from.
pub struct SpecInput<'a> {
    /// The container's config.
    pub config: &'a ContainerConfig,
    /// The image's config (the OCI/docker config JSON).
    pub image: &'a Value,
    /// The root filesystem.
    pub rootfs: &'a Path,
    /// The cgroup path.
    pub cgroup: &'a str,
    /// The sandbox's part.
    pub sandbox: &'a SandboxView,
    /// The PID namespace of another container to join (`PidNamespace::Target`).
    pub pid_target: Option<PathBuf>,
    /// The lowest oom_score_adj the engine may give (its own: lowering below it needs
    /// CAP_SYS_RESOURCE).
    pub oom_floor: i64,
    /// The /proc view's bind mounts, when the config asks for it.
    pub procview: Vec<(PathBuf, String)>,
    /// Where the container's seccomp listener goes (the monitor's socket), when its
    /// sysinfo(2) is answered by the /proc view's agent.
    pub sysinfo_listener: Option<PathBuf>,
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::Invalid(e.to_string())
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The command line: CRI's rules (docker's are the same for entrypoint and command):
/// `command` replaces the image's entrypoint and drops its command; `args` replaces
/// the command.
pub fn command(config: &ContainerConfig, image: &Value) -> Result<Vec<String>> {
    let ic = image.get("config").cloned().unwrap_or(Value::Null);
    let entry = if config.command.is_empty() {
        str_list(ic.get("Entrypoint"))
    } else {
        config.command.clone()
    };
    let cmd = if !config.args.is_empty() {
        config.args.clone()
    } else if !config.command.is_empty() {
        Vec::new()
    } else {
        str_list(ic.get("Cmd"))
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::Invalid(format!(
            "no command to run: image {} has no Cmd or Entrypoint; give a command",
            config.image
        )));
    }
    Ok(args)
}

/// The environment: the image's, PATH if missing, HOSTNAME, then the config's (a later
/// key replaces an earlier one).
pub fn environment(config: &ContainerConfig, image: &Value, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = str_list(image.pointer("/config/Env"));
    let set = |env: &mut Vec<String>, kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        set(
            &mut env,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    if !hostname.is_empty() {
        set(&mut env, format!("HOSTNAME={hostname}"));
    }
    for kv in &config.envs {
        set(&mut env, format!("{}={}", kv.key, kv.value));
    }
    env
}

fn mount(dest: &str, typ: &str, source: impl Into<PathBuf>, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source.into())
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("a complete mount")
}

/// The container's own /proc.
pub fn proc_mount() -> Mount {
    mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])
}

fn default_mounts(privileged: bool, shm: Option<&Path>) -> Vec<Mount> {
    let rw = if privileged { "rw" } else { "ro" };
    let mut v = vec![
        proc_mount(),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
    ];
    v.push(match shm {
        Some(p) => mount(
            "/dev/shm",
            "bind",
            p,
            &["rbind", "rprivate", "nosuid", "noexec", "nodev"],
        ),
        None => mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    });
    v.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    ));
    v.push(mount(
        "/sys",
        "sysfs",
        "sysfs",
        &["nosuid", "noexec", "nodev", rw],
    ));
    v.push(mount(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", rw],
    ));
    v
}

fn config_mounts(config: &ContainerConfig) -> Result<Vec<Mount>> {
    let mut out = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        if !m.container_path.starts_with('/') {
            return Err(bad(format!(
                "mounts[{i}].container_path {:?}: must be an absolute path",
                m.container_path
            )));
        }
        match &m.kind {
            MountKind::Bind => {
                if !m.host_path.is_absolute() {
                    return Err(bad(format!(
                        "mounts[{i}].host_path {:?}: must be an absolute path",
                        m.host_path
                    )));
                }
                let propagation = match m.propagation {
                    Propagation::Private => "rprivate",
                    Propagation::HostToContainer => "rslave",
                    Propagation::Bidirectional => "rshared",
                };
                let ro = if m.readonly { "ro" } else { "rw" };
                out.push(mount(
                    &m.container_path,
                    "bind",
                    &m.host_path,
                    &["rbind", propagation, ro],
                ));
            }
            MountKind::Tmpfs(opts) => {
                let mut o = vec!["nosuid".to_string(), "nodev".to_string()];
                o.extend(opts.iter().cloned());
                if m.readonly {
                    o.push("ro".into());
                }
                out.push(
                    MountBuilder::default()
                        .destination(&m.container_path)
                        .typ("tmpfs")
                        .source("tmpfs")
                        .options(o)
                        .build()
                        .map_err(bad)?,
                );
            }
        }
    }
    Ok(out)
}

/// Devices every container may use (docker's list).
const DEFAULT_DEVICES: &[(i64, i64)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)];

fn device_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access(access);
    if let Some(t) = typ {
        b = b.typ(t);
    }
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().expect("a complete device rule")
}

/// The resources of a container (or, for a sandbox, of its pod cgroup).
pub fn resources(
    r: &Resources,
    device_rules: Vec<LinuxDeviceCgroup>,
    oom_floor: i64,
) -> Result<(oci_spec::runtime::LinuxResources, Option<i32>)> {
    let mut res = LinuxResourcesBuilder::default();
    if !device_rules.is_empty() {
        res = res.devices(device_rules);
    }
    if let Some(m) = r.memory_limit_in_bytes {
        if m < 6 << 20 {
            return Err(bad(format!(
                "memory limit {m}: the minimum is 6 MiB (6291456 bytes)"
            )));
        }
        let mut mem = LinuxMemoryBuilder::default().limit(m);
        match r.memory_swap_limit_in_bytes {
            Some(s) if s != -1 && s < m => {
                return Err(bad(
                    "memory+swap limit must be at least the memory limit (it counts both), or -1",
                ))
            }
            Some(s) => mem = mem.swap(s),
            None => {}
        }
        res = res.memory(mem.build().map_err(bad)?);
    } else if r.memory_swap_limit_in_bytes.is_some_and(|s| s != -1) {
        return Err(bad("a memory+swap limit needs a memory limit"));
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(p) = r.cpu_period {
        if !(1000..=1_000_000).contains(&p) {
            return Err(bad(format!(
                "cpu period {p}: between 1000 and 1000000 microseconds"
            )));
        }
        cpu = cpu.period(p);
        any_cpu = true;
    }
    if let Some(q) = r.cpu_quota {
        if q != -1 && q < 1000 {
            return Err(bad(format!(
                "cpu quota {q}: at least 1000 microseconds, or -1"
            )));
        }
        cpu = cpu.quota(q);
        any_cpu = true;
    }
    if let Some(s) = r.cpu_shares {
        cpu = cpu.shares(s.clamp(2, 262_144));
        any_cpu = true;
    }
    if let Some(c) = &r.cpuset_cpus {
        cpu = cpu.cpus(c.clone());
        any_cpu = true;
    }
    if let Some(m) = &r.cpuset_mems {
        cpu = cpu.mems(m.clone());
        any_cpu = true;
    }
    if any_cpu {
        res = res.cpu(cpu.build().map_err(bad)?);
    }
    if let Some(p) = r.pids_limit {
        res = res.pids(LinuxPidsBuilder::default().limit(p).build().map_err(bad)?);
    }
    if !r.unified.is_empty() {
        res = res.unified(r.unified.clone().into_iter().collect::<HashMap<_, _>>());
    }
    // Raising the OOM priority (lower values) needs CAP_SYS_RESOURCE: clamp to the
    // engine's own, as containerd's restrict_oom_score_adj does.
    let oom = r
        .oom_score_adj
        .map(|v| v.clamp(oom_floor.max(-1000), 1000) as i32);
    Ok((res.build().map_err(bad)?, oom))
}

fn rlimits(config: &ContainerConfig) -> Result<Vec<PosixRlimit>> {
    // podman's default open-file limit, within what this host lets us raise to.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .map_or(1_048_576, |h| h.min(1_048_576));
    let mut list: Vec<(String, u64, u64)> = vec![("NOFILE".into(), nofile, nofile)];
    for r in &config.rlimits {
        let name = r.name.to_ascii_uppercase();
        list.retain(|(n, _, _)| *n != name);
        list.push((name, r.soft, r.hard));
    }
    list.into_iter()
        .map(|(name, soft, hard)| {
            let typ: oci_spec::runtime::PosixRlimitType =
                serde_json::from_value(Value::String(format!("RLIMIT_{name}"))).map_err(|_| {
                    bad(format!(
                        "rlimit {name:?}: unknown (e.g. nofile, nproc, core, memlock)"
                    ))
                })?;
            if soft > hard {
                return Err(bad(format!(
                    "rlimit {name}: the soft limit {soft} is above the hard limit {hard}"
                )));
            }
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(soft)
                .hard(hard)
                .build()
                .map_err(bad)
        })
        .collect()
}

/// Builds the container's spec; returns it with the command line.
pub fn build(input: &SpecInput<'_>) -> Result<(Spec, Vec<String>)> {
    let c = input.config;
    let sec = &c.security;
    if sec.privileged && !input.sandbox.privileged_allowed {
        return Err(bad(
            "a privileged container needs a privileged sandbox (set privileged in the sandbox config)",
        ));
    }
    let args = command(c, input.image)?;
    let env = environment(c, input.image, &input.sandbox.hostname);
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| {
            input
                .image
                .pointer("/config/WorkingDir")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(bad(format!(
            "working directory {cwd:?}: must be an absolute path"
        )));
    }
    let image_user = input
        .image
        .pointer("/config/User")
        .and_then(Value::as_str)
        .unwrap_or("");
    let who = user::resolve(input.rootfs, &sec.user, image_user)?;
    if sec.run_as_non_root && who.uid == 0 {
        return Err(Error::Invalid(format!(
            "container {:?} has runAsNonRoot and its image will run as root: give a non-zero user",
            c.metadata.name
        )));
    }
    let caps = security::capability_names(&sec.capabilities, sec.privileged)?;
    let ambient: Vec<String> = sec
        .capabilities
        .add_ambient
        .iter()
        .map(|a| {
            let n = a.trim().to_ascii_uppercase();
            if n.starts_with("CAP_") {
                n
            } else {
                format!("CAP_{n}")
            }
        })
        .filter(|a| caps.contains(a))
        .collect();
    let all = security::to_oci(&caps);
    let (effective, permitted) = if who.uid != 0 && ambient.is_empty() {
        // A non-root user keeps no effective capabilities, as with docker.
        (Default::default(), Default::default())
    } else {
        (all.clone(), all.clone())
    };
    // Every set given: the builder would fill a missing one from oci-spec's default.
    let a = security::to_oci(&ambient);
    let capb = LinuxCapabilitiesBuilder::default()
        .bounding(all.clone())
        .effective(effective)
        .permitted(permitted)
        .ambient(a.clone())
        .inheritable(a);
    let mut groups = who.additional_gids.clone();
    groups.extend(sec.supplemental_groups.iter().copied());
    groups.sort_unstable();
    groups.dedup();
    let user = UserBuilder::default()
        .uid(who.uid)
        .gid(who.gid)
        .additional_gids(groups)
        .build()
        .map_err(bad)?;

    // Devices: the cgroup rules, and the nodes to make.
    let mut rules = Vec::new();
    let mut nodes = Vec::new();
    if sec.privileged {
        rules.push(device_rule(true, None, None, None, "rwm"));
    } else {
        rules.push(device_rule(false, None, None, None, "rwm"));
        for (ma, mi) in DEFAULT_DEVICES {
            rules.push(device_rule(
                true,
                Some(LinuxDeviceType::C),
                Some(*ma),
                Some(*mi),
                "rwm",
            ));
        }
        rules.push(device_rule(
            true,
            Some(LinuxDeviceType::C),
            Some(136),
            None,
            "rwm",
        ));
    }
    for (i, d) in c.devices.iter().enumerate() {
        let meta = std::fs::metadata(&d.host_path).map_err(|e| {
            bad(format!(
                "devices[{i}].host_path {}: {e}",
                d.host_path.display()
            ))
        })?;
        let ft = meta.file_type();
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(bad(format!(
                "devices[{i}].host_path {}: not a device node",
                d.host_path.display()
            )));
        };
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !perms.chars().all(|p| matches!(p, 'r' | 'w' | 'm')) {
            return Err(bad(format!(
                "devices[{i}].permissions {perms:?}: use r, w and m"
            )));
        }
        let (major, minor) = (
            rustix::fs::major(meta.rdev()) as i64,
            rustix::fs::minor(meta.rdev()) as i64,
        );
        nodes.push(
            LinuxDeviceBuilder::default()
                .path(&d.container_path)
                .typ(typ)
                .major(major)
                .minor(minor)
                .file_mode(meta.mode() & 0o777)
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(bad)?,
        );
        rules.push(device_rule(
            true,
            Some(typ),
            Some(major),
            Some(minor),
            perms,
        ));
    }
    let (res, oom) = resources(&c.resources, rules, input.oom_floor)?;

    let mut namespaces: Vec<LinuxNamespace> = vec![ns(LinuxNamespaceType::Mount, None)];
    for (t, p) in &input.sandbox.namespaces {
        if *t == LinuxNamespaceType::Pid && input.pid_target.is_some() {
            continue;
        }
        namespaces.push(ns(*t, p.clone()));
    }
    if let Some(p) = &input.pid_target {
        namespaces.push(ns(LinuxNamespaceType::Pid, Some(p.clone())));
    }

    let mut mounts = default_mounts(sec.privileged, input.sandbox.shm.as_deref());
    let own = config_mounts(c)?;
    for (dest, src) in &input.sandbox.etc_files {
        if !own.iter().any(|m| m.destination() == Path::new(dest)) {
            mounts.push(mount(dest, "bind", src, &["rbind", "rprivate"]));
        }
    }
    for (src, dest) in &input.procview {
        mounts.push(mount(
            dest,
            "bind",
            src,
            &["bind", "ro", "nosuid", "nodev", "noexec"],
        ));
    }
    mounts.extend(own);

    // (oci-spec's builders fill what is not set from its own defaults — a "youki"
    // hostname, masked paths, a 0x0 console — which `unset_builder_defaults` clears.)
    let mut process = ProcessBuilder::default()
        .terminal(c.tty)
        .user(user)
        .args(args.clone())
        .env(env)
        .cwd(cwd)
        .capabilities(capb.build().map_err(bad)?)
        .rlimits(rlimits(c)?)
        .no_new_privileges(sec.no_new_privs);
    if let Some(o) = oom {
        process = process.oom_score_adj(o);
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(input.cgroup))
        .resources(res)
        .devices(nodes);
    // As containerd: a bidirectional volume needs a shared root for the container's
    // mounts under it to reach the host; host-to-container ones need a slave root
    // (the runtime's default).
    if c.mounts
        .iter()
        .any(|m| m.propagation == Propagation::Bidirectional)
    {
        linux = linux.rootfs_propagation("rshared");
    }
    if !input.sandbox.sysctls.is_empty() {
        linux = linux.sysctl(input.sandbox.sysctls.clone());
    }
    if !sec.privileged {
        let masked = sec
            .masked_paths
            .clone()
            .unwrap_or_else(|| security::MASKED.iter().map(|s| s.to_string()).collect());
        let ro = sec
            .readonly_paths
            .clone()
            .unwrap_or_else(|| security::READONLY.iter().map(|s| s.to_string()).collect());
        linux = linux.masked_paths(masked).readonly_paths(ro);
    }
    let profile = security::profile(&sec.seccomp, sec.privileged, &caps)?;
    let profile = match &input.sysinfo_listener {
        Some(listener) => security::notify_sysinfo(profile, listener),
        None => profile,
    };
    if let Some(profile) = profile {
        linux = linux.seccomp(profile);
    }
    let mut annotations: HashMap<String, String> = c
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if c.init {
        // berth-runtime's reaping init (its `reaper` module) stays behind as pid 1.
        annotations.insert("berth.init".into(), "true".into());
    }
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process.build().map_err(bad)?)
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(sec.readonly_rootfs)
                .build()
                .map_err(bad)?,
        )
        .mounts(mounts)
        .linux(linux.build().map_err(bad)?)
        .annotations(annotations)
        .build()
        .map_err(bad)?;
    unset_builder_defaults(&mut spec, sec.privileged);
    Ok((spec, args))
}

/// Clears what oci-spec's builders take from its `Default`s rather than from the
/// caller: a hostname (the UTS namespace is the sandbox's, named when it was made), a
/// console size (the monitor sets the terminal's), and — with `unmasked` — the masked
/// and read-only paths.
pub fn unset_builder_defaults(spec: &mut Spec, unmasked: bool) {
    spec.set_hostname(None);
    if let Some(p) = spec.process_mut() {
        p.set_console_size(None);
    }
    if let Some(l) = spec.linux_mut() {
        if unmasked {
            l.set_masked_paths(None);
            l.set_readonly_paths(None);
        }
    }
}

/// A namespace entry: joined by path, or made (None).
pub fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    match path {
        Some(p) => b.path(p),
        None => b,
    }
    .build()
    .expect("a complete namespace entry")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::KeyValue;
    use serde_json::json;

    #[test]
    fn command_and_env_follow_cri() {
        let img =
            json!({"config": {"Entrypoint": ["/ep"], "Cmd": ["a"], "Env": ["PATH=/x", "A=1"]}});
        let mut c = ContainerConfig::default();
        assert_eq!(command(&c, &img).unwrap(), ["/ep", "a"]);
        c.args = vec!["b".into()];
        assert_eq!(command(&c, &img).unwrap(), ["/ep", "b"]);
        c.command = vec!["/other".into()];
        c.args.clear();
        assert_eq!(
            command(&c, &img).unwrap(),
            ["/other"],
            "command drops the image's Cmd"
        );
        c.envs = vec![KeyValue {
            key: "A".into(),
            value: "2".into(),
        }];
        assert_eq!(environment(&c, &img, "h"), ["PATH=/x", "HOSTNAME=h", "A=2"]);
        let empty = json!({"config": {}});
        assert!(command(&ContainerConfig::default(), &empty)
            .unwrap_err()
            .to_string()
            .contains("no command"));
    }

    #[test]
    fn resources_check_and_clamp() {
        let r = Resources {
            memory_limit_in_bytes: Some(1 << 20),
            ..Default::default()
        };
        assert!(resources(&r, vec![], 0)
            .unwrap_err()
            .to_string()
            .contains("6 MiB"));
        let r = Resources {
            oom_score_adj: Some(-998),
            cpu_shares: Some(1),
            ..Default::default()
        };
        let (res, oom) = resources(&r, vec![], 0).unwrap();
        assert_eq!(oom, Some(0), "clamped to the engine's own");
        assert_eq!(res.cpu().as_ref().unwrap().shares(), Some(2));
    }
}
