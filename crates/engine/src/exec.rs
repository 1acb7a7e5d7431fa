//! Processes in running containers (CRI's ExecSync and Exec), attaching to a
//! container's stdio (Attach), and connections into a sandbox's network
//! (PortForward). berth-runtime `exec` does the kernel work; its stdio here is pipes
//! (or a terminal whose master it hands over), never the caller's.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Process, Spec};

use crate::core::records::ContainerRecord;
use crate::core::start::{attach_request, connect_attach};
use crate::core::Core;
use crate::cri::{ContainerState, ExecRequest, ExecSyncResponse, User};
use crate::error::{Context, Error, Result};

/// The most output `exec_sync` keeps of each stream.
pub const EXEC_SYNC_LIMIT: usize = 16 << 20;

/// A process started in a container, with its stdio as streams.
pub struct ExecSession {
    child: Child,
    /// Its stdin (requests with `stdin` and without a terminal).
    pub stdin: Option<ChildStdin>,
    /// Its stdout (without a terminal).
    pub stdout: Option<ChildStdout>,
    /// Its stderr (with a terminal: berth-runtime's own messages).
    pub stderr: Option<ChildStderr>,
    /// The terminal's master: output to read, input to write (with a terminal).
    pub terminal: Option<std::fs::File>,
    pid_file: PathBuf,
    process_file: PathBuf,
}

impl ExecSession {
    /// The process's pid (as the host sees it), once berth-runtime has written it.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Tells the process its terminal is now `rows` x `cols` (SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let Some(t) = &self.terminal else {
            return Err(Error::Invalid("this exec has no terminal to resize".into()));
        };
        rustix::termios::tcsetwinsize(
            t,
            rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .ctx(|| "resize the exec's terminal")
    }

    /// Kills the process (SIGKILL).
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = berth_cgroups::sys::kill(pid, libc_sigkill());
        }
    }

    /// Waits for the process; its exit code (128+N when killed by signal N).
    pub fn wait(mut self) -> Result<i32> {
        self.stdin = None;
        let st = self.child.wait().ctx(|| "wait for berth-runtime exec")?;
        Ok(st.code().unwrap_or(255))
    }

    /// Waits up to `timeout`; None when it is still running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let end = Instant::now() + timeout;
        let pidfd = rustix::process::Pid::from_raw(self.child.id() as i32).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        loop {
            if let Some(st) = self
                .child
                .try_wait()
                .ctx(|| "wait for berth-runtime exec")?
            {
                return Ok(Some(st.code().unwrap_or(255)));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match &pidfd {
                Some(fd) => {
                    crate::events::wait_readable(fd, &[], Some(left));
                }
                None => std::thread::sleep(left.min(Duration::from_millis(5))),
            }
        }
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_file(&self.process_file);
    }
}

fn libc_sigkill() -> i32 {
    rustix::process::Signal::KILL.as_raw()
}

/// A connection to a running container's stdio (made with stdin or a terminal).
pub struct AttachSession {
    /// The connection: the container's output arrives, input goes.
    pub stream: UnixStream,
    dir: PathBuf,
}

impl AttachSession {
    /// Tells the container its terminal is now `rows` x `cols`.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let mut c = connect_attach(&self.dir).ctx(|| "reach the container's monitor")?;
        let mut req = vec![berth_monitor::monitor::RESIZE];
        req.extend_from_slice(&rows.to_be_bytes());
        req.extend_from_slice(&cols.to_be_bytes());
        std::io::Write::write_all(&mut c, &req).ctx(|| "send the new terminal size")
    }
}

fn random_suffix() -> String {
    crate::core::names::new_id()[..16].to_string()
}

impl Core {
    fn exec_process(&self, rec: &ContainerRecord, req: &ExecRequest) -> Result<Process> {
        let paths = self.dirs().container(&rec.id);
        let spec: Spec = serde_json::from_slice(
            &std::fs::read(paths.config()).ctx(|| format!("read {}", paths.config().display()))?,
        )
        .map_err(|e| Error::Runtime(format!("{}: {e}", paths.config().display())))?;
        let mut p = spec.process().clone().ok_or_else(|| {
            Error::Runtime(format!(
                "container {} has no process in its config",
                rec.name
            ))
        })?;
        p.set_args(Some(req.cmd.clone()));
        p.set_terminal(Some(req.tty));
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &req.env {
            let key = kv.split('=').next().unwrap_or("");
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
        if let Some(w) = &req.workdir {
            if !w.starts_with('/') {
                return Err(Error::Invalid(format!(
                    "exec: working directory {w:?} must be an absolute path"
                )));
            }
            p.set_cwd(w.into());
        }
        if req.user != User::Image {
            let who = crate::core::user::resolve(&rec.rootfs, &req.user, "")?;
            let mut u = p.user().clone();
            u.set_uid(who.uid);
            u.set_gid(who.gid);
            u.set_additional_gids(Some(who.additional_gids));
            p.set_user(u);
        }
        if req.privileged {
            let all = crate::core::security::to_oci(&crate::core::security::all_caps());
            let caps = oci_spec::runtime::LinuxCapabilitiesBuilder::default()
                .bounding(all.clone())
                .effective(all.clone())
                .permitted(all)
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()
                .map_err(|e| Error::Runtime(e.to_string()))?;
            p.set_capabilities(Some(caps));
        }
        Ok(p)
    }

    /// Starts a process in running container `id`.
    pub fn exec_in(&self, id: &str, req: &ExecRequest) -> Result<ExecSession> {
        let rec = self.find(id)?;
        match self.container_state(&rec) {
            ContainerState::Running(_) | ContainerState::Orphaned(_) => {}
            s => {
                return Err(Error::Conflict(format!(
                    "container {} is {}: exec needs it running",
                    rec.name,
                    s.word()
                )))
            }
        }
        if req.cmd.is_empty() {
            return Err(Error::Invalid("exec: give a command to run".into()));
        }
        let process = self.exec_process(&rec, req)?;
        let dir = self.dirs().container(&rec.id).dir;
        let tag = random_suffix();
        let process_file = dir.join(format!("exec-{tag}.json"));
        let pid_file = dir.join(format!("exec-{tag}.pid"));
        std::fs::write(
            &process_file,
            serde_json::to_vec(&process).expect("a process serializes"),
        )
        .ctx(|| format!("write {}", process_file.display()))?;
        let mut cmd = self.runtime(&["exec"]);
        cmd.arg("--process")
            .arg(&process_file)
            .arg("--pid-file")
            .arg(&pid_file);
        if req.detach {
            if req.tty || req.stdin {
                return Err(Error::Invalid(
                    "exec: a detached process gets neither a terminal nor stdin".into(),
                ));
            }
            cmd.arg("--detach");
        }
        let console = if req.tty {
            let dirfd = rustix::fs::open(
                &dir,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ctx(|| format!("open {}", dir.display()))?;
            let path = berth_monitor::monitor::socket_dir(&dirfd).join(format!("exec-{tag}.sock"));
            let l = UnixListener::bind(&path).ctx(|| "listen for the exec's terminal")?;
            cmd.arg("--tty").arg("--console-socket").arg(&path);
            Some((l, path, dirfd))
        } else {
            None
        };
        cmd.arg(&rec.id)
            .stdin(if req.stdin && !req.tty {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if req.tty || req.detach {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().ctx(|| "run berth-runtime exec")?;
        let terminal = match console {
            None => None,
            Some((l, path, _dirfd)) => {
                let got = receive_terminal(&l, &mut child);
                let _ = std::fs::remove_file(&path);
                match got {
                    Ok(fd) => Some(std::fs::File::from(fd)),
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        let _ = std::fs::remove_file(&process_file);
                        return Err(e);
                    }
                }
            }
        };
        Ok(ExecSession {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            terminal,
            child,
            pid_file,
            process_file,
        })
    }

    /// Runs `cmd` in container `id` and collects its output; `timeout` kills it.
    pub fn exec_sync_in(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecSyncResponse> {
        let mut s = self.exec_in(
            id,
            &ExecRequest {
                cmd: cmd.to_vec(),
                ..Default::default()
            },
        )?;
        let reader = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(r) = r {
                    let _ = r.take(EXEC_SYNC_LIMIT as u64).read_to_end(&mut out);
                }
                out
            })
        };
        let out = reader(s.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
        let err = reader(s.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
        let (code, timed_out) = match timeout {
            None => (s.wait()?, false),
            Some(t) => match s.wait_timeout(t)? {
                Some(c) => (c, false),
                None => {
                    s.kill();
                    (s.wait()?, true)
                }
            },
        };
        Ok(ExecSyncResponse {
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
            exit_code: code,
            timed_out,
        })
    }

    /// Attaches to running container `id`'s stdio.
    pub fn attach_to(&self, id: &str, size: Option<(u16, u16)>) -> Result<AttachSession> {
        let rec = self.find(id)?;
        if !(rec.config.tty || rec.config.stdin) {
            return Err(Error::Invalid(format!(
                "container {} was created without a terminal or stdin: follow its log instead",
                rec.name
            )));
        }
        let dir = self.dirs().container(&rec.id).dir;
        let mut c = connect_attach(&dir)
            .map_err(|e| Error::Conflict(format!("container {} is not running ({e})", rec.name)))?;
        std::io::Write::write_all(
            &mut c,
            &attach_request(rec.config.tty, size.unwrap_or((24, 80))),
        )
        .map_err(|e| Error::Conflict(format!("container {} is not running ({e})", rec.name)))?;
        Ok(AttachSession { stream: c, dir })
    }

    /// Opens a TCP connection to `port` on sandbox `id`'s loopback, from inside its
    /// network namespace (the socket stays in that namespace).
    pub fn port_forward_to(&self, id: &str, port: u16) -> Result<std::net::TcpStream> {
        let rec = self.sandbox(id)?;
        // None: the host's network, and so the host's loopback.
        let netns = self.netns_of(&rec).ok();
        std::thread::scope(|s| {
            s.spawn(|| -> Result<std::net::TcpStream> {
                if let Some(p) = &netns {
                    let fd = berth_net::netns::open(p)?;
                    rustix::thread::move_into_link_name_space(
                        fd.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .ctx(|| format!("enter the network namespace {}", p.display()))?;
                }
                std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).map_err(|e| {
                    Error::io(
                        format!("connect to port {port} in sandbox {}", &rec.id[..12]),
                        e,
                    )
                })
            })
            .join()
            .map_err(|_| Error::Runtime("the port-forward thread panicked".into()))?
        })
    }
}

/// Waits for berth-runtime to hand over the terminal (or to fail first).
fn receive_terminal(l: &UnixListener, child: &mut Child) -> Result<OwnedFd> {
    l.set_nonblocking(true).ctx(|| "console socket")?;
    let end = Instant::now() + Duration::from_secs(30);
    let pidfd = rustix::process::Pid::from_raw(child.id() as i32)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    loop {
        match l.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false).ctx(|| "console socket")?;
                return Ok(berth_monitor::monitor::recv_fd(conn.as_fd())?);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Error::io("receive the exec's terminal", e)),
        }
        if let Ok(Some(st)) = child.try_wait() {
            let mut msg = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut msg);
            }
            return Err(Error::Runtime(format!(
                "exec failed ({st}) before it had a terminal{}",
                if msg.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", msg.trim())
                }
            )));
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Runtime("exec: no terminal within 30 s".into()));
        }
        let listener_fd: &OwnedFd = &rustix::io::dup(l.as_fd()).ctx(|| "dup")?;
        crate::events::wait_readable(
            listener_fd,
            pidfd.as_slice(),
            Some(left.min(Duration::from_millis(200))),
        );
    }
}
