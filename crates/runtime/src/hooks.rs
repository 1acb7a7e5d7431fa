//! OCI hooks: programs run at fixed points of the lifecycle with the container's state
//! JSON on stdin, their own args and env, and an optional timeout.

use std::io::{Read, Seek, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

use crate::error::{Context, Error, Result};

/// The lifecycle points at which hooks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Deprecated; runs with createRuntime.
    Prestart,
    /// After the namespaces exist, before pivot_root, in the runtime's namespaces.
    CreateRuntime,
    /// After the namespaces exist, before pivot_root, in the container's namespaces.
    CreateContainer,
    /// After `start`, before the user program, in the container.
    StartContainer,
    /// After the user program started, in the runtime's namespaces.
    Poststart,
    /// After the container is deleted.
    Poststop,
}

impl Point {
    /// The config.json field name.
    pub fn name(self) -> &'static str {
        match self {
            Point::Prestart => "prestart",
            Point::CreateRuntime => "createRuntime",
            Point::CreateContainer => "createContainer",
            Point::StartContainer => "startContainer",
            Point::Poststart => "poststart",
            Point::Poststop => "poststop",
        }
    }

    /// The hooks configured for this point.
    pub fn list(self, hooks: &Hooks) -> &[Hook] {
        let l = match self {
            Point::Prestart => hooks.prestart(),
            Point::CreateRuntime => hooks.create_runtime(),
            Point::CreateContainer => hooks.create_container(),
            Point::StartContainer => hooks.start_container(),
            Point::Poststart => hooks.poststart(),
            Point::Poststop => hooks.poststop(),
        };
        l.as_deref().unwrap_or(&[])
    }
}

/// Whether any hook is configured for `point`.
pub fn any(hooks: Option<&Hooks>, point: Point) -> bool {
    hooks.is_some_and(|h| !point.list(h).is_empty())
}

/// Runs the hooks of one point in order; the first failure stops and is returned.
pub fn run(hooks: Option<&Hooks>, point: Point, state_json: &str) -> Result<()> {
    let Some(hooks) = hooks else {
        return Ok(());
    };
    for (i, h) in point.list(hooks).iter().enumerate() {
        run_one(h, state_json).map_err(|e| {
            Error::Hook(format!(
                "hooks.{}[{i}] ({}): {e}",
                point.name(),
                h.path().display()
            ))
        })?;
    }
    Ok(())
}

/// Runs the hooks of one point, logging failures as warnings and going on (what the spec
/// asks for poststart and poststop).
pub fn run_warn(hooks: Option<&Hooks>, point: Point, state_json: &str) {
    let Some(hooks) = hooks else {
        return;
    };
    for (i, h) in point.list(hooks).iter().enumerate() {
        if let Err(e) = run_one(h, state_json) {
            crate::logging::warn(format!(
                "hooks.{}[{i}] ({}) failed: {e}",
                point.name(),
                h.path().display()
            ));
        }
    }
}

fn run_one(h: &Hook, state_json: &str) -> std::result::Result<(), String> {
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1));
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    // Output goes to an anonymous file so a chatty hook can never block on a full pipe;
    // its tail is quoted in the error.
    let out = anonymous_file().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::piped())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out.try_clone().map_err(|e| e.to_string())?);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook may exit without reading stdin; that is not an error.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let timeout = h.timeout().map(|t| Duration::from_secs(t as u64));
    let status = wait_with_timeout(&mut child, timeout)?;
    if status.success() {
        return Ok(());
    }
    let tail = output_tail(out);
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by {}", crate::signal::name(s)),
        _ => "failed".to_string(),
    };
    if tail.is_empty() {
        Err(how)
    } else {
        Err(format!("{how}: {tail}"))
    }
}

fn wait_with_timeout(
    child: &mut std::process::Child,
    timeout: Option<Duration>,
) -> std::result::Result<std::process::ExitStatus, String> {
    let Some(timeout) = timeout else {
        return child.wait().map_err(|e| e.to_string());
    };
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("child pid is positive");
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| e.to_string())?;
    let Some(deadline) = Instant::now().checked_add(timeout) else {
        // A timeout beyond what the clock can represent is no timeout.
        return child.wait().map_err(|e| e.to_string());
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "timed out after {}s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(_) => return child.wait().map_err(|e| e.to_string()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn anonymous_file() -> Result<std::fs::File> {
    let fd = rustix::fs::memfd_create("hook-output", rustix::fs::MemfdFlags::CLOEXEC)
        .ctx(|| "create a buffer for hook output")?;
    Ok(std::fs::File::from(fd))
}

fn output_tail(mut f: std::fs::File) -> String {
    let mut s = String::new();
    let _ = f.rewind();
    let _ = Read::by_ref(&mut f).take(1 << 20).read_to_string(&mut s);
    let s = s.trim();
    let start = s.len().saturating_sub(400);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].replace('\n', " | ")
}
