//! Rootless mode: the engine of an unprivileged user, as podman's rootless mode is.
//!
//! The first `berth` command a user runs starts a *pause process* in a new user
//! namespace (the user's own id as root, the user's subordinate ids from /etc/subuid
//! and /etc/subgid as the rest, written by shadow's setuid newuidmap and newgidmap)
//! with a mount namespace of its own. Every `berth` command of that user joins those
//! two namespaces before it does anything else, so all of them see one set of mounts
//! (the containers' overlays) and act as root over the subordinate ids — and nothing
//! they mount is seen by the host. The state lives in the user's own directories
//! (`berth_hostdirs::user_state_root`, `user_run_dir`); the session's runtime
//! directory is passed to every process it starts in `berth_hostdirs::RUN_DIR_ENV`.
//!
//! What the host must grant is not available here: no cgroup limits without a
//! delegated cgroup, no bridges or firewall rules on the host's network.

mod subid;

use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use subid::Range;

use crate::error::{Error, Result};

/// The argument that makes `berth` the pause process (see [`pause_main`]).
pub const PAUSE_ARG: &str = "__rootless-pause";

/// The file in the state root naming the runtime directory of its session.
const SESSION_FILE: &str = "session-run-dir";

/// Set in every process of a rootless session.
pub const SESSION_ENV: &str = "BERTH_ROOTLESS";

/// A rootless session this process has joined.
#[derive(Clone, Debug)]
pub struct Session {
    /// The user's state root (containers, images...).
    pub state_root: PathBuf,
    /// The user's runtime directory (pins, pause pid...).
    pub run_dir: PathBuf,
}

/// Whether this process runs in a rootless session (joined or inherited).
pub fn active() -> bool {
    std::env::var_os(SESSION_ENV).is_some() && berth_hostdirs::in_user_namespace()
}

/// Where a rootless container's cgroup goes: `berth/` in the subtree of the cgroup v2
/// hierarchy delegated to the user (what systemd gives user@UID.service: the topmost
/// ancestor of this process's cgroup that the user owns). None outside a session, and
/// on hosts without such a subtree (cgroup v1 or hybrid, or nothing delegated), where
/// a rootless container has no limits.
pub fn cgroup_parent() -> Option<String> {
    if !active() {
        return None;
    }
    let mount = Path::new("/sys/fs/cgroup");
    if !mount.join("cgroup.controllers").exists() {
        return None;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    delegated_base(mount, path, rustix::process::getuid().as_raw())
        .map(|base| berth_cgroups::naming::child(&base, "berth"))
}

/// The topmost ancestor of `cgroup` (itself included) whose directory under `mount`
/// belongs to `uid` and lets it create cgroups there.
fn delegated_base(mount: &Path, cgroup: &str, uid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut best = None;
    let mut cur = Path::new(cgroup);
    while let Ok(rel) = cur.strip_prefix("/") {
        if rel.as_os_str().is_empty() {
            break;
        }
        let dir = mount.join(rel);
        let owned = std::fs::metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == uid)
            && std::fs::metadata(dir.join("cgroup.subtree_control")).is_ok_and(|m| m.uid() == uid);
        if !owned {
            break;
        }
        best = Some(cur.display().to_string());
        cur = cur.parent()?;
    }
    best
}

/// Why the limits `cfg` asks for are ignored, when they are: in a rootless session
/// without a delegated cgroup v2 subtree ([`cgroup_parent`]) a container has no cgroup.
pub fn ignored_limits(cfg: &crate::docker::config::RunConfig) -> Option<String> {
    let asked = cfg.memory.is_some()
        || cfg.memory_swap.is_some()
        || cfg.cpus_milli.is_some()
        || cfg.cpu_period.is_some()
        || cfg.cpu_quota.is_some()
        || cfg.cpu_shares.is_some()
        || cfg.cpuset_cpus.is_some()
        || cfg.pids_limit.is_some();
    (asked && active() && cgroup_parent().is_none()).then(|| {
        "resource limits (--memory, --cpus, --cpu-*, --pids-limit) are ignored without root: \
         a rootless container gets a cgroup only in a cgroup v2 subtree delegated to the user \
         (systemd's user@UID.service), and there is none here (run as root to limit it)"
            .to_string()
    })
}

/// Joins the calling user's rootless session, starting it if needed; None for host
/// root (nothing to do). `root` is the state root when given (`--root`), else the
/// user's. Call first thing in `main`, before any thread starts: a process with
/// threads cannot join a user namespace.
pub fn enter(root: Option<&Path>) -> Result<Option<Session>> {
    let state_root = || match root {
        Some(r) => Ok(r.to_path_buf()),
        None => state_root(),
    };
    let euid = rustix::process::geteuid();
    if euid.is_root() {
        if active() {
            // A process the session started (a monitor, a helper): already inside.
            return Ok(Some(Session {
                state_root: state_root()?,
                run_dir: berth_hostdirs::run_dir(),
            }));
        }
        // Host root, or root of a namespace someone else made (berth in a container).
        return Ok(None);
    }
    let state_root = state_root()?;
    // The store's live session, wherever it was started: a login with another
    // XDG_RUNTIME_DIR (or none) must not make a second session over the same store.
    let recorded = state_root.join(SESSION_FILE);
    let run_dir = std::fs::read_to_string(&recorded)
        .ok()
        .map(|d| PathBuf::from(d.trim_end()))
        .filter(|d| read_pause_pid(&d.join("pause.pid")).is_some())
        .unwrap_or_else(berth_hostdirs::user_run_dir);
    let session = Session {
        state_root,
        run_dir,
    };
    let pid_file = session.run_dir.join("pause.pid");
    if read_pause_pid(&pid_file).is_none() {
        // What to add when there are no subordinate ids, before anything is made.
        ranges()?;
    }
    make_private_dir(&session.run_dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(session.run_dir.join("pause.lock"))
        .map_err(|e| Error::io(format!("open {}/pause.lock", session.run_dir.display()), e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io("lock the rootless session", e))?;
    let pid = match read_pause_pid(&pid_file) {
        Some(p) => p,
        None => {
            // A session whose pause process died lives on in its containers' monitors:
            // a new pause joins it rather than making a second one over the same store.
            let pause = match orphaned_session() {
                Some(holder) => spawn_pause(Some(holder))?,
                None => start_pause()?,
            };
            let p = pause.pid;
            std::fs::write(&pid_file, format!("{p}\n"))
                .map_err(|e| Error::io(format!("write {}", pid_file.display()), e))?;
            pause.release();
            p
        }
    };
    join(pid)?;
    drop(lock);
    if std::fs::read_to_string(&recorded)
        .ok()
        .as_deref()
        .map(str::trim_end)
        != session.run_dir.to_str()
    {
        let _ = make_private_dir(&session.state_root);
        let _ = std::fs::write(&recorded, session.run_dir.as_os_str().as_encoded_bytes());
    }
    // Single-threaded still: nothing reads the environment concurrently.
    std::env::set_var(berth_hostdirs::RUN_DIR_ENV, &session.run_dir);
    std::env::set_var(SESSION_ENV, "1");
    Ok(Some(session))
}

/// The user's state root, or why there is none.
fn state_root() -> Result<PathBuf> {
    berth_hostdirs::user_state_root().ok_or_else(|| {
        Error::Invalid(
            "rootless berth keeps its state in $XDG_DATA_HOME/berth or $HOME/.local/share/berth, \
             and neither variable is set: set HOME (or give --root DIR)"
                .into(),
        )
    })
}

/// Makes `dir` (mode 0700) unless it is there, and checks that it is the user's own
/// directory: in /tmp, another user could have made it first.
fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
    let uid = rustix::process::getuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(Error::Invalid(format!(
            "{} is not a directory of yours that only you can write: remove it, or set \
             XDG_RUNTIME_DIR to a directory of your own",
            dir.display()
        )));
    }
    Ok(())
}

/// The pid in `pid_file` if it is this user's pause process.
fn read_pause_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&p| is_our_pause(p))
}

/// Whether `pid` is this user's pause process (not a stranger that took its pid).
fn is_our_pause(pid: u32) -> bool {
    let uid = rustix::process::getuid().as_raw().to_string();
    let owned = std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next().map(|u| u == uid))
            .unwrap_or(false)
    });
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    owned
        && cmdline
            .split(|&b| b == 0)
            .nth(1)
            .is_some_and(|a| a == PAUSE_ARG.as_bytes())
}

/// The user's subordinate uid and gid ranges, or what to add to have them.
fn ranges() -> Result<(Range, Range)> {
    let uid = rustix::process::getuid().as_raw();
    let name = subid::user_name(uid).unwrap_or_else(|| uid.to_string());
    // Both files name the user, or give its uid (also in /etc/subgid: shadow's rule).
    let get = |file: &str| {
        subid::lookup(Path::new(file), &name, uid).ok_or_else(|| {
            Error::Invalid(format!(
                "rootless berth needs subordinate ids, and {file} has no range for {name} (uid {uid}): \
                 as root, add one with `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}` \
                 (or a line \"{name}:100000:65536\" in /etc/subuid and /etc/subgid)"
            ))
        })
    };
    Ok((get("/etc/subuid")?, get("/etc/subgid")?))
}

/// A process of this user's session whose pause process is gone: a container's
/// monitor, still in the session's user namespace.
fn orphaned_session() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::getuid().as_raw();
    let own = std::fs::read_link("/proc/self/ns/user").ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if e.metadata().ok()?.uid() != uid {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let prog = cmdline.split(|&b| b == 0).next()?;
        if !prog.ends_with(b"/berth-monitor") && prog != b"berth-monitor" {
            return None;
        }
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok()?;
        (ns != own).then_some(pid)
    })
}

/// Starts the pause process and maps its user namespace.
fn start_pause() -> Result<Pause> {
    let (uids, gids) = ranges()?;
    let Pause { mut child, pid } = spawn_pause(None)?;
    let own = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    for (helper, own, range, file) in [
        ("newuidmap", own.0, uids, "/etc/subuid"),
        ("newgidmap", own.1, gids, "/etc/subgid"),
    ] {
        let result = Command::new(helper)
            .args([
                pid.to_string(),
                "0".into(),
                own.to_string(),
                "1".into(),
                "1".into(),
                range.start.to_string(),
                range.count.to_string(),
            ])
            .stdin(Stdio::null())
            .output();
        let why = match result {
            Ok(o) if o.status.success() => continue,
            Ok(o) => format!(
                "{helper} refused the range of {file}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("{helper} could not run ({e}): install the uidmap package"),
        };
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Runtime(why));
    }
    Ok(Pause { child, pid })
}

/// Spawns the pause process, in new namespaces or (`holder`) in those of a process of
/// an orphaned session, and waits for it to say it is ready.
fn spawn_pause(holder: Option<u32>) -> Result<Pause> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find berth's own binary", e))?;
    let mut cmd = Command::new(&exe);
    cmd.arg(PAUSE_ARG);
    if let Some(h) = holder {
        cmd.arg(h.to_string());
    }
    let mut child = cmd
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::io(format!("start {} {PAUSE_ARG}", exe.display()), e))?;
    let pid = child.id();
    let mut line = String::new();
    let out = child.stdout.take().expect("piped");
    let _ = std::io::BufReader::new(out).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        let why = line.trim().strip_prefix("error: ").unwrap_or("it exited");
        return Err(Error::Runtime(format!(
            "could not make the rootless session's user namespace: {why} \
             (is /proc/sys/user/max_user_namespaces above 0?)"
        )));
    }
    Ok(Pause { child, pid })
}

/// A pause process made and mapped, waiting for [`Pause::release`]: should this
/// command die first, the pause sees its stdin end and goes too.
struct Pause {
    child: std::process::Child,
    pid: u32,
}

impl Pause {
    /// Lets the pause process live on (reparented after this command exits).
    fn release(mut self) {
        if let Some(mut go) = self.child.stdin.take() {
            let _ = go.write_all(b"go\n");
        }
        std::mem::forget(self.child);
    }
}

/// Moves this (single-threaded) process into pause process `pid`'s user and mount
/// namespaces, keeping its working directory.
fn join(pid: u32) -> Result<()> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    let open = |kind: &str| {
        std::fs::File::open(format!("/proc/{pid}/ns/{kind}"))
            .map_err(|e| Error::io(format!("open the rootless session's {kind} namespace"), e))
    };
    let (user, mnt) = (open("user")?, open("mnt")?);
    let cwd = std::env::current_dir().ok();
    let cwd_fd = std::fs::File::open(".").ok();
    move_into_link_name_space(user.as_fd(), Some(LinkNameSpaceType::User))
        .map_err(|e| Error::io("join the rootless session's user namespace", e))?;
    move_into_link_name_space(mnt.as_fd(), Some(LinkNameSpaceType::Mount))
        .map_err(|e| Error::io("join the rootless session's mount namespace", e))?;
    // Joining a mount namespace moves the working directory to its root: back to the
    // same directory (by path: the session sees the host's tree; else by descriptor).
    let back = cwd
        .as_ref()
        .is_some_and(|d| std::env::set_current_dir(d).is_ok())
        || cwd_fd
            .as_ref()
            .is_some_and(|f| rustix::process::fchdir(f).is_ok());
    if !back {
        return Err(Error::Invalid(format!(
            "the working directory {} cannot be reached from the rootless session: cd to \
             another directory",
            cwd.as_deref().unwrap_or(Path::new("(deleted)")).display()
        )));
    }
    Ok(())
}

/// The pause process: makes the session's namespaces (or, given a pid as its argument,
/// joins that process's), says `ready` on stdout, and holds them until killed. Never
/// returns.
pub fn pause_main() -> ! {
    let holder = std::env::args().nth(2).and_then(|p| p.parse::<u32>().ok());
    let made = match holder {
        Some(pid) => join(pid).map_err(|e| std::io::Error::other(e.to_string())),
        None => crate::core::sys::unshare_user_and_mount(),
    };
    let mut out = std::io::stdout();
    match made {
        Ok(()) => {
            let _ = writeln!(out, "ready");
        }
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            std::process::exit(1);
        }
    }
    let _ = out.flush();
    // Held only once the starter has recorded it; a starter that died leaves no pause.
    let mut go = String::new();
    if std::io::stdin().read_line(&mut go).unwrap_or(0) == 0 {
        std::process::exit(1);
    }
    // Out of the caller's session: a terminal's hangup or ^C is not for it.
    let _ = rustix::process::setsid();
    let _ = rustix::stdio::dup2_stdin(std::fs::File::open("/dev/null").expect("/dev/null").as_fd());
    let _ =
        rustix::stdio::dup2_stdout(std::fs::File::open("/dev/null").expect("/dev/null").as_fd());
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delegated_base_is_the_topmost_ancestor_the_user_owns() {
        use std::os::unix::fs::MetadataExt;
        let mount = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(mount.path()).unwrap().uid();
        let leaf = "user.slice/user-1000.slice/user@1000.service/app.slice/x.scope";
        std::fs::create_dir_all(mount.path().join(leaf)).unwrap();
        let mut dir = mount.path().join(leaf);
        while dir != mount.path() {
            std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
            dir = dir.parent().unwrap().to_path_buf();
        }
        // Everything is ours here: the topmost directory is the base.
        let path = format!("/{leaf}");
        assert_eq!(
            delegated_base(mount.path(), &path, me).as_deref(),
            Some("/user.slice")
        );
        // Another owner above user@1000.service (as root owns the slices).
        let other = me + 1;
        for d in ["user.slice", "user.slice/user-1000.slice"] {
            let p = mount.path().join(d);
            std::os::unix::fs::chown(&p, Some(other), None).unwrap();
            std::os::unix::fs::chown(p.join("cgroup.subtree_control"), Some(other), None).unwrap();
        }
        assert_eq!(
            delegated_base(mount.path(), &path, me).as_deref(),
            Some("/user.slice/user-1000.slice/user@1000.service")
        );
        // A directory of ours whose control file is not: not delegated.
        let svc = mount
            .path()
            .join("user.slice/user-1000.slice/user@1000.service");
        std::os::unix::fs::chown(svc.join("cgroup.subtree_control"), Some(other), None).unwrap();
        assert_eq!(
            delegated_base(mount.path(), &path, me).as_deref(),
            Some("/user.slice/user-1000.slice/user@1000.service/app.slice")
        );
        assert_eq!(delegated_base(mount.path(), "/", me), None);
        assert_eq!(delegated_base(mount.path(), "/elsewhere", me), None);
    }
}
