//! The network library's only unsafe code.
#![allow(unsafe_code)]

/// Moves the calling thread (only it: namespaces are per thread) into a new network
/// namespace.
pub fn unshare_net() -> std::io::Result<()> {
    // SAFETY: CLONE_NEWNET changes only which network namespace this thread's future
    // sockets and netlink requests use; it shares no memory or descriptor tables, which
    // is what makes unshare unsafe for flags like CLONE_FILES or CLONE_VM.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(Into::into)
}
