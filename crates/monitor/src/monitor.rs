//! The monitor: one small process per container, started by the CLI and detached from
//! it (its own session), that creates and starts the container through berth-runtime,
//! holds its stdout and stderr pipes and writes them to the log, waits for the init
//! (a child of the monitor: the runtime starts it with CLONE_PARENT), records the exit
//! code and whether the OOM killer acted, removes the runtime state, and restarts the
//! container as its policy says. It is single-threaded and mostly asleep in poll(2).
//!
//! To the CLI that started it, it says on stdout `started <pid>` or `error <message>`,
//! then nothing more; the CLI may be gone by then.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{Pid, WaitOptions};

use crate::config::RestartPolicy;
use crate::error::{Context, Error, Result};
use crate::log::{LogWriter, Stream};
use crate::record::{now_rfc3339_nanos, read_json, write_json, ContainerRecord, ExitRecord, Paths};

/// Where the monitor finds its container and tools.
#[derive(Clone, Debug)]
pub struct MonitorEnv {
    /// berth's state root.
    pub root: std::path::PathBuf,
    /// berth-runtime.
    pub runtime: std::path::PathBuf,
}

impl MonitorEnv {
    /// The container's files.
    pub fn paths(&self, id: &str) -> Paths {
        Paths {
            dir: self.root.join("containers").join(id),
        }
    }

    /// A berth-runtime command with berth's runtime state root.
    pub fn runtime(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.runtime);
        c.arg("--root").arg(self.root.join("runtime")).args(args);
        c
    }

    /// Whether berth-runtime has state for `id` (so `delete` has work to do).
    fn runtime_has(&self, id: &str) -> bool {
        self.root.join("runtime").join(id).exists()
    }
}

/// Marker a user's `stop`/`kill` leaves so that the monitor does not restart.
pub const STOPPED_MARK: &str = "stopped-by-user";

/// Runs the monitor of container `id`; returns the exit code to exit with.
pub fn run(engine: &MonitorEnv, id: &str) -> i32 {
    let _ = rustix::process::setsid();
    // The runtime's create leaves the init behind when it exits: as a subreaper, the
    // monitor becomes its parent and can wait for it.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let paths = engine.paths(id);
    let mut tell_cli = Some(std::io::stdout());
    let mut say = |msg: String| {
        if let Some(mut o) = tell_cli.take() {
            let _ = writeln!(o, "{msg}");
            let _ = o.flush();
        }
    };
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let _ = write_json(
        &paths.monitor_pid(),
        &serde_json::json!({"pid": me, "start": crate::record::start_time(me)}),
    );
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut rec: ContainerRecord = match read_json(&paths.record()) {
            Ok(Some(r)) => r,
            _ => {
                say(format!("error container {id} has no record"));
                return 125;
            }
        };
        let _ = std::fs::remove_file(paths.dir.join(STOPPED_MARK));
        let started_at = now_rfc3339_nanos();
        let outcome = run_once(engine, &rec, &mut say);
        let mut exit = ExitRecord {
            started_at,
            finished_at: now_rfc3339_nanos(),
            ..Default::default()
        };
        match outcome {
            Ok((code, oom)) => {
                exit.exit_code = code;
                exit.oom_killed = oom;
            }
            Err(e) => {
                exit.exit_code = 127;
                exit.error = e.to_string();
            }
        }
        exit.stopped_by_user = paths.dir.join(STOPPED_MARK).exists();
        let _ = write_json(&paths.exit(), &exit);
        let restart = !exit.stopped_by_user
            && exit.error.is_empty()
            && match rec.config.restart {
                RestartPolicy::No => false,
                RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                RestartPolicy::OnFailure { max } => {
                    exit.exit_code != 0 && (max == 0 || rec.restart_count < max)
                }
            };
        if !restart {
            if rec.config.auto_remove {
                remove_container_files(engine, &rec);
            }
            return exit.exit_code;
        }
        // docker's backoff: 100 ms, doubling, reset after a run of 10 s or more.
        let ran_long = exit_duration(&exit) >= Duration::from_secs(10);
        if ran_long {
            backoff = Duration::from_millis(100);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(60));
        if paths.dir.join(STOPPED_MARK).exists() || !paths.record().exists() {
            return exit.exit_code;
        }
        rec.restart_count += 1;
        let _ = write_json(&paths.record(), &rec);
    }
}

fn exit_duration(e: &ExitRecord) -> Duration {
    let secs = |t: &str| crate::record::parse_rfc3339(t).unwrap_or(0);
    Duration::from_secs(secs(&e.finished_at).saturating_sub(secs(&e.started_at)))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ctx(|| "create a pipe")
}

/// Creates, starts and waits for the container once: (exit code, OOM killed).
fn run_once(
    engine: &MonitorEnv,
    rec: &ContainerRecord,
    say: &mut dyn FnMut(String),
) -> Result<(i32, bool)> {
    let id = rec.id.as_str();
    let paths = engine.paths(id);
    // Leftovers of a previous run (a restart, or a monitor that was killed).
    if engine.runtime_has(id) {
        let _ = engine.runtime(&["delete", "--force", id]).output();
    }
    let _ = std::fs::remove_file(paths.init_pid());
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let runtime_log = paths.dir.join("runtime.log");
    let _ = std::fs::remove_file(&runtime_log);
    let mut create = engine.runtime(&[
        "--log",
        runtime_log.to_str().unwrap_or(""),
        "--log-format",
        "json",
        "create",
        "--bundle",
    ]);
    create
        .arg(paths.bundle())
        .arg("--pid-file")
        .arg(paths.init_pid())
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    let st = create.status().ctx(|| "run berth-runtime create")?;
    if !st.success() {
        let msg = runtime_error(&runtime_log);
        say(format!("error {msg}"));
        return Err(Error::Runtime(msg));
    }
    let pid: i32 = std::fs::read_to_string(paths.init_pid())
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::Runtime("berth-runtime create wrote no pid file".into()))?;
    let pid = Pid::from_raw(pid).ok_or_else(|| Error::Runtime("bad init pid".into()))?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .ctx(|| "pidfd_open")?;
    let st = engine
        .runtime(&[
            "--log",
            runtime_log.to_str().unwrap_or(""),
            "--log-format",
            "json",
            "start",
            id,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ctx(|| "run berth-runtime start")?;
    if !st.success() {
        let msg = runtime_error(&runtime_log);
        let _ = engine.runtime(&["delete", "--force", id]).output();
        say(format!("error {msg}"));
        return Err(Error::Runtime(msg));
    }
    say(format!("started {}", pid.as_raw_nonzero()));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log())
        .ctx(|| format!("open {}", paths.log().display()))?;
    let mut log = LogWriter::new(std::io::BufWriter::with_capacity(64 * 1024, log_file));
    pump(&mut log, &out_r, &err_r, &pidfd);
    let status = rustix::process::waitpid(Some(pid), WaitOptions::empty())
        .ctx(|| "wait for the container")?;
    // What the container's own children still write goes to the log until they end.
    drain(&mut log, &out_r, &err_r);
    log.finish();
    let code = match status {
        Some((_, s)) => match (s.exit_status(), s.terminating_signal()) {
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            _ => 255,
        },
        None => 255,
    };
    let oom = oom_killed(id);
    let _ = engine.runtime(&["delete", "--force", id]).output();
    Ok((code, oom))
}

/// Copies output to the log until the init exits.
fn pump<W: Write>(log: &mut LogWriter<W>, out: &OwnedFd, err: &OwnedFd, pidfd: &OwnedFd) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = [true, true];
    loop {
        let mut fds = vec![PollFd::new(pidfd, PollFlags::IN)];
        if open[0] {
            fds.push(PollFd::new(out, PollFlags::IN));
        }
        if open[1] {
            fds.push(PollFd::new(err, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
        let exited = fds[0].revents().contains(PollFlags::IN);
        let ready: Vec<bool> = fds[1..].iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut k = 0;
        for (i, fd) in [out, err].into_iter().enumerate() {
            if !open[i] {
                continue;
            }
            if ready[k] {
                match rustix::io::read(fd, &mut buf) {
                    Ok(0) => open[i] = false,
                    Ok(n) => log.write(
                        if i == 0 {
                            Stream::Stdout
                        } else {
                            Stream::Stderr
                        },
                        &buf[..n],
                    ),
                    Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                    Err(_) => open[i] = false,
                }
            }
            k += 1;
        }
        log.flush();
        if exited {
            return;
        }
    }
}

/// Reads what is already in the pipes after the init exited, without waiting for
/// processes that may keep them open.
fn drain<W: Write>(log: &mut LogWriter<W>, out: &OwnedFd, err: &OwnedFd) {
    let mut buf = vec![0u8; 64 * 1024];
    for (i, fd) in [out, err].into_iter().enumerate() {
        loop {
            let mut p = [PollFd::new(fd, PollFlags::IN)];
            let ts = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            if !matches!(poll(&mut p, Some(&ts)), Ok(n) if n > 0) {
                break;
            }
            match rustix::io::read(fd.as_fd(), &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => log.write(
                    if i == 0 {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    },
                    &buf[..n],
                ),
            }
        }
    }
}

/// The last error the runtime logged (JSON lines with "level" and "msg").
fn runtime_error(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            matches!(
                v.get("level").and_then(|l| l.as_str()),
                Some("error" | "fatal")
            )
        })
        .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| {
            let t = text.trim();
            if t.is_empty() {
                "berth-runtime failed without a message".into()
            } else {
                t.lines().last().unwrap_or(t).to_string()
            }
        })
}

/// Removes an ended `--rm` container: its rootfs mount and directory (the image store
/// treats a container row whose directory is gone as removed and forgets it at the next
/// prune), and its state directory.
fn remove_container_files(engine: &MonitorEnv, rec: &ContainerRecord) {
    let rootfs = std::path::Path::new(&rec.rootfs);
    match rustix::mount::unmount(rootfs, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(_) => return,
    }
    if let Some(dir) = rootfs.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(engine.paths(&rec.id).dir);
}

/// Whether the OOM killer acted in the container's memory cgroup (v2 memory.events,
/// v1 memory.oom_control).
pub fn oom_killed(id: &str) -> bool {
    let count = |path: &str, key: &str| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0)
    };
    count(
        &format!("/sys/fs/cgroup/berth/{id}/memory.events"),
        "oom_kill ",
    ) > 0
        || count(
            &format!("/sys/fs/cgroup/unified/berth/{id}/memory.events"),
            "oom_kill ",
        ) > 0
        || count(
            &format!("/sys/fs/cgroup/memory/berth/{id}/memory.oom_control"),
            "oom_kill ",
        ) > 0
}
