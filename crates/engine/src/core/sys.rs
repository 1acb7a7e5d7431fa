//! The engine's only unsafe code: moving a thread into new namespaces.
#![allow(unsafe_code)]

/// Moves the calling thread (only it: namespaces are per thread) into new namespaces
/// of the kinds in `flags` (IPC and UTS only).
pub fn unshare_ipc_uts(ipc: bool, uts: bool) -> std::io::Result<()> {
    use rustix::thread::UnshareFlags;
    let mut flags = UnshareFlags::empty();
    if ipc {
        flags |= UnshareFlags::NEWIPC;
    }
    if uts {
        flags |= UnshareFlags::NEWUTS;
    }
    // SAFETY: CLONE_NEWIPC and CLONE_NEWUTS change only which IPC objects and which
    // hostname this thread sees; they share no memory or descriptor tables, which is
    // what makes unshare unsafe for flags such as CLONE_FILES or CLONE_VM.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(Into::into)
}

/// Moves the calling process (single-threaded: the rootless session's pause process)
/// into a new user namespace and a new mount namespace owned by it.
pub fn unshare_user_and_mount() -> std::io::Result<()> {
    use rustix::thread::UnshareFlags;
    // SAFETY: CLONE_NEWUSER and CLONE_NEWNS change which ids and which mounts the
    // process sees; they share no memory or descriptor tables with anything.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }
        .map_err(Into::into)
}
