//! `exec`: runs another process inside a running container's namespaces and cgroup,
//! with the container's seccomp profile and the process settings given.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use oci_spec::runtime::Process;

use super::foreground;
use super::spawn::{self, Stage1};
use crate::error::{Context, Error, Result};
use crate::namespaces::{self, Join, Plan};
use crate::process::ProcessPlan;
use crate::state::{self, Container, Root, Status};
use crate::sync::{Channel, Msg};
use crate::{console, seccomp};

/// Options of `exec`.
#[derive(Clone, Debug, Default)]
pub struct ExecOpts {
    /// Container id.
    pub id: String,
    /// A process.json to run (then the flags below that describe the process are not used).
    pub process_file: Option<PathBuf>,
    /// Command and arguments.
    pub args: Vec<String>,
    /// Allocate a pty.
    pub tty: bool,
    /// Where to send the pty master.
    pub console_socket: Option<PathBuf>,
    /// Where to write the new process's pid.
    pub pid_file: Option<PathBuf>,
    /// Return once the process started.
    pub detach: bool,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment (KEY=value).
    pub env: Vec<String>,
    /// uid[:gid].
    pub user: Option<String>,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Capabilities to add.
    pub caps: Vec<String>,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Extra descriptors to pass, from 3.
    pub preserve_fds: u32,
    /// Exec even if the container is paused.
    pub ignore_paused: bool,
    /// AppArmor profile for the process (overrides the container's).
    pub apparmor: Option<String>,
}

fn load_process_file(path: &std::path::Path) -> Result<Process> {
    let data = if path == std::path::Path::new("-") {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
            .ctx(|| "read the process from stdin")?;
        v
    } else {
        std::fs::read(path)
            .map_err(|e| Error::invalid(format!("--process {}: {e}", path.display())))?
    };
    let de = &mut serde_json::Deserializer::from_slice(&data);
    serde_path_to_error::deserialize(de).map_err(|e| {
        Error::invalid(format!(
            "--process {}: field {}: {}",
            path.display(),
            e.path(),
            e.inner()
        ))
    })
}

/// Builds the process from a file, or from the container's process and the flags.
fn build_process(opts: &ExecOpts, base: &Process) -> Result<Process> {
    if let Some(f) = &opts.process_file {
        return load_process_file(f);
    }
    if opts.args.is_empty() {
        return Err(Error::invalid(
            "exec needs a command to run (or --process FILE)",
        ));
    }
    let mut p = base.clone();
    p.set_args(Some(opts.args.clone()));
    p.set_terminal(Some(opts.tty));
    p.set_console_size(None);
    let mut env = p.env().clone().unwrap_or_default();
    for e in &opts.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    p.set_env(Some(env));
    if let Some(c) = &opts.cwd {
        p.set_cwd(c.clone());
    }
    if let Some(u) = &opts.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        let uid: u32 = uid
            .parse()
            .map_err(|_| Error::invalid(format!("--user {u:?}: expected UID[:GID] as numbers")))?;
        let gid: u32 = match gid {
            Some(g) => g.parse().map_err(|_| {
                Error::invalid(format!("--user {u:?}: expected UID[:GID] as numbers"))
            })?,
            None => p.user().gid(),
        };
        let mut user = p.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    if !opts.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(opts.additional_gids.clone()));
        p.set_user(user);
    }
    if opts.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

/// The namespaces of the container's init that differ from ours, opened for joining.
fn init_namespaces(c: &Container) -> Result<Plan> {
    let pid = c.record.pid.to_string();
    let mut plan = Plan::default();
    for (name, flag) in [
        ("user", libc::CLONE_NEWUSER),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
        ("mnt", libc::CLONE_NEWNS),
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("time", libc::CLONE_NEWTIME),
    ] {
        let theirs = namespaces::ns_identity(&pid, name);
        if theirs.is_none() || theirs == namespaces::ns_identity("self", name) {
            continue;
        }
        let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let fd = rustix::fs::open(
            &path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ctx(|| format!("open {}", path.display()))?;
        plan.join.push(Join { flag, fd, path });
    }
    // The namespaces are those of the process we meant only if it is still that process.
    if !c.init_alive() {
        return Err(Error::State(format!("container {} stopped", c.record.id)));
    }
    Ok(plan)
}

/// Runs the exec. Returns the process's exit code, or 0 once started with `detach`.
pub fn exec(root: &Root, opts: &ExecOpts) -> Result<i32> {
    let c = Container::load(root, &opts.id)?;
    let status = c.status();
    match status {
        Status::Running | Status::Created => {}
        Status::Paused if opts.ignore_paused => {}
        s => {
            return Err(Error::State(format!(
                "cannot exec in container {}: it is {}",
                opts.id,
                s.as_str()
            )))
        }
    }
    let spec = c.spec()?;
    let base = spec.process().clone().unwrap_or_default();
    let process = build_process(opts, &base)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let mut plan = ProcessPlan::from_spec(&process, None)?;
    plan.caps.add(&opts.caps)?;
    if let Some(p) = opts.apparmor.clone().filter(|p| !p.is_empty()) {
        plan.apparmor = Some(p);
    }
    if let Some(s) = linux.seccomp() {
        plan.seccomp = Some(seccomp::compile_cached(
            s,
            &root.0.join(seccomp::CACHE_DIR),
        )?);
        plan.seccomp_listener =
            seccomp::Listener::connect(s, c.record.spec_state(Status::Running, c.record.pid))?;
    }
    let sigfd = if opts.detach {
        None
    } else {
        Some(foreground::capture_signals()?)
    };
    let (console_sock, proxy_end) = match (plan.terminal, &opts.console_socket, opts.detach) {
        (true, Some(p), _) => (Some(console::connect(p)?), None),
        (true, None, false) => {
            let (a, b) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::STREAM,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .ctx(|| "create the pty socket pair")?;
            (Some(a), Some(b))
        }
        (true, None, true) => {
            return Err(Error::invalid(
                "exec --tty --detach needs --console-socket to hand the pty to",
            ))
        }
        (false, Some(_), _) => return Err(Error::invalid("--console-socket needs --tty")),
        (false, None, _) => (None, None),
    };
    if !opts.detach {
        foreground::become_subreaper();
    }
    let ns = init_namespaces(&c)?;
    let cgroup_join = c.record.cgroup.open_join(!ns.joins(libc::CLONE_NEWUSER))?;
    let (parent_chan, child_chan) = Channel::pair()?;
    let stage = Stage1 {
        cgroup: &cgroup_join,
        new_cgroupns: false,
        ns: &ns,
        uid_maps: &[],
        time_offsets: None,
        chan: &child_chan,
        close: Vec::new(),
    };
    let preserve = opts.preserve_fds;
    let keyring = c
        .record
        .session_keyring
        .then(|| std::ffi::CString::new(c.record.keyring_name()).expect("ids have no NUL"));
    // A container sharing our mount namespace is jailed by chroot: so is its exec.
    let jail = crate::spec::shares_mount_namespace(&spec).then(|| c.record.rootfs.clone());
    let wants_pid = plan.seccomp_listener.is_some();
    let setup = spawn::spawn(&stage, || {
        if let Some(rootfs) = &jail {
            crate::rootfs::chroot_into(rootfs)?;
        }
        // Only the runtime knows the process's pid outside the container's namespace,
        // which the seccomp agent is told.
        let host_pid = if wants_pid {
            match child_chan.recv()? {
                Msg::HostPid(p) => p,
                m => return Err(Error::Child(format!("unexpected setup message {m:?}"))),
            }
        } else {
            0
        };
        exec_body(
            &plan,
            console_sock.as_ref(),
            preserve,
            keyring.as_deref(),
            host_pid,
        )
    })?;
    drop(child_chan);
    // Only the child sends on the agent's connection: our copy must not keep it open.
    drop(plan.seccomp_listener.take());
    drop(console_sock);
    let pid = match parent_chan.recv() {
        Ok(Msg::InitPid(p)) => {
            if wants_pid {
                // A child that failed meanwhile says why on the channel, read below.
                let _ = parent_chan.send(&Msg::HostPid(p));
            }
            p
        }
        Ok(Msg::Failed(m)) => {
            spawn::reap(setup);
            return Err(Error::Child(m));
        }
        Ok(m) => return Err(Error::Child(format!("unexpected setup message {m:?}"))),
        Err(e) => {
            spawn::reap(setup);
            return Err(e);
        }
    };
    spawn::reap(setup);
    // The channel closes on a successful exec; a message means it failed.
    let started = match parent_chan.recv() {
        Ok(Msg::Failed(m)) => Err(Error::Child(m)),
        Ok(m) => Err(Error::Child(format!("unexpected setup message {m:?}"))),
        Err(_) => match &opts.pid_file {
            Some(p) => state::write_atomic(p, pid.to_string().as_bytes()),
            None => Ok(()),
        },
    };
    if let Err(e) = started {
        // Nothing may be left running behind an error.
        let _ = crate::sys::kill(pid, libc::SIGKILL);
        let _ = rustix::process::waitpid(
            rustix::process::Pid::from_raw(pid),
            rustix::process::WaitOptions::empty(),
        );
        return Err(e);
    }
    if opts.detach {
        return Ok(0);
    }
    let master = match proxy_end {
        Some(sock) => Some(console::recv_fd(sock.as_fd())?),
        None => None,
    };
    match &sigfd {
        Some(fd) => foreground::wait(pid, fd, master),
        None => Ok(0),
    }
}

/// The exec'd process, after it joined the container: terminal, privileges, exec.
fn exec_body(
    plan: &ProcessPlan,
    console_sock: Option<&OwnedFd>,
    preserve: u32,
    keyring: Option<&std::ffi::CStr>,
    host_pid: i32,
) -> Result<std::convert::Infallible> {
    if let Some(sock) = console_sock {
        rustix::process::setsid().ctx(|| "setsid")?;
        let pty = console::open_pty(plan.console_size)?;
        console::send_fd(sock.as_fd(), pty.master.as_fd(), &pty.name)?;
        console::attach_slave(&pty.slave)?;
    }
    if let Some(name) = keyring {
        // Join the container's session keyring, as its other processes have it.
        match crate::sys::join_session_keyring(name) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            Err(e) => return Err(Error::io("join the container's session keyring", e)),
        }
    }
    crate::process::keep_only_stdio_and(preserve)?;
    plan.apply_privileged()?;
    plan.switch_user()?;
    plan.enter_cwd()?;
    let program = plan.resolve_program()?;
    plan.seal(host_pid)?;
    Err(plan.exec(&program))
}
