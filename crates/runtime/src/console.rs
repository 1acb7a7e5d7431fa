//! Terminals: the container's pty is opened inside the container's devpts, checked to be
//! what it claims, and its master sent to the `--console-socket` with SCM_RIGHTS (or
//! proxied to our own stdio when `run` is in the foreground).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::pty::OpenptFlags;

use crate::error::{Context, Error, Result};

const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

/// Sends `fd` over a unix socket with `name` as the payload (runc sends the pty path).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>, name: &str) -> Result<()> {
    let fds = [fd];
    let mut space = [MaybeUninit::<u8>::uninit(); 64];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let payload = if name.is_empty() { "/" } else { name };
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(payload.as_bytes())],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .ctx(|| "send the pty master to the console socket")?;
    Ok(())
}

/// Receives one descriptor sent with [`send_fd`].
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    let mut space = [MaybeUninit::<u8>::uninit(); 64];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .ctx(|| "receive the pty master")?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(Error::Child(
        "no descriptor arrived on the console socket".into(),
    ))
}

/// Connects to the `--console-socket` path given to create/run/exec.
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ctx(|| "create a unix socket")?;
    let addr = rustix::net::SocketAddrUnix::new(path)
        .ctx(|| format!("console socket path {}", path.display()))?;
    rustix::net::connect(&sock, &addr).ctx(|| {
        format!(
            "connect to --console-socket {} (is the receiving program listening?)",
            path.display()
        )
    })?;
    Ok(sock)
}

/// A pty pair opened inside the container.
pub struct Pty {
    /// The slave's path in the container (/dev/pts/N), which runc sends along.
    pub name: String,
    /// The master side, handed to the caller.
    pub master: OwnedFd,
    /// The slave side, which becomes the container process's stdio.
    pub slave: OwnedFd,
}

/// Opens a new pty through the container's /dev/ptmx, and checks that both ends really
/// are devpts devices (a container could have replaced /dev/ptmx with something else).
pub fn open_pty(size: Option<(u16, u16)>) -> Result<Pty> {
    let master = rustix::fs::open(
        "/dev/ptmx",
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open /dev/ptmx in the container (is devpts mounted at /dev/pts?)")?;
    verify_pty(master.as_fd(), true)?;
    rustix::pty::unlockpt(&master).ctx(|| "unlock the pty")?;
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )
    .ctx(|| "open the pty slave (TIOCGPTPEER)")?;
    verify_pty(slave.as_fd(), false)?;
    if let Some((h, w)) = size {
        let ws = rustix::termios::Winsize {
            ws_row: h,
            ws_col: w,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&slave, ws).ctx(|| "set the console size")?;
    }
    let name = rustix::pty::ptsname(&master, Vec::new())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Pty {
        name,
        master,
        slave,
    })
}

fn verify_pty(fd: BorrowedFd<'_>, master: bool) -> Result<()> {
    let st = rustix::fs::fstat(fd).ctx(|| "stat the pty")?;
    let fs = rustix::fs::fstatfs(fd).ctx(|| "statfs the pty")?;
    let is_chr = (st.st_mode & libc::S_IFMT) == libc::S_IFCHR;
    let major = rustix::fs::major(st.st_rdev);
    let minor = rustix::fs::minor(st.st_rdev);
    let ok = if master {
        // /dev/ptmx is either devpts' own ptmx or a real 5:2 node.
        is_chr && ((major == 5 && minor == 2) || fs.f_type as i64 == DEVPTS_SUPER_MAGIC)
    } else {
        // Unix98 pty slaves use majors 136-143 and live on devpts.
        is_chr && (136..=143).contains(&major) && fs.f_type as i64 == DEVPTS_SUPER_MAGIC
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "the container's {} is not a devpts terminal (device {major}:{minor}); refusing to use it",
            if master { "/dev/ptmx" } else { "pty slave" }
        )))
    }
}

/// Makes a pty slave the calling process's controlling terminal and stdio.
pub fn attach_slave(slave: &OwnedFd) -> Result<()> {
    rustix::stdio::dup2_stdin(slave).ctx(|| "dup the pty to stdin")?;
    rustix::stdio::dup2_stdout(slave).ctx(|| "dup the pty to stdout")?;
    rustix::stdio::dup2_stderr(slave).ctx(|| "dup the pty to stderr")?;
    rustix::process::ioctl_tiocsctty(slave).ctx(|| "make the pty the controlling terminal")?;
    Ok(())
}

/// Puts our stdin terminal (if it is one) in raw mode until dropped, so keystrokes go to
/// the container's pty unprocessed.
pub struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    /// Switches stdin to raw mode if it is a terminal.
    pub fn enable() -> RawMode {
        let stdin = crate::sys::borrow_raw(0);
        let saved = rustix::termios::tcgetattr(stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(stdin, rustix::termios::OptionalActions::Now, &raw);
        }
        RawMode(saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                crate::sys::borrow_raw(0),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

/// Copies our terminal's size to the pty.
pub fn copy_winsize(master: BorrowedFd<'_>) {
    if let Ok(ws) = rustix::termios::tcgetwinsize(crate::sys::borrow_raw(0)) {
        let _ = rustix::termios::tcsetwinsize(master, ws);
    }
}

/// Moves what is readable on `from` to `to`. Returns false at end of input.
pub fn pump(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 16384];
    match rustix::io::read(from, &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            let _ = write_all(to, &buf[..n]);
            true
        }
        Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => true,
        Err(_) => false,
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> rustix::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
