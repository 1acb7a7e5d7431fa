//! A truthful /proc for containers, what lxcfs does: a FUSE filesystem, one per host,
//! whose files (meminfo, cpuinfo, stat, uptime, loadavg, diskstats, swaps and the
//! online CPU list) are computed for whoever reads them from that process's cgroups —
//! its memory limit and use, its CPU quota and cpuset, its age and load. The engine
//! bind-mounts them over /proc and /sys in each container, so `free`, `top` and
//! `uptime` inside tell the container's truth.
//!
//! The same server is the containers' seccomp agent for sysinfo(2) (see [`agent`]).
//!
//! If the server dies, reads of the mounted files fail at once with ENOTCONN
//! ("Transport endpoint is not connected") rather than hang; new containers get a new
//! server.

pub mod agent;
pub mod cgroup;
pub mod fs;
pub mod load;
pub mod render;
pub mod sysinfo;

use std::path::Path;
use std::sync::Arc;

/// Where the view is mounted: `$BERTH_PROCVIEW_DIR` (a test's own server), else
/// `berth_hostdirs::procview_mountpoint()`.
pub fn mountpoint() -> std::path::PathBuf {
    std::env::var_os("BERTH_PROCVIEW_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(berth_hostdirs::procview_mountpoint)
}

/// Each served file and where it goes in a container.
pub const TARGETS: [(&str, &str); 8] = [
    ("meminfo", "/proc/meminfo"),
    ("cpuinfo", "/proc/cpuinfo"),
    ("stat", "/proc/stat"),
    ("uptime", "/proc/uptime"),
    ("loadavg", "/proc/loadavg"),
    ("diskstats", "/proc/diskstats"),
    ("swaps", "/proc/swaps"),
    ("cpu-online", "/sys/devices/system/cpu/online"),
];

/// Mounts the view at `mountpoint` and serves it as long as berth containers exist
/// (any cgroup under berth's parent); after `idle` without one, or on SIGTERM or
/// SIGINT, it unmounts and returns, so no server outlives the last container and
/// none leaves its mount behind.
pub fn serve(mountpoint: &Path, idle: std::time::Duration) -> std::io::Result<()> {
    std::fs::create_dir_all(mountpoint)?;
    let loads = Arc::new(load::Loads::default());
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("berth-procview".into()),
        fuser::MountOption::Subtype("berth-procview".into()),
    ];
    // Containers' processes run as any user.
    cfg.acl = fuser::SessionACL::All;
    cfg.n_threads = Some(2);
    let session = fuser::spawn_mount(fs::ProcView::new(loads.clone()), mountpoint, &cfg)?;
    agent::spawn(&agent::socket_path(mountpoint), loads.clone())?;
    let mounts = berth_cgroups::Layout::host();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(mountpoint))?;
    // SIGTERM or SIGINT: retire at once, unmounting as after the idle time (a
    // server killed without its cleanup left a mount answering ENOTCONN behind).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let mut quiet_since = std::time::Instant::now();
    let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        let woke = std::time::Instant::now() + load::INTERVAL;
        while !stopped() && std::time::Instant::now() < woke {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if stopped() {
            break;
        }
        loads.sample();
        if berth_cgroups::naming::count_containers(&mounts) > 0 {
            quiet_since = std::time::Instant::now();
        } else if quiet_since.elapsed() >= idle {
            // Starts in progress hold the lock shared: retire only when none is, and
            // only if still no container exists.
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
            if berth_cgroups::naming::count_containers(&mounts) == 0 {
                berth_cgroups::naming::retire_engine_parent(&mounts);
                break;
            }
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::Unlock)?;
            quiet_since = std::time::Instant::now();
        }
    }
    drop(session);
    let _ = std::fs::remove_file(agent::socket_path(mountpoint));
    let _ = rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH);
    drop(lock);
    Ok(())
}

/// The lock that container starts hold shared and a retiring server exclusive.
pub fn lock_path(mountpoint: &Path) -> std::path::PathBuf {
    mountpoint.with_extension("lock")
}

/// Whether a live view is mounted at `mountpoint`: statfs reaches the server (one
/// round trip), and a dead server's mount answers ENOTCONN.
pub fn is_served(mountpoint: &Path) -> bool {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    rustix::fs::statfs(mountpoint).is_ok_and(|s| s.f_type == FUSE_SUPER_MAGIC)
}
