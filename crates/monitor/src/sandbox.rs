//! The kernel objects a sandbox holds until it is stopped — its network (the
//! `net.json` record berth-net keeps) and its namespaces pinned by bind mounts under
//! `berth_hostdirs::ns_dir()` — and their release, shared by the engine (`stop_pod_sandbox`) and the
//! monitor (a container's own lean sandbox, when the container has ended for good).

use std::path::{Path, PathBuf};

/// The namespace kinds a sandbox may pin (the network namespace is berth-net's).
pub const PINNED_KINDS: [&str; 3] = ["ipc", "uts", "pid"];

/// The directory of sandbox `id`'s pinned namespaces.
pub fn pin_dir(id: &str) -> PathBuf {
    berth_hostdirs::ns_dir().join(id)
}

/// Where sandbox `id`'s namespace of `kind` (`ipc`, `uts`, `pid`) is pinned.
pub fn pin_path(id: &str, kind: &str) -> PathBuf {
    pin_dir(id).join(kind)
}

/// The tmpfs a pod's containers share as /dev/shm, in its sandbox's directory.
pub fn shm_dir(dir: &Path) -> PathBuf {
    dir.join("shm")
}

/// The network record in a sandbox's directory.
pub fn net_record(dir: &Path) -> PathBuf {
    dir.join("net.json")
}

/// The record of further network `network` of the sandbox in `dir`.
pub fn extra_net_record(dir: &Path, network: &str) -> PathBuf {
    dir.join(format!("net-{network}.json"))
}

/// The records of the further networks of the sandbox in `dir`.
pub fn extra_net_records(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("net-") && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Releases sandbox `id`'s network: ports withdrawn, address released, CNI plugins'
/// DEL, namespace unpinned. Repeatable.
pub fn release_network(id: &str, dir: &Path) {
    // Further networks joined later (`network connect`) first: the namespace takes
    // their interfaces with it, but not their leases and records.
    for extra in extra_net_records(dir) {
        if let Ok(Some(att)) = berth_net::attach::Attachment::load(&extra) {
            berth_net::attach::teardown(&att);
        }
        let _ = std::fs::remove_file(&extra);
    }
    let record = net_record(dir);
    if let Ok(Some(att)) = berth_net::attach::Attachment::load(&record) {
        berth_net::attach::teardown(&att);
    }
    let _ = std::fs::remove_file(&record);
    berth_net::pasta::stop(dir);
    // A namespace without a network record (loopback only, or a record that was never
    // written).
    berth_net::netns::remove(&berth_net::netns::path_of(id));
}

/// Releases what sandbox `id` (directory `dir`) holds: its network (ports withdrawn,
/// address released, namespace unpinned, CNI plugins' DEL), its pinned namespaces and
/// its shared /dev/shm. Repeatable; each part is released at most once.
pub fn release(id: &str, dir: &Path) {
    release_network(id, dir);
    let shm = shm_dir(dir);
    let _ = rustix::mount::unmount(&shm, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_dir(&shm);
    for kind in PINNED_KINDS {
        let p = pin_path(id, kind);
        let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_file(&p);
    }
    let _ = std::fs::remove_dir(pin_dir(id));
}
