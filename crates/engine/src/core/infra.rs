//! A pod's infra process (what the kubelet's pause container is): berth-runtime's own
//! code left running as pid 1 of the pod's namespaces (the `berth.infra` annotation),
//! with an empty root directory and no capabilities, under a monitor like any
//! container — so it is reaped and its end recorded whoever made it — in the pod's
//! cgroup. Its directory is `sandboxes/ID/infra/`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceType, ProcessBuilder, RootBuilder,
    SpecBuilder, UserBuilder,
};

use berth_cgroups::naming;
use berth_monitor::supervise::Supervision;

use crate::cri::SandboxConfig;
use crate::error::{Context, Error, Result};

use super::ocispec::{ns, SandboxView};
use super::records::SandboxRecord;
use super::start::StartMode;
use super::Core;

/// The infra process's directory in a sandbox's.
pub fn dir_of(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("infra")
}

/// The uid and gid the infra process runs as (the kubelet's pause image's).
const NOBODY: u32 = 65535;

/// Starts the infra process of sandbox `rec`; returns its pid and start time.
pub fn start(core: &Core, rec: &SandboxRecord, view: &SandboxView) -> Result<(i32, u64)> {
    let sdir = core.dirs().sandbox(&rec.id);
    let dir = dir_of(&sdir);
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).ctx(|| format!("create {}", rootfs.display()))?;
    let cgroup = naming::child(&rec.cgroup_parent, &rec.id);
    let share_pid = rec.config.namespaces.share_pid;
    let mut namespaces = vec![ns(LinuxNamespaceType::Mount, None)];
    for (t, p) in &view.namespaces {
        if *t == LinuxNamespaceType::Pid {
            // The infra process makes the pod's PID namespace (when shared, it is
            // pinned after); a container's own is made by the container.
            continue;
        }
        namespaces.push(ns(*t, p.clone()));
    }
    if !rec.config.namespaces.host_pid {
        namespaces.push(ns(LinuxNamespaceType::Pid, None));
    }
    let bad = |e: oci_spec::OciSpecError| Error::Runtime(format!("infra config: {e}"));
    let empty = oci_spec::runtime::Capabilities::new();
    let none = LinuxCapabilitiesBuilder::default()
        .bounding(empty.clone())
        .effective(empty.clone())
        .permitted(empty.clone())
        .inheritable(empty.clone())
        .ambient(empty)
        .build()
        .map_err(bad)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&cgroup));
    if !view.sysctls.is_empty() {
        linux = linux.sysctl(view.sysctls.clone());
    }
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(
            ProcessBuilder::default()
                .args(vec!["berth-infra".to_string()])
                .cwd("/")
                .user(
                    UserBuilder::default()
                        .uid(NOBODY)
                        .gid(NOBODY)
                        .build()
                        .map_err(bad)?,
                )
                .capabilities(none)
                .no_new_privileges(true)
                .build()
                .map_err(bad)?,
        )
        .root(
            RootBuilder::default()
                .path(&rootfs)
                .readonly(true)
                .build()
                .map_err(bad)?,
        )
        // /proc only: the infra process rewrites its command line from it (its
        // arguments would otherwise show the runtime's, with host paths, to `ps` in
        // the pod).
        .mounts(vec![super::ocispec::proc_mount()])
        .linux(linux.build().map_err(bad)?)
        .annotations(
            [("berth.infra".to_string(), "true".to_string())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .map_err(bad)?;
    // Nothing is mounted in its empty root: nothing to mask.
    super::ocispec::unset_builder_defaults(&mut spec, true);
    let text = serde_json::to_vec_pretty(&spec).expect("a spec serializes");
    std::fs::write(dir.join("config.json"), text).ctx(|| "write the infra config.json")?;
    Supervision {
        id: rec.id.clone(),
        sandbox_id: rec.id.clone(),
        runtime_root: core.dirs().runtime(),
        events_dir: PathBuf::new(),
        log_path: dir.join("infra.log"),
        cgroup,
        ..Default::default()
    }
    .save(&dir)?;
    let started = core.spawn_monitor(
        &dir,
        StartMode::Detached,
        &format!("sandbox {}", &rec.id[..12]),
    )?;
    let pid = started.pid;
    let start = berth_monitor::record::start_time(pid).ok_or_else(|| {
        Error::Runtime(format!(
            "the infra process of sandbox {} ended as it started",
            &rec.id[..12]
        ))
    })?;
    if share_pid {
        super::nspin::pin_pid(&rec.id, pid)?;
    }
    Ok((pid, start))
}

/// Stops the infra process of sandbox `id` (if it runs) and waits for its monitor to
/// record the end.
pub fn stop(core: &Core, id: &str) {
    let dir = dir_of(&core.dirs().sandbox(id));
    if !dir.exists() {
        return;
    }
    let paths = berth_monitor::record::Paths { dir: dir.clone() };
    let _ = std::fs::write(dir.join(berth_monitor::monitor::STOPPED_MARK), b"");
    if core.dirs().runtime().join(id).exists() {
        let _ = core.runtime(&["kill", id, "KILL"]).output();
    }
    super::status::wait_monitor_gone(&paths, std::time::Duration::from_secs(10));
    if core.dirs().runtime().join(id).exists() {
        let _ = core.runtime(&["delete", "--force", id]).output();
    }
}

/// Mounts the tmpfs a pod's containers share as /dev/shm (POSIX shared memory goes
/// with the shared IPC namespace, as in Kubernetes).
pub fn mount_shm(sandbox_dir: &Path, _config: &SandboxConfig) -> Result<()> {
    let shm = berth_monitor::sandbox::shm_dir(sandbox_dir);
    std::fs::create_dir_all(&shm).ctx(|| format!("create {}", shm.display()))?;
    rustix::mount::mount(
        "shm",
        &shm,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC,
        c"mode=1777,size=65536k",
    )
    .ctx(|| format!("mount the pod's /dev/shm at {}", shm.display()))
}
