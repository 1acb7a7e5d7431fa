//! Seccomp filters from `linux.seccomp`, compiled with libseccomp.
//!
//! The filter is compiled in the runtime process before any fork, so a bad profile fails
//! `create` with a clear error and nothing to clean up; the container's init only loads it.
//!
//! Rules with SCMP_ACT_NOTIFY (seccomp user notification) hand the syscalls they match
//! to an agent: loading such a filter yields a listener descriptor, which the process
//! sends to `linux.seccomp.listenerPath` before its execve (see [`Listener`]).

use std::os::fd::{AsFd, OwnedFd};
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::error::{Error, Result};

/// The directory under the runtime root holding compiled profiles (its leading dot keeps
/// it apart from container directories).
pub const CACHE_DIR: &str = ".seccomp-cache";

/// A compiled filter, ready to load: a libseccomp context, or the BPF program a
/// previous run compiled from the same profile.
pub enum Filter {
    /// Compiled now; `notify` when a rule uses SCMP_ACT_NOTIFY.
    Context {
        /// The libseccomp filter.
        ctx: ScmpFilterContext,
        /// Whether loading it makes a listener descriptor.
        notify: bool,
    },
    /// From the cache: the program and the seccomp(2) flags to load it with.
    Bpf {
        /// The BPF program (8-byte instructions, native order).
        prog: Vec<u8>,
        /// SECCOMP_FILTER_FLAG_* bits.
        flags: u32,
    },
}

/// SECCOMP_FILTER_FLAG_NEW_LISTENER: loading returns a user-notification descriptor.
const FLAG_NEW_LISTENER: u32 = 1 << 3;

impl Filter {
    /// Installs the filter on the calling thread; returns the listener descriptor when
    /// the filter notifies. The syscalls the runtime makes after this point (sendmsg of
    /// the listener, capset, execve...) must be allowed by the profile, as with runc.
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        match self {
            Filter::Context { ctx, notify } => {
                ctx.load()
                    .map_err(|e| Error::invalid(format!("load the seccomp filter: {e}")))?;
                if !notify {
                    return Ok(None);
                }
                let raw = ctx.get_notify_fd().map_err(|e| {
                    Error::invalid(format!("the seccomp filter's listener descriptor: {e}"))
                })?;
                Ok(Some(crate::sys::adopt_fd(raw)))
            }
            Filter::Bpf { prog, flags } => crate::sys::seccomp_load_bpf(prog, *flags)
                .map_err(|e| Error::io("load the seccomp filter", e)),
        }
    }
}

/// Whether any rule of the profile (or its default) notifies an agent.
pub fn notifies(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|sc| sc.action() == LinuxSeccompAction::ScmpActNotify)
}

/// The syscalls the runtime itself makes between loading the filter and the user
/// program's execve (send the listener, close it, set capabilities, exec): notifying
/// one of them would leave the process waiting on an agent that has no descriptor yet.
const USED_AFTER_LOAD: [&str; 6] = ["sendmsg", "sendto", "close", "capset", "prctl", "execve"];

/// A seccomp agent to send the listener descriptor to (`linux.seccomp.listenerPath`),
/// connected by the runtime before the process leaves the host's mount namespace.
pub struct Listener {
    /// The connection to the agent.
    pub sock: OwnedFd,
    /// What is sent with the descriptor; `pid` is set by the process itself.
    pub state: oci_spec::runtime::ContainerProcessState,
}

impl Listener {
    /// Connects to the profile's listener, if it has one, describing the container as
    /// `state` (the OCI state of the container at this point).
    pub fn connect(s: &LinuxSeccomp, state: oci_spec::runtime::State) -> Result<Option<Listener>> {
        let Some(path) = s.listener_path().as_ref().filter(|_| notifies(s)) else {
            return Ok(None);
        };
        let sock = berth_seccomp_listener::connect(path).map_err(|e| {
            Error::invalid(format!(
                "linux.seccomp.listenerPath {}: connect: {e} (is the seccomp agent listening?)",
                path.display()
            ))
        })?;
        let mut msg = oci_spec::runtime::ContainerProcessState::default();
        msg.set_version(oci_spec::runtime::VERSION.to_string());
        msg.set_fds(vec![berth_seccomp_listener::SECCOMP_FD_NAME.to_string()]);
        msg.set_metadata(s.listener_metadata().clone());
        msg.set_state(state);
        Ok(Some(Listener { sock, state: msg }))
    }

    /// The message for the process `pid` (as the runtime sees it), made before the
    /// filter is loaded (see [`Listener::send`]).
    pub fn encode(&self, pid: i32) -> Result<Vec<u8>> {
        let mut state = self.state.clone();
        state.set_pid(pid);
        if state.state().pid().is_none() {
            // The init itself: the container's pid is its own.
            state.state_mut().set_pid(Some(pid));
        }
        berth_seccomp_listener::encode(&state)
            .map_err(|e| Error::io("encode the container process state", e))
    }

    /// Sends `fd` (the filter's listener) with the message [`Listener::encode`] made,
    /// allocating nothing (the filter is in force). The connection closes at the
    /// process's execve (it is close-on-exec): one state per connection, as the spec
    /// asks.
    pub fn send(&self, message: &[u8], fd: &OwnedFd) -> Result<()> {
        berth_seccomp_listener::send_encoded(self.sock.as_fd(), message, &[fd.as_fd()])
            .map_err(|e| Error::io("send the seccomp listener to linux.seccomp.listenerPath", e))
    }
}

/// The seccomp(2) flags a profile asks for, if the cached path can load it.
fn raw_flags(s: &LinuxSeccomp) -> Option<u32> {
    let mut f = if notifies(s) { FLAG_NEW_LISTENER } else { 0 };
    for flag in s.flags().iter().flatten() {
        f |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => return None,
        };
    }
    // The kernel takes TSYNC with a new listener only if told to report a thread it
    // could not synchronise as ESRCH (libseccomp adds this itself on its own path).
    const FLAG_TSYNC: u32 = 1;
    const FLAG_TSYNC_ESRCH: u32 = 1 << 4;
    if f & FLAG_TSYNC != 0 && f & FLAG_NEW_LISTENER != 0 {
        f |= FLAG_TSYNC_ESRCH;
    }
    Some(f)
}

/// [`compile`], remembering the BPF program under `cache` (keyed by a hash of the
/// profile, this runtime's version and the kernel's release): a large allowlist
/// (docker's profile has ~350 rules per architecture) costs libseccomp several
/// milliseconds to compile, loading a cached program costs nothing. crun does the same.
pub fn compile_cached(s: &LinuxSeccomp, cache: &std::path::Path) -> Result<Filter> {
    use sha2::Digest as _;
    // Checked here too: a cached program says nothing of the listener it needs.
    check_notify(s)?;
    let Some(flags) = raw_flags(s) else {
        return compile(s);
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut h = sha2::Sha256::new();
    // The listener's path and metadata (one per container) are not in the program.
    let mut program_part = s.clone();
    program_part.set_listener_path(None);
    program_part.set_listener_metadata(None);
    h.update(serde_json::to_vec(&program_part).unwrap_or_default());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(kernel.trim().as_bytes());
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let path = cache.join(format!("{key}.bpf"));
    if let Ok(prog) = std::fs::read(&path) {
        if !prog.is_empty() && prog.len() % 8 == 0 {
            return Ok(Filter::Bpf { prog, flags });
        }
    }
    let filter = compile(s)?;
    if let Filter::Context { ctx, .. } = &filter {
        // Best effort: a cache that cannot be written only costs the next run time.
        let _ = std::fs::create_dir_all(cache);
        let tmp = cache.join(format!(".{key}.{}", std::process::id()));
        if let Ok(f) = std::fs::File::create(&tmp) {
            if ctx.export_bpf(&f).is_ok() && f.sync_all().is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(filter)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, default_errno: u32) -> ScmpAction {
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.unwrap_or(default_errno) as i32)
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.unwrap_or(default_errno) as u16)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    }
}

/// The libseccomp comparison for one argument condition. For SCMP_CMP_MASKED_EQ the
/// OCI spec (like runc) reads `value` as the mask and `valueTwo` as the expected result:
/// `(arg & value) == valueTwo`; libseccomp takes the mask in the operator and the
/// expected result as the datum.
fn condition(
    index: u32,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> ScmpArgCompare {
    let op = match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(
                index,
                ScmpCompareOp::MaskedEqual(value),
                value_two.unwrap_or(0),
            )
        }
    };
    ScmpArgCompare::new(index, op, value)
}

/// Compiles `linux.seccomp`.
pub fn compile(s: &LinuxSeccomp) -> Result<Filter> {
    let base = "linux.seccomp";
    let lib_err = |what: String| {
        move |e: libseccomp::error::SeccompError| Error::invalid(format!("{what}: {e}"))
    };
    let default_errno = s.default_errno_ret().unwrap_or(libc::EPERM as u32);
    check_notify(s)?;
    let default = action(s.default_action(), s.default_errno_ret(), default_errno);
    let mut ctx =
        ScmpFilterContext::new(default).map_err(lib_err(format!("{base}.defaultAction")))?;
    // libseccomp would set no_new_privs on load; the runtime sets it only when asked.
    ctx.set_ctl_nnp(false)
        .map_err(lib_err(format!("{base}: disable NNP control")))?;
    for (i, a) in s.architectures().iter().flatten().enumerate() {
        let name = serde_json::to_value(a)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let arch = ScmpArch::from_str(&name).map_err(|_| {
            Error::invalid(format!(
                "{base}.architectures[{i}]: unknown architecture {name:?}"
            ))
        })?;
        match ctx.add_arch(arch) {
            Ok(_) => {}
            // The native architecture is present already.
            Err(e) if e.errno() == Some(libseccomp::error::SeccompErrno::EEXIST) => {}
            Err(e) => return Err(lib_err(format!("{base}.architectures[{i}] {name}"))(e)),
        }
    }
    for flag in s.flags().iter().flatten() {
        let r = match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        };
        r.map_err(lib_err(format!(
            "{base}.flags {flag}: not supported by this libseccomp/kernel"
        )))?;
    }
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("{base}.syscalls[{i}]");
        let act = action(sc.action(), sc.errno_ret(), libc::EPERM as u32);
        if act == default {
            // libseccomp refuses rules that repeat the default action; they change nothing.
            continue;
        }
        let args = sc.args().clone().unwrap_or_default();
        let cmps: Vec<ScmpArgCompare> = args
            .iter()
            .enumerate()
            .map(|(j, a)| {
                if a.index() > 5 {
                    return Err(Error::invalid(format!(
                        "{field}.args[{j}].index {} is out of range (0 to 5)",
                        a.index()
                    )));
                }
                Ok(condition(
                    a.index() as u32,
                    a.op(),
                    a.value(),
                    a.value_two(),
                ))
            })
            .collect::<Result<_>>()?;
        let mut indices: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indices.sort_unstable();
        indices.dedup();
        let same_index_twice = indices.len() != args.len();
        for name in sc.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                // Profiles list syscalls of newer kernels; skip what this one lacks.
                crate::logging::debug(format!("{field}: unknown syscall {name:?} skipped"));
                continue;
            };
            let r = if cmps.is_empty() {
                ctx.add_rule(act, syscall).map(drop)
            } else if same_index_twice {
                // Conditions on the same argument cannot be ANDed in one rule: each
                // becomes its own rule, as runc does.
                cmps.iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, syscall, &[*c]).map(drop))
            } else {
                ctx.add_rule_conditional(act, syscall, &cmps).map(drop)
            };
            r.map_err(lib_err(format!("{field} ({name})")))?;
        }
    }
    Ok(Filter::Context {
        ctx,
        notify: notifies(s),
    })
}

/// SCMP_ACT_NOTIFY needs an agent to send the listener to, and may not catch the
/// runtime's own last syscalls; a listener without a notifying rule is a mistake
/// (the spec says it must not be given).
fn check_notify(s: &LinuxSeccomp) -> Result<()> {
    let base = "linux.seccomp";
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(Error::invalid(format!(
            "{base}.defaultAction: SCMP_ACT_NOTIFY cannot be the default action (the runtime's own calls before execve would wait on the agent); notify the syscalls the agent handles"
        )));
    }
    let notify = notifies(s);
    match (notify, s.listener_path()) {
        (true, None) => {
            return Err(Error::invalid(format!(
                "{base}: SCMP_ACT_NOTIFY needs {base}.listenerPath, the socket of the seccomp agent that answers the notified syscalls"
            )))
        }
        // The spec: without SCMP_ACT_NOTIFY the listener is ignored.
        (false, Some(p)) => crate::logging::debug(format!(
            "{base}.listenerPath {} ignored: no rule uses SCMP_ACT_NOTIFY",
            p.display()
        )),
        _ => {}
    }
    for (i, sc) in s.syscalls().iter().flatten().enumerate() {
        if sc.action() != LinuxSeccompAction::ScmpActNotify {
            continue;
        }
        if let Some(n) = sc
            .names()
            .iter()
            .find(|n| USED_AFTER_LOAD.contains(&n.as_str()))
        {
            return Err(Error::invalid(format!(
                "{base}.syscalls[{i}]: SCMP_ACT_NOTIFY cannot be used for {n:?}: the runtime calls it after loading the filter, before it can hand the listener to the agent"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seccomp(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn compiles_a_profile() {
        let s = seccomp(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
               "syscalls":[{"names":["mkdir","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                           {"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[
                               {"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(compile(&s).is_ok());
    }

    #[test]
    fn notify_needs_a_listener_and_spares_the_runtime_calls() {
        let cases = [
            (
                r#"{"defaultAction":"SCMP_ACT_NOTIFY","listenerPath":"/x"}"#,
                "cannot be the default",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sysinfo"],"action":"SCMP_ACT_NOTIFY"}]}"#,
                "needs linux.seccomp.listenerPath",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/x","syscalls":[{"names":["getpid","sendmsg"],"action":"SCMP_ACT_NOTIFY"}]}"#,
                "cannot be used for \"sendmsg\"",
            ),
        ];
        for (json, want) in cases {
            let e = compile(&seccomp(json)).err().unwrap().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let s = seccomp(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/x","syscalls":[{"names":["sysinfo"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(matches!(
            compile(&s),
            Ok(Filter::Context { notify: true, .. })
        ));
        assert_eq!(raw_flags(&s), Some(FLAG_NEW_LISTENER));
        // Without a notifying rule the listener is ignored, as the spec says.
        let s = seccomp(r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/x"}"#);
        assert!(matches!(
            compile(&s),
            Ok(Filter::Context { notify: false, .. })
        ));
        let s = seccomp(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/x","flags":["SECCOMP_FILTER_FLAG_TSYNC"],"syscalls":[{"names":["sysinfo"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert_eq!(raw_flags(&s), Some(FLAG_NEW_LISTENER | 1 | (1 << 4)));
    }

    #[test]
    fn the_cache_serves_every_container_whatever_its_listener() {
        let dir = tempfile::tempdir().unwrap();
        let profile = |listener: &str| {
            seccomp(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"{listener}","syscalls":[{{"names":["sysinfo"],"action":"SCMP_ACT_NOTIFY"}}]}}"#
            ))
        };
        assert!(matches!(
            compile_cached(&profile("/a/seccomp.sock"), dir.path()),
            Ok(Filter::Context { .. })
        ));
        assert!(matches!(
            compile_cached(&profile("/b/seccomp.sock"), dir.path()),
            Ok(Filter::Bpf {
                flags: FLAG_NEW_LISTENER,
                ..
            })
        ));
    }

    #[test]
    fn refuses_a_bad_index() {
        let s = seccomp(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":9,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let e = compile(&s).err().unwrap().to_string();
        assert!(e.contains("syscalls[0].args[0].index"), "{e}");
    }
}
