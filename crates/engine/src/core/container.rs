//! Containers: made in a sandbox from an image (root filesystem and OCI config),
//! started under a monitor, stopped, removed. Each change holds the container's lock;
//! creation is marked so that a caller killed half way leaves nothing behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_cgroups::naming;
use berth_image::snapshot::Snapshotter;
use berth_monitor::monitor::STOPPED_MARK;
use berth_monitor::supervise::{
    now_nanos, EventKind, EventRecord, OwnedSandbox, Removal, Supervision,
};

use crate::cri::{
    ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, ContainerSummary,
    PidNamespace, SandboxState,
};
use crate::error::{Context, Error, Result};

use super::lock::Lock;
use super::ocispec::{self, SpecInput};
use super::records::{ContainerRecord, SandboxPhase, SandboxRecord};
use super::recover::{self, Making};
use super::security;
use super::start::{StartMode, Started};
use super::{fault, names, Core};

/// The name a pod's container reserves (as the kubelet's runtimes name them).
fn pod_container_name(sb: &SandboxRecord, c: &ContainerConfig) -> String {
    let m = &sb.config.metadata;
    let n = format!(
        "{}_{}_{}_{}_{}",
        c.metadata.name, m.name, m.namespace, m.uid, c.metadata.attempt
    );
    if n.len() <= 200 {
        n
    } else {
        format!("{}_{}", &n[..120], &names::new_id()[..16])
    }
}

/// The engine's own oom_score_adj: the lowest it may give a container.
fn oom_floor() -> i64 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Core {
    /// Creates a container in sandbox `sandbox_id` (a lean sandbox's container takes
    /// its name from its metadata; a pod's is named after the pod).
    pub fn create_container_in(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        client: serde_json::Value,
    ) -> Result<ContainerRecord> {
        self.create_container_as(sandbox_id, config, client, None)
    }

    /// [`Self::create_container_in`] with the ID chosen by the caller (who may need it
    /// before: docker's hostname is the ID's first 12 digits).
    pub fn create_container_as(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        client: serde_json::Value,
        id: Option<String>,
    ) -> Result<ContainerRecord> {
        if config.metadata.name.is_empty() {
            return Err(Error::Invalid(
                "container config: metadata.name is required".into(),
            ));
        }
        let sb = self.sandbox(sandbox_id)?;
        // Shared: a pod sandbox is not removed or stopped while a container is made in
        // it. A lean sandbox goes only with its container (whose lock the maker
        // holds), and may be brought up meanwhile (see `ready_lean_sandbox_while`).
        let _sb_lock = if sb.lean() {
            None
        } else {
            Some(Lock::take(&self.dirs().locks(), &sb.id, false)?)
        };
        let sb = SandboxRecord::load(&self.dirs().sandbox(&sb.id))?
            .ok_or_else(|| Error::NotFound(format!("no such pod sandbox: {sandbox_id}")))?;
        if !sb.lean() && self.sandbox_state(&sb) != SandboxState::Ready {
            return Err(Error::Conflict(format!(
                "pod sandbox {} is not ready (it was stopped, or its infra process died): run a new sandbox for the pod",
                &sb.id[..12]
            )));
        }
        let id = match id {
            Some(id) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => id,
            Some(id) => {
                return Err(Error::Invalid(format!(
                    "container ID {id:?}: 64 hexadecimal digits"
                )))
            }
            None => names::new_id(),
        };
        let lock = Lock::take(&self.dirs().locks(), &id, true)?;
        if self.dirs().container(&id).dir.exists() {
            return Err(Error::Conflict(format!("container ID {id} is taken")));
        }
        recover::begin(self, &id, Making::Container)?;
        let made = self.make_container(&id, &sb, config, client);
        match made {
            Ok(rec) => {
                recover::done(self, &id);
                drop(lock);
                Ok(rec)
            }
            Err(e) => {
                undo(self, &id);
                recover::done(self, &id);
                lock.remove_file();
                Err(e)
            }
        }
    }

    fn make_container(
        &self,
        id: &str,
        sb: &SandboxRecord,
        config: &ContainerConfig,
        client: serde_json::Value,
    ) -> Result<ContainerRecord> {
        let name = if sb.lean() {
            config.metadata.name.clone()
        } else {
            pod_container_name(sb, config)
        };
        let alive = |holder: &str| {
            self.dirs().container(holder).record().exists() || recover::in_progress(self, holder)
        };
        if let Err(holder) = names::reserve(&self.dirs().names(), &name, id, &alive)? {
            return Err(Error::Conflict(format!(
                "the container name {name:?} is already in use by container {}; remove it or choose another name",
                &holder[..holder.len().min(12)]
            )));
        }
        let paths = self.dirs().container(id);
        std::fs::create_dir_all(&paths.dir).ctx(|| format!("create {}", paths.dir.display()))?;
        // Written first (without a config yet it cannot start): whoever undoes a
        // half-made container learns its name from it.
        let mut rec = ContainerRecord {
            id: id.to_string(),
            sandbox_id: sb.id.clone(),
            name,
            created_at: now_nanos(),
            image_id: String::new(),
            image_manifest: String::new(),
            rootfs: PathBuf::new(),
            args: Vec::new(),
            log_path: paths.default_log(),
            cgroup: naming::child(&sb.cgroup_parent, id),
            config: config.clone(),
            client,
        };
        rec.save(&paths.dir)?;
        fault("container-after-record");
        let img = self.images().resolve_stored(&config.image)?;
        rec.image_id = img.config_digest.to_string();
        rec.image_manifest = img.manifest_digest.to_string();
        let hostname = super::sandbox::hostname_of(&sb.id, &sb.config);
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
        // Not saved yet: whoever undoes a half-made container finds its root
        // filesystem by the container's ID.
        let rootfs = self.images().prepare(id, &img, &files, Snapshotter::Auto)?;
        rec.rootfs = rootfs.path.clone();
        fault("container-after-rootfs");
        rec.log_path = match &config.log_path {
            None => paths.default_log(),
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => match &sb.config.log_directory {
                Some(d) => d.join(p),
                None => {
                    return Err(Error::Invalid(format!(
                        "container config: log_path {} is relative, but the sandbox has no log_directory",
                        p.display()
                    )))
                }
            },
        };
        let view = if sb.lean() {
            // A lean sandbox's namespaces are made when the container starts; their
            // paths are known already.
            self.sandbox_view_of(sb, false)?
        } else {
            self.sandbox_view(sb)?
        };
        let pid_target = match &config.pid {
            PidNamespace::Sandbox => None,
            PidNamespace::Target(other) => {
                let o = self.find(other)?;
                match self.container_state(&o).pid().filter(|p| *p > 0) {
                    Some(pid) => Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
                    None => {
                        return Err(Error::Conflict(format!(
                            "container {} whose PID namespace this one joins is not running",
                            o.name
                        )))
                    }
                }
            }
        };
        let procview = if config.procview {
            crate::procview::sources()
        } else {
            Vec::new()
        };
        let (spec, args) = ocispec::build(&SpecInput {
            config,
            image: &img.config,
            rootfs: &rec.rootfs,
            cgroup: &rec.cgroup,
            sandbox: &view,
            pid_target,
            oom_floor: oom_floor(),
            sysinfo_listener: (config.procview && security::sysinfo_interception_works())
                .then(|| paths.seccomp_socket()),
            procview,
        })?;
        rec.args = args;
        std::fs::write(
            paths.config(),
            serde_json::to_vec_pretty(&spec).expect("a spec serializes"),
        )
        .ctx(|| format!("write {}", paths.config().display()))?;
        self.supervision(&rec, sb).save(&paths.dir)?;
        rec.save(&paths.dir)?;
        fault("container-after-config");
        self.publish(&rec, EventKind::Created);
        Ok(rec)
    }

    /// The monitor's instructions for container `rec`.
    fn supervision(&self, rec: &ContainerRecord, sb: &SandboxRecord) -> Supervision {
        let c = &rec.config;
        let paths = self.dirs().container(&rec.id);
        Supervision {
            id: rec.id.clone(),
            sandbox_id: rec.sandbox_id.clone(),
            runtime_root: self.dirs().runtime(),
            events_dir: self.dirs().events(),
            log_path: rec.log_path.clone(),
            tty: c.tty,
            stdin: c.stdin,
            stdin_once: c.stdin_once,
            restart: c.restart.clone(),
            cgroup: rec.cgroup.clone(),
            owned_sandbox: sb.lean().then(|| OwnedSandbox {
                id: sb.id.clone(),
                dir: self.dirs().sandbox(&sb.id),
            }),
            auto_remove: c.auto_remove.then(|| Removal {
                rootfs: rec.rootfs.clone(),
                paths: berth_monitor::supervise::event_files(&self.dirs().events(), &rec.id)
                    .into_iter()
                    .chain([
                        paths.dir.clone(),
                        self.dirs().names().join(&rec.name),
                        self.dirs().locks().join(&rec.id),
                        self.dirs().locks().join(&sb.id),
                    ])
                    .collect(),
                sandbox_dir: sb.lean().then(|| self.dirs().sandbox(&sb.id)),
            }),
            seccomp_agent: (c.procview && security::sysinfo_interception_works())
                .then(|| berth_procview::agent::socket_path(&berth_procview::mountpoint())),
        }
    }

    fn publish(&self, rec: &ContainerRecord, kind: EventKind) {
        EventRecord {
            container_id: rec.id.clone(),
            sandbox_id: rec.sandbox_id.clone(),
            kind,
            at: now_nanos(),
        }
        .publish(&self.dirs().events());
    }

    /// Every container record, oldest first.
    pub fn container_records(&self) -> Result<Vec<ContainerRecord>> {
        let dir = self.dirs().containers();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .ctx(|| format!("read {}", dir.display()))?
            .flatten()
        {
            if let Ok(Some(r)) = ContainerRecord::load(&e.path()) {
                // Half made: not a container yet (a sweep undoes it if its maker died).
                if !r.args.is_empty() {
                    out.push(r);
                }
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Finds a container by name, ID or unique ID prefix.
    pub fn find(&self, what: &str) -> Result<ContainerRecord> {
        let by_id = |id: &str| -> Option<ContainerRecord> {
            ContainerRecord::load(&self.dirs().container(id).dir)
                .ok()
                .flatten()
                .filter(|r| !r.args.is_empty())
        };
        if what.len() == 64 {
            if let Some(r) = by_id(what) {
                return Ok(r);
            }
        }
        if !what.is_empty() && !what.contains('/') {
            if let Some(r) = names::holder(&self.dirs().names(), what).and_then(|id| by_id(&id)) {
                return Ok(r);
            }
        }
        let found: Vec<ContainerRecord> = self
            .container_records()?
            .into_iter()
            .filter(|r| !what.is_empty() && r.id.starts_with(what))
            .collect();
        match found.len() {
            1 => Ok(found.into_iter().next().expect("one")),
            0 => Err(Error::NotFound(format!("no such container: {what}"))),
            _ => Err(Error::Invalid(format!(
                "container ID prefix {what:?} is ambiguous: give more characters"
            ))),
        }
    }

    /// Starts a container (created, exited or dead) under its monitor: its lean
    /// sandbox made ready first.
    pub fn start_container_with(&self, id: &str, mode: StartMode) -> Result<Started> {
        let rec = self.find(id)?;
        let lock = Lock::take(&self.dirs().locks(), &rec.id, true)?;
        let paths = self.dirs().container(&rec.id);
        if !paths.record().exists() {
            return Err(Error::NotFound(format!(
                "container {} was removed",
                rec.name
            )));
        }
        let state = self.container_state(&rec);
        if !matches!(
            state,
            ContainerState::Created | ContainerState::Exited | ContainerState::Unknown
        ) {
            return Err(Error::Conflict(format!(
                "container {} is {}",
                rec.name,
                state.word()
            )));
        }
        if matches!(mode, StartMode::Attach(..)) && !(rec.config.tty || rec.config.stdin) {
            return Err(Error::Invalid(format!(
                "container {} was created without a terminal or stdin: there is nothing to attach to",
                rec.name
            )));
        }
        // The monitor of the last run may still be releasing what the container held
        // (its lean sandbox): it must be done before anything is made again.
        super::status::wait_monitor_gone(&paths, Duration::from_secs(10));
        let mut sb = self.sandbox(&rec.sandbox_id)?;
        let _sb_lock = Lock::take(&self.dirs().locks(), &sb.id, sb.lean())?;
        let make_lean = sb.lean()
            && (self.sandbox_state(&sb) != SandboxState::Ready || sb.phase != SandboxPhase::Ready);
        if !sb.lean() && self.sandbox_state(&sb) != SandboxState::Ready {
            return Err(Error::Conflict(format!(
                "pod sandbox {} is not ready: the container cannot start in it",
                &sb.id[..12]
            )));
        }
        let _ = std::fs::remove_file(paths.exit());
        let _ = std::fs::remove_file(paths.dir.join(STOPPED_MARK));
        // Held until the start is done: the /proc view's server does not retire under
        // a start.
        let _procview = if rec.config.procview {
            Some(crate::procview::ensure()?)
        } else {
            None
        };
        let what = format!("container {}", rec.name);
        if !make_lean {
            let started = self.spawn_monitor(&paths.dir, mode, &what);
            if started.is_err() && sb.lean() {
                self.release_sandbox(&mut sb);
            }
            return started;
        }
        // The lean sandbox's namespaces are made while the monitor starts up.
        if sb.phase != SandboxPhase::Created {
            // Leftovers of a start that failed or ended (a sandbox never made has none).
            self.release_sandbox(&mut sb);
        }
        let gated = self.spawn_gated_monitor(&paths.dir, mode)?;
        let started = match self.ready_sandbox(&mut sb) {
            Ok(hold) => {
                let started = gated.open(&paths.dir, mode, &what);
                drop(hold);
                started
            }
            Err(e) => {
                drop(gated);
                Err(e)
            }
        };
        if started.is_err() {
            self.release_sandbox(&mut sb);
        }
        drop(lock);
        started
    }

    /// Sends `signal` to the container's init (`by_user`: the restart policy does not
    /// restart it after).
    pub fn kill_container(&self, id: &str, signal: &str, by_user: bool) -> Result<()> {
        let rec = self.find(id)?;
        let state = self.container_state(&rec);
        if !state.is_running() {
            return Err(Error::Conflict(format!(
                "container {} is {}, not running",
                rec.name,
                state.word()
            )));
        }
        let paths = self.dirs().container(&rec.id);
        if by_user {
            let _ = std::fs::write(paths.dir.join(STOPPED_MARK), b"");
        }
        // A frozen process cannot act on a signal: thaw it first, as docker does.
        if matches!(state, ContainerState::Paused(_)) {
            let _ = self.runtime(&["resume", &rec.id]).output();
        }
        let out = self
            .runtime(&["kill", &rec.id, signal])
            .output()
            .ctx(|| "run berth-runtime kill")?;
        if !out.status.success()
            && matches!(
                self.container_state(&rec),
                ContainerState::Running(_)
                    | ContainerState::Paused(_)
                    | ContainerState::Orphaned(_)
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

    /// Stops container `id`: its stop signal, then SIGKILL after `timeout`; returns
    /// once it has ended (and its monitor recorded it).
    pub fn stop_container_id(&self, id: &str, timeout: Duration) -> Result<()> {
        let rec = match self.find(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !self.container_state(&rec).is_running() {
            return Ok(());
        }
        let sig = rec.config.stop_signal.unwrap_or(15).to_string();
        if !timeout.is_zero() {
            let _ = self.kill_container(&rec.id, &sig, true);
        }
        if timeout.is_zero() || !self.wait_container(&rec, timeout, |s| !running_now(s)) {
            let _ = self.kill_container(&rec.id, "KILL", true);
            self.wait_container(&rec, Duration::from_secs(10), |s| !running_now(s));
        }
        // Let the monitor write its record (an orphaned container has none to write)
        // and release what the container held, unless it will start it again.
        self.wait_container(&rec, Duration::from_secs(5), |s| {
            matches!(
                s,
                ContainerState::Exited | ContainerState::Unknown | ContainerState::Created
            )
        });
        if !matches!(self.container_state(&rec), ContainerState::Restarting) {
            super::status::wait_monitor_gone(
                &self.dirs().container(&rec.id),
                Duration::from_secs(10),
            );
        }
        Ok(())
    }

    /// Waits up to `timeout` until the container's state satisfies `done` (or the
    /// container is gone); true if it did. Woken by the end of the container's init and
    /// of its monitor (pidfds: the kernel's exit notices), and otherwise looking again
    /// every few milliseconds only in the short windows those do not cover (a monitor
    /// that is still writing its record).
    pub fn wait_container(
        &self,
        rec: &ContainerRecord,
        timeout: Duration,
        done: impl Fn(&ContainerState) -> bool,
    ) -> bool {
        // (Not an inotify watch on the events directory: closing one waits for an SRCU
        // grace period, some 15 ms every `stop` would pay.)
        let end = Instant::now() + timeout;
        let paths = self.dirs().container(&rec.id);
        loop {
            if !paths.record().exists() {
                return true;
            }
            let state = self.container_state(rec);
            if done(&state) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let init = state.pid().filter(|p| *p > 0);
            let pidfds: Vec<rustix::fd::OwnedFd> =
                [init, super::status::monitor_of(&paths).map(|(p, _)| p)]
                    .into_iter()
                    .flatten()
                    .filter(|p| *p > 0)
                    .filter_map(rustix::process::Pid::from_raw)
                    .filter_map(|p| {
                        rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
                    })
                    .collect();
            // With the init running, its end is what comes next; otherwise the monitor
            // is between the init's end and its record (or restarting it): look again
            // soon.
            let nap = if init.is_some() {
                left
            } else {
                left.min(Duration::from_millis(2))
            };
            match pidfds.split_first() {
                Some((first, rest)) => {
                    crate::events::wait_readable(first, rest, Some(nap));
                }
                None => std::thread::sleep(nap.min(Duration::from_millis(2))),
            }
        }
    }

    /// Removes container `id`, killing it if it runs; its lean sandbox goes with it.
    /// Repeatable.
    pub fn remove_container_id(&self, id: &str) -> Result<()> {
        let rec = match self.find(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let lock = Lock::take(&self.dirs().locks(), &rec.id, true)?;
        if self.container_state(&rec).is_running() {
            let _ = self.kill_container(&rec.id, "KILL", true);
            self.wait_container(&rec, Duration::from_secs(10), |s| !s.is_running());
        }
        // The monitor of a container just killed may still be writing its records.
        super::status::wait_monitor_gone(&self.dirs().container(&rec.id), Duration::from_secs(5));
        undo(self, &rec.id);
        lock.remove_file();
        let sb = self.sandbox(&rec.sandbox_id);
        if let Ok(sb) = sb.filter_lean() {
            let sb_lock = Lock::take(&self.dirs().locks(), &sb.id, true)?;
            super::sandbox::undo(self, &sb.id);
            sb_lock.remove_file();
        }
        Ok(())
    }

    /// Renames container `id` (its name reserved anew, the old one released).
    pub fn rename_container(&self, id: &str, new: &str) -> Result<()> {
        names::check_name(new)?;
        let rec = self.find(id)?;
        let _lock = Lock::take(&self.dirs().locks(), &rec.id, true)?;
        let alive = |holder: &str| {
            self.dirs().container(holder).record().exists() || recover::in_progress(self, holder)
        };
        if let Err(holder) = names::reserve(&self.dirs().names(), new, &rec.id, &alive)? {
            return Err(Error::Conflict(format!(
                "the container name {new:?} is already in use by container {}",
                &holder[..holder.len().min(12)]
            )));
        }
        let mut r = rec.clone();
        r.name = new.to_string();
        r.config.metadata.name = new.to_string();
        if let Some(obj) = r.client.as_object_mut() {
            obj.insert("name".into(), serde_json::Value::String(new.into()));
        }
        let paths = self.dirs().container(&rec.id);
        if let Err(e) = r.save(&paths.dir) {
            names::release(&self.dirs().names(), new, &rec.id);
            return Err(e);
        }
        names::release(&self.dirs().names(), &rec.name, &rec.id);
        // A --rm container's monitor removes its name reservation by path.
        if let Ok(sb) = self.sandbox(&rec.sandbox_id) {
            let _ = self.supervision(&r, &sb).save(&paths.dir);
        }
        Ok(())
    }

    /// What `list_containers` shows of a container.
    pub fn summary_of(&self, rec: &ContainerRecord) -> ContainerSummary {
        ContainerSummary {
            id: rec.id.clone(),
            sandbox_id: rec.sandbox_id.clone(),
            metadata: rec.config.metadata.clone(),
            name: rec.name.clone(),
            image: rec.config.image.clone(),
            image_id: rec.image_id.clone(),
            state: self.container_state(rec),
            created_at: rec.created_at,
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
        }
    }

    /// Containers matching a filter.
    pub fn list_container_summaries(&self, f: &ContainerFilter) -> Result<Vec<ContainerSummary>> {
        Ok(self
            .container_records()?
            .iter()
            .filter(|r| f.id.as_ref().is_none_or(|id| r.id.starts_with(id.as_str())))
            .filter(|r| {
                f.sandbox_id
                    .as_ref()
                    .is_none_or(|s| r.sandbox_id.starts_with(s.as_str()))
            })
            .filter(|r| {
                f.labels
                    .iter()
                    .all(|(k, v)| r.config.labels.get(k) == Some(v))
            })
            .map(|r| self.summary_of(r))
            .filter(|s| f.running.is_none_or(|want| s.state.is_running() == want))
            .collect())
    }

    /// A container in full.
    pub fn status_of(&self, rec: &ContainerRecord) -> ContainerStatus {
        let paths = self.dirs().container(&rec.id);
        let summary = self.summary_of(rec);
        let exit = super::status::exit_of(&paths);
        let ns = |t: Option<&str>| {
            t.and_then(berth_monitor::record::parse_rfc3339_nanos)
                .unwrap_or(0)
        };
        let (reason, message) = match (&summary.state, &exit) {
            (ContainerState::Exited, Some(x)) if !x.error.is_empty() => {
                ("ContainerCannotRun".to_string(), x.error.clone())
            }
            (ContainerState::Exited, Some(x)) if x.oom_killed => {
                ("OOMKilled".into(), String::new())
            }
            (ContainerState::Exited, Some(x)) if x.exit_code == 0 => {
                ("Completed".into(), String::new())
            }
            (ContainerState::Exited, Some(_)) => ("Error".into(), String::new()),
            _ => (String::new(), String::new()),
        };
        let running = summary.state.is_running();
        ContainerStatus {
            started_at: ns(exit
                .as_ref()
                .map(|x| x.started_at.as_str())
                .filter(|_| !running))
            .max(if running { started_at_of(&paths) } else { 0 }),
            finished_at: if running {
                0
            } else {
                ns(exit.as_ref().map(|x| x.finished_at.as_str()))
            },
            exit_code: exit.as_ref().map_or(0, |x| x.exit_code),
            reason,
            message,
            oom_killed: exit.as_ref().is_some_and(|x| x.oom_killed),
            restart_count: match (&summary.state, &exit) {
                (ContainerState::Exited, Some(x)) => x.restart_count,
                // Running (or about to run) again after an end the monitor recorded.
                (_, Some(x)) if running => x.restart_count + 1,
                _ => 0,
            },
            image_ref: rec.image_manifest.clone(),
            log_path: rec.log_path.clone(),
            log_error: exit
                .as_ref()
                .map(|x| x.log_error.clone())
                .unwrap_or_default(),
            args: rec.args.clone(),
            rootfs: rec.rootfs.clone(),
            cgroup: rec.cgroup.clone(),
            config: rec.config.clone(),
            summary,
        }
    }
}

fn running_now(s: &ContainerState) -> bool {
    matches!(
        s,
        ContainerState::Running(_) | ContainerState::Paused(_) | ContainerState::Orphaned(_)
    )
}

/// When the running init started (ns since the epoch), from its pid file's time.
fn started_at_of(paths: &berth_monitor::record::Paths) -> i64 {
    std::fs::metadata(paths.init_pid())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

trait LeanOnly {
    fn filter_lean(self) -> Result<SandboxRecord>;
}

impl LeanOnly for Result<SandboxRecord> {
    fn filter_lean(self) -> Result<SandboxRecord> {
        match self {
            Ok(s) if s.lean() => Ok(s),
            Ok(_) => Err(Error::Invalid("a pod's sandbox".into())),
            Err(e) => Err(e),
        }
    }
}

/// Takes container `id` apart — whatever of it exists — and forgets it: runtime
/// state, root filesystem, name, records. Used to remove a container, to clean up a
/// failed create, and by the sweep after a maker died. The caller holds its lock.
pub(crate) fn undo(core: &Core, id: &str) {
    let paths = core.dirs().container(id);
    let rec = ContainerRecord::load(&paths.dir).ok().flatten();
    if core.dirs().runtime().join(id).exists() {
        let _ = core.runtime(&["delete", "--force", id]).output();
    }
    let _ = core.images().remove_container(id);
    if let Some(rec) = &rec {
        names::release(&core.dirs().names(), &rec.name, id);
    }
    let _ = std::fs::remove_dir_all(&paths.dir);
    for f in berth_monitor::supervise::event_files(&core.dirs().events(), id) {
        let _ = std::fs::remove_file(f);
    }
}
