//! Getting a process into a container's namespaces and cgroups: the runtime forks a
//! first child that joins/creates the namespaces, which forks (CLONE_PARENT) the process
//! that runs in them, so that process is the runtime's own child and, with a new pid
//! namespace, pid 1 there.
//!
//! The runtime never starts threads, so forking is safe; the children share the
//! runtime's memory image and need no serialized configuration.

use std::io::Write;
use std::os::fd::AsFd;

use oci_spec::runtime::LinuxIdMapping;

use crate::cgroups::CgroupJoin;
use crate::error::{Context, Error, Result};
use crate::namespaces::{self, Plan};
use crate::sync::{Channel, Msg};
use crate::sys::{self, Forked};

/// What the first child needs.
pub struct Stage1<'a> {
    /// How to join the container's cgroups.
    pub cgroup: &'a CgroupJoin,
    /// Whether the container process gets a new cgroup namespace (created by the
    /// process itself once it is in its cgroups, so the namespace is rooted there).
    pub new_cgroupns: bool,
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
    // Signal handling inherited from the runtime (blocked signals, ignored dispositions)
    // must not reach the container.
    sys::reset_signals();
    // Keep /proc/<pid> of the setup processes closed to the container (until exec).
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    crate::logging::phase("setup: begin");
    for f in &stage.cgroup.v1 {
        (&*f)
            .write_all(b"0")
            .ctx(|| "join the container's cgroup")?;
    }
    let into_cgroup = stage.cgroup.unified_dir.as_ref();
    if into_cgroup.is_none() {
        if let Some(f) = &stage.cgroup.unified_procs {
            (&*f)
                .write_all(b"0")
                .ctx(|| "join the container's cgroup")?;
        }
    }
    crate::logging::phase("setup: joined cgroups");
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
        // A runtime without root writes the maps (and setgroups) as this process's
        // owner, which a non-dumpable process's /proc files are not: dumpable for the
        // while, as for the time offsets (no container process can reach this one).
        let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable);
        stage.chan.send(&Msg::NeedIdMaps)?;
        let mapped = stage.chan.expect(&Msg::IdMapsDone);
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
        mapped?;
        if namespaces::maps_root(stage.uid_maps) {
            sys::setresgid(0).ctx(|| "become gid 0 in the user namespace")?;
            sys::setresuid(0).ctx(|| "become uid 0 in the user namespace")?;
        }
    }
    // The cgroup namespace is made by the container process itself (see new_cgroupns).
    let create = stage.ns.create & !libc::CLONE_NEWCGROUP;
    if create != 0 {
        sys::unshare(create).ctx(|| "create the container's namespaces")?;
    }
    crate::logging::phase("setup: namespaces created");
    if let Some(offsets) = &stage.time_offsets {
        write_time_offsets(offsets)?;
    }
    let forked = match into_cgroup {
        Some(dir) => match sys::clone_parent_into_cgroup(dir.as_fd()) {
            // No clone3 or no CLONE_INTO_CGROUP in this kernel: join the slow way.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::E2BIG)
                ) =>
            {
                if let Some(f) = &stage.cgroup.unified_procs {
                    (&*f)
                        .write_all(b"0")
                        .ctx(|| "join the container's cgroup")?;
                }
                sys::clone_parent()
            }
            r => r,
        },
        None => sys::clone_parent(),
    };
    match forked.ctx(|| "fork the container process")? {
        Forked::Parent(pid) => {
            stage.chan.send(&Msg::InitPid(pid))?;
            Ok(())
        }
        Forked::Child => {
            let result = if stage.new_cgroupns {
                sys::unshare(libc::CLONE_NEWCGROUP)
                    .ctx(|| "create the cgroup namespace")
                    .and_then(|()| body())
            } else {
                body()
            };
            let err = match result {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let _ = stage.chan.send(&Msg::Failed(err.to_string()));
            sys::exit_now(1)
        }
    }
}

/// Writes the offsets of the new time namespace (before any process enters it). The
/// process is made dumpable for the write: a non-dumpable process's /proc files belong
/// to host root, which a new user namespace does not map. This setup process is outside
/// the container's pid namespace, so no container process can reach it meanwhile.
fn write_time_offsets(offsets: &str) -> Result<()> {
    use rustix::process::DumpableBehavior;
    use std::io::Write;
    let _ = rustix::process::set_dumpable_behavior(DumpableBehavior::Dumpable);
    let result = (|| {
        let proc = pathrs::procfs::ProcfsHandle::new().ctx(|| "open a private procfs")?;
        let mut f = proc
            .open(
                pathrs::procfs::ProcfsBase::ProcSelf,
                "timens_offsets",
                pathrs::flags::OpenFlags::O_WRONLY,
            )
            .ctx(|| "open /proc/self/timens_offsets")?;
        f.write_all(offsets.as_bytes()).map_err(|e| {
            Error::invalid(format!(
                "linux.timeOffsets: the kernel refused {offsets:?}: {e}"
            ))
        })
    })();
    let _ = rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable);
    result
}

/// Waits for the first child and reports how it ended (it exits right after forking).
pub fn reap(pid: i32) {
    let _ = rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid),
        rustix::process::WaitOptions::empty(),
    );
}
