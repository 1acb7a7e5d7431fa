//! The OCI runtime config of a container: the image's config (entrypoint, command, env,
//! working directory, user) under the user's flags, with the defaults docker users trust
//! — docker's capability set, a seccomp profile with the effect of docker's, masked and
//! read-only /proc paths — and `--privileged` lifting them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::{json, Value};

use crate::config::RunConfig;
use crate::error::{Context, Error, Result};

/// Docker's default capabilities.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Capability names without `CAP_`, by number.
pub const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Every capability this kernel knows and berth may pass on (for ALL and --privileged).
fn all_caps() -> Vec<String> {
    let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    // Only what berth itself may pass on: its bounding set (a host or an outer
    // container may have dropped some).
    let bounding: u64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        })
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(u64::MAX);
    CAP_NAMES
        .iter()
        .enumerate()
        .take(last + 1)
        .filter(|(i, _)| bounding & (1 << i) != 0)
        .map(|(_, n)| format!("CAP_{n}"))
        .collect()
}

fn cap_name(c: &str) -> String {
    let u = c.trim().to_ascii_uppercase();
    if u.starts_with("CAP_") {
        u
    } else {
        format!("CAP_{u}")
    }
}

/// The capability set after `--cap-add`/`--cap-drop` (docker's rules: ALL allowed).
pub fn capabilities(cfg: &RunConfig) -> Result<Vec<String>> {
    let all = all_caps();
    if cfg.privileged {
        return Ok(all);
    }
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let known = |c: &str| -> Result<String> {
        let n = cap_name(c);
        if n == "CAP_ALL" || all.contains(&n) {
            Ok(n)
        } else if CAP_NAMES.iter().any(|k| format!("CAP_{k}") == n) {
            Err(Error::Invalid(format!(
                "capability {c:?} is not in berth's own bounding set on this host, so no container can have it"
            )))
        } else {
            Err(Error::Invalid(format!(
                "unknown capability {c:?} (e.g. NET_ADMIN, SYS_PTRACE, ALL)"
            )))
        }
    };
    for d in &cfg.cap_drop {
        match known(d)?.as_str() {
            "CAP_ALL" => caps.clear(),
            n => caps.retain(|c| c != n),
        }
    }
    for a in &cfg.cap_add {
        match known(a)?.as_str() {
            "CAP_ALL" => caps = all.clone(),
            n if !caps.iter().any(|c| c == n) => caps.push(n.to_string()),
            _ => {}
        }
    }
    Ok(caps)
}

/// Paths docker masks in /proc and /sys.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Paths docker makes read-only.
const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Syscalls docker's default profile does not allow to a container without extra
/// capabilities: refused with EPERM. Written from the kernel's syscall list and the
/// profile's documented effect (kernel modules, keyrings, mounts and namespaces,
/// clocks, reboot and swap, tracing other processes, BPF and perf, obsolete calls).
const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "mount_setattr",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

mod syscalls {
    include!(concat!(env!("OUT_DIR"), "/syscalls.rs"));
}

/// System calls of 32-bit x86 programs that have no x86-64 name (allowed like their
/// 64-bit counterparts).
const X86_32_ONLY: &[&str] = &[
    "_llseek",
    "_newselect",
    "chown32",
    "fadvise64_64",
    "fchown32",
    "fcntl64",
    "fstat64",
    "fstatat64",
    "fstatfs64",
    "ftruncate64",
    "getegid32",
    "geteuid32",
    "getgid32",
    "getgroups32",
    "getresgid32",
    "getresuid32",
    "getuid32",
    "ipc",
    "lchown32",
    "lstat64",
    "mmap2",
    "sendfile64",
    "setfsgid32",
    "setfsuid32",
    "setgid32",
    "setgroups32",
    "setregid32",
    "setresgid32",
    "setresuid32",
    "setreuid32",
    "setuid32",
    "sigaction",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    "sigpending",
    "socketcall",
    "stat64",
    "statfs64",
    "truncate64",
    "ugetrlimit",
    "waitpid",
    "clock_gettime64",
    "clock_getres_time64",
    "clock_nanosleep_time64",
    "futex_time64",
    "ppoll_time64",
    "pselect6_time64",
    "recvmmsg_time64",
    "rt_sigtimedwait_time64",
    "semtimedop_time64",
    "timer_gettime64",
    "timer_settime64",
    "timerfd_gettime64",
    "timerfd_settime64",
    "utimensat_time64",
    "mq_timedreceive_time64",
    "mq_timedsend_time64",
    "sched_rr_get_interval_time64",
    "io_pgetevents_time64",
];

/// berth's default seccomp profile (OCI form), with the effect of docker's: the system
/// calls this kernel's headers name are allowed except those refused (EPERM); calls it
/// does not know — newer than the profile — fail with ENOSYS so that libc falls back,
/// as moby does. `clone3` is among them: its flags cannot be inspected.
pub fn default_seccomp(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    // As in docker's profile, capabilities open the calls they govern.
    let allowed_by_caps = |s: &str| match s {
        "mount" | "umount2" | "unshare" | "setns" | "pivot_root" | "fsconfig" | "fsmount"
        | "fsopen" | "fspick" | "move_mount" | "open_tree" | "mount_setattr" | "quotactl"
        | "quotactl_fd" | "name_to_handle_at" | "open_by_handle_at" | "lookup_dcookie"
        | "perf_event_open" | "bpf" => has("CAP_SYS_ADMIN"),
        "ptrace" | "process_vm_readv" | "process_vm_writev" | "kcmp" => has("CAP_SYS_PTRACE"),
        "init_module" | "finit_module" | "delete_module" => has("CAP_SYS_MODULE"),
        "clock_settime" | "clock_adjtime" | "settimeofday" => has("CAP_SYS_TIME"),
        "reboot" => has("CAP_SYS_BOOT"),
        "acct" => has("CAP_SYS_PACCT"),
        "iopl" | "ioperm" => has("CAP_SYS_RAWIO"),
        _ => false,
    };
    let denied: Vec<&str> = DENIED
        .iter()
        .copied()
        .filter(|s| !allowed_by_caps(s))
        .collect();
    if syscalls::SYSCALLS.is_empty() {
        // No syscall table at build time: refuse what docker refuses, allow the rest.
        return json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
            ]
        });
    }
    let allowed: Vec<&str> = syscalls::SYSCALLS
        .iter()
        .chain(X86_32_ONLY)
        .copied()
        .filter(|s| *s != "clone3" && !denied.contains(s))
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]
    })
}

/// Reads a file of the container's rootfs, resolved beneath it (image symlinks cannot
/// lead out); `None` if it does not exist.
pub fn read_in_root(rootfs: &Path, rel: &str) -> Option<String> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
    .ok()?;
    std::io::read_to_string(std::fs::File::from(fd)).ok()
}

/// Resolves `-u`/`User` (`name`, `uid`, `name:group`, `uid:gid`) against the image's
/// /etc/passwd and /etc/group: (uid, gid, additional gids).
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd").unwrap_or_default();
    let group = read_in_root(rootfs, "etc/group").unwrap_or_default();
    let pw = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u)));
    let uid: u32 = match (u.parse::<u32>(), &pw) {
        (Ok(n), _) => n,
        (Err(_), Some(f)) => f[2].parse().unwrap_or(0),
        (Err(_), None) if u.is_empty() => 0,
        (Err(_), None) => {
            return Err(Error::Invalid(format!(
                "user {u:?} is not in the image's /etc/passwd; give a numeric uid"
            )))
        }
    };
    let gid: u32 = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "group {g:?} is not in the image's /etc/group; give a numeric gid"
                    ))
                })?,
        },
        None => pw.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    let name = pw.as_ref().map(|f| f[0]).unwrap_or("");
    let extra: Vec<u32> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4 && !name.is_empty() && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok())
        .filter(|g| *g != gid)
        .collect();
    Ok((uid, gid, extra))
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

/// The command line: entrypoint and command, as docker combines them.
pub fn command(cfg: &RunConfig, image: &Value) -> Result<Vec<String>> {
    let ic = image.get("config").cloned().unwrap_or(Value::Null);
    let entry: Vec<String> = match &cfg.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => str_list(ic.get("Entrypoint")),
    };
    // A new entrypoint drops the image's command, as docker does.
    let cmd = if !cfg.cmd.is_empty() {
        cfg.cmd.clone()
    } else if cfg.entrypoint.is_some() {
        Vec::new()
    } else {
        str_list(ic.get("Cmd"))
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::Invalid(format!(
            "no command to run: image {} has no Cmd or Entrypoint; give one after the image name",
            cfg.image
        )));
    }
    Ok(args)
}

/// Environment: the image's, PATH if missing, HOSTNAME, then the flags (a later KEY
/// replaces an earlier one; `KEY` alone takes the host's value).
pub fn environment(cfg: &RunConfig, image: &Value, hostname: &str) -> Vec<String> {
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
    set(&mut env, format!("HOSTNAME={hostname}"));
    for e in &cfg.env {
        if e.contains('=') {
            set(&mut env, e.clone());
        } else if let Ok(v) = std::env::var(e) {
            set(&mut env, format!("{e}={v}"));
        }
    }
    env
}

fn device_rule(
    allow: bool,
    kind: &str,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Value {
    json!({"allow": allow, "type": kind, "major": major, "minor": minor, "access": access})
}

/// Finds `/proc/<pid>/ns` of another running container, by name or ID.
pub type NsLookup<'a> = Box<dyn Fn(&str) -> Result<String> + 'a>;

/// Everything the runtime needs to know about other containers (namespace joins).
pub struct Joins<'a> {
    /// `/proc/<pid>/ns` of another container's init, for `container:ID` modes.
    pub ns_path: NsLookup<'a>,
}

/// Builds the config.json.
pub fn build(
    cfg: &RunConfig,
    image: &Value,
    rootfs: &Path,
    id: &str,
    joins: &Joins<'_>,
) -> Result<Value> {
    let hostname = cfg.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    let args = command(cfg, image)?;
    let env = environment(cfg, image, &hostname);
    let cwd = cfg
        .workdir
        .clone()
        .or_else(|| {
            image
                .pointer("/config/WorkingDir")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(Error::Invalid(format!(
            "-w {cwd:?}: the working directory must be an absolute path"
        )));
    }
    let user = cfg
        .user
        .clone()
        .or_else(|| {
            image
                .pointer("/config/User")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_default();
    let (uid, gid, extra) = resolve_user(rootfs, &user)?;
    let caps = capabilities(cfg)?;
    // podman's default open-file limit, within what this host lets us raise to.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .map_or(1_048_576, |h| h.min(1_048_576));
    let mut rlimits = vec![json!({"type": "RLIMIT_NOFILE", "soft": nofile, "hard": nofile})];
    for (name, soft, hard) in &cfg.ulimits {
        let t = format!("RLIMIT_{}", name.to_ascii_uppercase());
        rlimits.retain(|r| r["type"] != t.as_str());
        rlimits.push(json!({"type": t, "soft": soft, "hard": hard}));
    }

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if cfg.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if cfg.privileged { "rw" } else { "ro" }]}),
    ];
    for m in &cfg.mounts {
        match m.kind.as_str() {
            "bind" => {
                let src = Path::new(&m.source);
                if !src.exists() {
                    // As docker does for -v: a missing host directory is created.
                    std::fs::create_dir_all(src)
                        .ctx(|| format!("-v {}: create the host directory", m.source))?;
                }
                let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
                opts.push(if m.readonly { "ro" } else { "rw" }.into());
                mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source, "options": opts}));
            }
            "tmpfs" => {
                let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
                opts.extend(m.options.iter().cloned());
                if m.readonly {
                    opts.push("ro".into());
                }
                mounts.push(json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": opts}));
            }
            other => {
                return Err(Error::Invalid(format!(
                    "mount type {other:?}: use bind or tmpfs"
                )))
            }
        }
    }

    let mut namespaces = vec![json!({"type": "mount"})];
    let mut ns = |kind: &str, mode: &str| -> Result<()> {
        match mode {
            "host" => Ok(()),
            "" | "private" | "none" => {
                namespaces.push(json!({"type": kind}));
                Ok(())
            }
            _ if kind == "network" && crate::network::bridged(cfg) => {
                // Made and wired by the engine before the start (see `network`).
                let path = crate::network::netns_path(id);
                namespaces.push(json!({"type": kind, "path": path}));
                Ok(())
            }
            m => match m.strip_prefix("container:") {
                Some(other) => {
                    let file = match kind {
                        "network" => "net",
                        k => k,
                    };
                    let path = (joins.ns_path)(other)?;
                    namespaces.push(json!({"type": kind, "path": format!("{path}/{file}")}));
                    Ok(())
                }
                None => Err(Error::Invalid(format!(
                    "--{} {m:?}: use host, none or container:NAME",
                    if kind == "network" { "net" } else { kind }
                ))),
            },
        }
    };
    ns("network", &cfg.network)?;
    ns("pid", &cfg.pid)?;
    ns("ipc", &cfg.ipc)?;
    ns("uts", &cfg.uts)?;
    if cfg.uts == "host" && cfg.hostname.is_some() {
        return Err(Error::Invalid("-h cannot be used with --uts=host".into()));
    }

    let mut resources = serde_json::Map::new();
    let mut devices_rules = Vec::new();
    if cfg.privileged {
        devices_rules.push(device_rule(true, "a", None, None, "rwm"));
    } else {
        devices_rules.push(device_rule(false, "a", None, None, "rwm"));
        for (t, ma, mi) in [
            ("c", 1, 3),
            ("c", 1, 5),
            ("c", 1, 7),
            ("c", 1, 8),
            ("c", 1, 9),
            ("c", 5, 0),
            ("c", 5, 2),
        ] {
            devices_rules.push(device_rule(true, t, Some(ma), Some(mi), "rwm"));
        }
        devices_rules.push(device_rule(true, "c", Some(136), None, "rwm"));
    }
    let mut linux_devices = Vec::new();
    for (host, ctr, perms) in &cfg.devices {
        let meta = std::fs::metadata(host).ctx(|| format!("--device {host}"))?;
        let ft = meta.file_type();
        let kind = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            return Err(Error::Invalid(format!(
                "--device {host}: not a device node"
            )));
        };
        let rdev = meta.rdev();
        let (major, minor) = (
            rustix::fs::major(rdev) as i64,
            rustix::fs::minor(rdev) as i64,
        );
        linux_devices.push(json!({"path": ctr, "type": kind, "major": major, "minor": minor, "fileMode": meta.mode() & 0o777, "uid": 0, "gid": 0}));
        devices_rules.push(device_rule(true, kind, Some(major), Some(minor), perms));
    }
    resources.insert("devices".into(), json!(devices_rules));
    let mut memory = serde_json::Map::new();
    if let Some(m) = cfg.memory {
        if m < 6 << 20 {
            return Err(Error::Invalid(format!(
                "-m {m}: the minimum memory limit is 6m"
            )));
        }
        memory.insert("limit".into(), json!(m));
        match cfg.memory_swap {
            Some(s) if s != -1 && s < m => {
                return Err(Error::Invalid(
                    "--memory-swap must be at least -m (it counts memory plus swap), or -1".into(),
                ))
            }
            Some(s) => {
                memory.insert("swap".into(), json!(s));
            }
            None => {
                memory.insert("swap".into(), json!(m * 2));
            }
        }
    } else if cfg.memory_swap.is_some() {
        return Err(Error::Invalid("--memory-swap needs -m".into()));
    }
    if !memory.is_empty() {
        resources.insert("memory".into(), Value::Object(memory));
    }
    let mut cpu = serde_json::Map::new();
    if let Some(milli) = cfg.cpus_milli {
        if cfg.cpu_quota.is_some() || cfg.cpu_period.is_some() {
            return Err(Error::Invalid(
                "--cpus cannot be combined with --cpu-quota or --cpu-period".into(),
            ));
        }
        cpu.insert("period".into(), json!(100_000u64));
        cpu.insert("quota".into(), json!((milli * 100) as i64));
    }
    if let Some(p) = cfg.cpu_period {
        if !(1000..=1_000_000).contains(&p) {
            return Err(Error::Invalid(format!(
                "--cpu-period {p}: between 1000 and 1000000 microseconds"
            )));
        }
        cpu.insert("period".into(), json!(p));
    }
    if let Some(q) = cfg.cpu_quota {
        if q != -1 && q < 1000 {
            return Err(Error::Invalid(format!(
                "--cpu-quota {q}: at least 1000 microseconds, or -1"
            )));
        }
        cpu.insert("quota".into(), json!(q));
    }
    if let Some(s) = cfg.cpu_shares {
        cpu.insert("shares".into(), json!(s.max(2)));
    }
    if let Some(c) = &cfg.cpuset_cpus {
        cpu.insert("cpus".into(), json!(c));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(p) = cfg.pids_limit {
        resources.insert("pids".into(), json!({"limit": p}));
    }

    let seccomp = match cfg.seccomp.as_deref() {
        _ if cfg.privileged => None,
        Some("unconfined") => None,
        Some(file) => {
            let text = std::fs::read(file).ctx(|| format!("--security-opt seccomp={file}"))?;
            Some(serde_json::from_slice::<Value>(&text).map_err(|e| {
                Error::Invalid(format!(
                    "--security-opt seccomp={file}: not a JSON seccomp profile: {e}"
                ))
            })?)
        }
        None => Some(default_seccomp(&caps)),
    };
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": format!("/berth/{id}"),
        "resources": resources,
        "devices": linux_devices,
    });
    if !cfg.privileged {
        linux["maskedPaths"] = json!(MASKED);
        linux["readonlyPaths"] = json!(READONLY);
    }
    if let Some(s) = seccomp {
        linux["seccomp"] = s;
    }
    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": extra},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits,
        "noNewPrivileges": cfg.no_new_privileges,
    });
    if uid != 0 {
        // A non-root user keeps no effective capabilities, as with docker.
        process["capabilities"]["effective"] = json!([]);
        process["capabilities"]["permitted"] = json!([]);
    }
    let mut annotations: serde_json::Map<_, _> = cfg
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if cfg.init {
        // berth-runtime's reaping init (its `reaper` module) stays behind as pid 1.
        annotations.insert("berth.init".into(), json!("true"));
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": cfg.read_only},
        "hostname": if cfg.uts == "host" { Value::Null } else { json!(hostname) },
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_docker_rules() {
        let mut c = RunConfig::default();
        assert_eq!(capabilities(&c).unwrap().len(), DEFAULT_CAPS.len());
        c.cap_drop = vec!["all".into()];
        c.cap_add = vec!["net_admin".into()];
        assert_eq!(capabilities(&c).unwrap(), ["CAP_NET_ADMIN"]);
        c.cap_add = vec!["NOPE".into()];
        assert!(capabilities(&c)
            .unwrap_err()
            .to_string()
            .contains("unknown capability"));
    }

    #[test]
    fn seccomp_allows_by_list_and_opens_calls_with_capabilities() {
        let caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
        let p = default_seccomp(&caps);
        let list = |i: usize| -> Vec<String> {
            p["syscalls"][i]["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        if syscalls::SYSCALLS.is_empty() {
            assert!(list(0).contains(&"mount".to_string()));
            return;
        }
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(
            p["defaultErrnoRet"], 38,
            "unknown calls: ENOSYS, so that libc falls back"
        );
        let (allowed, denied) = (list(0), list(1));
        for s in ["read", "openat", "clone", "execve", "mmap2", "socketcall"] {
            assert!(allowed.contains(&s.to_string()), "{s}");
        }
        for s in ["mount", "unshare", "keyctl", "bpf", "ptrace"] {
            assert!(
                denied.contains(&s.to_string()) && !allowed.contains(&s.to_string()),
                "{s}"
            );
        }
        assert!(!allowed.contains(&"clone3".to_string()));
        let mut admin = caps.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let p = default_seccomp(&admin);
        assert!(p["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "mount"));
    }

    #[test]
    fn command_and_env() {
        let img =
            json!({"config": {"Entrypoint": ["/ep"], "Cmd": ["a"], "Env": ["PATH=/x", "A=1"]}});
        let mut c = RunConfig::default();
        assert_eq!(command(&c, &img).unwrap(), ["/ep", "a"]);
        c.cmd = vec!["b".into()];
        assert_eq!(command(&c, &img).unwrap(), ["/ep", "b"]);
        c.entrypoint = Some(String::new());
        assert_eq!(command(&c, &img).unwrap(), ["b"]);
        c.env = vec!["A=2".into()];
        let env = environment(&c, &img, "h");
        assert_eq!(env, ["PATH=/x", "HOSTNAME=h", "A=2"]);
    }
}
