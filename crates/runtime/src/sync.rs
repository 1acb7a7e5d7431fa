//! The channel between the runtime and the processes that set up a container: one
//! SOCK_SEQPACKET socket pair, one JSON message per packet.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// A message between the runtime (parent) and its setup children.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Child → parent: entered a new user namespace, please write the id maps.
    NeedIdMaps,
    /// Parent → child: the id maps are written.
    IdMapsDone,
    /// Child → parent: host pid of the container's init process.
    InitPid(i32),
    /// Parent → exec'd process: your pid as the runtime sees it (for the seccomp agent).
    HostPid(i32),
    /// Init → parent: mounts are done; run the prestart/createRuntime hooks now.
    RunRuntimeHooks,
    /// Parent → init: hooks ran, go on.
    Continue,
    /// Init → parent: set up, now waiting for `start`.
    Ready,
    /// Child → parent: setup failed with this message.
    Failed(String),
}

/// One end of the setup channel.
pub struct Channel(OwnedFd);

impl Channel {
    /// A connected pair (close-on-exec): (parent end, child end).
    pub fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .ctx(|| "create the setup socket pair")?;
        Ok((Channel(a), Channel(b)))
    }

    /// Sends one message.
    pub fn send(&self, msg: &Msg) -> Result<()> {
        let data = serde_json::to_vec(msg).expect("messages serialize");
        rustix::net::send(&self.0, &data, SendFlags::NOSIGNAL)
            .ctx(|| "send on the setup channel")?;
        Ok(())
    }

    /// Receives one message; the peer closing its end is reported as an error saying
    /// the setup process died.
    pub fn recv(&self) -> Result<Msg> {
        let mut buf = vec![0u8; 64 * 1024];
        let n = loop {
            match rustix::net::recv(&self.0, &mut buf, RecvFlags::empty()) {
                Ok((n, _)) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::io("receive on the setup channel", e)),
            }
        };
        if n == 0 {
            return Err(Error::Child(
                "the container's setup process exited without reporting (see the log for a crash)"
                    .into(),
            ));
        }
        serde_json::from_slice(&buf[..n])
            .map_err(|e| Error::Child(format!("bad message on the setup channel: {e}")))
    }

    /// Receives a message and turns a `Failed` report into an error.
    pub fn expect(&self, want: &Msg) -> Result<()> {
        match self.recv()? {
            Msg::Failed(m) => Err(Error::Child(m)),
            m if &m == want => Ok(()),
            m => Err(Error::Child(format!(
                "unexpected message on the setup channel: {m:?} (expected {want:?})"
            ))),
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_eof() {
        let (a, b) = Channel::pair().unwrap();
        b.send(&Msg::InitPid(42)).unwrap();
        assert_eq!(a.recv().unwrap(), Msg::InitPid(42));
        b.send(&Msg::Failed("boom".into())).unwrap();
        let e = a.expect(&Msg::Ready).unwrap_err().to_string();
        assert_eq!(e, "boom");
        drop(b);
        assert!(a.recv().is_err());
    }
}
