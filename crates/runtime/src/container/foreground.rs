//! Waiting for a container process in the foreground (`run`, `exec` without `--detach`):
//! signals sent to the runtime are forwarded to it, its pty (if the runtime holds the
//! master) is connected to our terminal, and its exit status becomes ours.

use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{Pid, WaitOptions};

use crate::console;
use crate::error::{Error, Result};
use crate::sys;

/// Signals forwarded to the container process: everything a process can catch, except
/// SIGCHLD (ours) and the faults the kernel raises synchronously in the runtime itself.
pub fn forwarded() -> Vec<i32> {
    let not_forwarded = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGCHLD,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGSYS,
    ];
    (1..=31)
        .chain(34..=64)
        .filter(|s| !not_forwarded.contains(s))
        .collect()
}

/// Blocks the forwarded signals and SIGCHLD and returns a signalfd for them. Call before
/// forking: the children unblock everything themselves.
pub fn capture_signals() -> Result<OwnedFd> {
    let mut sigs = forwarded();
    sigs.push(libc::SIGCHLD);
    sys::block_to_signalfd(&sigs).map_err(|e| Error::io("set up signal forwarding", e))
}

/// Makes orphaned descendants re-parent to us, so nothing the container leaves behind
/// escapes to the host's init while we wait.
pub fn become_subreaper() {
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
}

/// The shell convention for an exit status: the code, or 128 + the signal number.
pub fn exit_code(status: rustix::process::WaitStatus) -> i32 {
    if let Some(c) = status.exit_status() {
        c
    } else if let Some(s) = status.terminating_signal() {
        128 + s
    } else {
        1
    }
}

/// Waits for `pid` to exit, forwarding signals and proxying the pty. Other children
/// (orphans re-parented to us as subreaper) are reaped along the way.
pub fn wait(pid: i32, sigfd: &OwnedFd, master: Option<OwnedFd>) -> Result<i32> {
    let _raw = master.as_ref().map(|_| console::RawMode::enable());
    if let Some(m) = &master {
        console::copy_winsize(m.as_fd());
    }
    let stdin = sys::borrow_raw(0);
    let stdout = sys::borrow_raw(1);
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut exit: Option<i32> = None;
    loop {
        if let Some(code) = exit {
            // Drain what the process wrote before it exited.
            if let Some(m) = master.as_ref().filter(|_| master_open) {
                let mut fds = [PollFd::new(m, PollFlags::IN)];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                while poll(&mut fds, Some(&zero)).unwrap_or(0) > 0
                    && fds[0].revents().contains(PollFlags::IN)
                    && console::pump(m.as_fd(), stdout)
                {}
            }
            return Ok(code);
        }
        let mut fds = vec![PollFd::new(sigfd, PollFlags::IN)];
        if let Some(m) = master.as_ref().filter(|_| master_open) {
            fds.push(PollFd::new(m, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::io("wait for the container", e)),
        }
        let revents: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
        if !revents[0].is_empty() {
            while let Some(sig) = sys::read_signalfd(sigfd.as_fd()) {
                match sig {
                    libc::SIGCHLD => {
                        if let Some(code) = reap(pid) {
                            exit = Some(code);
                        }
                    }
                    libc::SIGWINCH => {
                        if let Some(m) = &master {
                            console::copy_winsize(m.as_fd());
                        }
                        let _ = sys::kill(pid, sig);
                    }
                    s => {
                        let _ = sys::kill(pid, s);
                    }
                }
            }
        }
        let mut i = 1;
        if let Some(m) = master.as_ref().filter(|_| master_open) {
            if revents[i].intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
                && !console::pump(m.as_fd(), stdout)
            {
                // Nothing can take our input any more either.
                master_open = false;
                stdin_open = false;
            }
            i += 1;
            if stdin_open
                && revents[i].intersects(PollFlags::IN | PollFlags::HUP)
                && !console::pump(stdin, m.as_fd())
            {
                stdin_open = false;
            }
        }
        // The SIGCHLD may have been consumed by an earlier wait: check once more.
        if exit.is_none() && !master_open && master.is_some() {
            if let Some(code) = reap(pid) {
                exit = Some(code);
            }
        }
    }
}

/// Reaps every exited child; returns the exit code if `pid` was among them.
fn reap(pid: i32) -> Option<i32> {
    let mut found = None;
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((p, status))) => {
                if Some(p) == Pid::from_raw(pid) {
                    found = Some(exit_code(status));
                }
            }
            _ => return found,
        }
    }
}
