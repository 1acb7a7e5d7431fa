//! Seccomp filters from `linux.seccomp`, compiled with libseccomp.
//!
//! The filter is compiled in the runtime process before any fork, so a bad profile fails
//! `create` with a clear error and nothing to clean up; the container's init only loads it.

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
    /// Compiled now.
    Context(ScmpFilterContext),
    /// From the cache: the program and the seccomp(2) flags to load it with.
    Bpf {
        /// The BPF program (8-byte instructions, native order).
        prog: Vec<u8>,
        /// SECCOMP_FILTER_FLAG_* bits.
        flags: u32,
    },
}

impl Filter {
    /// Installs the filter on the calling thread. The syscalls the runtime makes after
    /// this point (capset, execve...) must be allowed by the profile, as with runc.
    pub fn load(&self) -> Result<()> {
        match self {
            Filter::Context(c) => c
                .load()
                .map_err(|e| Error::invalid(format!("load the seccomp filter: {e}"))),
            Filter::Bpf { prog, flags } => crate::sys::seccomp_load_bpf(prog, *flags)
                .map_err(|e| Error::io("load the seccomp filter", e)),
        }
    }
}

/// The seccomp(2) flags a profile asks for, if the cached path can load it.
fn raw_flags(s: &LinuxSeccomp) -> Option<u32> {
    let mut f = 0;
    for flag in s.flags().iter().flatten() {
        f |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => return None,
        };
    }
    Some(f)
}

/// [`compile`], remembering the BPF program under `cache` (keyed by a hash of the
/// profile, this runtime's version and the kernel's release): a large allowlist
/// (docker's profile has ~350 rules per architecture) costs libseccomp several
/// milliseconds to compile, loading a cached program costs nothing. crun does the same.
pub fn compile_cached(s: &LinuxSeccomp, cache: &std::path::Path) -> Result<Filter> {
    use sha2::Digest as _;
    let Some(flags) = raw_flags(s) else {
        return compile(s);
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(s).unwrap_or_default());
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
    if let Filter::Context(ctx) = &filter {
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

fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    default_errno: u32,
    field: &str,
) -> Result<ScmpAction> {
    Ok(match a {
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
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::unsupported(format!(
                "{field}: SCMP_ACT_NOTIFY (seccomp user notification) is not supported by berth-runtime"
            )))
        }
    })
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
    if s.listener_path().is_some() {
        return Err(Error::unsupported(format!(
            "{base}.listenerPath: seccomp user notification is not supported by berth-runtime"
        )));
    }
    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        default_errno,
        &format!("{base}.defaultAction"),
    )?;
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
        let act = action(
            sc.action(),
            sc.errno_ret(),
            libc::EPERM as u32,
            &format!("{field}.action"),
        )?;
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
    Ok(Filter::Context(ctx))
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
    fn refuses_notify_and_bad_index() {
        let s = seccomp(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        let e = compile(&s).err().unwrap().to_string();
        assert!(e.contains("SCMP_ACT_NOTIFY"), "{e}");
        let s = seccomp(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":9,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        let e = compile(&s).err().unwrap().to_string();
        assert!(e.contains("syscalls[0].args[0].index"), "{e}");
    }
}
