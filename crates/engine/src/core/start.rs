//! Starting a monitor for a container (or an infra process) and hearing from it how
//! the start went: `started PID` or `error MESSAGE` on its stdout, preceded by
//! `created` when a client is to attach before the program runs.

use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::error::{Context, Error, Result};

use super::Core;

/// How the caller follows the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// Not at all: the monitor goes on by itself (it leaves the caller's process tree,
    /// so a long-running caller keeps no zombie).
    Detached,
    /// The caller reads the container's output framed from the monitor's stdout
    /// (`run` in the foreground) and waits for the monitor.
    Follow,
    /// The caller attaches to the container's terminal or stdin before the program
    /// runs, with this terminal size (rows, columns).
    Attach(u16, u16),
}

/// The monitor's stdout, after its `started` line.
pub type MonitorOutput = std::io::BufReader<std::process::ChildStdout>;

/// A started container.
pub struct Started {
    /// The container's init.
    pub pid: i32,
    /// The monitor (Follow and Attach: the caller waits for it; its exit status is the
    /// container's when the container removed itself).
    pub monitor: Option<Child>,
    /// The attach connection (Attach).
    pub conn: Option<UnixStream>,
    /// The framed output (Follow).
    pub output: Option<MonitorOutput>,
}

/// The first bytes of an attaching connection (see the monitor's attach socket).
pub fn attach_request(tty: bool, (rows, cols): (u16, u16)) -> Vec<u8> {
    let mut req = vec![berth_monitor::monitor::ATTACH];
    if tty {
        req.extend_from_slice(&rows.to_be_bytes());
        req.extend_from_slice(&cols.to_be_bytes());
    }
    req
}

/// Connects to a container's attach socket through /proc/self/fd (its full path may
/// be longer than a socket address allows).
pub fn connect_attach(dir: &Path) -> std::io::Result<UnixStream> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    UnixStream::connect(berth_monitor::monitor::socket_dir(&fd).join("attach.sock"))
}

/// A monitor started behind its gate (see berth-monitor's `GATE_ENV`): it runs nothing
/// until [`GatedMonitor::open`]; dropped unopened, it leaves without a trace.
pub(crate) struct GatedMonitor {
    child: Option<Child>,
    gate: Option<std::process::ChildStdin>,
}

impl GatedMonitor {
    /// Lets the monitor run the container and waits for its word, as
    /// [`Core::spawn_monitor`] does.
    pub(crate) fn open(mut self, dir: &Path, mode: StartMode, what: &str) -> Result<Started> {
        let mut gate = self.gate.take().expect("a gate until opened");
        let opened = std::io::Write::write_all(&mut gate, &[berth_monitor::monitor::GATE_OPEN]);
        drop(gate);
        opened.ctx(|| "tell the monitor to go on")?;
        hear(
            self.child.take().expect("a child until opened"),
            dir,
            mode,
            what,
        )
    }
}

impl Drop for GatedMonitor {
    fn drop(&mut self) {
        let gate = self.gate.take();
        if let (true, Some(mut child)) = (gate.is_some(), self.child.take()) {
            // Closed unopened, the monitor ends (a detached one has left our tree).
            drop(gate);
            let _ = child.wait();
        }
    }
}

impl Core {
    /// Starts `berth-monitor DIR` for the container whose state directory is `dir` and
    /// waits for its word. `what` names the container in errors.
    pub(crate) fn spawn_monitor(&self, dir: &Path, mode: StartMode, what: &str) -> Result<Started> {
        let child = self
            .monitor_command(dir, mode)
            .spawn()
            .ctx(|| format!("start the monitor ({})", self.monitor_path().display()))?;
        hear(child, dir, mode, what)
    }

    /// Starts the monitor behind its gate: it gets ready while the caller makes what
    /// the container needs.
    pub(crate) fn spawn_gated_monitor(&self, dir: &Path, mode: StartMode) -> Result<GatedMonitor> {
        let mut cmd = self.monitor_command(dir, mode);
        cmd.env(berth_monitor::monitor::GATE_ENV, "1")
            .stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .ctx(|| format!("start the monitor ({})", self.monitor_path().display()))?;
        let gate = child.stdin.take();
        Ok(GatedMonitor {
            child: Some(child),
            gate,
        })
    }

    fn monitor_command(&self, dir: &Path, mode: StartMode) -> Command {
        let mut cmd = Command::new(self.monitor_path());
        cmd.arg(dir)
            .env("BERTH_RUNTIME", self.runtime_path())
            .env_remove("BERTH_ATTACH_WAIT")
            .env_remove("BERTH_FOLLOW")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.env_remove(berth_monitor::monitor::GATE_ENV);
        match mode {
            StartMode::Detached => {}
            StartMode::Follow => {
                cmd.env("BERTH_FOLLOW", "1");
            }
            StartMode::Attach(..) => {
                cmd.env("BERTH_ATTACH_WAIT", "1");
            }
        }
        cmd
    }
}

/// Reads the monitor's word on how the start went.
fn hear(mut child: Child, dir: &Path, mode: StartMode, what: &str) -> Result<Started> {
    let stdout = child.stdout.take().expect("piped");
    let mut lines = std::io::BufReader::new(stdout);
    let mut line = String::new();
    lines
        .read_line(&mut line)
        .ctx(|| "read the monitor's answer")?;
    let mut conn = None;
    if let (StartMode::Attach(rows, cols), "created") = (mode, line.trim()) {
        let tty = berth_monitor::supervise::Supervision::load(dir)?.is_some_and(|s| s.tty);
        let mut c = connect_attach(dir).ctx(|| "attach to the container")?;
        std::io::Write::write_all(&mut c, &attach_request(tty, (rows, cols)))
            .ctx(|| "attach to the container")?;
        conn = Some(c);
        line.clear();
        lines
            .read_line(&mut line)
            .ctx(|| "read the monitor's answer")?;
    }
    let line = line.trim().to_string();
    if let Some(pid) = line.strip_prefix("started ") {
        let pid = pid.parse().unwrap_or(0);
        let monitor = if mode == StartMode::Detached {
            // The monitor left our process tree at once (see berth-monitor's
            // `daemonize`): reap the parent it left.
            let _ = child.wait();
            None
        } else {
            Some(child)
        };
        return Ok(Started {
            pid,
            monitor,
            conn,
            output: (mode == StartMode::Follow).then_some(lines),
        });
    }
    let _ = child.wait();
    let msg = line.strip_prefix("error ").unwrap_or(if line.is_empty() {
        "the monitor ended without a word"
    } else {
        &line
    });
    Err(Error::Runtime(format!("{what} could not start: {msg}")))
}
