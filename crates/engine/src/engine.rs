//! The engine's operations: create a container from an image, start it under a
//! monitor, stop, kill, remove, wait, list — with every state read back from the
//! kernel and the monitor's records.

use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_image::snapshot::Snapshotter;
use berth_image::Store;

use crate::config::RunConfig;
use crate::error::{Context, Error, Result};
use crate::monitor::STOPPED_MARK;
use crate::record::{self, read_json, write_json, ContainerRecord, ExitRecord, Paths};

/// What `exec` runs.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// Command and arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<String>,
    /// User (name|uid[:group|gid]).
    pub user: Option<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Return once started.
    pub detach: bool,
    /// A terminal for the process (proxied to this process's stdio).
    pub tty: bool,
}

/// The monitor's stdout, after its `started` line.
pub type MonitorOutput = std::io::BufReader<std::process::ChildStdout>;

/// Reads the framed output a following monitor sends and hands each piece to `sink`
/// (true for stderr) until the monitor ends.
pub fn read_frames(mut r: MonitorOutput, mut sink: impl FnMut(bool, &[u8])) {
    use std::io::Read;
    let mut head = [0u8; 5];
    let mut buf = Vec::new();
    while r.read_exact(&mut head).is_ok() {
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        buf.resize(len, 0);
        if r.read_exact(&mut buf).is_err() {
            return;
        }
        sink(head[0] == 2, &buf);
    }
}

/// A container's state as `ps` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Created, never started.
    Created,
    /// Its init runs (pid).
    Running(i32),
    /// Frozen by `pause` (pid).
    Paused(i32),
    /// Between runs of a restart policy.
    Restarting,
    /// Ended (exit code, finished at).
    Exited(i32, String),
    /// Its init runs but its monitor is gone (killed, or lost in a crash): the output
    /// is no longer logged; `stop` and `rm` still work.
    Orphaned(i32),
    /// Its monitor is gone and so is its init, without an exit record (host reboot).
    Dead,
}

impl State {
    /// docker's state word.
    pub fn word(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running(_) | State::Orphaned(_) => "running",
            State::Paused(_) => "paused",
            State::Restarting => "restarting",
            State::Exited(..) => "exited",
            State::Dead => "dead",
        }
    }
}

/// The engine over a state root (`/var/lib/berth`).
#[derive(Clone)]
pub struct Engine {
    root: PathBuf,
    images: Arc<Store>,
    runtime: PathBuf,
    monitor: PathBuf,
}

pub use berth_monitor::record::start_time;

fn alive(pid: i32, start: Option<u64>) -> bool {
    // A zombie has ended; whoever reaps it may take its time.
    if is_zombie(pid) {
        return false;
    }
    match (start_time(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        _ => false,
    }
}

/// A helper binary: `$var`, else next to `berth`, else on PATH, else /usr/local/bin.
fn find_tool(exe: &Path, name: &str, var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let sibling = exe.with_file_name(name);
    if sibling.is_file() {
        return sibling;
    }
    for d in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return p;
        }
    }
    Path::new("/usr/local/bin").join(name)
}

impl Engine {
    /// Opens the engine's state under `root`.
    pub fn open(root: &Path) -> Result<Engine> {
        std::fs::create_dir_all(root.join("containers"))
            .ctx(|| format!("create {}", root.join("containers").display()))?;
        let exe = std::env::current_exe().ctx(|| "find the berth binary")?;
        Ok(Engine {
            root: root.to_path_buf(),
            images: Arc::new(Store::open(root.join("image"))?),
            runtime: find_tool(&exe, "berth-runtime", "BERTH_RUNTIME"),
            monitor: find_tool(&exe, "berth-monitor", "BERTH_MONITOR"),
        })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image store.
    pub fn images(&self) -> &Arc<Store> {
        &self.images
    }

    /// The files of container `id`.
    pub fn paths(&self, id: &str) -> Paths {
        Paths {
            dir: self.root.join("containers").join(id),
        }
    }

    /// A berth-runtime command with berth's runtime state root.
    pub fn runtime(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("--root").arg(self.root.join("runtime")).args(args);
        c
    }

    /// Every container record, oldest first.
    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let dir = self.root.join("containers");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .ctx(|| format!("read {}", dir.display()))?
            .flatten()
        {
            if let Ok(Some(r)) = read_json::<ContainerRecord>(&e.path().join("container.json")) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(out)
    }

    /// Finds a container by name, ID or unique ID prefix.
    pub fn find(&self, what: &str) -> Result<ContainerRecord> {
        let all = self.list()?;
        if let Some(r) = all.iter().find(|r| r.name == what || r.id == what) {
            return Ok(r.clone());
        }
        let found: Vec<&ContainerRecord> = all
            .iter()
            .filter(|r| !what.is_empty() && r.id.starts_with(what))
            .collect();
        match found.len() {
            1 => Ok(found[0].clone()),
            0 => Err(Error::NotFound(format!("no such container: {what}"))),
            _ => Err(Error::Invalid(format!(
                "container ID prefix {what:?} is ambiguous: give more characters"
            ))),
        }
    }

    /// The container's state, read from the kernel and the monitor's records.
    pub fn state(&self, rec: &ContainerRecord) -> State {
        let p = self.paths(&rec.id);
        let monitor: Option<serde_json::Value> = read_json(&p.monitor_pid()).ok().flatten();
        let monitor_alive = monitor.as_ref().is_some_and(|m| {
            let pid = m["pid"].as_i64().unwrap_or(0) as i32;
            pid > 0 && alive(pid, m["start"].as_u64())
        });
        let init: Option<i32> = std::fs::read_to_string(p.init_pid())
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let init_alive = init.is_some_and(|pid| start_time(pid).is_some() && !is_zombie(pid));
        let exit: Option<ExitRecord> = read_json(&p.exit()).ok().flatten();
        match (monitor.is_some(), monitor_alive, init_alive) {
            (false, _, _) => State::Created,
            (_, true, true) if frozen(&rec.id) => State::Paused(init.unwrap_or(0)),
            (_, true, true) => State::Running(init.unwrap_or(0)),
            (_, true, false) => match exit {
                Some(_) => State::Restarting,
                None => State::Running(init.unwrap_or(0)),
            },
            (_, false, true) => State::Orphaned(init.unwrap_or(0)),
            (_, false, false) => match exit {
                Some(e) => {
                    // A monitor that could not take the network down (killed at the
                    // end): whoever looks next does.
                    if crate::network::record_path(&p.dir).exists() {
                        crate::network::disconnect(&p.dir);
                    }
                    State::Exited(e.exit_code, e.finished_at)
                }
                None => State::Dead,
            },
        }
    }

    /// Creates a container: its rootfs from the image and its runtime config.
    pub fn create(&self, cfg: RunConfig, name: Option<String>) -> Result<ContainerRecord> {
        let existing = self.list()?;
        let id = record::new_id();
        let name = match name {
            Some(n) => {
                record::check_name(&n)?;
                if let Some(other) = existing.iter().find(|r| r.name == n) {
                    return Err(Error::Conflict(format!(
                        "the container name {n:?} is already in use by container {}; remove it or choose another name",
                        &other.id[..12]
                    )));
                }
                n
            }
            None => record::generate_name(&id, &|n| existing.iter().any(|r| r.name == n)),
        };
        let img = self.images.resolve_stored(&cfg.image)?;
        let paths = self.paths(&id);
        std::fs::create_dir_all(&paths.dir).ctx(|| format!("create {}", paths.dir.display()))?;
        let result = (|| -> Result<ContainerRecord> {
            let hostname = cfg.hostname.clone().unwrap_or_else(|| id[..12].to_string());
            let hosts = format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
            );
            let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
            let host_line = format!("{hostname}\n");
            let files: [(&str, &[u8]); 3] = [
                ("etc/hostname", host_line.as_bytes()),
                ("etc/hosts", hosts.as_bytes()),
                ("etc/resolv.conf", &resolv),
            ];
            let rootfs = self.images.prepare(&id, &img, &files, Snapshotter::Auto)?;
            let joins = crate::spec::Joins {
                ns_path: Box::new(|other: &str| self.ns_dir_of(other)),
            };
            let mut cfg = cfg;
            crate::network::prepare(&mut cfg, &img.config)?;
            let mut spec = crate::spec::build(&cfg, &img.config, &rootfs.path, &id, &joins)?;
            if cfg.procview {
                if let Some(m) = spec["mounts"].as_array_mut() {
                    m.extend(crate::procview::mounts());
                }
            }
            if crate::network::bridged(&cfg) {
                // /etc/hosts, /etc/hostname and /etc/resolv.conf come from the container's
                // directory, rewritten at each start with its address (as docker does);
                // the init layer's copies stay underneath, so commit leaves them out.
                for f in crate::network::ETC_FILES {
                    let src = paths.dir.join(f);
                    std::fs::write(&src, b"").ctx(|| format!("create {}", src.display()))?;
                    if let Some(m) = spec["mounts"].as_array_mut() {
                        m.push(serde_json::json!({
                            "destination": format!("/etc/{f}"),
                            "type": "bind",
                            "source": src,
                            "options": ["rbind", "rprivate"],
                        }));
                    }
                }
            }
            let args = crate::spec::command(&cfg, &img.config)?;
            std::fs::write(
                paths.bundle().join("config.json"),
                serde_json::to_vec_pretty(&spec).expect("JSON"),
            )
            .ctx(|| "write config.json")?;
            let rec = ContainerRecord {
                id: id.clone(),
                name,
                created: record::now_rfc3339_nanos(),
                image_id: img.config_digest.to_string(),
                image_manifest: img.manifest_digest.to_string(),
                rootfs: rootfs.path.display().to_string(),
                config: cfg,
                args,
                restart_count: 0,
            };
            write_json(&paths.record(), &rec)?;
            Ok(rec)
        })();
        if result.is_err() {
            let _ = self.images.remove_container(&id);
            let _ = std::fs::remove_dir_all(&paths.dir);
        }
        result
    }

    /// `/proc/<pid>/ns` of another running container (for `container:NAME` modes).
    fn ns_dir_of(&self, what: &str) -> Result<String> {
        let rec = self.find(what)?;
        match self.state(&rec) {
            State::Running(pid) | State::Orphaned(pid) => Ok(format!("/proc/{pid}/ns")),
            s => Err(Error::Conflict(format!(
                "container {what} is {}: its namespaces can only be joined while it runs",
                s.word()
            ))),
        }
    }

    /// Starts a created or exited container under a new monitor; returns the monitor
    /// (a child of this process until it ends) and the init's pid.
    pub fn start(&self, rec: &ContainerRecord) -> Result<(Child, i32)> {
        let (child, pid, _, _) = self.start_with(rec, None, false)?;
        Ok((child, pid))
    }

    /// Starts a container whose output this process follows: the monitor sends it on
    /// its stdout (see [`read_frames`]), so nothing is lost to a `--rm` removal.
    pub fn start_following(&self, rec: &ContainerRecord) -> Result<(Child, i32, MonitorOutput)> {
        let (child, pid, _, out) = self.start_with(rec, None, true)?;
        Ok((child, pid, out))
    }

    /// Starts a container with a client attached from the first byte (`run -it`,
    /// `start -ai`): the monitor waits for this connection before the program runs.
    /// `winsize` is the client's terminal (rows, columns).
    pub fn start_attached(
        &self,
        rec: &ContainerRecord,
        winsize: (u16, u16),
    ) -> Result<(Child, i32, UnixStream)> {
        let (child, pid, conn, _) = self.start_with(rec, Some(winsize), false)?;
        Ok((child, pid, conn.expect("attached")))
    }

    fn start_with(
        &self,
        rec: &ContainerRecord,
        attach: Option<(u16, u16)>,
        follow: bool,
    ) -> Result<(Child, i32, Option<UnixStream>, MonitorOutput)> {
        match self.state(rec) {
            State::Created | State::Exited(..) | State::Dead => {}
            s => {
                return Err(Error::Conflict(format!(
                    "container {} is {}",
                    rec.name,
                    s.word()
                )))
            }
        }
        if attach.is_some() && !(rec.config.tty || rec.config.interactive) {
            return Err(Error::Invalid(format!(
                "container {} was created without -i or -t: there is nothing to attach to",
                rec.name
            )));
        }
        let p = self.paths(&rec.id);
        let _ = std::fs::remove_file(p.exit());
        // Held until the start is done (the monitor has answered, below).
        let _procview = if rec.config.procview {
            Some(crate::procview::ensure()?)
        } else {
            None
        };
        // The network first: the runtime joins the namespace by path. The monitor takes
        // it down when the container is done (see berth-monitor's `network`).
        let net = if crate::network::bridged(&rec.config) {
            let c = crate::network::connect(self, rec)?;
            // Further networks joined with `network connect` before.
            for n in &rec.config.networks {
                if let Err(err) = crate::network::connect_extra(self, rec, n) {
                    crate::network::disconnect(&p.dir);
                    return Err(err);
                }
            }
            Some(c)
        } else {
            None
        };
        let undo_net = |net: &Option<crate::network::Connected>| {
            if net.is_some() {
                crate::network::disconnect(&p.dir);
            }
        };
        let mut cmd = Command::new(&self.monitor);
        cmd.arg(&self.root)
            .arg(&rec.id)
            .env("BERTH_RUNTIME", &self.runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if attach.is_some() {
            cmd.env("BERTH_ATTACH_WAIT", "1");
        } else {
            cmd.env_remove("BERTH_ATTACH_WAIT");
        }
        if follow {
            cmd.env("BERTH_FOLLOW", "1");
        } else {
            cmd.env_remove("BERTH_FOLLOW");
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                undo_net(&net);
                return Err(Error::io(
                    format!("start the monitor ({})", self.monitor.display()),
                    e,
                ));
            }
        };
        let stdout = child.stdout.take().expect("piped");
        let mut lines = std::io::BufReader::new(stdout);
        let mut line = String::new();
        lines
            .read_line(&mut line)
            .ctx(|| "read the monitor's answer")?;
        let mut conn = None;
        if let (Some(size), "created") = (attach, line.trim()) {
            let mut c = connect_attach(&p.dir).ctx(|| "attach to the container")?;
            std::io::Write::write_all(&mut c, &attach_request(rec.config.tty, size))
                .ctx(|| "attach to the container")?;
            conn = Some(c);
            line.clear();
            lines
                .read_line(&mut line)
                .ctx(|| "read the monitor's answer")?;
        }
        let line = line.trim();
        if let Some(pid) = line.strip_prefix("started ") {
            return Ok((child, pid.parse().unwrap_or(0), conn, lines));
        }
        let _ = child.wait();
        undo_net(&net);
        let msg = line.strip_prefix("error ").unwrap_or(if line.is_empty() {
            "the monitor ended without a word"
        } else {
            line
        });
        Err(Error::Runtime(format!(
            "container {} could not start: {msg}",
            rec.name
        )))
    }

    /// Connects to a running container's attach socket (created with -i or -t).
    pub fn attach(&self, rec: &ContainerRecord, winsize: (u16, u16)) -> Result<UnixStream> {
        if !(rec.config.tty || rec.config.interactive) {
            return Err(Error::Invalid(format!(
                "container {} was created without -i or -t: use `berth logs -f {}` to follow its output",
                rec.name, rec.name
            )));
        }
        let mut c = connect_attach(&self.paths(&rec.id).dir)
            .map_err(|e| Error::Conflict(format!("container {} is not running ({e})", rec.name)))?;
        std::io::Write::write_all(&mut c, &attach_request(rec.config.tty, winsize))
            .map_err(|e| Error::Conflict(format!("container {} is not running ({e})", rec.name)))?;
        Ok(c)
    }

    /// Tells the monitor of a `-t` container that the attached terminal is now `winsize`
    /// (rows, columns); the program gets SIGWINCH.
    pub fn resize(&self, rec: &ContainerRecord, winsize: (u16, u16)) -> Result<()> {
        let mut c = connect_attach(&self.paths(&rec.id).dir)
            .map_err(|e| Error::Conflict(format!("container {} is not running ({e})", rec.name)))?;
        let mut req = vec![berth_monitor::monitor::RESIZE];
        req.extend_from_slice(&winsize.0.to_be_bytes());
        req.extend_from_slice(&winsize.1.to_be_bytes());
        std::io::Write::write_all(&mut c, &req).ctx(|| "send the new terminal size")
    }

    /// Sends a signal to the container's init.
    pub fn kill(&self, rec: &ContainerRecord, signal: &str, by_user: bool) -> Result<()> {
        match self.state(rec) {
            State::Running(_) | State::Paused(_) | State::Orphaned(_) | State::Restarting => {}
            s => {
                return Err(Error::Conflict(format!(
                    "container {} is {}, not running",
                    rec.name,
                    s.word()
                )))
            }
        }
        if by_user {
            let _ = std::fs::write(self.paths(&rec.id).dir.join(STOPPED_MARK), b"");
        }
        // A frozen process cannot act on a signal: thaw it first, as docker does.
        if matches!(self.state(rec), State::Paused(_)) {
            let _ = self.runtime(&["resume", &rec.id]).output();
        }
        let out = self
            .runtime(&["kill", &rec.id, signal])
            .output()
            .ctx(|| "run berth-runtime kill")?;
        if !out.status.success()
            && matches!(
                self.state(rec),
                State::Running(_) | State::Paused(_) | State::Orphaned(_)
            )
        {
            return Err(Error::Runtime(format!(
                "kill {}: {}",
                rec.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout`.
    pub fn stop(&self, rec: &ContainerRecord, timeout: Option<Duration>) -> Result<()> {
        if !matches!(
            self.state(rec),
            State::Running(_) | State::Paused(_) | State::Orphaned(_) | State::Restarting
        ) {
            return Ok(());
        }
        let sig = rec.config.stop_signal.unwrap_or(15).to_string();
        let timeout = timeout.unwrap_or(Duration::from_secs(rec.config.stop_timeout.unwrap_or(10)));
        let _ = self.kill(rec, &sig, true);
        if !self.wait_until(rec, timeout, |s| {
            !matches!(s, State::Running(_) | State::Paused(_) | State::Orphaned(_))
        }) {
            let _ = self.kill(rec, "KILL", true);
            self.wait_until(rec, Duration::from_secs(10), |s| {
                !matches!(s, State::Running(_) | State::Paused(_) | State::Orphaned(_))
            });
        }
        // Let the monitor write its record (an orphaned container has none to wait for).
        self.wait_until(rec, Duration::from_secs(5), |s| {
            matches!(s, State::Exited(..) | State::Dead | State::Created)
        });
        Ok(())
    }

    fn wait_until(
        &self,
        rec: &ContainerRecord,
        timeout: Duration,
        done: impl Fn(&State) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if done(&self.state(rec)) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the container to end; returns its exit code.
    pub fn wait(&self, rec: &ContainerRecord) -> Result<i32> {
        loop {
            match self.state(rec) {
                State::Exited(code, _) => return Ok(code),
                State::Dead => return Ok(-1),
                State::Created => {
                    return Err(Error::Conflict(format!(
                        "container {} was never started",
                        rec.name
                    )))
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
            if !self.paths(&rec.id).record().exists() {
                return Err(Error::NotFound(format!(
                    "container {} was removed",
                    rec.name
                )));
            }
        }
    }

    /// Removes a container (with `force`, stopping it first).
    pub fn remove(&self, rec: &ContainerRecord, force: bool) -> Result<()> {
        match self.state(rec) {
            State::Running(_) | State::Paused(_) | State::Orphaned(_) | State::Restarting
                if !force =>
            {
                return Err(Error::Conflict(format!(
                    "container {} is running: stop it first, or remove it with -f",
                    rec.name
                )))
            }
            State::Running(_) | State::Paused(_) | State::Orphaned(_) | State::Restarting => {
                let _ = self.kill(rec, "KILL", true);
                self.wait_until(rec, Duration::from_secs(10), |s| {
                    !matches!(
                        s,
                        State::Running(_)
                            | State::Paused(_)
                            | State::Orphaned(_)
                            | State::Restarting
                    )
                });
            }
            _ => {}
        }
        self.remove_files(&rec.id)
    }

    /// Runs a process in a running container, with this process's stdio; returns its
    /// exit code (or its pid with `detach`).
    pub fn exec(&self, rec: &ContainerRecord, opts: &ExecOptions) -> Result<i32> {
        match self.state(rec) {
            State::Running(_) | State::Orphaned(_) => {}
            s => {
                return Err(Error::Conflict(format!(
                    "container {} is {}: exec needs it running",
                    rec.name,
                    s.word()
                )))
            }
        }
        if opts.args.is_empty() {
            return Err(Error::Invalid("exec: give a command to run".into()));
        }
        let mut c = self.runtime(&["exec"]);
        let user = opts
            .user
            .clone()
            .or_else(|| rec.config.user.clone())
            .unwrap_or_default();
        let (uid, gid, _) = crate::spec::resolve_user(Path::new(&rec.rootfs), &user)?;
        c.arg("--user").arg(format!("{uid}:{gid}"));
        if let Some(w) = opts.workdir.as_ref().or(rec.config.workdir.as_ref()) {
            c.arg("--cwd").arg(w);
        }
        for e in &opts.env {
            c.arg("--env").arg(e);
        }
        if opts.detach {
            c.arg("--detach");
        }
        if opts.tty {
            // berth-runtime proxies the new terminal to our own stdio.
            c.arg("--tty");
        }
        c.arg(&rec.id).arg("--").args(&opts.args);
        let st = c.status().ctx(|| "run berth-runtime exec")?;
        Ok(st.code().unwrap_or(255))
    }

    /// Freezes (`pause`) or thaws a container's processes.
    pub fn pause(&self, rec: &ContainerRecord, pause: bool) -> Result<()> {
        let s = self.state(rec);
        match (&s, pause) {
            (State::Running(_), true) | (State::Paused(_), false) => {}
            _ => {
                return Err(Error::Conflict(format!(
                    "container {} is {}: cannot {}",
                    rec.name,
                    s.word(),
                    if pause { "pause it" } else { "unpause it" }
                )))
            }
        }
        let out = self
            .runtime(&[if pause { "pause" } else { "resume" }, &rec.id])
            .output()
            .ctx(|| "run berth-runtime")?;
        if !out.status.success() {
            return Err(Error::Runtime(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }

    /// Renames a container.
    pub fn rename(&self, rec: &ContainerRecord, new: &str) -> Result<()> {
        record::check_name(new)?;
        if let Some(other) = self.list()?.into_iter().find(|r| r.name == new) {
            return Err(Error::Conflict(format!(
                "the container name {new:?} is already in use by container {}",
                &other.id[..12]
            )));
        }
        let mut r = rec.clone();
        r.name = new.to_string();
        write_json(&self.paths(&rec.id).record(), &r).map_err(Into::into)
    }

    /// Makes an image of the container's changes (its init files left out).
    pub fn commit(
        &self,
        rec: &ContainerRecord,
        opts: &berth_image::commit::NewImage,
    ) -> Result<berth_image::Digest> {
        let manifest: berth_image::Digest = rec.image_manifest.parse().map_err(|e| {
            Error::Invalid(format!("container {}: bad image digest: {e}", rec.name))
        })?;
        let base = self
            .images
            .resolve_digest(&manifest, &berth_image::oci::Platform::host())?;
        Ok(self.images.commit(&rec.id, &base, opts)?)
    }

    /// The processes of a container: pid, and /proc's view of each.
    pub fn top(&self, rec: &ContainerRecord) -> Result<Vec<i32>> {
        let out = self
            .runtime(&["ps", "--format", "json", &rec.id])
            .output()
            .ctx(|| "run berth-runtime ps")?;
        if !out.status.success() {
            return Err(Error::Conflict(format!(
                "container {} is {}: it has no processes",
                rec.name,
                self.state(rec).word()
            )));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Runtime(format!("berth-runtime ps: {e}")))
    }

    /// What the container changed in its root filesystem, as `docker diff` lists it:
    /// (kind A/C/D, path).
    pub fn diff(&self, rec: &ContainerRecord) -> Result<Vec<(char, String)>> {
        let (upper, _, _) = self.images.container_paths(&rec.id);
        let manifest: berth_image::Digest = rec.image_manifest.parse().map_err(|e| {
            Error::Invalid(format!("container {}: bad image digest: {e}", rec.name))
        })?;
        let img = self
            .images
            .resolve_digest(&manifest, &berth_image::oci::Platform::host())?;
        let lowers: Vec<PathBuf> = img
            .chain_ids
            .iter()
            .filter_map(|c| self.images.snapshot(c).ok().flatten())
            .map(|s| self.images.snapshot_dir(s.id))
            .collect();
        let in_image = |rel: &Path| {
            lowers
                .iter()
                .any(|l| l.join(rel).symlink_metadata().is_ok())
        };
        let mut out = Vec::new();
        fn walk(
            dir: &Path,
            rel: &Path,
            in_image: &dyn Fn(&Path) -> bool,
            out: &mut Vec<(char, String)>,
        ) {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            let mut entries: Vec<_> = rd.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let r = rel.join(e.file_name());
                let shown = format!("/{}", r.display());
                if berth_image::snapshot::INIT_FILES
                    .iter()
                    .any(|f| Path::new(f) == r)
                {
                    continue;
                }
                let Ok(m) = e.path().symlink_metadata() else {
                    continue;
                };
                if m.file_type().is_char_device() && m.rdev() == 0 {
                    out.push(('D', shown));
                    continue;
                }
                out.push((if in_image(&r) { 'C' } else { 'A' }, shown));
                if m.is_dir() {
                    walk(&e.path(), &r, in_image, out);
                }
            }
        }
        walk(&upper, Path::new(""), &in_image, &mut out);
        Ok(out)
    }

    /// Removes the runtime state, the rootfs and the container's directory.
    pub fn remove_files(&self, id: &str) -> Result<()> {
        crate::network::disconnect(&self.paths(id).dir);
        if self.root.join("runtime").join(id).exists() {
            let _ = self.runtime(&["delete", "--force", id]).output();
        }
        match self.images.remove_container(id) {
            Ok(()) | Err(berth_image::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        record::remove_empty_cgroup_parent();
        let dir = self.paths(id).dir;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", dir.display()), e)),
        }
    }
}

/// Connects to a container's attach socket through /proc/self/fd (its full path may be
/// longer than a socket address allows).
/// The first bytes of an attaching connection (see the monitor's attach socket).
fn attach_request(tty: bool, (rows, cols): (u16, u16)) -> Vec<u8> {
    let mut req = vec![berth_monitor::monitor::ATTACH];
    if tty {
        req.extend_from_slice(&rows.to_be_bytes());
        req.extend_from_slice(&cols.to_be_bytes());
    }
    req
}

fn connect_attach(dir: &Path) -> std::io::Result<UnixStream> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    UnixStream::connect(berth_monitor::monitor::socket_dir(&fd).join("attach.sock"))
}

/// Whether the container's cgroup is frozen (v1 freezer or cgroup2 cgroup.freeze).
fn frozen(id: &str) -> bool {
    let read = |p: String| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    read(format!("/sys/fs/cgroup/freezer/berth/{id}/freezer.state")) == "FROZEN"
        || read(format!("/sys/fs/cgroup/berth/{id}/cgroup.freeze")) == "1"
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s.get(i + 2..i + 3).map(|c| c == "Z"))
        })
        .unwrap_or(false)
}
