//! The system calls the benchmark needs that std lacks: wait4 with rusage (peak RSS of
//! each runtime invocation), subreaping, and a private mount namespace.

use std::ffi::CString;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Runs `prog [--root root] args...`, returns (exit code, peak RSS in KiB).
pub fn run_with_rusage(prog: &Path, root: &Path, args: &[&str]) -> Result<(i32, i64)> {
    let mut cmd = Command::new(prog);
    if !root.as_os_str().is_empty() {
        cmd.arg("--root").arg(root);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: rusage is plain data, written by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and ru are valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((code, ru.ru_maxrss))
}

/// Waits for a process that was re-parented to us.
pub fn wait_pid(pid: i32) -> Result<()> {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r < 0 {
        bail!("waitpid {pid}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes orphaned container inits re-parent to us, so we can wait for them.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Enters a private mount namespace and, on hybrid hosts whose cgroup2 mount has a
/// controller (hugetlb here), hides its `cgroup.controllers` behind an empty file: crun
/// 1.8 refuses hybrid hosts with controllers on cgroup2.
pub fn private_mount_ns_with_empty_controllers() -> Result<()> {
    // SAFETY: unshare and mount take valid C strings and integer flags.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        }
        let root = CString::new("/").unwrap();
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        );
    }
    let ctrl = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    if ctrl.exists()
        && !std::fs::read_to_string(ctrl)
            .unwrap_or_default()
            .trim()
            .is_empty()
    {
        let empty = std::env::temp_dir().join(format!("berth-bench-empty-{}", std::process::id()));
        std::fs::write(&empty, "")?;
        let st = Command::new("mount")
            .arg("--bind")
            .arg(&empty)
            .arg(ctrl)
            .status()?;
        let _ = std::fs::remove_file(&empty);
        if !st.success() {
            bail!("bind an empty file over {}", ctrl.display());
        }
    }
    Ok(())
}

/// Sends SIGTERM to process `pid` (one of ours), as Ctrl-C would stop it.
pub fn terminate(pid: u32) {
    // SAFETY: kill has no memory preconditions; pid is a child of this process.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
}
