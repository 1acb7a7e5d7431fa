//! The seccomp listener protocol of the OCI runtime spec (`linux.seccomp.listenerPath`):
//! over a SOCK_STREAM unix socket the runtime sends one [`ContainerProcessState`] as
//! JSON, with the seccomp user-notification descriptors it names in `fds` passed as
//! SCM_RIGHTS in the same message, then closes its end. berth-runtime sends it, the
//! engine's container monitor relays it and the /proc view's server (berth-procview)
//! answers the notifications; all three speak it through this crate.
//!
//! Written here because no crate implements the protocol; it is one sendmsg and a JSON
//! reader.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

pub use oci_spec::runtime::{ContainerProcessState, SECCOMP_FD_NAME};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The longest message accepted: a state is a few hundred bytes (annotations can add
/// some); anything near this is not a runtime speaking the protocol.
pub const MAX_MESSAGE: usize = 1 << 20;

/// How long a reader waits for the rest of a message whose first bytes came.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest path a unix socket address holds (sun_path, with its NUL).
const SUN_PATH_MAX: usize = 107;

/// Connects to the listener at `path`. A path longer than a socket address allows is
/// reached through its directory, opened O_PATH, as `/proc/self/fd/N/NAME`.
pub fn connect(path: &Path) -> std::io::Result<OwnedFd> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    if path.as_os_str().len() <= SUN_PATH_MAX {
        rustix::net::connect(&sock, &rustix::net::SocketAddrUnix::new(path)?)?;
        return Ok(sock);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    let dir = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    use std::os::fd::AsRawFd;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    rustix::net::connect(&sock, &rustix::net::SocketAddrUnix::new(short)?)?;
    Ok(sock)
}

/// Sends `state` with `fds` (in the order `state.fds()` names them) in one message.
pub fn send(
    sock: BorrowedFd<'_>,
    state: &ContainerProcessState,
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    send_encoded(sock, &encode(state)?, fds)
}

/// The bytes [`send`] sends for `state`.
pub fn encode(state: &ContainerProcessState) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec(state).map_err(std::io::Error::other)
}

/// Sends a state [`encode`]d already, allocating nothing: for a process that has just
/// installed the seccomp filter whose listener it sends, where any syscall beyond
/// sendmsg and sendto could be one the filter hands to the agent that has no
/// listener yet.
pub fn send_encoded(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    // Room for four descriptors' control message (CMSG_SPACE(16) is 32 bytes) with
    // any alignment the buffer needs.
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); 128];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    // The descriptors travel with the first byte; the rest may need more writes.
    let mut sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    while sent < data.len() {
        sent += rustix::net::send(sock, &data[sent..], SendFlags::NOSIGNAL)?;
    }
    Ok(())
}

/// Receives one message: the state and the descriptors that came with it. Reads until
/// the JSON document is complete (the sender may keep the connection open), waiting at
/// most [`READ_TIMEOUT`] for each part.
pub fn recv(sock: BorrowedFd<'_>) -> std::io::Result<(ContainerProcessState, Vec<OwnedFd>)> {
    let timeout = Some(READ_TIMEOUT);
    rustix::net::sockopt::set_socket_timeout(sock, rustix::net::sockopt::Timeout::Recv, timeout)?;
    let mut data = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut space =
            vec![std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            sock,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = msg {
                fds.extend(passed);
            }
        }
        if got.bytes == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the sender closed the connection before a whole container process state",
            ));
        }
        data.extend_from_slice(&buf[..got.bytes]);
        match serde_json::from_slice::<ContainerProcessState>(&data) {
            Ok(state) => {
                let _ = rustix::net::sockopt::set_socket_timeout(
                    sock,
                    rustix::net::sockopt::Timeout::Recv,
                    None,
                );
                if state.fds().len() != fds.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "the state names {} descriptors but {} came with it",
                            state.fds().len(),
                            fds.len()
                        ),
                    ));
                }
                return Ok((state, fds));
            }
            Err(e) if e.is_eof() && data.len() < MAX_MESSAGE => continue,
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a container process state: {e}"),
                ))
            }
        }
    }
}

/// The descriptor `state` names [`SECCOMP_FD_NAME`], taken out of `fds`.
pub fn seccomp_fd(state: &ContainerProcessState, fds: Vec<OwnedFd>) -> Option<OwnedFd> {
    let i = state.fds().iter().position(|n| n == SECCOMP_FD_NAME)?;
    fds.into_iter().nth(i)
}

/// Whether `fd` is still usable by the other end (no hang-up): a zero-timeout poll.
pub fn is_open(fd: impl AsFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut p = [PollFd::new(&fd, PollFlags::empty())];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut p, Some(&zero)) {
        Ok(0) => true,
        Ok(_) => !p[0]
            .revents()
            .intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: i32) -> ContainerProcessState {
        let mut s = ContainerProcessState::default();
        s.set_version("1.2.0".into());
        s.set_fds(vec![SECCOMP_FD_NAME.into()]);
        s.set_pid(pid);
        s.set_metadata(Some("c1".into()));
        s
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_state_and_its_descriptor_cross_a_socket() {
        let (a, b) = pair();
        let file = std::fs::File::open("/dev/null").unwrap();
        send(a.as_fd(), &state(42), &[file.as_fd()]).unwrap();
        let (got, fds) = recv(b.as_fd()).unwrap();
        assert_eq!(*got.pid(), 42);
        assert_eq!(got.metadata().as_deref(), Some("c1"));
        assert!(seccomp_fd(&got, fds).is_some());
    }

    #[test]
    fn a_message_without_its_descriptor_or_cut_short_is_refused() {
        let (a, b) = pair();
        send(a.as_fd(), &state(1), &[]).unwrap();
        let e = recv(b.as_fd()).unwrap_err().to_string();
        assert!(e.contains("names 1 descriptors but 0"), "{e}");
        let (a, b) = pair();
        rustix::net::send(&a, b"{\"ociVersion\":", SendFlags::empty()).unwrap();
        drop(a);
        let e = recv(b.as_fd()).unwrap_err().to_string();
        assert!(e.contains("closed the connection"), "{e}");
    }

    #[test]
    fn a_long_listener_path_is_reached_through_its_directory() {
        let dir = std::env::temp_dir().join(format!(
            "berth-listener-{}-{}",
            std::process::id(),
            "x".repeat(90)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seccomp.sock");
        assert!(path.as_os_str().len() > SUN_PATH_MAX);
        let dfd = std::fs::File::open(&dir).unwrap();
        use std::os::fd::AsRawFd;
        let short = format!("/proc/self/fd/{}/seccomp.sock", dfd.as_raw_fd());
        let l = std::os::unix::net::UnixListener::bind(&short).unwrap();
        let c = connect(&path).unwrap();
        let (server, _) = l.accept().unwrap();
        send(c.as_fd(), &state(7), &[dfd.as_fd()]).unwrap();
        let (got, _) = recv(server.as_fd()).unwrap();
        assert_eq!(*got.pid(), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
