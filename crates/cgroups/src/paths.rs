//! The cgroup directories of one container (or pod): where they are on each hierarchy,
//! making them, joining them, freezing, signalling and removing them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::layout::{Layout, Mode};

/// The cgroup directories of one container, recorded in its state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CgroupPaths {
    /// Directory per v1 controller (co-mounted controllers share one).
    #[serde(default)]
    pub v1: BTreeMap<String, PathBuf>,
    /// Directory on the cgroup2 hierarchy (the only one on a unified host; also joined
    /// on hybrid hosts so cgroup2 features such as freezing work there).
    #[serde(default)]
    pub unified: Option<PathBuf>,
    /// Whether the host is cgroup v2 only (resources go to `unified`).
    #[serde(default)]
    pub v2_only: bool,
    /// Directories this container created, parents first, removed on delete.
    #[serde(default)]
    pub created: Vec<PathBuf>,
}

impl CgroupPaths {
    /// Works out the container's directories from `linux.cgroupsPath` (absolute: from
    /// the hierarchy root; relative: below the runtime's own cgroup; absent: `/<id>`).
    pub fn resolve(layout: &Layout, cgroups_path: Option<&Path>, id: &str) -> Result<CgroupPaths> {
        let default = PathBuf::from(format!("/{id}"));
        let path = match cgroups_path {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => default.as_path(),
        };
        let s = path.to_string_lossy();
        if !path.is_absolute() && s.split(':').count() == 3 {
            return Err(Error::unsupported(format!(
                "linux.cgroupsPath {s:?} is in systemd's slice:prefix:name form, but berth-runtime only has the cgroupfs driver (use a path such as /machine/{id})"
            )));
        }
        if !path
            .components()
            .any(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(Error::invalid(format!(
                "linux.cgroupsPath {s:?} names no cgroup of the container's own (use a path such as /machine/{id})"
            )));
        }
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::invalid(format!(
                "linux.cgroupsPath {s:?} must not contain '..'"
            )));
        }
        let mut paths = CgroupPaths::default();
        match layout.mode() {
            Mode::Unified => {
                let u = layout.unified.as_ref().expect("unified mode has a mount");
                paths.unified = Some(layout.dir_on(u, "", path));
                paths.v2_only = true;
            }
            Mode::Legacy | Mode::Hybrid => {
                for (ctrl, mount) in &layout.v1 {
                    paths
                        .v1
                        .insert(ctrl.clone(), layout.dir_on(mount, ctrl, path));
                }
                if let Some(u) = &layout.unified {
                    paths.unified = Some(layout.dir_on(u, "", path));
                }
            }
        }
        Ok(paths)
    }

    /// A v2-only view of a cgroup directory (used for cgroup2 hierarchies directly).
    pub fn unified_only(dir: PathBuf) -> CgroupPaths {
        CgroupPaths {
            unified: Some(dir),
            v2_only: true,
            ..Default::default()
        }
    }

    /// Every distinct directory, v1 first.
    pub fn dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for d in self.v1.values() {
            if !out.contains(&d.as_path()) {
                out.push(d);
            }
        }
        if let Some(u) = &self.unified {
            out.push(u);
        }
        out
    }

    /// The directory holding a v1 controller's files (None on v2).
    pub fn v1_dir(&self, ctrl: &str) -> Option<&Path> {
        self.v1.get(ctrl).map(PathBuf::as_path)
    }

    /// The directory to list processes from (None without any cgroup, as a rootless
    /// container may be).
    pub fn procs_dir(&self) -> Option<&Path> {
        if self.v2_only {
            return self.unified.as_deref();
        }
        ["pids", "freezer", "memory", "cpu", "devices"]
            .iter()
            .find_map(|c| self.v1_dir(c))
            .or(self.unified.as_deref())
    }

    /// Creates the directories (recording which ones are new), initialises cpuset on
    /// v1 and enables controllers on the way down on v2.
    pub fn create(&mut self) -> Result<()> {
        let dirs: Vec<PathBuf> = self.dirs().into_iter().map(Path::to_path_buf).collect();
        for dir in dirs {
            // Another container's removal may take an empty shared parent away while
            // this one is being made (between our mkdir and the cpuset files we write
            // there): start that directory over.
            let mut attempt = 0;
            loop {
                match self.create_one(&dir) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) && attempt < 10 => {
                        attempt += 1;
                    }
                    r => {
                        r?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Without root: creates the directories it may and gives up the hierarchies where
    /// it may not (no delegation), as runc's rootless mode does. Returns the
    /// directories given up.
    pub fn create_where_permitted(&mut self) -> Result<Vec<PathBuf>> {
        let dirs: Vec<PathBuf> = self.dirs().into_iter().map(Path::to_path_buf).collect();
        let mut given_up = Vec::new();
        for dir in dirs {
            match self.create_one(&dir) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
                    ) =>
                {
                    self.v1.retain(|_, d| d != &dir);
                    if self.unified.as_deref() == Some(dir.as_path()) {
                        self.unified = None;
                    }
                    given_up.push(dir);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(given_up)
    }

    fn create_one(&mut self, dir: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = dir;
        while !cur.exists() {
            missing.push(cur.to_path_buf());
            match cur.parent() {
                Some(p) => cur = p,
                None => break,
            }
        }
        let is_unified = self.unified.as_deref() == Some(dir);
        if is_unified && self.v2_only {
            enable_controllers_down_to(dir)?;
        }
        for d in missing.iter().rev() {
            match std::fs::create_dir(d) {
                Ok(()) => self.created.push(d.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("create cgroup {}", d.display()), e)),
            }
            // A new v1 cpuset cgroup has no CPUs or memory nodes until given its
            // parent's (joining it would fail with ENOSPC).
            if is_cpuset_dir(d) {
                init_cpuset(d)?;
            }
            if is_unified && self.v2_only && d.as_path() != dir {
                enable_controllers_in(d)?;
            }
        }
        Ok(())
    }

    /// A directory of this container that already holds processes (a cgroup in use by
    /// someone else must not be taken over: delete would kill what runs there).
    pub fn populated_dir(&self) -> Option<&Path> {
        self.dirs().into_iter().find(|d| {
            std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
        })
    }

    /// Opens what a child needs to join the container's cgroups before it enters
    /// namespaces in which these paths are not visible. With `fast`, v1 hierarchies are
    /// joined through `tasks` and cgroup2 by being born there (see [`CgroupJoin`]);
    /// otherwise everything goes through `cgroup.procs`.
    pub fn open_join(&self, fast: bool) -> Result<CgroupJoin> {
        let open_w = |p: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .ctx(|| format!("open {}", p.display()))
        };
        let mut join = CgroupJoin::default();
        let v1_file = if fast { "tasks" } else { "cgroup.procs" };
        for d in self.dirs() {
            if Some(d) == self.unified.as_deref() {
                continue;
            }
            join.v1.push(open_w(&d.join(v1_file))?);
        }
        if let Some(u) = &self.unified {
            join.unified_procs = Some(open_w(&u.join("cgroup.procs"))?);
            if fast {
                join.unified_dir = Some(
                    rustix::fs::open(
                        u,
                        rustix::fs::OFlags::PATH
                            | rustix::fs::OFlags::DIRECTORY
                            | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )
                    .ctx(|| format!("open {}", u.display()))?,
                );
            }
        }
        Ok(join)
    }

    /// The pids in the container's cgroup.
    pub fn procs(&self) -> Result<Vec<i32>> {
        let Some(dir) = self.procs_dir() else {
            return Ok(Vec::new());
        };
        let p = dir.join("cgroup.procs");
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
        }
    }

    fn freezer(&self) -> Option<Freezer<'_>> {
        if !self.v2_only {
            if let Some(d) = self.v1_dir("freezer") {
                return Some(Freezer::V1(d));
            }
        }
        self.unified.as_deref().map(Freezer::V2)
    }

    /// Whether the cgroup is frozen (paused).
    pub fn is_frozen(&self) -> bool {
        match self.freezer() {
            Some(Freezer::V1(d)) => std::fs::read_to_string(d.join("freezer.state"))
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false),
            Some(Freezer::V2(d)) => std::fs::read_to_string(d.join("cgroup.freeze"))
                .map(|s| s.trim() == "1")
                .unwrap_or(false),
            None => false,
        }
    }

    /// Freezes every process of the container and waits until the kernel reports it.
    pub fn freeze(&self) -> Result<()> {
        match self.freezer() {
            Some(Freezer::V1(d)) => {
                let state = d.join("freezer.state");
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    write_file(&state, "FROZEN")?;
                    let s = std::fs::read_to_string(&state).ctx(|| format!("read {}", state.display()))?;
                    if s.trim() == "FROZEN" {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        let _ = write_file(&state, "THAWED");
                        return Err(Error::State(format!(
                            "freezing {} did not finish within 10s (a process may be stuck in the kernel)",
                            d.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Some(Freezer::V2(d)) => {
                write_file(&d.join("cgroup.freeze"), "1")?;
                wait_events(d, "frozen 1")
            }
            None => Err(Error::unsupported(
                "pausing needs the freezer cgroup controller (v1) or a cgroup2 hierarchy; this host has neither",
            )),
        }
    }

    /// Thaws the container.
    pub fn thaw(&self) -> Result<()> {
        match self.freezer() {
            Some(Freezer::V1(d)) => write_file(&d.join("freezer.state"), "THAWED"),
            Some(Freezer::V2(d)) => {
                write_file(&d.join("cgroup.freeze"), "0")?;
                wait_events(d, "frozen 0")
            }
            None => Ok(()),
        }
    }

    /// Sends a signal to every process in the container's cgroup. SIGKILL uses
    /// `cgroup.kill` where the kernel has it; otherwise the cgroup is frozen while
    /// signalling so that no process can fork past the signal.
    pub fn signal_all(&self, sig: i32) -> Result<()> {
        if sig == libc::SIGKILL {
            if let Some(u) = self.unified.as_deref().filter(|_| self.v2_only) {
                let kill = u.join("cgroup.kill");
                if kill.exists() {
                    return write_file(&kill, "1");
                }
            }
        }
        let frozen = self.freezer().is_some() && !self.is_frozen() && self.freeze().is_ok();
        let result = (|| {
            for pid in self.procs()? {
                match crate::sys::kill(pid, sig) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(Error::io(format!("signal pid {pid}"), e)),
                }
            }
            Ok(())
        })();
        if frozen {
            self.thaw()?;
        }
        result
    }

    /// Removes the container's directories: kills what is left in them, then removes
    /// the leaf and the parents this container created.
    pub fn destroy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut killed = false;
        for dir in self.dirs() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        if !killed {
                            let _ = self.signal_all(libc::SIGKILL);
                            killed = true;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(Error::io(format!("remove cgroup {}", dir.display()), e)),
                }
            }
        }
        for dir in self.created.iter().rev() {
            if self.dirs().contains(&dir.as_path()) {
                continue;
            }
            // A parent shared with another container is busy: leave it.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }
}

/// Open handles for putting a new process into a container's cgroups.
///
/// Writing to `cgroup.procs` takes a global lock whose first use costs an RCU grace
/// period (10-20 ms on small VMs), which would dominate container start. The fast way
/// avoids it: a single-threaded process writing "0" to a v1 `tasks` file moves only
/// itself, without that lock; and on cgroup2 the container process is created directly
/// inside its cgroup with clone3(CLONE_INTO_CGROUP).
#[derive(Default)]
pub struct CgroupJoin {
    /// `tasks` (fast) or `cgroup.procs` files of the v1 hierarchies.
    pub v1: Vec<File>,
    /// The cgroup2 directory to be born into (fast way only).
    pub unified_dir: Option<std::os::fd::OwnedFd>,
    /// The cgroup2 `cgroup.procs` (the slow way, and the fallback without clone3).
    pub unified_procs: Option<File>,
}

enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

/// Writes a cgroup file (one value, no newline).
pub fn write_file(path: &Path, value: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .ctx(|| format!("open {}", path.display()))?;
    f.write_all(value.as_bytes())
        .ctx(|| format!("write {value:?} to {}", path.display()))
}

fn wait_events(dir: &Path, want: &str) -> Result<()> {
    let events = dir.join("cgroup.events");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = std::fs::read_to_string(&events).ctx(|| format!("read {}", events.display()))?;
        if s.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::State(format!(
                "{} did not report {want:?} within 10s",
                events.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn is_cpuset_dir(d: &Path) -> bool {
    d.join("cpuset.cpus").exists() && d.join("cgroup.clone_children").exists()
}

/// A new v1 cpuset cgroup starts with empty cpus and mems, and no task can join it until
/// they are set: copy them from the parent.
fn init_cpuset(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let cur = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if !cur.trim().is_empty() {
            continue;
        }
        let mut from = std::fs::read_to_string(parent.join(file))
            .ctx(|| format!("read {}", parent.join(file).display()))?;
        if from.trim().is_empty() && is_cpuset_dir(parent) {
            // A parent another runtime has just made and not filled in yet.
            init_cpuset(parent)?;
            from = std::fs::read_to_string(parent.join(file))
                .ctx(|| format!("read {}", parent.join(file).display()))?;
        }
        write_file(&dir.join(file), from.trim())?;
    }
    Ok(())
}

/// On cgroup2, a controller is usable in a cgroup only if every ancestor enables it in
/// `cgroup.subtree_control`. Enables all available controllers from the mount root down
/// to (and including) the existing ancestors of `dir`.
fn enable_controllers_down_to(dir: &Path) -> Result<()> {
    let mut chain = Vec::new();
    // From the nearest ancestor that exists (those below it are made, and enabled, by
    // `create_one`) up to the hierarchy's root.
    let mut cur = dir.parent();
    while let Some(p) = cur.filter(|p| !p.exists()) {
        cur = p.parent();
    }
    while let Some(p) = cur {
        if p.join("cgroup.subtree_control").exists() {
            chain.push(p.to_path_buf());
        } else {
            break;
        }
        cur = p.parent();
    }
    for p in chain.iter().rev() {
        match enable_controllers_in(p) {
            // Above a subtree delegated to this user (systemd's user@UID.service), the
            // controllers are root's to enable: use what the delegation gives.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {}
            r => r?,
        }
    }
    Ok(())
}

fn enable_controllers_in(dir: &Path) -> Result<()> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let want: Vec<String> = available
        .split_whitespace()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    let path = dir.join("cgroup.subtree_control");
    write_file(&path, &want.join(" ")).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => Error::unsupported(format!(
            "cannot enable controllers in {}: it has processes of its own (cgroup v2 allows controllers only for cgroups without processes; use an absolute linux.cgroupsPath outside the runtime's own cgroup)",
            dir.display()
        )),
        _ => e,
    })
}
