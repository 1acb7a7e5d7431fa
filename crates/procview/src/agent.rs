//! The seccomp agent of the /proc view: containers' sysinfo(2) calls, handed over by
//! their seccomp filters (SCMP_ACT_NOTIFY), are answered from the caller's cgroup, as
//! LXD's sysinfo interception does. The view's files answer programs that read /proc;
//! this answers those that ask the kernel (busybox `free` and `uptime`, runtimes that
//! size their heaps from totalram).
//!
//! One thread serves every container: the listener socket (the OCI seccomp listener
//! protocol, see berth-seccomp-listener) and each container's notification descriptor
//! in one epoll set. A notification the agent cannot answer (another syscall, a
//! 32-bit caller, a vanished process, unreadable cgroups) is let through to the
//! kernel (SECCOMP_USER_NOTIF_FLAG_CONTINUE): the container then gets the host's
//! answer, never an error of the agent's making.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libseccomp::{ScmpArch, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall};
use rustix::event::epoll;

use crate::cgroup::{Cgroups, Mounts};
use crate::load::Loads;
use crate::sysinfo::Answer;

/// The agent's socket beside the view's mountpoint (`/run/berth/procview.sock`).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    mountpoint.with_extension("sock")
}

/// A container process's notifications, and the connection that brought them (kept
/// open: the container's monitor takes over the answers when it closes).
struct Served {
    notify: OwnedFd,
    _conn: UnixStream,
    /// When the container started (clock ticks since boot), found at its first call:
    /// its age is asked with every call, and finding its oldest process costs a read
    /// per process. A container restarted under the same name sends a new listener.
    start: Option<Option<u64>>,
}

/// Listens at `path` (root only) and serves on a thread of its own.
pub fn spawn(path: &Path, loads: Arc<Loads>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &ep,
        &listener,
        epoll::EventData::new_u64(0),
        epoll::EventFlags::IN,
    )?;
    std::thread::Builder::new()
        .name("seccomp-agent".into())
        .spawn(move || serve(ep, listener, &loads))?;
    Ok(())
}

fn serve(ep: OwnedFd, listener: UnixListener, loads: &Loads) {
    let mounts = berth_cgroups::Layout::host();
    let sysinfo = ScmpSyscall::from_name("sysinfo").ok();
    let mut served: HashMap<u64, Served> = HashMap::new();
    let mut next = 1u64;
    let mut events = Vec::with_capacity(64);
    loop {
        events.clear();
        if let Err(e) = epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None) {
            if e == rustix::io::Errno::INTR {
                continue;
            }
            eprintln!("berth-procview: seccomp agent: epoll: {e}");
            return;
        }
        for ev in &events {
            let key = ev.data.u64();
            if key == 0 {
                while let Ok((conn, _)) = listener.accept() {
                    match take(conn) {
                        Ok(s) => {
                            if epoll::add(
                                &ep,
                                &s.notify,
                                epoll::EventData::new_u64(next),
                                epoll::EventFlags::IN,
                            )
                            .is_ok()
                            {
                                served.insert(next, s);
                                next += 1;
                            }
                        }
                        Err(e) => eprintln!("berth-procview: seccomp agent: {e}"),
                    }
                }
                continue;
            }
            let flags = ev.flags;
            if flags.contains(epoll::EventFlags::IN) {
                if let Some(s) = served.get_mut(&key) {
                    answer_one(s, sysinfo, &mounts, loads);
                }
            }
            // Every process of the filter has exited: nothing more will come.
            if flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::ERR) {
                if let Some(s) = served.remove(&key) {
                    let _ = epoll::delete(&ep, &s.notify);
                }
            }
        }
    }
}

/// Reads a connection's container process state and its notification descriptor.
fn take(conn: UnixStream) -> std::io::Result<Served> {
    conn.set_nonblocking(false)?;
    let (state, fds) = berth_seccomp_listener::recv(conn.as_fd())?;
    let notify = berth_seccomp_listener::seccomp_fd(&state, fds).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the container process state names no seccompFd",
        )
    })?;
    Ok(Served {
        notify,
        _conn: conn,
        start: None,
    })
}

/// Receives one notification and answers it (or lets the kernel answer it).
fn answer_one(served: &mut Served, sysinfo: Option<ScmpSyscall>, mounts: &Mounts, loads: &Loads) {
    let raw = served.notify.as_raw_fd();
    let Ok(req) = ScmpNotifReq::receive(raw) else {
        // Gone already (the caller was killed, or another holder took it).
        return;
    };
    // The answer is written as a 64-bit struct sysinfo: a native caller of a 32-bit
    // build would get more than its struct holds.
    let ours = cfg!(target_pointer_width = "64")
        && Some(req.data.syscall) == sysinfo
        && req.data.arch == ScmpArch::native();
    let answered = ours && write_sysinfo(raw, &req, mounts, loads, &mut served.start);
    let resp = if answered {
        ScmpNotifResp::new_val(req.id, 0, ScmpNotifRespFlags::empty())
    } else {
        ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::empty())
    };
    // The caller may have been killed meanwhile: nothing is waiting then.
    let _ = resp.respond(raw);
}

/// Writes the container's sysinfo into the caller's buffer. The caller's memory is
/// opened before the notification is checked to be still pending, so the descriptor
/// cannot belong to a process that reused the pid (seccomp_unotify(2)).
fn write_sysinfo(
    fd: i32,
    req: &ScmpNotifReq,
    mounts: &Mounts,
    loads: &Loads,
    start: &mut Option<Option<u64>>,
) -> bool {
    let Some(cg) = Cgroups::of(req.pid, mounts) else {
        return false;
    };
    let start = *start.get_or_insert_with(|| crate::render::container_start(&cg));
    let answer = Answer::for_container(&cg, loads.get(&cg), start, Answer::host());
    let Ok(mem) = rustix::fs::open(
        format!("/proc/{}/mem", req.pid),
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return false;
    };
    if libseccomp::notify_id_valid(fd, req.id).is_err() {
        return false;
    }
    let bytes = answer.to_lp64();
    matches!(rustix::io::pwrite(&mem, &bytes, req.data.args[0]), Ok(n) if n == bytes.len())
}
