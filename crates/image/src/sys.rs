//! The image crate's only unsafe code.

use std::io;

/// Gives the calling thread its own working directory and root (unshare CLONE_FS), so
/// a chdir there affects no other thread.
pub fn private_cwd_for_this_thread() -> io::Result<()> {
    // SAFETY: CLONE_FS only detaches this thread's fs_struct (cwd, root, umask). The
    // callers run it on a thread of their own that does nothing but the operation that
    // needs the private cwd and then exits, so no other code relies on sharing it.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }.map_err(Into::into)
}
