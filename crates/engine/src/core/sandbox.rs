//! Pod sandboxes: the namespaces, network, cgroup and (for pods) infra process that
//! containers share. A sandbox's namespaces are pinned by bind mounts, so they outlive
//! every process in them; its infra process — berth-runtime's own code, no image — is
//! pid 1 of the pod's shared PID namespace and tells that the pod is alive.
//!
//! berth's own containers (`berth run`) each get a lean sandbox: the same namespaces
//! and network, no infra process, released by the container's monitor when the
//! container ends for good and made again when it starts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_spec::runtime::LinuxNamespaceType;

use berth_cgroups::naming;
use berth_monitor::sandbox::{pin_path, release as release_pins_and_net};

use crate::cri::{
    SandboxConfig, SandboxFilter, SandboxNetwork, SandboxState, SandboxStatus, SandboxSummary,
    SharedNamespace,
};
use crate::error::{Context, Error, Result};

use super::lock::Lock;
use super::ocispec::SandboxView;
use super::records::{SandboxPhase, SandboxRecord};
use super::recover::{self, Making};
use super::{fault, names, Core};

/// The hostname a sandbox's UTS namespace gets.
pub fn hostname_of(id: &str, config: &SandboxConfig) -> String {
    if !config.hostname.is_empty() {
        return config.hostname.clone();
    }
    let n = &config.metadata.name;
    if !n.is_empty() && n.len() <= 63 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        n.clone()
    } else {
        id[..12].to_string()
    }
}

/// The name a pod sandbox reserves (as containerd names them).
fn reserved_name(c: &SandboxConfig) -> String {
    let m = &c.metadata;
    let n = format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt);
    if n.len() <= 200 {
        n
    } else {
        format!("{}_{}", &n[..120], &super::names::new_id()[..16])
    }
}

fn check(config: &SandboxConfig) -> Result<()> {
    if config.infra && config.metadata.name.is_empty() {
        return Err(Error::Invalid(
            "sandbox config: metadata.name is required (the pod's name)".into(),
        ));
    }
    if !config.cgroup_parent.is_empty() {
        naming::check_parent(&config.cgroup_parent)?;
    }
    let h = &config.hostname;
    if !h.is_empty()
        && (h.len() > 64
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.')))
    {
        return Err(Error::Invalid(format!(
            "sandbox config: hostname {h:?} is not a valid host name (letters, digits, '-', '.', at most 64)"
        )));
    }
    if config.namespaces.uts == SharedNamespace::Node && !h.is_empty() {
        return Err(Error::Invalid(
            "sandbox config: a hostname needs a UTS namespace of the sandbox's own (not the node's)".into(),
        ));
    }
    for k in config.sysctls.keys() {
        if !(k.starts_with("net.")
            || k.starts_with("kernel.shm")
            || k.starts_with("kernel.msg")
            || k.starts_with("kernel.sem")
            || k.starts_with("fs.mqueue."))
        {
            return Err(Error::Invalid(format!(
                "sandbox config: sysctl {k:?} is not namespaced (only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* can be set per pod)"
            )));
        }
    }
    Ok(())
}

impl Core {
    /// Makes a sandbox; with `ready`, also its namespaces, network and infra process
    /// (a lean sandbox is made ready when its container starts).
    pub fn make_sandbox(&self, config: &SandboxConfig, ready: bool) -> Result<String> {
        check(config)?;
        let id = names::new_id();
        let lock = Lock::take(&self.dirs().locks(), &id, true)?;
        recover::begin(self, &id, Making::Sandbox)?;
        let made = (|| -> Result<()> {
            let name = if config.infra {
                let name = reserved_name(config);
                let alive = |holder: &str| {
                    self.dirs().sandbox(holder).join("sandbox.json").exists()
                        || recover::in_progress(self, holder)
                };
                if let Err(holder) =
                    names::reserve(&self.dirs().sandbox_names(), &name, &id, &alive)?
                {
                    return Err(Error::Conflict(format!(
                        "the pod sandbox name {name:?} is already reserved by sandbox {}: remove it first, or give another attempt number",
                        &holder[..holder.len().min(12)]
                    )));
                }
                name
            } else {
                String::new()
            };
            let dir = self.dirs().sandbox(&id);
            std::fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
            let cgroup_parent = if !config.cgroup_parent.is_empty() {
                config.cgroup_parent.clone()
            } else if config.infra {
                let uid = if config.metadata.uid.is_empty() {
                    &id
                } else {
                    &config.metadata.uid
                };
                naming::pod_parent(naming::QosClass::BestEffort, uid)
            } else {
                naming::ENGINE_PARENT.to_string()
            };
            let mut rec = SandboxRecord {
                id: id.clone(),
                name,
                created_at: berth_monitor::supervise::now_nanos(),
                config: config.clone(),
                phase: if ready {
                    SandboxPhase::Creating
                } else {
                    SandboxPhase::Created
                },
                cgroup_parent,
                made_cgroup_parent: false,
                infra: None,
                network: String::new(),
            };
            rec.save(&dir)?;
            fault("sandbox-after-record");
            if ready {
                // The infra process runs now: the network helper sees the pod.
                drop(self.ready_sandbox(&mut rec)?);
            }
            Ok(())
        })();
        match made {
            Ok(()) => {
                recover::done(self, &id);
                drop(lock);
                Ok(id)
            }
            Err(e) => {
                undo(self, &id);
                recover::done(self, &id);
                lock.remove_file();
                Err(e)
            }
        }
    }

    /// Brings a sandbox's kernel objects up: pod cgroup, pinned namespaces, network,
    /// /etc files, infra process. Returns the hold on the network helper, to keep until
    /// a process of the sandbox runs. The caller holds its lock.
    pub(crate) fn ready_sandbox(
        &self,
        rec: &mut SandboxRecord,
    ) -> Result<Option<crate::dns::Hold>> {
        let dir = self.dirs().sandbox(&rec.id);
        rec.phase = SandboxPhase::Creating;
        rec.save(&dir)?;
        if let Some(r) = &rec.config.resources {
            rec.made_cgroup_parent = self.pod_cgroup(&rec.cgroup_parent, r)?;
            rec.save(&dir)?;
        }
        let ns = &rec.config.namespaces;
        let hostname = hostname_of(&rec.id, &rec.config);
        super::nspin::make(
            &rec.id,
            ns.ipc == SharedNamespace::Pod,
            (ns.uts == SharedNamespace::Pod).then_some(hostname.as_str()),
        )?;
        fault("sandbox-after-pins");
        if rec.config.infra && ns.ipc == SharedNamespace::Pod {
            super::infra::mount_shm(&dir, &rec.config)?;
        }
        let (network, hold) = super::sandbox_net::connect(self, rec)?;
        rec.network = network;
        fault("sandbox-after-network");
        if rec.config.infra {
            rec.save(&dir)?;
            let view = self.sandbox_view(rec)?;
            rec.infra = Some(super::infra::start(self, rec, &view)?);
            fault("sandbox-after-infra");
        }
        rec.phase = SandboxPhase::Ready;
        rec.save(&dir)?;
        Ok(hold)
    }

    /// Brings lean sandbox `id` (made, never readied) up on a second thread while
    /// `make` runs on this one — for a client that starts the sandbox's container at
    /// once (`run`): the namespaces and the container's root filesystem and config
    /// are made side by side. `make` must not take the sandbox's lock (a container
    /// made in a lean sandbox does not). Returns `make`'s value and the hold on the
    /// network helper (keep it until the container runs); if either part fails, the
    /// sandbox is released and the first error returned (what `make` made is the
    /// caller's to undo). A caller killed meanwhile leaves a marker the next open's
    /// sweep undoes the sandbox by.
    pub fn ready_lean_sandbox_while<T>(
        &self,
        id: &str,
        make: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Option<crate::dns::Hold>)> {
        let lock = Lock::take(&self.dirs().locks(), id, true)?;
        let dir = self.dirs().sandbox(id);
        let mut rec = SandboxRecord::load(&dir)?
            .ok_or_else(|| Error::NotFound(format!("no such sandbox: {id}")))?;
        if !rec.lean() || rec.phase != SandboxPhase::Created {
            return Err(Error::Conflict(format!(
                "sandbox {} is not a lean sandbox that was never brought up",
                &id[..id.len().min(12)]
            )));
        }
        recover::begin(self, id, Making::Readying)?;
        let (made, readied) = std::thread::scope(|s| {
            let ready = s.spawn(|| self.ready_sandbox(&mut rec));
            let made = make();
            let readied = ready
                .join()
                .unwrap_or_else(|_| Err(Error::Runtime("the sandbox thread panicked".into())));
            (made, readied)
        });
        let result = match (made, readied) {
            (Ok(v), Ok(hold)) => Ok((v, hold)),
            (Err(e), _) | (Ok(_), Err(e)) => {
                self.release_sandbox(&mut rec);
                Err(e)
            }
        };
        recover::done(self, id);
        drop(lock);
        result
    }

    /// Makes (or finds) the pod-level cgroup and writes its limits; true if made.
    fn pod_cgroup(&self, parent: &str, r: &crate::cri::Resources) -> Result<bool> {
        let layout = berth_cgroups::Layout::detect()?;
        let mut paths = naming::paths_of(&layout, parent)?;
        paths.create()?;
        let (res, _) = super::ocispec::resources(r, Vec::new(), 0)?;
        berth_cgroups::apply(&paths, &res, None)?;
        Ok(!paths.created.is_empty())
    }

    /// Releases a sandbox's kernel objects (infra process, network, pins, shm); its
    /// record stays. The caller holds its lock.
    pub(crate) fn release_sandbox(&self, rec: &mut SandboxRecord) {
        let dir = self.dirs().sandbox(&rec.id);
        if rec.config.infra {
            super::infra::stop(self, &rec.id);
        }
        release_pins_and_net(&rec.id, &dir);
        rec.infra = None;
        rec.phase = SandboxPhase::Stopped;
        let _ = rec.save(&dir);
    }

    /// The record of sandbox `id` (an ID, unique prefix, or a pod sandbox's name).
    pub fn sandbox(&self, what: &str) -> Result<SandboxRecord> {
        let dir = self.dirs().sandbox(what);
        if let Some(r) = SandboxRecord::load(&dir)? {
            return Ok(r);
        }
        if let Some(id) = names::holder(&self.dirs().sandbox_names(), what) {
            if let Some(r) = SandboxRecord::load(&self.dirs().sandbox(&id))? {
                return Ok(r);
            }
        }
        let found: Vec<SandboxRecord> = self
            .sandbox_records()?
            .into_iter()
            .filter(|r| what.len() >= 3 && r.id.starts_with(what))
            .collect();
        match found.len() {
            1 => Ok(found.into_iter().next().expect("one")),
            0 => Err(Error::NotFound(format!("no such pod sandbox: {what}"))),
            _ => Err(Error::Invalid(format!(
                "sandbox ID prefix {what:?} is ambiguous: give more characters"
            ))),
        }
    }

    /// Every sandbox record (pods and lean ones), oldest first.
    pub fn sandbox_records(&self) -> Result<Vec<SandboxRecord>> {
        let dir = self.dirs().sandboxes();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .ctx(|| format!("read {}", dir.display()))?
            .flatten()
        {
            if let Ok(Some(r)) = SandboxRecord::load(&e.path()) {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Whether the sandbox is ready: made, its network namespace pinned, its infra
    /// process alive.
    pub fn sandbox_state(&self, rec: &SandboxRecord) -> SandboxState {
        let net_ok = match &rec.config.namespaces.network {
            SandboxNetwork::Node | SandboxNetwork::Sandbox(_) => true,
            _ => super::nspin::is_pinned(&berth_net::netns::path_of(&rec.id)),
        };
        let infra_ok = !rec.config.infra
            || rec
                .infra
                .is_some_and(|(pid, start)| super::status::alive(pid, Some(start)));
        if rec.phase == SandboxPhase::Ready && net_ok && infra_ok {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        }
    }

    fn summary(&self, rec: &SandboxRecord) -> SandboxSummary {
        SandboxSummary {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            state: self.sandbox_state(rec),
            created_at: rec.created_at,
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
        }
    }

    /// Sandboxes matching a filter.
    pub fn list_sandboxes(&self, f: &SandboxFilter) -> Result<Vec<SandboxSummary>> {
        Ok(self
            .sandbox_records()?
            .iter()
            .filter(|r| f.include_lean || !r.lean())
            .filter(|r| f.id.as_ref().is_none_or(|id| r.id.starts_with(id.as_str())))
            .filter(|r| {
                f.labels
                    .iter()
                    .all(|(k, v)| r.config.labels.get(k) == Some(v))
            })
            .map(|r| self.summary(r))
            .filter(|s| f.state.is_none_or(|st| s.state == st))
            .collect())
    }

    /// A sandbox in full.
    pub fn sandbox_status(&self, what: &str) -> Result<SandboxStatus> {
        let rec = self.sandbox(what)?;
        let summary = self.summary(&rec);
        let att = berth_net::attach::Attachment::load(&berth_monitor::sandbox::net_record(
            &self.dirs().sandbox(&rec.id),
        ))
        .ok()
        .flatten();
        let ready = summary.state == SandboxState::Ready;
        let ip = att
            .as_ref()
            .and_then(|a| a.ip)
            .map(std::net::IpAddr::V4)
            .filter(|_| ready);
        let additional_ips = att
            .as_ref()
            .and_then(|a| a.ip6)
            .map(std::net::IpAddr::V6)
            .filter(|_| ready)
            .into_iter()
            .collect();
        let namespace_paths: BTreeMap<String, PathBuf> = self
            .sandbox_view(&rec)?
            .namespaces
            .into_iter()
            .filter_map(|(t, p)| p.map(|p| (t.to_string(), p)))
            .collect();
        Ok(SandboxStatus {
            summary,
            ip,
            additional_ips,
            network: rec.network.clone(),
            infra_pid: rec.infra.map(|(p, _)| p).filter(|_| ready),
            namespace_paths,
            cgroup_parent: rec.cgroup_parent.clone(),
            config: rec.config.clone(),
        })
    }

    /// What containers take from sandbox `rec`: namespace paths, /etc files, shm.
    pub(crate) fn sandbox_view(&self, rec: &SandboxRecord) -> Result<SandboxView> {
        self.sandbox_view_of(rec, true)
    }

    /// [`Self::sandbox_view`]; with `check`, the sandboxes it shares namespaces with
    /// must be running (a lean sandbox checks when its container starts).
    pub(crate) fn sandbox_view_of(&self, rec: &SandboxRecord, check: bool) -> Result<SandboxView> {
        let ns = &rec.config.namespaces;
        let other = |what: &str| -> Result<SandboxRecord> {
            let o = self.sandbox(what)?;
            if check && self.sandbox_state(&o) != SandboxState::Ready {
                return Err(Error::Conflict(format!(
                    "sandbox {} whose namespaces this one shares is not running",
                    &o.id[..12]
                )));
            }
            Ok(o)
        };
        let mut namespaces = Vec::new();
        match &ns.network {
            SandboxNetwork::Node => {}
            SandboxNetwork::Sandbox(o) => {
                let o = other(o)?;
                namespaces.push((LinuxNamespaceType::Network, Some(self.netns_of(&o)?)));
            }
            _ => namespaces.push((
                LinuxNamespaceType::Network,
                Some(berth_net::netns::path_of(&rec.id)),
            )),
        }
        for (kind, t, mode) in [
            ("ipc", LinuxNamespaceType::Ipc, &ns.ipc),
            ("uts", LinuxNamespaceType::Uts, &ns.uts),
        ] {
            match mode {
                SharedNamespace::Node => {}
                SharedNamespace::Pod => namespaces.push((t, Some(pin_path(&rec.id, kind)))),
                SharedNamespace::Sandbox(o) => {
                    let o = other(o)?;
                    namespaces.push((t, Some(pin_path(&o.id, kind))));
                }
            }
        }
        if ns.share_pid && rec.config.infra {
            namespaces.push((LinuxNamespaceType::Pid, Some(pin_path(&rec.id, "pid"))));
        } else if !ns.host_pid {
            namespaces.push((LinuxNamespaceType::Pid, None));
        }
        let dir = self.dirs().sandbox(&rec.id);
        let etc_dir = match &ns.network {
            SandboxNetwork::Sandbox(o) => self.dirs().sandbox(&self.sandbox(o)?.id),
            _ => dir.clone(),
        };
        let etc_files = super::sandbox_net::ETC_FILES
            .iter()
            .map(|f| (format!("/etc/{f}"), etc_dir.join(f)))
            .collect();
        let shm = berth_monitor::sandbox::shm_dir(&dir);
        Ok(SandboxView {
            namespaces,
            etc_files,
            shm: super::nspin::is_pinned(&shm).then_some(shm),
            sysctls: rec.config.sysctls.clone().into_iter().collect(),
            hostname: if ns.uts == SharedNamespace::Node {
                String::new()
            } else {
                hostname_of(&rec.id, &rec.config)
            },
            privileged_allowed: rec.config.privileged || rec.lean(),
        })
    }

    /// The network namespace file of a sandbox (following `Sandbox` joins).
    pub(crate) fn netns_of(&self, rec: &SandboxRecord) -> Result<PathBuf> {
        match &rec.config.namespaces.network {
            SandboxNetwork::Node => Err(Error::Invalid(format!(
                "sandbox {} is on the host's network: there is no namespace of its own to join",
                &rec.id[..12]
            ))),
            SandboxNetwork::Sandbox(o) => self.netns_of(&self.sandbox(o)?),
            _ => Ok(berth_net::netns::path_of(&rec.id)),
        }
    }

    /// Sandbox `what` (None if it is gone), after `each` was done to every container
    /// in it: what stopping and removing a sandbox begin with.
    fn with_containers(
        &self,
        what: &str,
        each: impl Fn(&str) -> Result<()>,
    ) -> Result<Option<SandboxRecord>> {
        let rec = match self.sandbox(what) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        for c in self
            .container_records()?
            .iter()
            .filter(|c| c.sandbox_id == rec.id)
        {
            each(&c.id)?;
        }
        Ok(Some(rec))
    }

    /// Stops a sandbox: its containers (killed), its infra process, and releases its
    /// network and namespaces. Repeatable.
    pub fn stop_sandbox(&self, what: &str) -> Result<()> {
        let Some(rec) = self.with_containers(what, |c| {
            self.stop_container_id(c, std::time::Duration::ZERO)
        })?
        else {
            return Ok(());
        };
        let _lock = Lock::take(&self.dirs().locks(), &rec.id, true)?;
        let Some(mut rec) = SandboxRecord::load(&self.dirs().sandbox(&rec.id))? else {
            return Ok(());
        };
        self.release_sandbox(&mut rec);
        Ok(())
    }

    /// Removes a sandbox with its containers. Repeatable.
    pub fn remove_sandbox(&self, what: &str) -> Result<()> {
        let Some(rec) = self.with_containers(what, |c| self.remove_container_id(c))? else {
            return Ok(());
        };
        let lock = Lock::take(&self.dirs().locks(), &rec.id, true)?;
        undo(self, &rec.id);
        lock.remove_file();
        Ok(())
    }
}

/// Releases sandbox `id`, whose bringing up was cut short; its record stays. The
/// caller holds its lock.
pub(crate) fn unready(core: &Core, id: &str) {
    let dir = core.dirs().sandbox(id);
    match SandboxRecord::load(&dir) {
        Ok(Some(mut rec)) => core.release_sandbox(&mut rec),
        _ => release_pins_and_net(id, &dir),
    }
}

/// Takes sandbox `id` apart completely — whatever of it exists — and forgets it. Used
/// to remove a sandbox, to clean up after a failed make, and by the sweep after a
/// maker died. The caller holds its lock.
pub(crate) fn undo(core: &Core, id: &str) {
    let dir = core.dirs().sandbox(id);
    let rec = SandboxRecord::load(&dir).ok().flatten();
    if let Some(mut rec) = rec.clone() {
        core.release_sandbox(&mut rec);
    } else {
        // A maker that died before its first record: only the infra, pins and network
        // can exist, under the ID.
        super::infra::stop(core, id);
        release_pins_and_net(id, &dir);
    }
    if let Some(rec) = &rec {
        // A pod's cgroup (and its QoS and /kubepods parents) goes once empty, whoever
        // made it: the first container's runtime may have, and left it to the last.
        if rec.made_cgroup_parent || rec.config.infra {
            naming::remove_empty(&berth_cgroups::Layout::host(), &rec.cgroup_parent, "/");
        }
        if !rec.name.is_empty() {
            names::release(&core.dirs().sandbox_names(), &rec.name, id);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
