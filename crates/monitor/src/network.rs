//! Taking a container off its network when it is done, from the record the engine
//! wrote (`net.json`, see berth-net's `attach`): withdraw its published ports with nft,
//! release its address lease and its network namespace — whose interfaces, the veth
//! pair included, go with it. Done here, without the netlink stack, so the monitor stays
//! small; the engine does the same (and more) if the monitor could not.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

fn nft(script: &str) -> bool {
    let Ok(mut c) = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let _ = c.stdin.take().map(|mut i| i.write_all(script.as_bytes()));
    c.wait().is_ok_and(|s| s.success())
}

/// Tears down the networks of the container whose directory is `dir`, if it has any:
/// further networks (`net-NAME.json`) first, then its own (`net.json`), whose
/// namespace takes every interface with it.
pub fn teardown(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("net-") && name.ends_with(".json") {
                teardown_record(&e.path());
            }
        }
    }
    teardown_record(&dir.join("net.json"));
}

fn teardown_record(record: &Path) {
    let dir = record.parent().unwrap_or(Path::new("/"));
    let Ok(text) = std::fs::read(record) else {
        return;
    };
    let Ok(att) = serde_json::from_slice::<Value>(&text) else {
        return;
    };
    if let Some(exe) = att["cni"]["teardown_exe"].as_str() {
        // CNI plugins' DEL: berth runs them (`berth system net-teardown DIR`).
        let _ = Command::new(exe)
            .args(["system", "net-teardown"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let withdraw = att["withdraw"].as_str().unwrap_or("");
    if !withdraw.trim().is_empty() && !nft(withdraw) {
        // Some elements already gone: the rest one by one.
        for line in withdraw.lines().filter(|l| !l.trim().is_empty()) {
            nft(line);
        }
    }
    if let (Some(leases), Some(id)) = (att["leases"].as_str(), att["container"].as_str()) {
        let own = att["ip"]
            .as_str()
            .map(|ip| Path::new(leases).join(ip))
            .filter(|p| holds(p, id));
        if let Some(p) = own {
            let _ = std::fs::remove_file(p);
        } else if let Ok(rd) = std::fs::read_dir(leases) {
            // A record from before the address was known: find the lease by holder.
            for e in rd.flatten() {
                if holds(&e.path(), id) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    if let Some(ns) = att["netns"].as_str().filter(|_| att["extra"] != true) {
        let _ = rustix::mount::unmount(ns, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_file(ns);
    }
    let _ = std::fs::remove_file(record);
}

/// Whether the lease file at `p` is `id`'s (its first line).
fn holds(p: &Path, id: &str) -> bool {
    std::fs::read_to_string(p).is_ok_and(|h| h.lines().next().map(str::trim) == Some(id))
}
