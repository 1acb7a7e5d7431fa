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

/// A compiled filter, ready to load.
pub struct Filter(ScmpFilterContext);

impl Filter {
    /// Installs the filter on the calling thread. The syscalls the runtime makes after
    /// this point (capset, execve...) must be allowed by the profile, as with runc.
    pub fn load(&self) -> Result<()> {
        self.0
            .load()
            .map_err(|e| Error::invalid(format!("load the seccomp filter: {e}")))
    }
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
    Ok(Filter(ctx))
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
