//! The monitor's part in a container's seccomp notifications: berth-runtime sends each
//! process's listener (the OCI seccomp listener protocol) to the container's
//! `seccomp.sock`, which the monitor serves; the monitor passes it on to the seccomp
//! agent (the /proc view's server, which answers sysinfo(2) from the container's
//! cgroup) and keeps a copy. Should the agent be gone — never started, or died — the
//! monitor answers in its place by letting each call through to the kernel, so the
//! container gets the host's answer instead of waiting or failing.
//!
//! A call the agent had received but not answered when it died cannot be answered by
//! anyone else (only its id would let one do so): the monitor then lets go of its copy,
//! which makes the kernel fail that call and the later ones with ENOSYS instead of
//! leaving them waiting forever.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use rustix::event::{PollFd, PollFlags};

use crate::error::{Context, Result};

/// One process's notifications: its listener and the agent serving it (None: the
/// monitor answers).
struct Held {
    notify: OwnedFd,
    agent: Option<UnixStream>,
}

/// The relay of one container run.
pub struct Relay {
    listener: UnixListener,
    agent: PathBuf,
    /// Connections from the runtime whose state has not arrived yet.
    pending: Vec<UnixStream>,
    held: Vec<Held>,
}

/// What to poll for one descriptor of the relay, in the order of [`Relay::poll_fds`].
enum Slot {
    Listener,
    Pending(usize),
    Agent(usize),
    Notify(usize),
}

impl Relay {
    /// Listens at `socket` (reachable by a short path, see `monitor::socket_dir`) for
    /// the runtime, passing listeners on to the agent at `agent`.
    pub fn bind(socket: &Path, agent: PathBuf) -> Result<Relay> {
        let _ = std::fs::remove_file(socket);
        let listener =
            UnixListener::bind(socket).ctx(|| format!("listen on {}", socket.display()))?;
        listener.set_nonblocking(true).ctx(|| "seccomp socket")?;
        Ok(Relay {
            listener,
            agent,
            pending: Vec::new(),
            held: Vec::new(),
        })
    }

    fn slots(&self) -> Vec<Slot> {
        let mut s = vec![Slot::Listener];
        s.extend((0..self.pending.len()).map(Slot::Pending));
        for (i, h) in self.held.iter().enumerate() {
            if h.agent.is_some() {
                s.push(Slot::Agent(i));
            }
            s.push(Slot::Notify(i));
        }
        s
    }

    /// The descriptors to poll, with the events wanted.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        self.slots()
            .into_iter()
            .map(|slot| match slot {
                Slot::Listener => PollFd::new(&self.listener, PollFlags::IN),
                Slot::Pending(i) => PollFd::new(&self.pending[i], PollFlags::IN),
                Slot::Agent(i) => PollFd::new(
                    self.held[i]
                        .agent
                        .as_ref()
                        .expect("slot of a served listener"),
                    PollFlags::IN,
                ),
                // Served by the agent: only its end matters (hang-up is always
                // reported); the monitor's own: each call.
                Slot::Notify(i) => PollFd::new(
                    &self.held[i].notify,
                    if self.held[i].agent.is_some() {
                        PollFlags::empty()
                    } else {
                        PollFlags::IN
                    },
                ),
            })
            .collect()
    }

    /// Acts on what [`Relay::poll_fds`] reported (`revents` in the same order).
    pub fn handle(&mut self, revents: &[PollFlags]) {
        let slots = self.slots();
        let mut drop_held = Vec::new();
        let mut ready_pending = Vec::new();
        for (slot, rev) in slots.iter().zip(revents) {
            if rev.is_empty() {
                continue;
            }
            match *slot {
                Slot::Listener => {
                    while let Ok((c, _)) = self.listener.accept() {
                        self.pending.push(c);
                    }
                }
                Slot::Pending(i) => ready_pending.push(i),
                Slot::Agent(i) => {
                    // The agent never writes: readable means it hung up.
                    self.held[i].agent = None;
                    if orphaned(&self.held[i].notify) {
                        drop_held.push(i);
                    }
                }
                Slot::Notify(i) => {
                    if rev.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                        drop_held.push(i);
                    } else if self.held[i].agent.is_none() {
                        let_through(&self.held[i].notify);
                    }
                }
            }
        }
        drop_held.sort_unstable();
        drop_held.dedup();
        for i in drop_held.into_iter().rev() {
            self.held.remove(i);
        }
        for i in ready_pending.into_iter().rev() {
            let conn = self.pending.remove(i);
            if let Some(h) = self.take(conn) {
                self.held.push(h);
            }
        }
    }

    /// Reads the runtime's message and passes the listener on to the agent.
    fn take(&self, conn: UnixStream) -> Option<Held> {
        let _ = conn.set_nonblocking(false);
        let (state, fds) = berth_seccomp_listener::recv(conn.as_fd()).ok()?;
        let notify = berth_seccomp_listener::seccomp_fd(&state, fds)?;
        let agent = berth_seccomp_listener::connect(&self.agent)
            .ok()
            .and_then(|sock| {
                berth_seccomp_listener::send(sock.as_fd(), &state, &[notify.as_fd()]).ok()?;
                Some(UnixStream::from(sock))
            });
        Some(Held { notify, agent })
    }
}

/// Whether a call the agent received is left unanswered (the kernel reports it as
/// writable: a response is awaited).
fn orphaned(notify: &OwnedFd) -> bool {
    let mut p = [PollFd::new(notify, PollFlags::OUT)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut p, Some(&zero)), Ok(n) if n > 0)
        && p[0].revents().contains(PollFlags::OUT)
}

/// Receives one call and lets the kernel answer it.
fn let_through(notify: &OwnedFd) {
    let fd = notify.as_raw_fd();
    if let Ok(req) = ScmpNotifReq::receive(fd) {
        let _ = ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::empty()).respond(fd);
    }
}
