//! start, kill, delete, state, list, pause and resume.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};
use crate::hooks::{self, Point};
use crate::state::{self, Container, DirLock, Root, Status};
use crate::sys;

fn wrong_state(id: &str, op: &str, s: Status) -> Error {
    Error::State(format!("cannot {op} container {id}: it is {}", s.as_str()))
}

/// `start`: lets the created container's init run the user program.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let c = Container::load(root, id)?;
    let _lock = DirLock::take(&c.dir)?;
    let status = c.status_locked();
    if status != Status::Created {
        return Err(wrong_state(id, "start", status));
    }
    let fifo_path = c.dir.join(state::EXEC_FIFO);
    // A read end opened before our write end: once every writer is gone (ours, and the
    // init's, which closes at exec), it reports a hang-up. That is how `start` knows the
    // user program runs before it runs the poststart hooks, as the spec orders.
    let watch = rustix::fs::open(
        &fifo_path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| format!("open {}", fifo_path.display()))?;
    let fifo = rustix::fs::open(
        &fifo_path,
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| {
        if e == rustix::io::Errno::NXIO {
            Error::State(format!(
                "cannot start container {id}: its init process is gone"
            ))
        } else {
            Error::io(format!("open {}", fifo_path.display()), e)
        }
    })?;
    rustix::io::write(&fifo, b"0").ctx(|| "signal the container to start")?;
    drop(fifo);
    wait_for_exec(&watch)?;
    std::fs::remove_file(&fifo_path).ctx(|| format!("remove {}", fifo_path.display()))?;
    let spec = c.spec()?;
    if hooks::any(spec.hooks().as_ref(), Point::Poststart) {
        let st = c.record.hook_state(Status::Running, c.record.pid);
        hooks::run_warn(spec.hooks().as_ref(), Point::Poststart, &st);
    }
    Ok(())
}

/// Waits until the fifo has no writer left: the init executed the user program (or
/// died). The byte `start` wrote is the init's to read, never ours.
fn wait_for_exec(watch: &rustix::fd::OwnedFd) -> Result<()> {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        let mut fds = [PollFd::new(watch, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(Error::io("wait for the container's program to start", e)),
        }
        let rev = fds[0].revents();
        if rev.contains(PollFlags::HUP) || rev.contains(PollFlags::ERR) {
            return Ok(());
        }
        // Readable only: the init has not taken the byte yet.
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// `state`: the OCI state document.
pub fn state(root: &Root, id: &str) -> Result<state::OciState> {
    let c = Container::load(root, id)?;
    let s = c.status();
    Ok(c.oci_state(s))
}

/// `kill`: sends a signal to the init, or with `all` to every process of the container.
pub fn kill(root: &Root, id: &str, sig: i32, all: bool) -> Result<()> {
    let c = Container::load(root, id)?;
    let status = c.status();
    if matches!(status, Status::Stopped | Status::Creating) {
        return Err(Error::State(format!(
            "cannot kill container {id}: it is {}",
            status.as_str()
        )));
    }
    if all {
        return Ok(c.record.cgroup.signal_all(sig)?);
    }
    signal_init(&c, sig)
}

/// Signals the init through a pidfd opened after checking it is still the same process.
fn signal_init(c: &Container, sig: i32) -> Result<()> {
    let pid = rustix::process::Pid::from_raw(c.record.pid)
        .ok_or_else(|| Error::State(format!("container {} has no init process", c.record.id)))?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .ctx(|| format!("open the init process {}", c.record.pid))?;
    if !c.init_alive() {
        return Err(Error::State(format!(
            "container {} is not running",
            c.record.id
        )));
    }
    // rustix's Signal cannot name real-time signals, so the raw call is used.
    sys::pidfd_send_signal(pidfd.as_fd(), sig)
        .ctx(|| format!("send {} to pid {}", crate::signal::name(sig), c.record.pid))
}

/// `delete`: removes a stopped (or, with `force`, any) container and everything it had.
pub fn delete(root: &Root, id: &str, force: bool) -> Result<()> {
    let dir = root.dir(id);
    crate::spec::validate_id(id)?;
    let c = match Container::load(root, id) {
        Ok(c) => c,
        Err(e) => {
            // An interrupted create can leave a directory without state. With --force that
            // is removed, and a container that does not exist at all is no error (as
            // with runc: shims delete defensively).
            if force {
                let _ = std::fs::remove_dir_all(&dir);
                return Ok(());
            }
            return Err(e);
        }
    };
    let _lock = DirLock::take(&c.dir)?;
    let status = c.status_locked();
    match status {
        Status::Stopped => {}
        Status::Created => stop(&c)?,
        Status::Running | Status::Paused | Status::Creating => {
            if !force {
                return Err(Error::State(format!(
                    "cannot delete container {id}: it is {} (stop it first, or use --force)",
                    status.as_str()
                )));
            }
            stop(&c)?;
        }
    }
    destroy(&c)
}

/// Kills all processes of the container and waits for the init to go.
fn stop(c: &Container) -> Result<()> {
    let paused = c.record.cgroup.is_frozen();
    if c.record.own_pid_ns {
        let _ = signal_init(c, libc::SIGKILL);
    }
    c.record.cgroup.signal_all(libc::SIGKILL)?;
    if paused {
        c.record.cgroup.thaw()?;
    }
    // Done when the init is gone, or when every process has left the cgroup: a killed
    // pid-namespace init lingers until the host reaps the namespace's other zombies,
    // which may take a while on hosts whose pid 1 reaps lazily.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.init_alive() && !c.record.cgroup.procs().is_ok_and(|p| p.is_empty()) {
        if Instant::now() > deadline {
            return Err(Error::State(format!(
                "container {}: init {} did not exit within 10s of SIGKILL",
                c.record.id, c.record.pid
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Removes cgroups and state, and runs the poststop hooks.
pub fn destroy(c: &Container) -> Result<()> {
    c.record.cgroup.destroy()?;
    if let Ok(spec) = c.spec() {
        if crate::spec::shares_mount_namespace(&spec) {
            let kept = crate::rootfs::load_kept_mounts(&c.dir);
            crate::rootfs::unmount_under(&c.record.rootfs, &kept)?;
        }
        if hooks::any(spec.hooks().as_ref(), Point::Poststop) {
            let st = c.record.hook_state(Status::Stopped, 0);
            hooks::run_warn(spec.hooks().as_ref(), Point::Poststop, &st);
        }
    }
    std::fs::remove_dir_all(&c.dir).ctx(|| format!("remove {}", c.dir.display()))
}

/// `pause`: freezes every process of a running container.
pub fn pause(root: &Root, id: &str) -> Result<()> {
    let c = Container::load(root, id)?;
    let _lock = DirLock::take(&c.dir)?;
    let s = c.status_locked();
    if !matches!(s, Status::Running | Status::Created) {
        return Err(wrong_state(id, "pause", s));
    }
    Ok(c.record.cgroup.freeze()?)
}

/// `resume`: thaws a paused container.
pub fn resume(root: &Root, id: &str) -> Result<()> {
    let c = Container::load(root, id)?;
    let _lock = DirLock::take(&c.dir)?;
    let s = c.status_locked();
    if s != Status::Paused {
        return Err(wrong_state(id, "resume", s));
    }
    Ok(c.record.cgroup.thaw()?)
}

/// `list`: the state of every container under the root (owner "root" when empty, as
/// runc shows it).
pub fn list(root: &Root) -> Result<Vec<state::OciState>> {
    let mut out = Vec::new();
    for id in root.ids()? {
        let Ok(c) = Container::load(root, &id) else {
            continue;
        };
        let mut st = c.oci_state(c.status());
        if st.owner.is_empty() {
            st.owner = "root".into();
        }
        out.push(st);
    }
    Ok(out)
}
