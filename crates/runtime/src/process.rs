//! The container process's own settings (`process` in config.json, or an `exec`'s
//! process.json), checked in the runtime and applied by the forked child just before it
//! executes the user program.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    IOPriorityClass, LinuxPersonalityDomain, LinuxSchedulerFlag, LinuxSchedulerPolicy,
    PosixRlimitType, Process,
};

use crate::capabilities::CapSets;
use crate::error::{Context, Error, Result};
use crate::seccomp::{Filter, Listener};
use crate::sys;
use caps::Capability;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One resource limit to set.
#[derive(Clone, Debug)]
pub struct Rlimit {
    /// RLIMIT_* number.
    pub resource: i32,
    /// Name for messages.
    pub name: &'static str,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Everything needed to start the user program, prepared before forking.
pub struct ProcessPlan {
    /// argv.
    pub args: Vec<CString>,
    /// Environment, KEY=value.
    pub env: Vec<CString>,
    /// PATH used to find args[0].
    pub path_var: String,
    /// Working directory inside the container.
    pub cwd: PathBuf,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask (0022 when unset).
    pub umask: u32,
    /// Capability sets.
    pub caps: CapSets,
    /// Whether to set no_new_privs.
    pub no_new_privs: bool,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// Whether the process gets a pty.
    pub terminal: bool,
    /// Initial pty size (rows, columns).
    pub console_size: Option<(u16, u16)>,
    /// oom_score_adj to write.
    pub oom_score_adj: Option<i32>,
    /// The compiled seccomp filter.
    pub seccomp: Option<Filter>,
    /// The seccomp agent that gets the filter's listener, when the filter notifies.
    pub seccomp_listener: Option<Listener>,
    /// The SELinux label to exec the program with (only when SELinux is enabled).
    pub selinux_label: Option<String>,
    /// ioprio_set value.
    pub io_priority: Option<i32>,
    /// sched_setattr arguments.
    pub scheduler: Option<SchedulerPlan>,
    /// personality(2) value.
    pub personality: Option<u64>,
    /// AppArmor profile to switch to at exec.
    pub apparmor: Option<String>,
}

/// sched_setattr arguments from `process.scheduler`.
#[derive(Clone, Debug)]
pub struct SchedulerPlan {
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

fn rlimit_of(t: PosixRlimitType) -> (i32, &'static str) {
    match t {
        PosixRlimitType::RlimitCpu => (libc::RLIMIT_CPU as i32, "RLIMIT_CPU"),
        PosixRlimitType::RlimitFsize => (libc::RLIMIT_FSIZE as i32, "RLIMIT_FSIZE"),
        PosixRlimitType::RlimitData => (libc::RLIMIT_DATA as i32, "RLIMIT_DATA"),
        PosixRlimitType::RlimitStack => (libc::RLIMIT_STACK as i32, "RLIMIT_STACK"),
        PosixRlimitType::RlimitCore => (libc::RLIMIT_CORE as i32, "RLIMIT_CORE"),
        PosixRlimitType::RlimitRss => (libc::RLIMIT_RSS as i32, "RLIMIT_RSS"),
        PosixRlimitType::RlimitNproc => (libc::RLIMIT_NPROC as i32, "RLIMIT_NPROC"),
        PosixRlimitType::RlimitNofile => (libc::RLIMIT_NOFILE as i32, "RLIMIT_NOFILE"),
        PosixRlimitType::RlimitMemlock => (libc::RLIMIT_MEMLOCK as i32, "RLIMIT_MEMLOCK"),
        PosixRlimitType::RlimitAs => (libc::RLIMIT_AS as i32, "RLIMIT_AS"),
        PosixRlimitType::RlimitLocks => (libc::RLIMIT_LOCKS as i32, "RLIMIT_LOCKS"),
        PosixRlimitType::RlimitSigpending => (libc::RLIMIT_SIGPENDING as i32, "RLIMIT_SIGPENDING"),
        PosixRlimitType::RlimitMsgqueue => (libc::RLIMIT_MSGQUEUE as i32, "RLIMIT_MSGQUEUE"),
        PosixRlimitType::RlimitNice => (libc::RLIMIT_NICE as i32, "RLIMIT_NICE"),
        PosixRlimitType::RlimitRtprio => (libc::RLIMIT_RTPRIO as i32, "RLIMIT_RTPRIO"),
        PosixRlimitType::RlimitRttime => (libc::RLIMIT_RTTIME as i32, "RLIMIT_RTTIME"),
    }
}

fn cstring(s: &str, field: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{field} {s:?} contains a NUL byte")))
}

impl ProcessPlan {
    /// Checks and converts a `process` object. `personality` comes from
    /// `linux.personality`; `seccomp` is compiled by the caller.
    pub fn from_spec(
        p: &Process,
        personality: Option<&oci_spec::runtime::LinuxPersonality>,
    ) -> Result<ProcessPlan> {
        let args: Vec<CString> = p
            .args()
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, a)| cstring(a, &format!("process.args[{i}]")))
            .collect::<Result<_>>()?;
        if args.is_empty() {
            return Err(Error::invalid(
                "process.args is empty (it must name the program to run)",
            ));
        }
        let mut path_var = DEFAULT_PATH.to_string();
        let mut env = Vec::new();
        for (i, e) in p.env().iter().flatten().enumerate() {
            if !e.contains('=') {
                return Err(Error::invalid(format!(
                    "process.env[{i}] {e:?} is not of the form KEY=value"
                )));
            }
            if let Some(v) = e.strip_prefix("PATH=") {
                path_var = v.to_string();
            }
            env.push(cstring(e, &format!("process.env[{i}]"))?);
        }
        if !p.cwd().is_absolute() {
            return Err(Error::invalid(format!(
                "process.cwd {:?} must be an absolute path",
                p.cwd()
            )));
        }
        let mut rlimits = Vec::new();
        for (i, r) in p.rlimits().iter().flatten().enumerate() {
            let (resource, name) = rlimit_of(r.typ());
            if r.soft() > r.hard() {
                return Err(Error::invalid(format!(
                    "process.rlimits[{i}] {name}: soft limit {} is above the hard limit {}",
                    r.soft(),
                    r.hard()
                )));
            }
            rlimits.push(Rlimit {
                resource,
                name,
                soft: r.soft(),
                hard: r.hard(),
            });
        }
        let io_priority = match p.io_priority() {
            None => None,
            Some(io) => {
                let class = match io.class() {
                    IOPriorityClass::IoprioClassRt => 1,
                    IOPriorityClass::IoprioClassBe => 2,
                    IOPriorityClass::IoprioClassIdle => 3,
                };
                if !(0..=7).contains(&io.priority()) {
                    return Err(Error::invalid(format!(
                        "process.ioPriority.priority {} is out of range (0 to 7)",
                        io.priority()
                    )));
                }
                Some((class << 13) | io.priority() as i32)
            }
        };
        let scheduler = p.scheduler().as_ref().map(|s| {
            let policy = match s.policy() {
                LinuxSchedulerPolicy::SchedOther => 0,
                LinuxSchedulerPolicy::SchedFifo => 1,
                LinuxSchedulerPolicy::SchedRr => 2,
                LinuxSchedulerPolicy::SchedBatch => 3,
                LinuxSchedulerPolicy::SchedIso => 4,
                LinuxSchedulerPolicy::SchedIdle => 5,
                LinuxSchedulerPolicy::SchedDeadline => 6,
            };
            let mut flags = 0u64;
            for f in s.flags().iter().flatten() {
                flags |= match f {
                    LinuxSchedulerFlag::SchedResetOnFork => 0x01,
                    LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
                    LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
                    LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
                    LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
                    LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
                    LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
                };
            }
            SchedulerPlan {
                policy,
                flags,
                nice: s.nice().unwrap_or(0),
                priority: s.priority().unwrap_or(0).max(0) as u32,
                runtime: s.runtime().unwrap_or(0),
                deadline: s.deadline().unwrap_or(0),
                period: s.period().unwrap_or(0),
            }
        });
        if p.exec_cpu_affinity().is_some() {
            return Err(Error::unsupported(
                "process.execCPUAffinity is not supported by berth-runtime (use linux.resources.cpu.cpus)",
            ));
        }
        let personality = match personality {
            None => None,
            Some(per) => {
                if per.flags().as_ref().is_some_and(|f| !f.is_empty()) {
                    return Err(Error::unsupported(
                        "linux.personality.flags are not supported by berth-runtime",
                    ));
                }
                Some(match per.domain() {
                    LinuxPersonalityDomain::PerLinux => 0x0000,
                    LinuxPersonalityDomain::PerLinux32 => 0x0008,
                })
            }
        };
        let user = p.user();
        Ok(ProcessPlan {
            args,
            env,
            path_var,
            cwd: p.cwd().clone(),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask().unwrap_or(0o022),
            caps: CapSets::from_spec(p.capabilities().as_ref())?,
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            rlimits,
            terminal: p.terminal().unwrap_or(false),
            console_size: p
                .console_size()
                .as_ref()
                .map(|b| (b.height() as u16, b.width() as u16)),
            oom_score_adj: p.oom_score_adj(),
            seccomp: None,
            seccomp_listener: None,
            selinux_label: crate::spec::selinux_label(p.selinux_label().as_ref()),
            apparmor: p.apparmor_profile().clone().filter(|a| !a.is_empty()),
            io_priority,
            scheduler,
            personality,
        })
    }

    /// Settings that need privileges, applied before the user is switched: rlimits,
    /// personality, I/O priority, scheduler.
    pub fn apply_privileged(&self) -> Result<()> {
        for r in &self.rlimits {
            let lim = libc::rlimit {
                rlim_cur: r.soft,
                rlim_max: r.hard,
            };
            sys::setrlimit(r.resource, &lim).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EPERM) {
                    " (raising a hard limit needs CAP_SYS_RESOURCE, which this runtime lacks here)"
                } else {
                    ""
                };
                Error::invalid(format!(
                    "process.rlimits {}: setting soft={} hard={} failed: {e}{hint}",
                    r.name, r.soft, r.hard
                ))
            })?;
        }
        if let Some(p) = self.personality {
            sys::personality(p as libc::c_ulong).ctx(|| "linux.personality")?;
        }
        if let Some(v) = self.io_priority {
            sys::ioprio_set(v).ctx(|| "process.ioPriority")?;
        }
        if let Some(profile) = &self.apparmor {
            set_apparmor_profile(profile)?;
        }
        if let Some(s) = &self.scheduler {
            let mut attr = sys::SchedAttr {
                policy: s.policy,
                flags: s.flags,
                nice: s.nice,
                priority: s.priority,
                runtime: s.runtime,
                deadline: s.deadline,
                period: s.period,
                ..Default::default()
            };
            sys::sched_setattr(&mut attr).ctx(|| "process.scheduler (sched_setattr)")?;
        }
        Ok(())
    }

    /// Switches to the configured user and capabilities: drop the bounding set, keep
    /// capabilities across setuid, set groups and ids, then set the final sets.
    pub fn switch_user(&self) -> Result<()> {
        self.caps.drop_bounding()?;
        rustix::thread::set_keep_capabilities(true).ctx(|| "prctl(PR_SET_KEEPCAPS)")?;
        match sys::setgroups(&self.additional_gids) {
            Ok(()) => {}
            // A user namespace whose maps an unprivileged user wrote denies setgroups:
            // with no groups asked there is nothing to set (the process keeps only the
            // user's own groups, which the namespace cannot name).
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    && self.additional_gids.is_empty()
                    && crate::rootless::detect() => {}
            Err(e) => {
                return Err(Error::invalid(format!(
                    "process.user.additionalGids {:?}: setgroups: {e}{}",
                    self.additional_gids,
                    if crate::rootless::detect() {
                        " (without root, groups can be given only with subordinate gids mapped through newgidmap and /etc/subgid)"
                    } else {
                        ""
                    }
                )))
            }
        }
        sys::setresgid(self.gid).ctx(|| format!("process.user.gid {}: setresgid", self.gid))?;
        sys::setresuid(self.uid).ctx(|| format!("process.user.uid {}: setresuid", self.uid))?;
        rustix::thread::set_keep_capabilities(false).ctx(|| "prctl(PR_SET_KEEPCAPS, 0)")?;
        if self.seccomp_needs_admin() {
            self.caps.apply_holding(Capability::CAP_SYS_ADMIN)
        } else {
            self.caps.apply()
        }
    }

    /// Whether loading the seccomp filter needs CAP_SYS_ADMIN made effective for it:
    /// without no_new_privs the kernel wants it, and the container's own sets may
    /// lack it.
    fn seccomp_needs_admin(&self) -> bool {
        self.seccomp.is_some()
            && !self.no_new_privs
            && !self.caps.effective.contains(&Capability::CAP_SYS_ADMIN)
    }

    /// The last steps before exec: no_new_privs, the SELinux exec label, then the
    /// seccomp filter, last, so that any profile the user program survives, the
    /// runtime survives too. Without no_new_privs the filter needs CAP_SYS_ADMIN,
    /// held since [`ProcessPlan::switch_user`], raised for the load and dropped at once
    /// (capset and prctl are then the runtime's only calls before execve). A notifying
    /// filter's listener goes to the seccomp agent, for the process `host_pid`.
    pub fn seal(&self, host_pid: i32) -> Result<()> {
        if self.no_new_privs {
            rustix::thread::set_no_new_privs(true).ctx(|| "prctl(PR_SET_NO_NEW_PRIVS)")?;
        }
        if let Some(label) = &self.selinux_label {
            set_selinux_exec_label(label)?;
        }
        let Some(filter) = &self.seccomp else {
            return Ok(());
        };
        // Made now: once the filter is in, the runtime allocates nothing.
        let message = match &self.seccomp_listener {
            Some(l) => Some(l.encode(host_pid)?),
            None => None,
        };
        let admin = self.seccomp_needs_admin();
        if admin {
            self.caps.raise_effective(Capability::CAP_SYS_ADMIN)?;
        }
        let listener_fd = filter.load()?;
        // The listener goes out first: until the agent has it, a call the filter hands
        // over would wait (capset and prctl, next, are refused as notify targets).
        let sent = match (listener_fd, &self.seccomp_listener, &message) {
            (Some(fd), Some(l), Some(m)) => l.send(m, &fd),
            (None, _, _) => Ok(()),
            _ => Err(Error::invalid(
                "linux.seccomp notifies but has no listenerPath to send the listener to",
            )),
        };
        if admin {
            self.caps.apply()?;
        }
        sent
    }

    /// Enters the working directory and checks that it lies inside the container's root
    /// (a leaked host directory would show as "(unreachable)"; CVE-2024-21626 class).
    pub fn enter_cwd(&self) -> Result<()> {
        rustix::process::chdir(&self.cwd).map_err(|e| {
            Error::invalid(format!(
                "process.cwd {}: {} (the directory must exist in the container)",
                self.cwd.display(),
                std::io::Error::from(e)
            ))
        })?;
        let cwd = rustix::process::getcwd(Vec::new()).ctx(|| "getcwd")?;
        if !cwd.as_bytes().starts_with(b"/") {
            return Err(Error::invalid(format!(
                "process.cwd {} resolves outside the container's root; refusing to start",
                self.cwd.display()
            )));
        }
        Ok(())
    }

    /// Finds the program to run like execvp does, with the container's PATH, and checks
    /// it can be executed; a clear error now beats a failed exec after `start`.
    pub fn resolve_program(&self) -> Result<CString> {
        let arg0 = Path::new(std::ffi::OsStr::from_bytes(self.args[0].as_bytes()));
        let candidates: Vec<PathBuf> = if arg0.as_os_str().as_bytes().contains(&b'/') {
            vec![arg0.to_path_buf()]
        } else {
            self.path_var
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join(arg0))
                .collect()
        };
        let mut last_err = None;
        for c in &candidates {
            match rustix::fs::access(c, rustix::fs::Access::EXEC_OK) {
                Ok(()) => {
                    let meta = std::fs::metadata(c);
                    if meta.as_ref().is_ok_and(|m| m.is_file()) {
                        return Ok(CString::new(c.as_os_str().as_bytes()).expect("no NUL"));
                    }
                    last_err = Some("is not a regular file".to_string());
                }
                Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {}
                Err(e) => last_err = Some(std::io::Error::from(e).to_string()),
            }
        }
        let name = arg0.display();
        Err(Error::invalid(match (last_err, candidates.len()) {
            (Some(e), _) => format!("exec {name:?}: {e}"),
            (None, 1) if arg0.as_os_str().as_bytes().contains(&b'/') => {
                format!("exec {name:?}: no such file in the container")
            }
            _ => format!(
                "exec {name:?}: executable file not found in $PATH ({})",
                self.path_var
            ),
        }))
    }

    /// Replaces this process with the user program. Returns only on failure.
    pub fn exec(&self, program: &CString) -> Error {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(self.umask));
        Error::io(
            format!("exec {program:?}"),
            sys::execve(program, &self.args, &self.env),
        )
    }
}

/// Asks AppArmor to confine the next exec with `profile`.
fn set_apparmor_profile(profile: &str) -> Result<()> {
    write_exec_attr(
        &["attr/apparmor/exec", "attr/exec"],
        &format!("exec {profile}"),
        |e| {
            format!("process.apparmorProfile {profile:?}: AppArmor refused it: {e} (is the profile loaded?)")
        },
    )
}

/// Asks SELinux to run the next exec with `label`.
fn set_selinux_exec_label(label: &str) -> Result<()> {
    write_exec_attr(&["attr/exec"], label, |e| {
        format!("process.selinuxLabel {label:?}: SELinux refused it: {e}")
    })
}

/// Writes `value` to the first of the task's attribute files `attrs` that opens,
/// through a private procfs (nothing mounted over it can intercept): how a security
/// module is told the label of the next exec. `refused` words the module's refusal.
fn write_exec_attr(
    attrs: &[&str],
    value: &str,
    refused: impl Fn(&std::io::Error) -> String,
) -> Result<()> {
    use std::io::Write;
    let proc = pathrs::procfs::ProcfsHandle::new().ctx(|| "open a private procfs")?;
    let base = pathrs::procfs::ProcfsBase::ProcThreadSelf;
    let mut opened = Err(None);
    for attr in attrs {
        match proc.open(base, attr, pathrs::flags::OpenFlags::O_WRONLY) {
            Ok(f) => {
                opened = Ok(f);
                break;
            }
            Err(e) => opened = Err(Some(e)),
        }
    }
    let mut f = opened.map_err(|e| {
        Error::invalid(format!(
            "open the exec attribute {}: {}",
            attrs.join(" or "),
            e.map(|e| e.to_string()).unwrap_or_default()
        ))
    })?;
    f.write_all(value.as_bytes())
        .map_err(|e| Error::invalid(refused(&e)))
}

/// Leaves exactly stdio and the `n` preserved descriptors (3..3+n) open across exec;
/// everything else of the runtime's is marked close-on-exec (CVE-2024-21626 class).
pub fn keep_only_stdio_and(n: u32) -> Result<()> {
    let end = 3u32.saturating_add(n);
    for fd in 3..end {
        sys::clear_cloexec(fd as i32).ctx(|| format!("--preserve-fds: descriptor {fd}"))?;
    }
    sys::cloexec_from(end).ctx(|| "mark descriptors close-on-exec")
}
