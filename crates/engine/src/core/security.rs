//! What a container may do: capabilities, the default seccomp profile, masked and
//! read-only paths — docker's defaults, which CRI runtimes share — as OCI types.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
};

use crate::cri::{Capabilities, Seccomp};
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

/// Paths docker masks in /proc and /sys.
pub const MASKED: &[&str] = &[
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
pub const READONLY: &[&str] = &[
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
pub const DENIED: &[&str] = &[
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

/// Every capability this kernel knows and berth may pass on (for ALL and privileged).
pub fn all_caps() -> Vec<String> {
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

/// The capability set after adds and drops (docker's rules: `ALL` allowed; drops
/// first, then adds), or every capability when privileged.
pub fn capability_names(caps: &Capabilities, privileged: bool) -> Result<Vec<String>> {
    let all = all_caps();
    if privileged {
        return Ok(all);
    }
    let mut out: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
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
    for d in &caps.drop {
        match known(d)?.as_str() {
            "CAP_ALL" => out.clear(),
            n => out.retain(|c| c != n),
        }
    }
    for a in &caps.add {
        match known(a)?.as_str() {
            "CAP_ALL" => out = all.clone(),
            n if !out.iter().any(|c| c == n) => out.push(n.to_string()),
            _ => {}
        }
    }
    Ok(out)
}

/// Names (`CAP_X`) as OCI capabilities; names oci-spec does not know yet are left out.
pub fn to_oci(names: &[String]) -> HashSet<Capability> {
    names
        .iter()
        .filter_map(|n| n.trim_start_matches("CAP_").parse().ok())
        .collect()
}

/// A system call the default profile refuses, and why it is refused.
pub struct Refused {
    /// The call.
    pub name: &'static str,
    /// The errno it gets.
    pub errno: u32,
}

/// What the default profile refuses for a container with capabilities `caps`: the
/// calls docker's profile keeps from containers (EPERM) — less those a capability
/// opens, as docker's profile does — and `clone3` (ENOSYS, so that libc falls back
/// to clone, whose flags a filter can inspect).
pub fn refused_calls(caps: &[String]) -> Vec<Refused> {
    let has = |c: &str| caps.iter().any(|x| x == c);
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
    DENIED
        .iter()
        .copied()
        .filter(|s| !allowed_by_caps(s))
        .map(|name| Refused { name, errno: EPERM })
        .chain(std::iter::once(Refused {
            name: "clone3",
            errno: ENOSYS,
        }))
        .collect()
}

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

fn arches() -> Vec<Arch> {
    vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
}

/// berth's default seccomp profile, with the effect of docker's: the system calls this
/// kernel's headers name are allowed except those [`refused_calls`] lists; calls the
/// headers do not know — newer than the profile — fail with ENOSYS so that libc falls
/// back, as moby does.
pub fn default_seccomp(caps: &[String]) -> LinuxSeccomp {
    let refused = refused_calls(caps);
    let by_errno = |errno: u32| -> Vec<String> {
        refused
            .iter()
            .filter(|r| r.errno == errno)
            .map(|r| r.name.to_string())
            .collect()
    };
    let rule = |names: Vec<String>, action, errno: Option<u32>| {
        let b = LinuxSyscallBuilder::default().names(names).action(action);
        match errno {
            Some(e) => b.errno_ret(e),
            None => b,
        }
        .build()
        .expect("a complete syscall rule")
    };
    // The refusals, by the answer they get (the ENOSYS one named although the default
    // below gives it the same answer: the one call refused on purpose with ENOSYS).
    let refusals = [EPERM, ENOSYS].map(|errno| {
        rule(
            by_errno(errno),
            LinuxSeccompAction::ScmpActErrno,
            Some(errno),
        )
    });
    if syscalls::SYSCALLS.is_empty() {
        // No syscall table at build time: refuse what docker refuses, allow the rest.
        return LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(arches())
            .syscalls(refusals.to_vec())
            .build()
            .expect("a complete profile");
    }
    let denied: HashSet<&str> = refused.iter().map(|r| r.name).collect();
    let allowed: Vec<String> = syscalls::SYSCALLS
        .iter()
        .chain(X86_32_ONLY)
        .copied()
        .filter(|s| !denied.contains(s))
        .map(String::from)
        .collect();
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(ENOSYS)
        .architectures(arches())
        .syscalls(
            std::iter::once(rule(allowed, LinuxSeccompAction::ScmpActAllow, None))
                .chain(refusals)
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("a complete profile")
}

/// The seccomp profile a container gets (None: unconfined).
pub fn profile(
    seccomp: &Seccomp,
    privileged: bool,
    caps: &[String],
) -> Result<Option<LinuxSeccomp>> {
    match seccomp {
        _ if privileged => Ok(None),
        Seccomp::Unconfined => Ok(None),
        Seccomp::RuntimeDefault => Ok(Some(default_seccomp(caps))),
        Seccomp::Localhost(file) => {
            let text = std::fs::read(file).ctx(|| format!("seccomp profile {}", file.display()))?;
            serde_json::from_slice(&text).map(Some).map_err(|e| {
                Error::Invalid(format!(
                    "seccomp profile {}: not an OCI seccomp profile (JSON with defaultAction and syscalls): {e}",
                    file.display()
                ))
            })
        }
    }
}

/// `profile` with sysinfo(2) handed to a seccomp agent through `listener`, for the
/// /proc view's truthful sysinfo: the call is taken out of the rules that simply allow
/// it and notified instead. An unconfined container (None) stays unconfined — a
/// filter there would take the one listener a nested runtime's own agent needs — and a
/// profile with an agent of its own, or one that refuses sysinfo or never allows it,
/// is left as it is.
pub fn notify_sysinfo(
    profile: Option<LinuxSeccomp>,
    listener: &std::path::Path,
) -> Option<LinuxSeccomp> {
    const SYSINFO: &str = "sysinfo";
    let notify_rule = LinuxSyscallBuilder::default()
        .names(vec![SYSINFO.to_string()])
        .action(LinuxSeccompAction::ScmpActNotify)
        .build()
        .expect("a complete syscall rule");
    let mut p = profile?;
    if p.listener_path().is_some() {
        return Some(p);
    }
    let mut rules = p.syscalls().clone().unwrap_or_default();
    let plain_allow = |r: &oci_spec::runtime::LinuxSyscall| {
        r.action() == LinuxSeccompAction::ScmpActAllow
            && r.args().as_ref().is_none_or(|a| a.is_empty())
    };
    let named = |r: &oci_spec::runtime::LinuxSyscall| r.names().iter().any(|n| n == SYSINFO);
    if rules.iter().any(|r| named(r) && !plain_allow(r)) {
        return Some(p);
    }
    let allowed = rules.iter().any(|r| named(r) && plain_allow(r))
        || p.default_action() == LinuxSeccompAction::ScmpActAllow;
    if !allowed {
        return Some(p);
    }
    for r in rules.iter_mut().filter(|r| named(r)) {
        let names: Vec<String> = r
            .names()
            .iter()
            .filter(|n| *n != SYSINFO)
            .cloned()
            .collect();
        r.set_names(names);
    }
    rules.retain(|r| !r.names().is_empty());
    rules.push(notify_rule);
    p.set_syscalls(Some(rules));
    p.set_listener_path(Some(listener.to_path_buf()));
    Some(p)
}

/// Whether this kernel can have sysinfo(2) answered by an agent: the agent hands what
/// it does not answer back to the kernel (SECCOMP_USER_NOTIF_FLAG_CONTINUE, 5.5) and
/// libseccomp's notification calls need 5.7. On an older kernel a notified call could
/// wait for ever: the interception is left off there.
pub fn sysinfo_interception_works() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (5, 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_docker_rules() {
        let mut c = Capabilities::default();
        assert_eq!(
            capability_names(&c, false).unwrap().len(),
            DEFAULT_CAPS.len()
        );
        c.drop = vec!["all".into()];
        c.add = vec!["net_admin".into()];
        assert_eq!(capability_names(&c, false).unwrap(), ["CAP_NET_ADMIN"]);
        c.add = vec!["NOPE".into()];
        assert!(capability_names(&c, false)
            .unwrap_err()
            .to_string()
            .contains("unknown capability"));
        assert!(to_oci(&["CAP_CHOWN".into()]).contains(&Capability::Chown));
    }

    #[test]
    fn seccomp_allows_by_list_and_opens_calls_with_capabilities() {
        let caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
        let p = default_seccomp(&caps);
        let list = |p: &LinuxSeccomp, i: usize| -> Vec<String> {
            p.syscalls().as_ref().unwrap()[i].names().clone()
        };
        if syscalls::SYSCALLS.is_empty() {
            assert!(list(&p, 0).contains(&"mount".to_string()));
            return;
        }
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(38), "unknown calls: ENOSYS");
        let (allowed, denied) = (list(&p, 0), list(&p, 1));
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
        assert!(list(&default_seccomp(&admin), 0).contains(&"mount".to_string()));
        let refused = refused_calls(&caps);
        assert!(refused.iter().any(|r| r.name == "clone3" && r.errno == 38));
        assert!(refused.iter().any(|r| r.name == "mount" && r.errno == 1));
    }

    #[test]
    fn sysinfo_goes_to_the_agent_unless_the_profile_says_otherwise() {
        let sock = std::path::Path::new("/c/seccomp.sock");
        let notified = |p: &LinuxSeccomp| {
            p.syscalls().iter().flatten().any(|r| {
                r.action() == LinuxSeccompAction::ScmpActNotify
                    && r.names().iter().any(|n| n == "sysinfo")
            })
        };
        let allowed_plainly = |p: &LinuxSeccomp| {
            p.syscalls().iter().flatten().any(|r| {
                r.action() == LinuxSeccompAction::ScmpActAllow
                    && r.names().iter().any(|n| n == "sysinfo")
            })
        };
        // The default profile allows it by list: moved to a notify rule.
        let p = notify_sysinfo(Some(default_seccomp(&[])), sock).unwrap();
        assert!(notified(&p) && !allowed_plainly(&p));
        assert_eq!(p.listener_path().as_deref(), Some(sock));
        // Unconfined stays unconfined.
        assert_eq!(notify_sysinfo(None, sock), None);
        // A refusal of the user's stands, and so does an agent of the user's.
        let refusing: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sysinfo"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert_eq!(notify_sysinfo(Some(refusing.clone()), sock), Some(refusing));
        let own: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/mine","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap();
        assert_eq!(notify_sysinfo(Some(own.clone()), sock), Some(own));
        // A profile that never allows it keeps refusing it by default.
        let closed: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        assert_eq!(notify_sysinfo(Some(closed.clone()), sock), Some(closed));
    }
}
