//! A minimal init for containers started with the `berth.init` annotation (what
//! `docker run --init` gets from tini): pid 1 forks the user program, forwards the
//! signals it receives to it, reaps every orphan that the pid namespace hands it, and
//! exits with the program's status (128 + signal when it was killed).
//!
//! Written here rather than bind-mounting a separate init binary: the container's init
//! already runs the runtime's code, so it can stay behind as pid 1 with no file in the
//! container and no dependency on the image's libc.

use std::os::fd::{AsFd, BorrowedFd, RawFd};

use rustix::process::{WaitOptions, WaitStatus};

use crate::error::Error;
use crate::sys;

/// The annotation that asks for the init.
pub const ANNOTATION: &str = "berth.init";

/// The annotation that makes the container's init a pod sandbox's infra process
/// (what the kubelet's pause container is): it runs no program at all.
pub const INFRA_ANNOTATION: &str = "berth.infra";

/// Every signal an init may catch (all but KILL and STOP, and glibc's two reserved
/// real-time signals, which cannot be blocked through libc).
fn catchable() -> Vec<i32> {
    (1..=64)
        .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP && s != 32 && s != 33)
        .collect()
}

/// Becomes the reaping init: forks, runs `exec` in the child (which returns only on
/// failure), and supervises it in the parent. `fifo` is the exec fifo that `start`
/// watches: only the child may hold it, so `start` returns once the program runs.
/// Never returns.
pub fn run(fifo: RawFd, args: &[std::ffi::CString], exec: impl FnOnce() -> Error) -> ! {
    let sigfd = match sys::block_to_signalfd(&catchable()) {
        Ok(fd) => fd,
        Err(e) => fail(&Error::io("init: block signals", e)),
    };
    let child = match sys::fork() {
        Ok(sys::Forked::Child) => {
            drop(sigfd);
            sys::reset_signals();
            let err = exec();
            eprintln!("berth-runtime: {err}");
            sys::exit_now(127)
        }
        Ok(sys::Forked::Parent(pid)) => pid,
        Err(e) => fail(&Error::io("init: fork the program", e)),
    };
    sys::close_raw(fifo);
    // Inside the container, pid 1 shows as what it is rather than as the runtime's
    // command line with host paths: `berth-init -- PROGRAM ARGS`, like docker's init.
    let _ = rustix::thread::set_name(c"berth-init");
    let mut line = b"berth-init\0--\0".to_vec();
    for a in args {
        line.extend_from_slice(a.as_bytes_with_nul());
    }
    let _ = sys::set_cmdline(&line);
    supervise(child, sigfd.as_fd())
}

/// Becomes a pod sandbox's infra process: pid 1 of the pod's namespaces that runs
/// nothing, reaps the orphans a shared PID namespace hands it, and exits 0 on SIGTERM,
/// SIGINT or SIGHUP. The runtime's own code stays behind, so the sandbox needs no image
/// and no file of its own. `fifo` is closed so that `start` returns. Never returns.
pub fn hold(fifo: RawFd) -> ! {
    let sigfd = match sys::block_to_signalfd(&catchable()) {
        Ok(fd) => fd,
        Err(e) => fail(&Error::io("infra: block signals", e)),
    };
    sys::close_raw(fifo);
    let _ = rustix::thread::set_name(c"berth-infra");
    let _ = sys::set_cmdline(b"berth-infra\0");
    loop {
        wait_for_signals(sigfd.as_fd(), "infra");
        while let Some(sig) = sys::read_signalfd(sigfd.as_fd()) {
            if matches!(sig, libc::SIGTERM | libc::SIGINT | libc::SIGHUP) {
                sys::exit_now(0);
            }
        }
        while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
    }
}

fn fail(err: &Error) -> ! {
    eprintln!("berth-runtime: {err}");
    sys::exit_now(127)
}

/// Sleeps until a signal is pending on `sigfd` (`who` names the caller in errors).
fn wait_for_signals(sigfd: BorrowedFd<'_>, who: &str) {
    let mut fds = [rustix::event::PollFd::new(
        &sigfd,
        rustix::event::PollFlags::IN,
    )];
    match rustix::event::poll(&mut fds, None) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => fail(&Error::io(
            format!("{who}: wait for signals"),
            std::io::Error::from(e),
        )),
    }
}

fn supervise(child: i32, sigfd: BorrowedFd<'_>) -> ! {
    loop {
        wait_for_signals(sigfd, "init");
        while let Some(sig) = sys::read_signalfd(sigfd) {
            if sig != libc::SIGCHLD {
                // The program may be gone already; nothing to forward to then.
                let _ = sys::kill(child, sig);
            }
        }
        // SIGCHLD coalesces: reap until nothing is left, whatever woke us.
        while let Ok(Some((pid, status))) = rustix::process::waitpid(None, WaitOptions::NOHANG) {
            if pid.as_raw_nonzero().get() == child {
                sys::exit_now(exit_code(status));
            }
        }
    }
}

/// The shell's convention, as tini and docker use it.
fn exit_code(status: WaitStatus) -> i32 {
    if let Some(code) = status.exit_status() {
        code
    } else if let Some(sig) = status.terminating_signal() {
        128 + sig
    } else {
        1
    }
}
