//! Where berth keeps its per-host objects. Root's engine keeps its state in
//! `/var/lib/berth` and its runtime objects (namespace pins, network lock, rule marks,
//! the /proc view) in `/run/berth`; a rootless user's engine keeps them under
//! `$XDG_DATA_HOME/berth` and `$XDG_RUNTIME_DIR/berth`. The rootless session sets
//! [`RUN_DIR_ENV`] for itself and everything it starts, so the monitor, the network
//! helper and the /proc view server find the same directory without being told.

use std::path::PathBuf;

/// Root's state root.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/berth";

/// Root's runtime directory.
pub const DEFAULT_RUN_DIR: &str = "/run/berth";

/// The variable that moves the runtime directory (set by the rootless session).
pub const RUN_DIR_ENV: &str = "BERTH_RUN_DIR";

/// The runtime directory of this engine: [`RUN_DIR_ENV`] when set, else `/run/berth`.
pub fn run_dir() -> PathBuf {
    std::env::var_os(RUN_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
}

/// Pinned namespaces of sandboxes (`<run>/ns/ID/`).
pub fn ns_dir() -> PathBuf {
    run_dir().join("ns")
}

/// Pinned network namespaces (`<run>/netns/ID`).
pub fn netns_dir() -> PathBuf {
    run_dir().join("netns")
}

/// The lock that serialises changes to networks and their rules.
pub fn net_lock() -> PathBuf {
    run_dir().join("net.lock")
}

/// Marks of the nftables rules installed since boot.
pub fn nft_marks() -> PathBuf {
    run_dir().join("nft")
}

/// Where the /proc view is mounted (its seccomp agent listens at `<this>.sock`).
pub fn procview_mountpoint() -> PathBuf {
    run_dir().join("procview")
}

/// A rootless user's state root: `$XDG_DATA_HOME/berth`, else
/// `$HOME/.local/share/berth` (podman's choice of place for its store).
pub fn user_state_root() -> Option<PathBuf> {
    if let Some(d) = non_empty_var("XDG_DATA_HOME") {
        return Some(d.join("berth"));
    }
    non_empty_var("HOME").map(|h| h.join(".local/share/berth"))
}

/// A rootless user's runtime directory: `$XDG_RUNTIME_DIR/berth`, else
/// `/tmp/berth-run-UID` (where there is no login session to give one).
pub fn user_run_dir() -> PathBuf {
    match non_empty_var("XDG_RUNTIME_DIR") {
        Some(d) => d.join("berth"),
        None => PathBuf::from(format!(
            "/tmp/berth-run-{}",
            rustix::process::getuid().as_raw()
        )),
    }
}

/// Whether this process runs in a user namespace other than the host's (whose uid_map
/// maps all 2^32 ids to themselves): root there is not root of the host, and the
/// rootless session's state, mounts and overlay xattrs follow from it.
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

fn non_empty_var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Writes a secret file (keys, tokens, credentials) whole or not at all: a fresh
/// temporary file of mode 0600 beside it, synced, then renamed over it — a crash
/// leaves the old file or the new one, and no moment where others may read it.
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A leftover temporary file would keep its mode: start from a fresh one.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_directory_follows_the_session() {
        // One test sets the variable: tests of one binary share the environment.
        std::env::remove_var(RUN_DIR_ENV);
        assert_eq!(run_dir(), PathBuf::from("/run/berth"));
        assert_eq!(ns_dir(), PathBuf::from("/run/berth/ns"));
        std::env::set_var(RUN_DIR_ENV, "/tmp/x/berth");
        assert_eq!(netns_dir(), PathBuf::from("/tmp/x/berth/netns"));
        assert_eq!(
            procview_mountpoint(),
            PathBuf::from("/tmp/x/berth/procview")
        );
        std::env::set_var(RUN_DIR_ENV, "");
        assert_eq!(net_lock(), PathBuf::from("/run/berth/net.lock"));
        std::env::remove_var(RUN_DIR_ENV);
    }
}
