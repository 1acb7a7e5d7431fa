//! The monitor's only unsafe code: letting go of its own program text once it idles.
//!
//! A monitor lives as long as its container, and a static binary's code is mapped from
//! the page cache: every page it ever touched (and the kernel's fault-around neighbours)
//! stays counted in its RSS, about 1.2 MiB, although the pages are shared with every
//! other monitor. Dropping the mappings of the read-only parts of the executable leaves
//! the pages in the page cache; the few the idle loop needs come back on first touch.
#![allow(unsafe_code)]

/// Unmaps from this process's page tables the pages of its executable's read-only
/// mappings (code, constants). Nothing is lost: the mappings stay, and the next access
/// reads the same bytes from the page cache.
pub fn release_program_text() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    for (header, fields) in mappings(&smaps) {
        // start-end perms offset dev inode path
        let f: Vec<&str> = header.split_whitespace().collect();
        let (Some(range), Some(perms), Some(path)) = (f.first(), f.get(1), f.get(5)) else {
            continue;
        };
        // Only pages that are the file's own bytes: a read-only mapping may still hold
        // copies written before it was made read-only (RELRO: the relocated GOT),
        // which show as Anonymous and must stay.
        let anonymous = fields
            .iter()
            .find_map(|l| l.strip_prefix("Anonymous:"))
            .map(|v| v.trim() != "0 kB")
            .unwrap_or(true);
        if *path != exe || f.len() != 6 || perms.contains('w') || !perms.ends_with('p') || anonymous
        {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: [start, end) is a private, read-only mapping of our own executable
        // file without anonymous pages (checked above from /proc/self/smaps; nothing
        // makes it writable later), so every page is the file's unmodified bytes: MADV_DONTNEED only removes them from our page
        // tables, and any later access faults the identical file bytes back in. The
        // mapping itself stays, so no pointer into it becomes dangling.
        let _ = unsafe {
            rustix::mm::madvise(
                start as *mut std::ffi::c_void,
                end - start,
                rustix::mm::Advice::LinuxDontNeed,
            )
        };
    }
}

/// Splits /proc/PID/smaps into (mapping line, its detail lines).
fn mappings(smaps: &str) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in smaps.lines() {
        let is_header = line.split_whitespace().next().is_some_and(|w| {
            w.contains('-') && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        });
        match out.last_mut() {
            Some((_, details)) if !is_header => details.push(line),
            _ => out.push((line, Vec::new())),
        }
    }
    out
}

/// Leaves the caller's process tree: forks, and the parent exits at once (status 0)
/// while the child carries on, reparented to the nearest subreaper or init. The monitor
/// is single-threaded when it calls this.
pub fn daemonize() {
    // SAFETY: the monitor has started no thread when it calls this, so the child of
    // fork is a complete copy of a single-threaded process and may go on running Rust
    // code; the parent only exits, without running destructors or flushing anything
    // that the child also holds.
    match unsafe { libc::fork() } {
        0 => {}
        -1 => {} // Cannot fork: carry on as the caller's child.
        // SAFETY: _exit ends the process without touching its state.
        _ => unsafe { libc::_exit(0) },
    }
}

/// The signal that asks a monitor to reopen its container's log (after the log was
/// rotated away).
pub const REOPEN_LOG: i32 = libc::SIGUSR1;

/// Blocks [`REOPEN_LOG`] and returns a signalfd that reads it (non-blocking).
pub fn reopen_signal_fd() -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: the set is initialised by sigemptyset and filled with a valid signal;
    // sigprocmask and signalfd only read it during the calls. signalfd returns a new
    // descriptor (or -1), which we then own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, REOPEN_LOG);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return None;
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        (fd >= 0).then(|| std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}
