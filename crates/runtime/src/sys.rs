//! Thin wrappers over the system calls that rustix does not cover (or covers with types too
//! narrow for the OCI spec's raw flag values). Every `unsafe` block of the runtime lives
//! here, each with the reason it is sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Outcome of a fork-like call, seen from the calling side.
pub enum Forked {
    /// We are the new child process.
    Child,
    /// We are the parent; the child has this pid.
    Parent(i32),
}

/// fork(2). The runtime is single-threaded whenever it forks (it never starts threads),
/// so the child may allocate and run ordinary Rust code.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the usual hazard (locks
    // held by other threads) cannot occur because this process never spawns threads.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// clone(CLONE_PARENT | SIGCHLD): like fork, but the child becomes a child of our
/// parent. The runtime uses it so the container's init is a direct child of the
/// `create`/`run` process even though an intermediate process set up the namespaces.
pub fn clone_parent() -> io::Result<Forked> {
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a raw clone with a null stack behaves like fork: the child continues on a
    // copy-on-write copy of our stack. No threads exist, so no lock is held elsewhere.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match cvt(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3(CLONE_PARENT | CLONE_INTO_CGROUP): like [`clone_parent`], and the child is
/// born in the cgroup2 directory `cgroup` (Linux 5.7). Being born there avoids writing
/// to `cgroup.procs`, whose global lock costs an RCU grace period (milliseconds).
pub fn clone_parent_into_cgroup(cgroup: BorrowedFd<'_>) -> io::Result<Forked> {
    let mut args = CloneArgs {
        flags: (libc::CLONE_PARENT as u64) | 0x2_0000_0000, // CLONE_INTO_CGROUP
        // With CLONE_PARENT the child inherits our exit signal; clone3 insists on 0.
        exit_signal: 0,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 with no stack behaves like fork (the child continues on a copy of
    // our stack); args is a valid struct clone_args of the size passed. No threads
    // exist, so no lock is held elsewhere.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match cvt(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as i32)),
    }
}

/// Rewrites this process's command line in place (what setproctitle does), so that
/// /proc/PID/cmdline shows `new` (NUL-separated arguments, cut to the space the original
/// arguments took; the rest is zeroed).
pub fn set_cmdline(new: &[u8]) -> io::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name; arg_start and arg_end are the 48th
    // and 49th of the whole line (proc(5)), so the 46th and 47th after it.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> io::Result<usize> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))
    };
    let (start, end) = (field(45)?, field(46)?);
    if start == 0 || end <= start {
        return Err(io::Error::other("no argument area"));
    }
    let len = end - start;
    let n = new.len().min(len - 1);
    // SAFETY: [arg_start, arg_end) is this process's own argument area on its stack,
    // mapped writable for the process's lifetime; the writes stay inside it. Nothing
    // else reads it concurrently (the runtime is single-threaded).
    unsafe {
        std::ptr::copy_nonoverlapping(new.as_ptr(), start as *mut u8, n);
        std::ptr::write_bytes((start + n) as *mut u8, 0, len - n);
    }
    Ok(())
}

/// Ends the current process at once, without running atexit handlers or destructors
/// (what a forked child must do so it never flushes the parent's buffers twice).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// execve(2). Returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: both arrays are null-terminated and their strings outlive the call; on
    // success the call does not return.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// execveat(2) of a descriptor (AT_EMPTY_PATH). Returns only on failure.
pub fn execveat_fd(fd: BorrowedFd<'_>, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: both arrays are null-terminated and their strings outlive the call; the
    // path is the empty string, as AT_EMPTY_PATH requires.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// setrlimit(2) with a raw RLIMIT_* number.
pub fn setrlimit(resource: i32, lim: &libc::rlimit) -> io::Result<()> {
    // SAFETY: lim points to a valid struct rlimit for the duration of the call.
    let ret = unsafe { libc::setrlimit(resource as libc::__rlimit_resource_t, lim) };
    cvt(ret as libc::c_long).map(drop)
}

/// mount(2) with the raw flag word, as the OCI spec carries it.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: all pointers are valid NUL-terminated strings or null, as mount(2) allows.
    let ret = unsafe { libc::mount(p(source), target.as_ptr(), p(fstype), flags, p(data).cast()) };
    cvt(ret as libc::c_long).map(drop)
}

/// umount2(2).
pub fn umount2(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: target is a valid C string.
    let ret = unsafe { libc::umount2(target.as_ptr(), flags) };
    cvt(ret as libc::c_long).map(drop)
}

/// Mount attribute bits for [`mount_setattr`] (linux/mount.h).
pub mod mount_attr {
    /// Read-only.
    pub const RDONLY: u64 = 0x1;
    /// Ignore suid and sgid bits.
    pub const NOSUID: u64 = 0x2;
    /// Disallow access to device special files.
    pub const NODEV: u64 = 0x4;
    /// Disallow program execution.
    pub const NOEXEC: u64 = 0x8;
    /// Mask of the atime bits.
    pub const ATIME_MASK: u64 = 0x70;
    /// Update atime relative to mtime/ctime.
    pub const RELATIME: u64 = 0x0;
    /// Do not update access times.
    pub const NOATIME: u64 = 0x10;
    /// Always update atime.
    pub const STRICTATIME: u64 = 0x20;
    /// Do not update directory access times.
    pub const NODIRATIME: u64 = 0x80;
    /// Do not follow symlinks.
    pub const NOSYMFOLLOW: u64 = 0x200000;
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) (Linux 5.12): changes mount flags and propagation of the mount at
/// `fd`, recursively when asked; this is how recursive read-only is done.
pub fn mount_setattr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr,
        propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: attr is a properly laid out `struct mount_attr` that lives across the call;
    // the path is the empty string with AT_EMPTY_PATH.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    cvt(ret).map(drop)
}

/// The CLONE_NEW* type of a namespace file (ioctl NS_GET_NSTYPE).
pub fn ns_type(fd: BorrowedFd<'_>) -> io::Result<i32> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns an integer.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    cvt(ret as libc::c_long).map(|v| v as i32)
}

/// setns(2) with a raw CLONE_NEW* type (0 accepts any type).
pub fn setns(fd: BorrowedFd<'_>, nstype: i32) -> io::Result<()> {
    // SAFETY: setns only reads its integer arguments.
    let ret = unsafe { libc::setns(fd.as_raw_fd(), nstype) };
    cvt(ret as libc::c_long).map(drop)
}

/// unshare(2) with raw CLONE_* flags.
pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare only reads its integer argument.
    let ret = unsafe { libc::unshare(flags) };
    cvt(ret as libc::c_long).map(drop)
}

/// kill(2) with any signal number (0 probes for existence).
pub use berth_cgroups::sys::kill;

/// pidfd_send_signal(2) with any signal number.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments and a null siginfo pointer, which the call accepts.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    cvt(ret).map(drop)
}

/// setresuid(2) for the calling thread (the runtime is single-threaded).
pub fn setresuid(uid: u32) -> io::Result<()> {
    // SAFETY: raw syscall with integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    cvt(ret).map(drop)
}

/// setresgid(2) for the calling thread.
pub fn setresgid(gid: u32) -> io::Result<()> {
    // SAFETY: raw syscall with integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    cvt(ret).map(drop)
}

/// setgroups(2) for the calling thread.
pub fn setgroups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live slice of gid_t-sized integers.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    cvt(ret).map(drop)
}

/// Joins a new session keyring named `name` (keyctl KEYCTL_JOIN_SESSION_KEYRING) and
/// lets its possessor and owner use it fully; returns the keyring's serial.
pub fn join_session_keyring(name: &CStr) -> io::Result<i64> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    const KEYCTL_SETPERM: libc::c_long = 5;
    const KEY_POS_ALL_USR_ALL: libc::c_long = 0x3f3f_0000;
    // SAFETY: keyctl with a valid C string and integer arguments.
    let id = cvt(unsafe {
        libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr())
    })?;
    // SAFETY: keyctl with integer arguments only.
    cvt(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, id, KEY_POS_ALL_USR_ALL) })?;
    Ok(id)
}

/// personality(2).
pub fn personality(persona: libc::c_ulong) -> io::Result<()> {
    // SAFETY: personality only reads its integer argument.
    let ret = unsafe { libc::personality(persona) };
    cvt(ret as libc::c_long).map(drop)
}

/// ioprio_set(IOPRIO_WHO_PROCESS, 0, value) for the calling process.
pub fn ioprio_set(value: i32) -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: i32 = 1;
    // SAFETY: raw syscall with integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    cvt(ret).map(drop)
}

/// Arguments of sched_setattr(2) (struct sched_attr, SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
pub struct SchedAttr {
    /// Size of this structure.
    pub size: u32,
    /// SCHED_* policy.
    pub policy: u32,
    /// SCHED_FLAG_* bits.
    pub flags: u64,
    /// Nice value for SCHED_OTHER/SCHED_BATCH.
    pub nice: i32,
    /// Static priority for SCHED_FIFO/SCHED_RR.
    pub priority: u32,
    /// SCHED_DEADLINE runtime (ns).
    pub runtime: u64,
    /// SCHED_DEADLINE deadline (ns).
    pub deadline: u64,
    /// SCHED_DEADLINE period (ns).
    pub period: u64,
    /// Utilization clamp minimum.
    pub util_min: u32,
    /// Utilization clamp maximum.
    pub util_max: u32,
}

/// sched_setattr(2) for the calling thread.
pub fn sched_setattr(attr: &mut SchedAttr) -> io::Result<()> {
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: attr points to a live, correctly sized struct sched_attr.
    let ret = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *mut SchedAttr, 0) };
    cvt(ret).map(drop)
}

/// Marks every descriptor from `first` upwards close-on-exec (close_range(2) with
/// CLOSE_RANGE_CLOEXEC, Linux 5.11), falling back to walking /proc/self/fd.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: close_range with CLOEXEC only changes descriptor flags.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if ret == 0 {
        return Ok(());
    }
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(fd) = entry?.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if fd >= first as RawFd {
            // SAFETY: F_SETFD on a descriptor number only changes its flags; a number that
            // was closed meanwhile yields EBADF, which we ignore.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Whether a descriptor number is open in this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on a descriptor number only reads its flags (EBADF if closed).
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Clears close-on-exec on a descriptor the container must inherit (--preserve-fds).
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD only changes the flags of the descriptor number given.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    cvt(ret as libc::c_long).map(drop)
}

/// Closes a descriptor number. Used by forked children on copies of the parent's
/// descriptors that they must not keep (a lock would otherwise stay held through them).
pub fn close_raw(fd: RawFd) {
    // SAFETY: the caller passes descriptors copied from the parent by fork that nothing
    // in this process uses afterwards; a stale number just yields EBADF.
    unsafe { libc::close(fd) };
}

/// Restores default signal handling: every signal unblocked and every disposition back
/// to SIG_DFL (ignored signals would otherwise survive exec into the container).
pub fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code; invalid numbers (32, 33
        // are reserved by glibc) just fail with EINVAL, which is ignored.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: the set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Blocks `signals` for this process and returns a signalfd that reads them.
pub fn block_to_signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    // SAFETY: the set is initialised by sigemptyset, filled with valid numbers, and only
    // read by sigprocmask and signalfd during the calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads one pending signal number from a signalfd (None when nothing is pending).
pub fn read_signalfd(fd: BorrowedFd<'_>) -> Option<i32> {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    match rustix::io::read(fd, &mut info) {
        Ok(n) if n == info.len() => Some(u32::from_ne_bytes(info[0..4].try_into().ok()?) as i32),
        _ => None,
    }
}

/// Borrow helper for raw descriptor numbers that are known to be open for the duration
/// of the borrow (stdio).
pub fn borrow_raw(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: only used for descriptors 0..=2 and descriptors this process keeps open for
    // its whole life, so the borrow cannot outlive the descriptor.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Installs a classic BPF seccomp program (as libseccomp exports it) on the calling
/// thread with seccomp(SECCOMP_SET_MODE_FILTER, flags). With
/// SECCOMP_FILTER_FLAG_NEW_LISTENER in `flags` the kernel returns the filter's
/// user-notification descriptor.
pub fn seccomp_load_bpf(prog: &[u8], flags: u32) -> io::Result<Option<OwnedFd>> {
    let filters: Vec<libc::sock_filter> = prog
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let len =
        u16::try_from(filters.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let fprog = libc::sock_fprog {
        len,
        filter: filters.as_ptr() as *mut libc::sock_filter,
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    // SAFETY: `fprog` points at `filters`, which outlives the call; the kernel copies the
    // program and does not keep the pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flags),
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    const FLAG_NEW_LISTENER: u32 = 1 << 3;
    if flags & FLAG_NEW_LISTENER == 0 {
        return Ok(None);
    }
    Ok(Some(adopt_fd(r as RawFd)))
}

/// Takes ownership of a descriptor the kernel just returned to this process through a
/// library (libseccomp's listener) that does not wrap it.
pub fn adopt_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller passes a descriptor freshly opened for this process that
    // nothing else owns or closes.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
