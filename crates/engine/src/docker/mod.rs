//! The docker-shaped engine behind `berth run` and friends: one client of the core
//! (see [`crate::core`]), as the node agent is another. A container made here gets a
//! lean sandbox of its own (namespaces and network, no infra process), named like the
//! container and released with it; its docker flags are kept with it for `inspect`.

pub mod config;
pub mod convert;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

use berth_monitor::record::{ExitRecord, Paths};

use crate::core::start::{StartMode, Started};
use crate::core::{names, records::ContainerRecord, Core};
use crate::cri::ContainerState;
use crate::error::{Error, Result};

pub use crate::core::start::MonitorOutput;
use config::RunConfig;

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

/// A container as `ps` and `inspect` show it.
#[derive(Clone, Debug)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// The image's ID (config digest).
    pub image_id: String,
    /// The image manifest its root filesystem came from.
    pub image_manifest: String,
    /// The root filesystem.
    pub rootfs: String,
    /// docker's flags as given (made up from the CRI config for containers made by
    /// other clients).
    pub config: RunConfig,
    /// The command line run.
    pub args: Vec<String>,
    /// Times the monitor restarted it.
    pub restart_count: u32,
    /// The core's record.
    pub record: ContainerRecord,
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
    /// Its init runs but its monitor is gone: output is no longer logged; `stop` and
    /// `rm` still work.
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
    /// A terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// Every capability.
    pub privileged: bool,
    /// Return once it started.
    pub detach: bool,
}

/// The docker-shaped engine.
#[derive(Clone)]
pub struct Engine {
    core: Core,
}

fn rfc3339(nanos: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64);
    humantime::format_rfc3339_nanos(t).to_string()
}

impl Engine {
    /// Opens the engine's state under `root`.
    pub fn open(root: &Path) -> Result<Engine> {
        Ok(Engine {
            core: Core::open(root)?,
        })
    }

    /// The core it is a client of.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        self.core.root()
    }

    /// The image store.
    pub fn images(&self) -> &std::sync::Arc<berth_image::Store> {
        self.core.images()
    }

    /// The files of container `id`.
    pub fn paths(&self, id: &str) -> Paths {
        self.core.dirs().container(id)
    }

    /// A berth-runtime command with the engine's runtime state root.
    pub fn runtime(&self, args: &[&str]) -> std::process::Command {
        self.core.runtime(args)
    }

    fn view(&self, rec: ContainerRecord) -> Container {
        let paths = self.paths(&rec.id);
        let config =
            serde_json::from_value::<RunConfig>(rec.client.clone()).unwrap_or_else(|_| RunConfig {
                image: rec.config.image.clone(),
                cmd: rec.args.clone(),
                tty: rec.config.tty,
                interactive: rec.config.stdin,
                network: "sandbox".into(),
                ..Default::default()
            });
        let exit = crate::core::status::exit_of(&paths);
        Container {
            id: rec.id.clone(),
            name: rec.name.clone(),
            sandbox_id: rec.sandbox_id.clone(),
            created: rfc3339(rec.created_at),
            image_id: rec.image_id.clone(),
            image_manifest: rec.image_manifest.clone(),
            rootfs: rec.rootfs.display().to_string(),
            config,
            args: rec.args.clone(),
            restart_count: self
                .core
                .status_of(&rec)
                .restart_count
                .max(exit.map_or(0, |x| x.restart_count)),
            record: rec,
        }
    }

    /// Every container, oldest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        Ok(self
            .core
            .container_records()?
            .into_iter()
            .map(|r| self.view(r))
            .collect())
    }

    /// The container whose (lean) sandbox is `sandbox_id`, or the first container of a
    /// pod's sandbox.
    pub fn container_of_sandbox(&self, sandbox_id: &str) -> Option<Container> {
        self.list()
            .ok()?
            .into_iter()
            .find(|c| c.sandbox_id == sandbox_id)
    }

    /// Finds a container by name, ID or unique ID prefix.
    pub fn find(&self, what: &str) -> Result<Container> {
        Ok(self.view(self.core.find(what)?))
    }

    /// The container's state, read from the kernel and the monitor's records.
    pub fn state(&self, c: &Container) -> State {
        match self.core.container_state(&c.record) {
            ContainerState::Created => State::Created,
            ContainerState::Running(p) => State::Running(p),
            ContainerState::Paused(p) => State::Paused(p),
            ContainerState::Restarting => State::Restarting,
            ContainerState::Orphaned(p) => State::Orphaned(p),
            ContainerState::Unknown => State::Dead,
            ContainerState::Exited => {
                let x = crate::core::status::exit_of(&self.paths(&c.id)).unwrap_or_default();
                State::Exited(x.exit_code, x.finished_at)
            }
        }
    }

    /// The last exit record.
    pub fn exit_record(&self, c: &Container) -> Option<ExitRecord> {
        crate::core::status::exit_of(&self.paths(&c.id))
    }

    /// Creates a container: its lean sandbox, root filesystem and runtime config.
    pub fn create(&self, cfg: RunConfig, name: Option<String>) -> Result<Container> {
        Ok(self.create_with(cfg, name, false)?.0)
    }

    /// Creates a container to start at once (`run`): its lean sandbox's namespaces
    /// and network are made while its root filesystem and config are. Keep the hold
    /// until the container has started.
    pub fn create_to_run(
        &self,
        cfg: RunConfig,
        name: Option<String>,
    ) -> Result<(Container, Option<crate::dns::Hold>)> {
        self.create_with(cfg, name, true)
    }

    fn create_with(
        &self,
        cfg: RunConfig,
        name: Option<String>,
        ready: bool,
    ) -> Result<(Container, Option<crate::dns::Hold>)> {
        let id = names::new_id();
        let name = match name {
            Some(n) => {
                names::check_name(&n)?;
                n
            }
            None => names::generate_name(&id, &|n| {
                names::holder(&self.core.dirs().names(), n).is_some()
            }),
        };
        let mut cfg = cfg;
        for d in &cfg.dns {
            d.parse::<std::net::IpAddr>()
                .map_err(|_| Error::Invalid(format!("--dns {d:?} is not an IP address")))?;
        }
        let own_network = !matches!(cfg.network.as_str(), "none" | "host" | "" | "private")
            && !cfg.network.starts_with("container:");
        if !own_network && (!cfg.publish.is_empty() || cfg.publish_all) {
            return Err(Error::Invalid(format!(
                "-p/-P need a bridge network: the container's network is {:?}",
                cfg.network
            )));
        }
        if let Some(n) = cfg.network.strip_prefix("cni:") {
            berth_net::cni::load(n)?;
        } else if own_network {
            berth_net::network::Networks::host().get(&cfg.network)?;
        }
        if cfg.publish_all {
            let img = self.core.images().resolve_stored(&cfg.image)?;
            expose_all(&mut cfg, &img.config);
        }
        let sb_config = convert::sandbox_config(self, &cfg, &id, &name)?;
        let ctr_config = convert::container_config(self, &cfg, &name)?;
        let sb = self.core.make_sandbox(&sb_config, false)?;
        let client = serde_json::to_value(&cfg).expect("flags serialize");
        let make = || {
            self.core
                .create_container_as(&sb, &ctr_config, client, Some(id.clone()))
        };
        let made = if ready {
            self.core.ready_lean_sandbox_while(&sb, make)
        } else {
            make().map(|rec| (rec, None))
        };
        match made {
            Ok((rec, hold)) => Ok((self.view(rec), hold)),
            Err(e) => {
                // A container made while its sandbox failed to come up goes first.
                if let Ok(rec) = self.core.find(&id) {
                    let _ = self.remove(&self.view(rec), true);
                }
                let _ = self.core.remove_sandbox(&sb);
                Err(e)
            }
        }
    }

    /// Starts a container in the background; returns its init's pid.
    pub fn start(&self, c: &Container) -> Result<i32> {
        Ok(self
            .core
            .start_container_with(&c.id, StartMode::Detached)?
            .pid)
    }

    /// Starts a container and connects to its terminal or stdin before the program
    /// runs; returns the monitor, the pid and the connection.
    pub fn start_attached(
        &self,
        c: &Container,
        winsize: (u16, u16),
    ) -> Result<(Child, i32, std::os::unix::net::UnixStream)> {
        let Started {
            pid, monitor, conn, ..
        } = self
            .core
            .start_container_with(&c.id, StartMode::Attach(winsize.0, winsize.1))?;
        let conn = conn.ok_or_else(|| {
            Error::Runtime(format!("container {}: the monitor took no attach", c.name))
        })?;
        Ok((
            monitor.expect("an attached start keeps its monitor"),
            pid,
            conn,
        ))
    }

    /// Starts a container whose output the caller follows from the monitor.
    pub fn start_following(&self, c: &Container) -> Result<(Child, i32, MonitorOutput)> {
        let Started {
            pid,
            monitor,
            output,
            ..
        } = self.core.start_container_with(&c.id, StartMode::Follow)?;
        Ok((
            monitor.expect("a followed start keeps its monitor"),
            pid,
            output.expect("a followed start has output"),
        ))
    }

    /// Connects to a running container's attach socket (created with -i or -t).
    pub fn attach(&self, c: &Container, winsize: (u16, u16)) -> Result<crate::exec::AttachSession> {
        self.core.attach_to(&c.id, Some(winsize))
    }

    /// Tells the monitor of a `-t` container that the attached terminal is now
    /// `winsize` (rows, columns); the program gets SIGWINCH.
    pub fn resize(&self, c: &Container, winsize: (u16, u16)) -> Result<()> {
        let dir = self.paths(&c.id).dir;
        let mut conn = crate::core::start::connect_attach(&dir)
            .map_err(|e| Error::Conflict(format!("container {} is not running ({e})", c.name)))?;
        let mut req = vec![berth_monitor::monitor::RESIZE];
        req.extend_from_slice(&winsize.0.to_be_bytes());
        req.extend_from_slice(&winsize.1.to_be_bytes());
        std::io::Write::write_all(&mut conn, &req)
            .map_err(|e| Error::io("send the new terminal size", e))
    }

    /// Sends a signal to the container's init.
    pub fn kill(&self, c: &Container, signal: &str, by_user: bool) -> Result<()> {
        self.core.kill_container(&c.id, signal, by_user)
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout`.
    pub fn stop(&self, c: &Container, timeout: Option<Duration>) -> Result<()> {
        let t = timeout.unwrap_or(Duration::from_secs(c.config.stop_timeout.unwrap_or(10)));
        // A zero timeout still asks nicely first, as docker's `stop -t 0` does.
        let t = t.max(Duration::from_millis(1));
        self.core.stop_container_id(&c.id, t)
    }

    /// Waits for the container to end; returns its exit code.
    pub fn wait(&self, c: &Container) -> Result<i32> {
        if self.state(c) == State::Created {
            return Err(Error::Conflict(format!(
                "container {} was never started",
                c.name
            )));
        }
        self.core
            .wait_container(&c.record, Duration::from_secs(100 * 365 * 86_400), |s| {
                matches!(s, ContainerState::Exited | ContainerState::Unknown)
            });
        match self.core.find(&c.id) {
            Err(_) => Err(Error::NotFound(format!("container {} was removed", c.name))),
            Ok(_) => match self.state(c) {
                State::Exited(code, _) => Ok(code),
                _ => Ok(-1),
            },
        }
    }

    /// Removes a container (with `force`, killing it first) and its lean sandbox.
    pub fn remove(&self, c: &Container, force: bool) -> Result<()> {
        match self.state(c) {
            State::Running(_) | State::Paused(_) | State::Orphaned(_) | State::Restarting
                if !force =>
            {
                Err(Error::Conflict(format!(
                    "container {} is running: stop it first, or remove it with -f",
                    c.name
                )))
            }
            _ => self.core.remove_container_id(&c.id),
        }
    }

    /// Starts a process in a running container.
    pub fn exec(&self, c: &Container, opts: &ExecOptions) -> Result<crate::exec::ExecSession> {
        let user = opts
            .user
            .clone()
            .or_else(|| c.config.user.clone())
            .map(|u| crate::core::user::parse(&u))
            .unwrap_or_default();
        self.core.exec_in(
            &c.id,
            &crate::cri::ExecRequest {
                cmd: opts.args.clone(),
                tty: opts.tty,
                stdin: opts.interactive,
                env: opts.env.clone(),
                user,
                workdir: opts.workdir.clone(),
                privileged: opts.privileged,
                detach: opts.detach,
            },
        )
    }

    /// Freezes (`pause`) or thaws a container's processes.
    pub fn pause(&self, c: &Container, pause: bool) -> Result<()> {
        let s = self.state(c);
        match (&s, pause) {
            (State::Running(_), true) | (State::Paused(_), false) => {}
            _ => {
                return Err(Error::Conflict(format!(
                    "container {} is {}: cannot {}",
                    c.name,
                    s.word(),
                    if pause { "pause it" } else { "unpause it" }
                )))
            }
        }
        let out = self
            .runtime(&[if pause { "pause" } else { "resume" }, &c.id])
            .output()
            .map_err(|e| Error::io("run berth-runtime", e))?;
        if !out.status.success() {
            return Err(Error::Runtime(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }

    /// Renames a container.
    pub fn rename(&self, c: &Container, new: &str) -> Result<()> {
        self.core.rename_container(&c.id, new)
    }

    /// Makes an image of the container's changes (its init files left out).
    pub fn commit(
        &self,
        c: &Container,
        opts: &berth_image::commit::NewImage,
    ) -> Result<berth_image::Digest> {
        let manifest: berth_image::Digest = c
            .image_manifest
            .parse()
            .map_err(|e| Error::Invalid(format!("container {}: bad image digest: {e}", c.name)))?;
        let base = self
            .images()
            .resolve_digest(&manifest, &berth_image::oci::Platform::host())?;
        Ok(self.images().commit(&c.id, &base, opts)?)
    }

    /// The pids of a container's processes.
    pub fn top(&self, c: &Container) -> Result<Vec<i32>> {
        let out = self
            .runtime(&["ps", "--format", "json", &c.id])
            .output()
            .map_err(|e| Error::io("run berth-runtime ps", e))?;
        if !out.status.success() {
            return Err(Error::Conflict(format!(
                "container {} is {}: it has no processes",
                c.name,
                self.state(c).word()
            )));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Runtime(format!("berth-runtime ps: {e}")))
    }

    /// What the container changed in its root filesystem, as `docker diff` lists it.
    pub fn diff(&self, c: &Container) -> Result<Vec<(char, String)>> {
        let (upper, _, _) = self.images().container_paths(&c.id);
        let manifest: berth_image::Digest = c
            .image_manifest
            .parse()
            .map_err(|e| Error::Invalid(format!("container {}: bad image digest: {e}", c.name)))?;
        let img = self
            .images()
            .resolve_digest(&manifest, &berth_image::oci::Platform::host())?;
        let lowers: Vec<PathBuf> = img
            .chain_ids
            .iter()
            .filter_map(|ch| self.images().snapshot(ch).ok().flatten())
            .map(|s| self.images().snapshot_dir(s.id))
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

    /// The directory of a container's sandbox (its /etc files, network records).
    pub fn sandbox_dir(&self, c: &Container) -> PathBuf {
        self.core.dirs().sandbox(&c.sandbox_id)
    }

    /// The container's network attachment (address, published ports), while its
    /// sandbox is on a network of its own.
    pub fn attachment(&self, c: &Container) -> Option<berth_net::attach::Attachment> {
        crate::core::sandbox_net::attachment(&self.core, &c.sandbox_id)
    }

    /// The container's published ports: on its network (bridge or CNI), or through
    /// pasta (rootless).
    pub fn published_ports(&self, c: &Container) -> Vec<berth_net::ports::PortMap> {
        match self.attachment(c) {
            Some(a) => a.ports,
            None => berth_net::pasta::ports(&self.core.dirs().sandbox(&c.sandbox_id)),
        }
    }

    /// The container's further networks (`network connect`), by interface.
    pub fn extra_attachments(&self, c: &Container) -> Vec<berth_net::attach::Attachment> {
        crate::core::sandbox_net::extra_attachments(&self.core, &c.sandbox_id)
    }

    /// The container's log file.
    pub fn log_path(&self, c: &Container) -> PathBuf {
        c.record.log_path.clone()
    }

    /// Connects a running container to a further network (`network connect`),
    /// remembered so that its next start joins it again.
    pub fn connect(&self, c: &Container, network: &str) -> Result<berth_net::attach::Attachment> {
        self.core
            .connect_network(&c.id, network, |cfg: &mut Value, name: &str| {
                if let Some(list) = cfg.get_mut("networks").and_then(Value::as_array_mut) {
                    if !list.iter().any(|n| n == name) {
                        list.push(Value::String(name.to_string()));
                    }
                }
            })
    }

    /// Takes a container off a further network (`network disconnect`).
    pub fn disconnect(&self, c: &Container, network: &str) -> Result<()> {
        self.core
            .disconnect_network(&c.id, network, |cfg: &mut Value, name: &str| {
                if let Some(list) = cfg.get_mut("networks").and_then(Value::as_array_mut) {
                    list.retain(|n| n != name);
                }
            })
    }
}

/// `-P`: one published port for each the image exposes.
fn expose_all(cfg: &mut RunConfig, image: &Value) {
    let exposed = image
        .pointer("/config/ExposedPorts")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    for e in exposed {
        let (port, proto) = e.split_once('/').unwrap_or((&e, "tcp"));
        if !cfg
            .publish
            .iter()
            .any(|p| p.ends_with(&format!(":{e}")) || p.ends_with(&format!(":{port}")))
        {
            cfg.publish.push(format!("{port}/{proto}"));
        }
    }
}
