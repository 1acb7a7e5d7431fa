//! Getting a process into a container's namespaces and cgroups: the runtime forks a
//! first child that joins/creates the namespaces, which forks (CLONE_PARENT) the process
//! that runs in them, so that process is the runtime's own child and, with a new pid
//! namespace, pid 1 there.
//!
//! The runtime never starts threads, so forking is safe; the children share the
//! runtime's memory image and need no serialized configuration.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;

use oci_spec::runtime::LinuxIdMapping;

use crate::error::{Context, Error, Result};
use crate::namespaces::{self, Plan};
use crate::sync::{Channel, Msg};
use crate::sys::{self, Forked};

/// What the first child needs.
pub struct Stage1<'a> {
    /// Open `cgroup.procs` files to join.
    pub cgroup_procs: &'a [File],
    /// Namespaces to join and create.
    pub ns: &'a Plan,
    /// Container uid mappings (for deciding whether to become root in a new userns).
    pub uid_maps: &'a [LinuxIdMapping],
    /// `linux.timeOffsets` text for a new time namespace.
    pub time_offsets: Option<String>,
    /// The child's end of the setup channel.
    pub chan: &'a Channel,
    /// Descriptors of the runtime that the children must close at once (the container
    /// directory lock: flock locks live as long as any copy of the descriptor).
    pub close: Vec<std::os::fd::RawFd>,
}

/// Resets signal handling inherited from the runtime (blocked signals, ignored
/// dispositions) so the container starts with defaults.
pub fn reset_signals() {
    sys::reset_signals();
}

/// Forks the first child, which enters the namespaces and forks `body` as the container
/// process. Returns the first child's pid; the container process's pid arrives on the
/// channel as [`Msg::InitPid`].
pub fn spawn(
    stage: &Stage1<'_>,
    body: impl FnOnce() -> Result<std::convert::Infallible>,
) -> Result<i32> {
    match sys::fork().ctx(|| "fork the setup process")? {
        Forked::Parent(pid) => Ok(pid),
        Forked::Child => {
            let code = match stage1(stage, body) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = stage.chan.send(&Msg::Failed(e.to_string()));
                    1
                }
            };
            sys::exit_now(code)
        }
    }
}

fn stage1(
    stage: &Stage1<'_>,
    body: impl FnOnce() -> Result<std::convert::Infallible>,
) -> Result<()> {
    for &fd in &stage.close {
        sys::close_raw(fd);
    }
    reset_signals();
    // Keep /proc/<pid> of the setup processes closed to the container (until exec).
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    for f in stage.cgroup_procs {
        (&*f)
            .write_all(b"0")
            .ctx(|| "join the container's cgroup")?;
    }
    for j in &stage.ns.join {
        sys::setns(j.fd.as_fd(), j.flag).map_err(|e| {
            Error::invalid(format!(
                "join the {} namespace {}: {e}",
                namespaces::proc_name(j.flag),
                j.path.display()
            ))
        })?;
    }
    if stage.ns.new_user {
        sys::unshare(libc::CLONE_NEWUSER).ctx(|| "create the user namespace")?;
        stage.chan.send(&Msg::NeedIdMaps)?;
        stage.chan.expect(&Msg::IdMapsDone)?;
        if namespaces::maps_root(stage.uid_maps) {
            sys::setresgid(0).ctx(|| "become gid 0 in the user namespace")?;
            sys::setresuid(0).ctx(|| "become uid 0 in the user namespace")?;
        }
    }
    if stage.ns.create != 0 {
        sys::unshare(stage.ns.create).ctx(|| "create the container's namespaces")?;
    }
    if let Some(offsets) = &stage.time_offsets {
        std::fs::write("/proc/self/timens_offsets", offsets)
            .map_err(|e| Error::invalid(format!("linux.timeOffsets: {e}")))?;
    }
    match sys::clone_parent().ctx(|| "fork the container process")? {
        Forked::Parent(pid) => {
            stage.chan.send(&Msg::InitPid(pid))?;
            Ok(())
        }
        Forked::Child => {
            let err = match body() {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let _ = stage.chan.send(&Msg::Failed(err.to_string()));
            sys::exit_now(1)
        }
    }
}

/// Waits for the first child and reports how it ended (it exits right after forking).
pub fn reap(pid: i32) {
    let _ = rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid),
        rustix::process::WaitOptions::empty(),
    );
}
