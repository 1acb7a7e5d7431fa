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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{Pid, WaitOptions};

use crate::error::{Context, Error, Result};
use crate::log::{LogWriter, Stream};
use crate::record::{now_rfc3339_nanos, write_json, ExitRecord, Paths};
use crate::supervise::{now_nanos, EventKind, EventRecord, RestartPolicy, Supervision};

/// The container the monitor runs, and the runtime it runs it with.
struct Job {
    sup: Supervision,
    paths: Paths,
    runtime: PathBuf,
}

impl Job {
    /// A berth-runtime command with the container's runtime state root.
    fn runtime(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.runtime);
        c.arg("--root").arg(&self.sup.runtime_root).args(args);
        c
    }

    /// Whether berth-runtime has state for the container (so `delete` has work).
    fn runtime_has(&self) -> bool {
        self.sup.runtime_root.join(&self.sup.id).exists()
    }

    fn publish(&self, kind: EventKind) {
        if self.sup.events_dir.as_os_str().is_empty() {
            return;
        }
        EventRecord {
            container_id: self.sup.id.clone(),
            sandbox_id: self.sup.sandbox_id.clone(),
            kind,
            at: now_nanos(),
        }
        .publish(&self.sup.events_dir);
    }
}

/// A file whose blocks the monitor frees to record an exit on a full disk.
const RESERVE: &str = "exit.reserve";

/// Marker a user's `stop`/`kill` leaves so that the monitor does not restart.
pub const STOPPED_MARK: &str = "stopped-by-user";

/// With this variable set, the monitor makes itself ready, then waits for the starter
/// to write [`GATE_OPEN`] to its stdin before it runs anything: the starter makes the
/// container's namespaces meanwhile (a process start overlapped with that work). End
/// of input instead: the monitor leaves without a trace.
pub const GATE_ENV: &str = "BERTH_GATE";

/// The byte that opens the gate (see [`GATE_ENV`]).
pub const GATE_OPEN: u8 = b'g';

/// Waits for the starter's word on stdin; stdin is /dev/null afterwards.
fn gate_opened() -> bool {
    let mut byte = [0u8; 1];
    let opened = matches!(std::io::Read::read(&mut std::io::stdin(), &mut byte), Ok(1) if byte[0] == GATE_OPEN);
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
    }
    opened
}

/// Runs the monitor of the container whose directory is `dir` (holding the engine's
/// `supervise.json`), with berth-runtime at `runtime`; returns the exit code to exit
/// with.
pub fn run(dir: &Path, runtime: &Path) -> i32 {
    let paths = Paths {
        dir: dir.to_path_buf(),
    };
    let mut tell_cli = Some(std::io::stdout());
    // Lines for the CLI that started us: `created` (when it will attach), then
    // `started PID` or `error MESSAGE`, after which it may be gone.
    let mut say = |msg: String| {
        let last = !msg.starts_with("created");
        if let Some(o) = tell_cli.as_mut() {
            let _ = writeln!(o, "{msg}");
            let _ = o.flush();
        }
        if last {
            tell_cli = None;
        }
    };
    let sup = match Supervision::load(dir) {
        Ok(Some(s)) => s,
        Ok(None) => {
            say(format!("error {} has no supervise.json", dir.display()));
            return 125;
        }
        Err(e) => {
            say(format!("error {e}"));
            return 125;
        }
    };
    // Nobody waits for a detached start's monitor: it leaves the starter's process
    // tree, so a long-running starter (the node agent) is left no zombie to reap.
    if std::env::var_os("BERTH_FOLLOW").is_none() && std::env::var_os("BERTH_ATTACH_WAIT").is_none()
    {
        crate::sys::daemonize();
    }
    let _ = rustix::process::setsid();
    // The runtime's create leaves the init behind when it exits: as a subreaper, the
    // monitor becomes its parent and can wait for it (the flag is the process's own:
    // set after the fork).
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let job = Job {
        sup,
        paths,
        runtime: runtime.to_path_buf(),
    };
    let paths = &job.paths;
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let _ = write_json(
        &paths.monitor_pid(),
        &serde_json::json!({"pid": me, "start": crate::record::start_time(me)}),
    );
    // Space kept for the exit record, should the container's output fill the disk.
    let _ = std::fs::write(paths.dir.join(RESERVE), vec![0u8; 16 * 1024]);
    if std::env::var_os(GATE_ENV).is_some() && !gate_opened() {
        // The starter could not make what the container needs: nothing ran.
        let _ = std::fs::remove_file(paths.monitor_pid());
        let _ = std::fs::remove_file(paths.dir.join(RESERVE));
        return 0;
    }
    let mut backoff = Duration::from_millis(100);
    let mut restart_count = 0u32;
    loop {
        let _ = std::fs::remove_file(paths.dir.join(STOPPED_MARK));
        let started_at = now_rfc3339_nanos();
        let outcome = run_once(&job, &mut say);
        let mut deleting = Deleting(None);
        let mut exit = ExitRecord {
            started_at,
            finished_at: now_rfc3339_nanos(),
            restart_count,
            ..Default::default()
        };
        match outcome {
            Ok((code, oom, log_error, del)) => {
                deleting = del;
                exit.exit_code = code;
                exit.oom_killed = oom;
                exit.log_error = log_error;
            }
            Err(e) => {
                // No-op if the CLI already heard how it ended.
                say(format!("error {e}"));
                exit.exit_code = 127;
                exit.error = e.to_string();
            }
        }
        exit.stopped_by_user = paths.dir.join(STOPPED_MARK).exists();
        let restart = !exit.stopped_by_user
            && exit.error.is_empty()
            && match job.sup.restart {
                RestartPolicy::No => false,
                RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                RestartPolicy::OnFailure { max } => {
                    exit.exit_code != 0 && (max == 0 || restart_count < max)
                }
            };
        exit.will_restart = restart;
        if write_json(&paths.exit(), &exit).is_err() {
            // A full disk (the log may have filled it): give back the reserved space
            // and try again, so that the exit is known.
            let _ = std::fs::remove_file(paths.dir.join(RESERVE));
            let _ = write_json(&paths.exit(), &exit);
        }
        job.publish(EventKind::Stopped);
        if !restart {
            finish(&job, deleting);
            return exit.exit_code;
        }
        drop(deleting);
        // docker's backoff: 100 ms, doubling, reset after a run of 10 s or more.
        let ran_long = exit_duration(&exit) >= Duration::from_secs(10);
        if ran_long {
            backoff = Duration::from_millis(100);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(60));
        if paths.dir.join(STOPPED_MARK).exists()
            || !paths.dir.join(crate::supervise::SUPERVISION_FILE).exists()
        {
            finish(&job, Deleting(None));
            return exit.exit_code;
        }
        restart_count += 1;
    }
}

/// The container has ended for good: its lean sandbox is released, and a `--rm`
/// container's files are removed.
fn finish(job: &Job, deleting: Deleting) {
    if let Some(sb) = &job.sup.owned_sandbox {
        crate::sandbox::release(&sb.id, &sb.dir);
    }
    match &job.sup.auto_remove {
        Some(removal) => remove_container_files(removal, deleting),
        None => drop(deleting),
    }
}

fn exit_duration(e: &ExitRecord) -> Duration {
    let secs = |t: &str| crate::record::parse_rfc3339(t).unwrap_or(0);
    Duration::from_secs(secs(&e.finished_at).saturating_sub(secs(&e.started_at)))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ctx(|| "create a pipe")
}

/// Creates, starts and waits for the container once: (exit code, OOM killed, log
/// error, the runtime's delete under way).
fn run_once(job: &Job, say: &mut dyn FnMut(String)) -> Result<(i32, bool, String, Deleting)> {
    let id = job.sup.id.as_str();
    let paths = &job.paths;
    // Leftovers of a previous run (a restart, or a monitor that was killed).
    if job.runtime_has() {
        let _ = job.runtime(&["delete", "--force", id]).output();
    }
    let _ = std::fs::remove_file(paths.init_pid());
    let tty = job.sup.tty;
    let interactive = job.sup.stdin;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_r, stdin_w) = if interactive && !tty {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let runtime_log = paths.dir.join("runtime.log");
    let _ = std::fs::remove_file(&runtime_log);
    // Clients attach here (`run -it`, `attach`): they get the output and give the input.
    // Socket paths go through /proc/PID/fd/N: a container directory's own path can be
    // longer than a unix socket address allows (108 bytes).
    let dir_fd = rustix::fs::open(
        &paths.dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| format!("open {}", paths.dir.display()))?;
    let short = socket_dir(&dir_fd);
    let attach_path = short.join("attach.sock");
    let _ = std::fs::remove_file(&attach_path);
    let listener = if tty || interactive {
        let l = UnixListener::bind(&attach_path)
            .ctx(|| format!("listen on {}", attach_path.display()))?;
        Some(l)
    } else {
        None
    };
    let console_path = short.join("console.sock");
    let _ = std::fs::remove_file(&console_path);
    let console = if tty {
        Some(UnixListener::bind(&console_path).ctx(|| "listen for the console")?)
    } else {
        None
    };
    // The runtime connects here at create when the spec sends seccomp listeners.
    let relay_path = short.join(
        paths
            .seccomp_socket()
            .file_name()
            .expect("the socket has a name"),
    );
    let relay = match &job.sup.seccomp_agent {
        Some(agent) => Some(crate::seccomp_relay::Relay::bind(
            &relay_path,
            agent.clone(),
        )?),
        None => None,
    };
    // A CLI that attaches must be connected between create and start; otherwise one
    // `run --detach` saves the runtime a second start-up.
    let attach_wait = listener.is_some() && std::env::var_os("BERTH_ATTACH_WAIT").is_some();
    let mut create = job.runtime(&[
        "--log",
        runtime_log.to_str().unwrap_or(""),
        "--log-format",
        "json",
        if attach_wait { "create" } else { "run" },
    ]);
    if !attach_wait {
        create.arg("--detach");
    }
    create.arg("--bundle");
    create
        .arg(&paths.dir)
        .arg("--pid-file")
        .arg(paths.init_pid());
    if tty {
        create.arg("--console-socket").arg(&console_path);
    }
    create
        .arg(id)
        .stdin(match stdin_r {
            Some(r) => Stdio::from(r),
            None => Stdio::null(),
        })
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    let st = create.status().ctx(|| "run berth-runtime")?;
    if !st.success() {
        let msg = runtime_error(&runtime_log);
        say(format!("error {msg}"));
        return Err(Error::Runtime(msg));
    }
    let master = match &console {
        Some(c) => {
            c.set_nonblocking(true).ctx(|| "console socket")?;
            let (conn, _) = c
                .accept()
                .map_err(|e| Error::io("receive the container's terminal", e))?;
            Some(recv_fd(conn.as_fd())?)
        }
        None => None,
    };
    let _ = std::fs::remove_file(&console_path);
    let pid: i32 = std::fs::read_to_string(paths.init_pid())
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::Runtime("berth-runtime create wrote no pid file".into()))?;
    let pid = Pid::from_raw(pid).ok_or_else(|| Error::Runtime("bad init pid".into()))?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .ctx(|| "pidfd_open")?;
    // A CLI that will attach gets its connection in before the program starts, so that
    // it sees everything (a shell's first prompt).
    let mut clients: Vec<UnixStream> = Vec::new();
    if let (Some(l), true) = (&listener, attach_wait) {
        say("created".into());
        l.set_nonblocking(false).ctx(|| "attach socket")?;
        let mut fds = [PollFd::new(l, PollFlags::IN)];
        let ts = rustix::event::Timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        if matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0) {
            if let Ok((c, _)) = l.accept() {
                if greet(&c, master.as_ref().map(|m| m.as_fd())) == Request::Attach {
                    clients.push(c);
                }
            }
        }
    }
    let st = if attach_wait {
        job.runtime(&[
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
        .ctx(|| "run berth-runtime start")?
    } else {
        st
    };
    if !st.success() {
        let msg = runtime_error(&runtime_log);
        let _ = job.runtime(&["delete", "--force", id]).output();
        say(format!("error {msg}"));
        return Err(Error::Runtime(msg));
    }
    say(format!("started {}", pid.as_raw_nonzero()));
    job.publish(EventKind::Started);
    let log_path = &job.sup.log_path;
    let mut log = LogWriter::new(std::io::BufWriter::with_capacity(
        64 * 1024,
        open_log(log_path)?,
    ));
    // Whoever rotates the log (the node agent, as the kubelet does) renames it, then
    // asks for a new one with SIGUSR1 (ReopenContainerLog).
    let log_watch = LogWatch::new(log_path);
    if let Some(l) = &listener {
        let _ = l.set_nonblocking(true);
    }
    let mut io = Io {
        out: master.as_ref().map_or(out_r.as_fd(), |m| m.as_fd()),
        err: master.is_none().then_some(err_r.as_fd()),
        stdin: stdin_w,
        listener: listener.as_ref(),
        sending: vec![true; clients.len()],
        clients,
        terminal: master.as_ref().map(|m| m.as_fd()),
        follower: std::env::var_os("BERTH_FOLLOW").is_some(),
        relay,
    };
    pump(&mut log, &mut io, &pidfd, log_watch.as_ref());
    let status = rustix::process::waitpid(Some(pid), WaitOptions::empty())
        .ctx(|| "wait for the container")?;
    // What is already in the pipes (or the terminal) goes to the log and the clients.
    drain(&mut log, &mut io);
    log.finish();
    drop(io);
    let _ = std::fs::remove_file(&attach_path);
    let _ = std::fs::remove_file(&relay_path);
    let code = match status {
        Some((_, s)) => match (s.exit_status(), s.terminating_signal()) {
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            _ => 255,
        },
        None => 255,
    };
    let oom = oom_killed(&job.sup.cgroup);
    let log_error = log
        .first_failure
        .as_ref()
        .map(|e| format!("writing {}: {e}", log_path.display()))
        .unwrap_or_default();
    // The runtime's delete (cgroups, state) runs while the monitor records the exit and
    // removes a --rm container's files; see `Deleting`.
    let deleting = Deleting(
        job.runtime(&["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok(),
    );
    Ok((code, oom, log_error, deleting))
}

/// A `berth-runtime delete` under way; dropping it waits for it to finish, so nothing
/// that depends on the runtime's state being gone (a restart, the cgroup parent's
/// removal, the monitor's exit) can overtake it.
struct Deleting(Option<std::process::Child>);

impl Drop for Deleting {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.wait();
        }
    }
}

/// The container's side of the monitor: where output comes from, where input goes,
/// and who is attached.
struct Io<'a> {
    out: BorrowedFd<'a>,
    err: Option<BorrowedFd<'a>>,
    /// The container's stdin pipe (`-i` without `-t`): closed once every client closed
    /// its input, so that `cat` sees the end.
    stdin: Option<OwnedFd>,
    listener: Option<&'a UnixListener>,
    /// Attached clients, and whether each still sends input.
    clients: Vec<UnixStream>,
    sending: Vec<bool>,
    /// The terminal master, whose size a new client sets.
    terminal: Option<BorrowedFd<'a>>,
    /// A foreground CLI reads the output from our stdout.
    follower: bool,
    /// The container's seccomp listeners, passed on to the agent.
    relay: Option<crate::seccomp_relay::Relay>,
}

impl Io<'_> {
    fn output<W: Write>(&mut self, log: &mut LogWriter<W>, s: Stream, data: &[u8]) {
        log.write(s, data);
        // A foreground CLI gets the output on our stdout, framed: stream (1 or 2),
        // length (u32, big endian), bytes. Once it is gone, it is not written to again.
        if self.follower {
            let mut frame = Vec::with_capacity(data.len() + 5);
            frame.push(if s == Stream::Stdout { 1 } else { 2 });
            frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
            frame.extend_from_slice(data);
            let mut out = std::io::stdout().lock();
            if out.write_all(&frame).and_then(|()| out.flush()).is_err() {
                self.follower = false;
            }
        }
        // A client that cannot keep up or went away is dropped, never waited for.
        let mut keep = Vec::new();
        for c in &mut self.clients {
            use std::io::Write as _;
            c.set_nonblocking(false).ok();
            keep.push(c.write_all(data).is_ok());
        }
        let mut i = 0;
        self.clients.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        let mut j = 0;
        self.sending.retain(|_| {
            j += 1;
            keep[j - 1]
        });
    }
}

/// Copies output to the log (and to attached clients) and clients' input to the
/// container, until the init exits; reopens the log when it is rotated away.
fn pump(log: &mut Log, io: &mut Io<'_>, pidfd: &OwnedFd, log_watch: Option<&LogWatch>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = [true, io.err.is_some()];
    // After a first quiet second, the monitor lets go of the code it ran to start the
    // container (see `sys`): an idle monitor should cost next to nothing.
    let mut text_released = false;
    let quiet = rustix::event::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        let mut fds = vec![PollFd::new(pidfd, PollFlags::IN)];
        let out_at = fds.len();
        if open[0] {
            fds.push(PollFd::from_borrowed_fd(io.out, PollFlags::IN));
        }
        let err_at = fds.len();
        if let (true, Some(e)) = (open[1], io.err) {
            fds.push(PollFd::from_borrowed_fd(e, PollFlags::IN));
        }
        let listen_at = fds.len();
        if let Some(l) = io.listener {
            fds.push(PollFd::new(l, PollFlags::IN));
        }
        let watch_at = fds.len();
        if let Some(w) = log_watch {
            fds.push(PollFd::new(&w.fd, PollFlags::IN));
        }
        let clients_at = fds.len();
        let polled: Vec<usize> = (0..io.clients.len()).filter(|i| io.sending[*i]).collect();
        for i in &polled {
            fds.push(PollFd::new(&io.clients[*i], PollFlags::IN));
        }
        let relay_at = fds.len();
        if let Some(r) = &io.relay {
            fds.extend(r.poll_fds());
        }
        match poll(&mut fds, (!text_released).then_some(&quiet)) {
            Ok(0) => {
                text_released = true;
                crate::sys::release_program_text();
                continue;
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
        let rev: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
        drop(fds);
        let exited = rev[0].contains(PollFlags::IN);
        if let Some(w) = log_watch.filter(|_| rev.get(watch_at).is_some_and(|r| !r.is_empty())) {
            if w.rotated() {
                if let Ok(f) = open_log(&w.path) {
                    log.reopen(std::io::BufWriter::with_capacity(64 * 1024, f));
                }
            }
        }
        if open[0] && !rev[out_at].is_empty() {
            match rustix::io::read(io.out, &mut buf) {
                Ok(0) => open[0] = false,
                Ok(n) => io.output(log, Stream::Stdout, &buf[..n]),
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => open[0] = false,
            }
        }
        if open[1] && rev.get(err_at).is_some_and(|r| !r.is_empty()) {
            if let Some(e) = io.err {
                match rustix::io::read(e, &mut buf) {
                    Ok(0) => open[1] = false,
                    Ok(n) => io.output(log, Stream::Stderr, &buf[..n]),
                    Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                    Err(_) => open[1] = false,
                }
            }
        }
        if io.listener.is_some() && rev.get(listen_at).is_some_and(|r| !r.is_empty()) {
            if let Some(Ok((c, _))) = io.listener.map(|l| l.accept()) {
                if greet(&c, io.terminal) == Request::Attach {
                    io.clients.push(c);
                    io.sending.push(true);
                }
            }
        }
        if let Some(r) = io.relay.as_mut() {
            r.handle(&rev[relay_at..]);
        }
        for (k, r) in rev[clients_at..relay_at].iter().enumerate() {
            let i = polled[k];
            if r.is_empty() || i >= io.clients.len() {
                continue;
            }
            let _ = io.clients[i].set_nonblocking(true);
            match std::io::Read::read(&mut io.clients[i], &mut buf) {
                Ok(0) => io.sending[i] = false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => io.sending[i] = false,
                Ok(n) => {
                    let target = io.terminal.or(io.stdin.as_ref().map(|f| f.as_fd()));
                    if let Some(inp) = target {
                        let mut data = &buf[..n];
                        while !data.is_empty() {
                            match rustix::io::write(inp, data) {
                                Ok(k) => data = &data[k..],
                                Err(rustix::io::Errno::INTR) => {}
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
        }
        // Every client has closed its input: the container's stdin ends too.
        if io.stdin.is_some() && !io.clients.is_empty() && io.sending.iter().all(|s| !s) {
            io.stdin = None;
        }
        log.flush();
        if exited {
            return;
        }
    }
}

/// Reads what is already in the pipes (or the terminal) after the init exited, without
/// waiting for processes that may keep them open.
fn drain(log: &mut Log, io: &mut Io<'_>) {
    let mut buf = vec![0u8; 64 * 1024];
    let sources: Vec<(BorrowedFd<'_>, Stream)> = std::iter::once((io.out, Stream::Stdout))
        .chain(io.err.map(|e| (e, Stream::Stderr)))
        .collect();
    for (fd, s) in sources {
        loop {
            let mut p = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
            let ts = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            if !matches!(poll(&mut p, Some(&ts)), Ok(n) if n > 0) {
                break;
            }
            match rustix::io::read(fd, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => io.output(log, s, &buf[..n]),
            }
        }
    }
}

/// `/proc/PID/fd/N` of a directory descriptor: a short path to it that other processes
/// can use too.
pub fn socket_dir(dir: &OwnedFd) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::path::PathBuf::from(format!(
        "/proc/{}/fd/{}",
        rustix::process::getpid().as_raw_nonzero(),
        dir.as_raw_fd()
    ))
}

/// What a connection to attach.sock asked for. The client's first byte says: `A`
/// attaches (followed, with a terminal, by its rows and columns as two big-endian u16),
/// `R` resizes the terminal (rows, columns) and hangs up — a client's terminal changed.
#[derive(Debug, PartialEq)]
enum Request {
    Attach,
    Resized,
    Bad,
}

/// The byte that starts an attaching connection.
pub const ATTACH: u8 = b'A';
/// The byte that starts a resize request.
pub const RESIZE: u8 = b'R';

/// Reads a connection's request (with a short timeout: a silent client must not stall
/// the container's output) and applies a terminal size it carries.
fn greet(c: &UnixStream, master: Option<BorrowedFd<'_>>) -> Request {
    let mut r = c;
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let mut kind = [0u8; 1];
    let req = match std::io::Read::read_exact(&mut r, &mut kind).map(|()| kind[0]) {
        Ok(ATTACH) => Request::Attach,
        Ok(RESIZE) => Request::Resized,
        _ => return Request::Bad,
    };
    if req == Request::Resized || master.is_some() {
        let mut b = [0u8; 4];
        if std::io::Read::read_exact(&mut r, &mut b).is_err() {
            return Request::Bad;
        }
        let ws = rustix::termios::Winsize {
            ws_row: u16::from_be_bytes([b[0], b[1]]),
            ws_col: u16::from_be_bytes([b[2], b[3]]),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        if let (Some(m), true) = (master, ws.ws_row > 0 && ws.ws_col > 0) {
            // Changing the size sends SIGWINCH to the terminal's foreground group.
            let _ = rustix::termios::tcsetwinsize(m, ws);
        }
    }
    let _ = c.set_read_timeout(None);
    req
}

/// Receives the container's terminal master that berth-runtime sends (SCM_RIGHTS).
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut payload = [0u8; 256];
    rustix::net::recvmsg(
        sock,
        &mut [std::io::IoSliceMut::new(&mut payload)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .ctx(|| "receive the container's terminal")?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(Error::Runtime("berth-runtime sent no terminal".into()))
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
/// prune), then its state, lean sandbox and cgroup parent when empty.
fn remove_container_files(removal: &crate::supervise::Removal, deleting: Deleting) {
    let rootfs = removal.rootfs.as_path();
    match rustix::mount::unmount(rootfs, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(_) => return,
    }
    if let Some(dir) = rootfs.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    // The runtime's delete (cgroup, state) must be done before the parent cgroup can go.
    drop(deleting);
    for p in &removal.paths {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(p);
        } else {
            let _ = std::fs::remove_file(p);
        }
    }
    if let Some(d) = &removal.sandbox_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    // The engine's parent cgroup stays, as docker's /docker does: removing it (a
    // dozen v1 hierarchies) after each container, for the next one to make again,
    // cost milliseconds per `run --rm`.
}

/// Whether the OOM killer acted in the container's memory cgroup (`cgroup`: its
/// cgroup path).
pub fn oom_killed(cgroup: &str) -> bool {
    berth_cgroups::naming::paths_of(&berth_cgroups::Layout::host(), cgroup)
        .is_ok_and(|p| berth_cgroups::stats::oom_kills(&p) > 0)
}

/// The container's log writer.
type Log = LogWriter<std::io::BufWriter<std::fs::File>>;

/// Opens (creating it and its directory) the log file for appending.
fn open_log(path: &Path) -> Result<std::fs::File> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).ctx(|| format!("create {}", d.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ctx(|| format!("open {}", path.display()))
}

/// The reopen requests of the container's log: a signalfd of [`crate::sys::REOPEN_LOG`].
/// (Not an inotify watch on the log's directory: closing one waits for an SRCU grace
/// period, some 15 ms that every container's end would pay.)
struct LogWatch {
    fd: OwnedFd,
    path: PathBuf,
}

impl LogWatch {
    fn new(path: &Path) -> Option<LogWatch> {
        Some(LogWatch {
            fd: crate::sys::reopen_signal_fd()?,
            path: path.to_path_buf(),
        })
    }

    /// Reads the pending requests; true if there was one.
    fn rotated(&self) -> bool {
        let mut info = [0u8; 128];
        let mut asked = false;
        while matches!(rustix::io::read(&self.fd, &mut info), Ok(n) if n > 0) {
            asked = true;
        }
        asked
    }
}
