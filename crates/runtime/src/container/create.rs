//! `create`: everything up to the point where the container's init waits for `start`.
//!
//! Order of work: check all input; make the state directory and cgroups; fork the setup
//! child (namespaces) and the init (rootfs, devices, hooks, pivot_root, process
//! settings); when the init reports ready, record the state. Any failure on the way
//! kills what was started and removes everything created.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::spawn::{self, Stage1};
use crate::cgroups::{devices::DeviceRules, CgroupPaths, Layout};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, Point};
use crate::namespaces;
use crate::process::ProcessPlan;
use crate::rootfs::{self, dev::NodeMethod, mounts::MountCtx};
use crate::state::{self, Container, DirLock, Record, Root, Status};
use crate::sync::{Channel, Msg};
use crate::{console, seccomp, sys};

/// Options of `create` (and `run`).
#[derive(Clone, Debug, Default)]
pub struct CreateOpts {
    /// Container id.
    pub id: String,
    /// Bundle directory (holds config.json).
    pub bundle: PathBuf,
    /// Where to write the init's pid.
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the pty master to.
    pub console_socket: Option<PathBuf>,
    /// Number of extra descriptors (from 3) to pass to the container.
    pub preserve_fds: u32,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Do not give the container a session keyring of its own.
    pub no_new_keyring: bool,
}

/// A created container, and (for `run`) the pty master if the caller proxies it.
pub struct Created {
    /// The container.
    pub container: Container,
    /// The pty master, when [`create`] was asked to proxy the terminal.
    pub pty_master: Option<OwnedFd>,
}

/// Everything the init process needs, prepared before forking.
struct InitPlan<'a> {
    spec: &'a Spec,
    record: &'a Record,
    bundle: &'a Path,
    rootfs: &'a Path,
    proc: ProcessPlan,
    ns: &'a namespaces::Plan,
    cgroup: &'a CgroupPaths,
    layout: &'a Layout,
    console: Option<OwnedFd>,
    fifo: OwnedFd,
    no_pivot: bool,
    new_keyring: bool,
    preserve_fds: u32,
    propagation: Option<u64>,
    chan: &'a Channel,
    runtime_hooks: bool,
}

/// Removes what a failed create made: kills its processes, removes the cgroups and the
/// state directory.
struct Cleanup<'a> {
    dir: &'a Path,
    cgroup: Option<CgroupPaths>,
    pids: Vec<i32>,
    /// The rootfs of a container without a mount namespace of its own, whose mounts
    /// lie in the runtime's table, and the mounts below it that were there before.
    mounts_under: Option<(PathBuf, Vec<u64>)>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for &pid in &self.pids {
            let _ = sys::kill(pid, libc::SIGKILL);
            spawn::reap(pid);
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.destroy() {
                crate::logging::warn(format!("cleanup: {e}"));
            }
        }
        if let Some((rootfs, kept)) = &self.mounts_under {
            if let Err(e) = crate::rootfs::unmount_under(rootfs, kept) {
                crate::logging::warn(format!("cleanup: {e}"));
            }
        }
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// Creates a container. With `proxy_tty`, a container with a terminal and no
/// `--console-socket` hands its pty master back in [`Created`] (foreground `run`).
pub fn create(root: &Root, opts: &CreateOpts, proxy_tty: bool) -> Result<Created> {
    crate::logging::phase("create: begin");
    crate::spec::validate_id(&opts.id)?;
    let bundle = std::fs::canonicalize(&opts.bundle)
        .map_err(|e| Error::invalid(format!("bundle {}: {e}", opts.bundle.display())))?;
    let spec = crate::spec::load(&bundle)?;
    crate::spec::validate(&spec)?;
    let rootfs = crate::spec::rootfs_path(&spec, &bundle)?;
    let rootfs = std::fs::canonicalize(&rootfs).ctx(|| format!("resolve {}", rootfs.display()))?;
    let linux = spec.linux().as_ref().expect("validated");
    let process = spec.process().as_ref().expect("validated");

    let mut proc = ProcessPlan::from_spec(process, linux.personality().as_ref())?;
    if let Some(s) = linux.seccomp() {
        proc.seccomp = Some(seccomp::compile_cached(
            s,
            &root.0.join(seccomp::CACHE_DIR),
        )?);
    }
    let mut proxy_end = None;
    let console = match (&opts.console_socket, proxy_tty, proc.terminal) {
        (Some(p), _, true) => Some(console::connect(p)?),
        (None, true, true) => {
            let (a, b) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::STREAM,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .ctx(|| "create the pty socket pair")?;
            proxy_end = Some(b);
            Some(a)
        }
        (None, false, true) => {
            return Err(Error::invalid(
                "process.terminal is true but no --console-socket was given (pass one, or set terminal to false)",
            ))
        }
        (Some(_), _, false) => {
            return Err(Error::invalid(
                "--console-socket was given but process.terminal is false (remove the flag or set terminal to true)",
            ))
        }
        (None, _, false) => None,
    };
    let ns = namespaces::plan(&spec)?;
    check_namespaced_settings(&spec, &ns)?;
    let propagation = rootfs::propagation_flag(linux.rootfs_propagation().as_deref())?;
    let time_offsets = time_offsets_text(&spec, &ns)?;
    let device_rules = DeviceRules::for_spec(linux)?;

    let rootless = crate::rootless::detect();
    crate::logging::phase("create: input checked");
    root.ensure()?;
    let dir = root.dir(&opts.id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::State(format!(
                "container {} already exists",
                opts.id
            )))
        }
        Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
    }
    let lock = DirLock::take(&dir)?;
    let mut cleanup = Cleanup {
        dir: &dir,
        cgroup: None,
        pids: Vec::new(),
        mounts_under: None,
        armed: true,
    };
    if crate::spec::shares_mount_namespace(&spec) {
        // What is mounted below the rootfs already is not the container's to remove.
        let kept: Vec<u64> = crate::rootfs::mounts_under(&rootfs)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        crate::rootfs::save_kept_mounts(&dir, &kept)?;
        cleanup.mounts_under = Some((rootfs.clone(), kept));
    }

    let layout = Layout::detect()?;
    let mut cgroup = CgroupPaths::resolve(&layout, linux.cgroups_path().as_deref(), &opts.id)?;
    let mut given_up = Vec::new();
    let create_result = if rootless {
        cgroup.create_where_permitted().map(|dirs| {
            for d in &dirs {
                crate::logging::debug(format!(
                    "rootless: no cgroup at {} (not delegated to this user)",
                    d.display()
                ));
            }
            given_up = dirs;
        })
    } else {
        cgroup.create()
    };
    if create_result.is_ok() {
        if let Some(busy) = cgroup.populated_dir() {
            return Err(Error::State(format!(
                "linux.cgroupsPath: the cgroup {} already has processes (another container's?); use a cgroup of this container's own",
                busy.display()
            )));
        }
    }
    cleanup.cgroup = Some(cgroup.clone());
    create_result?;
    // Record early so that `delete --force` can clean up after a crash of this process.
    let mut record = Record {
        id: opts.id.clone(),
        pid: 0,
        init_start_time: 0,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: state::now_rfc3339(),
        owner: String::new(),
        annotations: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        cgroup: cgroup.clone(),
        own_pid_ns: ns.creates(libc::CLONE_NEWPID),
        session_keyring: !opts.no_new_keyring,
    };
    let mut container = Container {
        dir: dir.clone(),
        record: record.clone(),
    };
    container.save()?;
    Container::save_spec(&dir, &spec)?;
    if let Some(s) = linux.seccomp() {
        // Connected now, from the host's mount namespace, where the path means what
        // the caller meant; the init sends on it once it has loaded the filter.
        proc.seccomp_listener =
            seccomp::Listener::connect(s, container.record.spec_state(Status::Created, 0))?;
    }
    let resources = linux.resources().clone().unwrap_or_default();
    if rootless && !given_up.is_empty() {
        if crate::rootless::limits_asked(&resources) {
            let at: Vec<String> = given_up.iter().map(|d| d.display().to_string()).collect();
            crate::logging::warn(format!(
                "rootless: linux.resources not applied: this user may not create cgroups at {} (delegate a cgroup v2 subtree to it, as systemd does with Delegate=yes)",
                at.join(", ")
            ));
        }
    } else {
        // Device filters need host root; in a user namespace the kernel refuses device
        // nodes itself (no mknod).
        let devices = crate::rootless::is_host_root().then_some(&device_rules);
        crate::cgroups::apply(&cgroup, &resources, devices)?;
    }
    crate::logging::phase("create: cgroups ready");
    // The fast join needs no user namespace in between (CLONE_INTO_CGROUP is checked
    // against the caller's credentials, which a new user namespace maps away).
    let cgroup_join = cgroup.open_join(!ns.has(libc::CLONE_NEWUSER))?;
    let fifo_path = dir.join(state::EXEC_FIFO);
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo_path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .ctx(|| "create exec.fifo")?;
    // Opened here (O_RDWR does not block on a fifo) and inherited by the init, which in a
    // user namespace could not open it by path.
    let fifo = rustix::fs::open(
        &fifo_path,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| "open exec.fifo")?;

    let (parent_chan, child_chan) = Channel::pair()?;
    let uid_maps = linux.uid_mappings().clone().unwrap_or_default();
    let gid_maps = linux.gid_mappings().clone().unwrap_or_default();
    let runtime_hooks = hooks::any(spec.hooks().as_ref(), Point::Prestart)
        || hooks::any(spec.hooks().as_ref(), Point::CreateRuntime);
    let plan = InitPlan {
        spec: &spec,
        record: &container.record,
        bundle: &bundle,
        rootfs: &rootfs,
        proc,
        ns: &ns,
        cgroup: &cgroup,
        layout: &layout,
        console,
        fifo,
        no_pivot: opts.no_pivot,
        new_keyring: !opts.no_new_keyring,
        preserve_fds: opts.preserve_fds,
        propagation,
        chan: &child_chan,
        runtime_hooks,
    };
    let stage = Stage1 {
        cgroup: &cgroup_join,
        new_cgroupns: ns.creates(libc::CLONE_NEWCGROUP),
        ns: &ns,
        uid_maps: &uid_maps,
        time_offsets,
        chan: &child_chan,
        close: vec![lock.raw_fd()],
    };
    let setup_pid = spawn::spawn(&stage, || init(&plan))?;
    cleanup.pids.push(setup_pid);
    // Our copies of what only the children use.
    drop(plan);
    drop(child_chan);
    drop(cgroup_join);

    let mut init_pid = 0;
    // Two processes write to this channel: the setup process (InitPid) and the init
    // (RunRuntimeHooks, Ready). Under load the init's messages can arrive first; they
    // wait until the init's pid is known, which the hooks' state and the rest need.
    let mut deferred: std::collections::VecDeque<Msg> = std::collections::VecDeque::new();
    loop {
        let msg = match (init_pid != 0).then(|| deferred.pop_front()).flatten() {
            Some(m) => m,
            None => parent_chan.recv()?,
        };
        match msg {
            m @ (Msg::RunRuntimeHooks | Msg::Ready) if init_pid == 0 => deferred.push_back(m),
            Msg::NeedIdMaps => {
                crate::rootless::write_id_maps(setup_pid, &uid_maps, &gid_maps)?;
                parent_chan.send(&Msg::IdMapsDone)?;
            }
            Msg::InitPid(pid) => {
                crate::logging::phase("create: init forked");
                init_pid = pid;
                if let Some(adj) = process.oom_score_adj() {
                    match write_oom_score_adj(pid, adj) {
                        // Without root it may only be raised; lowered, it stays as is.
                        Err(e) if rootless => crate::logging::warn(format!("rootless: {e}")),
                        r => r?,
                    }
                }
                cleanup.pids.insert(0, pid);
                spawn::reap(setup_pid);
                cleanup.pids.retain(|&p| p != setup_pid);
            }
            Msg::RunRuntimeHooks => {
                // Prestart hooks see the container as created (what runtime-tools'
                // hooks_stdin checks, and runc and crun pass); createRuntime ones
                // see it being created.
                let st = container.record.hook_state(Status::Created, init_pid);
                hooks::run(spec.hooks().as_ref(), Point::Prestart, &st)?;
                let st = container.record.hook_state(Status::Creating, init_pid);
                hooks::run(spec.hooks().as_ref(), Point::CreateRuntime, &st)?;
                parent_chan.send(&Msg::Continue)?;
            }
            Msg::Ready => {
                crate::logging::phase("create: init ready");
                break;
            }
            Msg::Failed(m) => return Err(Error::Child(m)),
            m => return Err(Error::Child(format!("unexpected setup message {m:?}"))),
        }
    }
    let stat = state::proc_stat(init_pid);
    let mut how = String::new();
    if stat.is_none() {
        // Say how it ended: the init is our child (CLONE_PARENT).
        how = match rustix::process::waitpid(
            rustix::process::Pid::from_raw(init_pid),
            rustix::process::WaitOptions::NOHANG,
        ) {
            Ok(Some((_, st))) => match (st.exit_status(), st.terminating_signal()) {
                (Some(c), _) => format!(" (it exited with status {c})"),
                (None, Some(sig)) => format!(" (it was killed by signal {sig})"),
                _ => String::new(),
            },
            _ => String::new(),
        };
    }
    let Some((_, start)) = stat else {
        return Err(Error::Child(format!(
            "the container's init exited during setup{how}"
        )));
    };
    record.pid = init_pid;
    record.init_start_time = start;
    container.record = record;
    container.save()?;
    if let Some(p) = &opts.pid_file {
        state::write_atomic(p, init_pid.to_string().as_bytes())?;
    }
    let pty_master = match proxy_end {
        Some(sock) => Some(console::recv_fd(sock.as_fd())?),
        None => None,
    };
    cleanup.armed = false;
    Ok(Created {
        container,
        pty_master,
    })
}

/// Hostname, domainname and sysctls need namespaces of their own: refuse them otherwise.
fn check_namespaced_settings(spec: &Spec, ns: &namespaces::Plan) -> Result<()> {
    let uts = ns.isolates(libc::CLONE_NEWUTS);
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !uts {
        return Err(Error::invalid(
            "hostname is set but the container has no UTS namespace of its own (add {\"type\":\"uts\"} to linux.namespaces)",
        ));
    }
    if spec.domainname().as_ref().is_some_and(|h| !h.is_empty()) && !uts {
        return Err(Error::invalid(
            "domainname is set but the container has no UTS namespace of its own (add {\"type\":\"uts\"} to linux.namespaces)",
        ));
    }
    let linux = spec.linux().as_ref().expect("validated");
    for key in linux.sysctl().iter().flatten().map(|(k, _)| k) {
        let ok = if key.starts_with("net.") {
            ns.isolates(libc::CLONE_NEWNET)
        } else if key.starts_with("fs.mqueue.")
            || matches!(
                key.as_str(),
                "kernel.msgmax"
                    | "kernel.msgmnb"
                    | "kernel.msgmni"
                    | "kernel.sem"
                    | "kernel.shmall"
                    | "kernel.shmmax"
                    | "kernel.shmmni"
                    | "kernel.shm_rmid_forced"
            )
        {
            ns.isolates(libc::CLONE_NEWIPC)
        } else if matches!(key.as_str(), "kernel.hostname" | "kernel.domainname") {
            uts
        } else {
            false
        };
        if !ok {
            return Err(Error::invalid(format!(
                "linux.sysctl {key:?}: not a sysctl of a namespace the container has (only namespaced sysctls can be set: net.*, kernel.shm*/msg*/sem, fs.mqueue.*, kernel.hostname/domainname)"
            )));
        }
        if key.contains('/') || key.split('.').any(|c| c.is_empty()) {
            return Err(Error::invalid(format!(
                "linux.sysctl {key:?}: not a sysctl name (use dots, like net.ipv4.ip_forward)"
            )));
        }
    }
    if !ns.has(libc::CLONE_NEWNS) {
        if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
            return Err(Error::invalid(
                "root.readonly needs a mount namespace of the container's own (add {\"type\": \"mount\"} to linux.namespaces, or set root.readonly to false)",
            ));
        }
        // Without a mount namespace the container is jailed by chroot alone, which a
        // process holding CAP_SYS_CHROOT or CAP_SYS_ADMIN (outside a user namespace)
        // can leave.
        let bounding = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().clone())
            .unwrap_or_default();
        let escapes: Vec<String> = bounding
            .iter()
            .map(|c| c.to_string())
            .filter(|c| c.ends_with("SYS_CHROOT") || c.ends_with("SYS_ADMIN"))
            .map(|c| {
                if c.starts_with("CAP_") {
                    c
                } else {
                    format!("CAP_{c}")
                }
            })
            .collect();
        if !escapes.is_empty() && !ns.has(libc::CLONE_NEWUSER) {
            return Err(Error::invalid(format!(
                "linux.namespaces has no mount namespace, so the container is jailed by chroot alone, which {} escapes: drop it from process.capabilities.bounding or add {{\"type\": \"mount\"}} to linux.namespaces",
                escapes.join(" and ")
            )));
        }
    }
    Ok(())
}

fn time_offsets_text(spec: &Spec, ns: &namespaces::Plan) -> Result<Option<String>> {
    let linux = spec.linux().as_ref().expect("validated");
    let Some(offsets) = linux.time_offsets().as_ref().filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    if !ns.creates(libc::CLONE_NEWTIME) {
        return Err(Error::invalid(
            "linux.timeOffsets needs a new time namespace (add {\"type\":\"time\"} to linux.namespaces)",
        ));
    }
    let mut text = String::new();
    for (clock, off) in offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(Error::invalid(format!(
                "linux.timeOffsets: unknown clock {clock:?} (use monotonic or boottime)"
            )));
        }
        text.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    Ok(Some(text))
}

/// Whether /dev gets the default devices: not when the host's /dev is bind-mounted.
fn needs_dev_setup(spec: &Spec) -> bool {
    !spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    })
}

/// The container's init: runs in all the container's namespaces as the runtime's child.
fn init(p: &InitPlan<'_>) -> Result<std::convert::Infallible> {
    rustix::process::umask(rustix::fs::Mode::empty());
    let spec = p.spec;
    let linux = spec.linux().as_ref().expect("validated");
    let host_pid: i32 = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|l| l.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    crate::logging::phase("init: begin");
    // A new mount namespace gets the rootfs set up and pivoted into. Without one the
    // container shares the runtime's mount table: its mounts are made under the
    // rootfs there (and removed at delete) and it is jailed by chroot, as runc and
    // crun do. A mount namespace joined by path already has its root: the process
    // sees it as it is.
    let new_mnt = p.ns.creates(libc::CLONE_NEWNS);
    let shared_mnt = !p.ns.has(libc::CLONE_NEWNS);
    if p.ns.joins(libc::CLONE_NEWNS) && spec.mounts().as_ref().is_some_and(|m| !m.is_empty()) {
        crate::logging::debug(
            "mounts ignored: the container joins a mount namespace, which has its own",
        );
    }
    if new_mnt || shared_mnt {
        if new_mnt {
            rootfs::prepare_root(p.rootfs, p.propagation)?;
        }
        let root =
            pathrs::Root::open(p.rootfs).ctx(|| format!("open rootfs {}", p.rootfs.display()))?;
        let ctx = MountCtx {
            root: &root,
            bundle: p.bundle,
            cgroup: p.cgroup,
            layout: p.layout,
            cgroupns: p.ns.has(libc::CLONE_NEWCGROUP),
            mount_label: crate::spec::selinux_label(linux.mount_label().as_ref()),
        };
        crate::logging::phase("init: root prepared");
        for (i, m) in spec.mounts().iter().flatten().enumerate() {
            rootfs::mounts::mount_entry(&ctx, i, m)?;
        }
        crate::logging::phase("init: mounts done");
        let method = if p.ns.has(libc::CLONE_NEWUSER) || crate::rootless::detect() {
            NodeMethod::Bind
        } else {
            NodeMethod::Mknod
        };
        if needs_dev_setup(spec) {
            rootfs::dev::setup_default_dev(&root, method)?;
        }
        if let Some(devices) = linux.devices() {
            rootfs::dev::create_devices(&root, devices, method)?;
        }
    }
    if p.runtime_hooks {
        p.chan.send(&Msg::RunRuntimeHooks)?;
        p.chan.expect(&Msg::Continue)?;
    }
    if hooks::any(spec.hooks().as_ref(), Point::CreateContainer) {
        let st = p.record.hook_state(Status::Creating, host_pid);
        hooks::run(spec.hooks().as_ref(), Point::CreateContainer, &st)?;
    }
    crate::logging::phase("init: devices and hooks done");
    if new_mnt || shared_mnt {
        if shared_mnt {
            rootfs::chroot_into(p.rootfs)?;
        } else if p.no_pivot {
            rootfs::move_root(p.rootfs)?;
        } else {
            rootfs::pivot(p.rootfs)?;
        }
        let root = pathrs::Root::open("/").ctx(|| "open the new root")?;
        rootfs::mask_paths(&root, linux.masked_paths().as_deref().unwrap_or(&[]))?;
        rootfs::readonly_paths(&root, linux.readonly_paths().as_deref().unwrap_or(&[]))?;
        if new_mnt {
            rootfs::finish_root(spec, p.propagation)?;
        }
    }
    crate::logging::phase("init: pivoted and masked");
    if let Some(h) = spec.hostname().as_ref().filter(|h| !h.is_empty()) {
        rustix::system::sethostname(h.as_bytes()).ctx(|| format!("hostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_ref().filter(|h| !h.is_empty()) {
        rustix::system::setdomainname(d.as_bytes()).ctx(|| format!("domainname {d:?}"))?;
    }
    write_sysctls(linux.sysctl().as_ref())?;
    if p.new_keyring {
        // A keyring of its own, so the container cannot reach keys in the caller's
        // session keyring (as runc does unless --no-new-keyring).
        let name = std::ffi::CString::new(p.record.keyring_name()).expect("ids have no NUL");
        match sys::join_session_keyring(&name) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            Err(e) => return Err(Error::io("create the container's session keyring", e)),
        }
    }
    rustix::process::setsid().ctx(|| "setsid")?;
    if let Some(sock) = &p.console {
        let pty = console::open_pty(p.proc.console_size)?;
        let root = pathrs::Root::open("/").ctx(|| "open the container's root")?;
        let target = rootfs::mounts::ensure_dest(&root, Path::new("/dev/console"), true)
            .map_err(|e| Error::invalid(format!("/dev/console for the terminal: {e}")))?;
        let tree = rootfs::mountapi::clone_fd(pty.slave.as_fd(), false)?;
        rootfs::mountapi::attach(&tree, target.as_fd())?;
        console::send_fd(sock.as_fd(), pty.master.as_fd(), "/dev/console")?;
        console::attach_slave(&pty.slave)?;
    }
    crate::logging::phase("init: console and proc settings done");
    crate::process::keep_only_stdio_and(p.preserve_fds)?;
    p.proc.apply_privileged()?;
    p.proc.switch_user()?;
    p.proc.enter_cwd()?;
    // The infra process of a pod sandbox runs no program (see `reaper::hold`).
    let program = if wants_infra(p.spec) {
        std::ffi::CString::default()
    } else {
        p.proc.resolve_program()?
    };
    crate::logging::phase("init: ready");
    p.chan.send(&Msg::Ready)?;
    // Wait for `start`: it writes one byte into the fifo.
    let mut b = [0u8; 1];
    loop {
        match rustix::io::read(&p.fifo, &mut b) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::io("wait for start on exec.fifo", e)),
        }
    }
    // `start` has returned already: from here on errors go to the container's stderr.
    let err = after_start(p, host_pid, &program).unwrap_or_else(|e| e);
    eprintln!("berth-runtime: {err}");
    sys::exit_now(127)
}

/// The init's last steps, once `start` let it go: startContainer hooks, no_new_privs,
/// the SELinux label and seccomp (see `ProcessPlan::seal`), exec. Returns the error
/// that stopped it (exec returns only on failure). A seccomp listener goes to its agent
/// here, after `start` returned (runc sends it during create, with the filter loaded
/// early): a failed send is the container's error on its stderr, not `start`'s, and the
/// connection made at create tells the agent who is coming.
fn after_start(p: &InitPlan<'_>, host_pid: i32, program: &std::ffi::CString) -> Result<Error> {
    let hooks = p.spec.hooks().as_ref();
    if hooks::any(hooks, Point::StartContainer) {
        let st = p.record.hook_state(Status::Created, host_pid);
        hooks::run(hooks, Point::StartContainer, &st)?;
    }
    p.proc.seal(host_pid)?;
    if wants_infra(p.spec) {
        crate::reaper::hold(p.fifo.as_raw_fd());
    }
    if wants_init(p.spec) {
        crate::reaper::run(p.fifo.as_raw_fd(), &p.proc.args, || p.proc.exec(program));
    }
    Ok(p.proc.exec(program))
}

/// Whether the spec asks for berth's reaping init as pid 1 (see [`crate::reaper`]).
fn wants_init(spec: &Spec) -> bool {
    annotated(spec, crate::reaper::ANNOTATION)
}

/// Whether the spec asks for a pod sandbox's infra process (see [`crate::reaper::hold`]).
fn wants_infra(spec: &Spec) -> bool {
    annotated(spec, crate::reaper::INFRA_ANNOTATION)
}

fn annotated(spec: &Spec, key: &str) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|v| v == "true")
}

/// Writes sysctls and oom_score_adj through a private procfs, which nothing in the
/// container can have mounted over (CVE-2019-16884 class).
fn write_sysctls(sysctl: Option<&std::collections::HashMap<String, String>>) -> Result<()> {
    use std::io::Write;
    let Some(sysctl) = sysctl.filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let proc = pathrs::procfs::ProcfsHandleBuilder::new()
        .unmasked()
        .build()
        .ctx(|| "open a private procfs")?;
    let mut keys: Vec<_> = sysctl.iter().collect();
    keys.sort();
    for (k, v) in keys {
        let path = format!("sys/{}", k.replace('.', "/"));
        let mut f: File = proc
            .open(
                pathrs::procfs::ProcfsBase::ProcRoot,
                &path,
                pathrs::flags::OpenFlags::O_WRONLY,
            )
            .map_err(|e| Error::invalid(format!("linux.sysctl {k:?}: /proc/{path}: {e}")))?;
        f.write_all(v.as_bytes()).map_err(|e| {
            Error::invalid(format!(
                "linux.sysctl {k:?}={v:?}: the kernel refused it: {e}"
            ))
        })?;
    }
    Ok(())
}

/// Writes the init's oom_score_adj from the runtime, through a private procfs: the init
/// itself may be unable to (non-dumpable in a user namespace whose root is not host root).
fn write_oom_score_adj(pid: i32, adj: i32) -> Result<()> {
    use std::io::Write;
    let proc = pathrs::procfs::ProcfsHandle::new().ctx(|| "open a private procfs")?;
    let mut f: File = proc
        .open(
            pathrs::procfs::ProcfsBase::ProcPid(pid as u32),
            "oom_score_adj",
            pathrs::flags::OpenFlags::O_WRONLY,
        )
        .ctx(|| format!("open /proc/{pid}/oom_score_adj"))?;
    f.write_all(adj.to_string().as_bytes()).map_err(|e| {
        Error::invalid(format!(
            "process.oomScoreAdj {adj}: {e} (lowering it needs CAP_SYS_RESOURCE)"
        ))
    })
}
