//! Cgroups: limits checked from inside the container (the files it sees and what the
//! kernel does: an OOM kill, a fork bomb stopped), and the cgroup v2 code paths run on
//! this host's cgroup2 hierarchy through the library (device filter, freeze, kill).

mod common;

use std::path::PathBuf;

use berth_runtime::cgroups::devices::DeviceRules;
use berth_runtime::cgroups::CgroupPaths;
use common::*;
use serde_json::json;

fn v1_available(ctrl: &str) -> bool {
    std::path::Path::new(&format!("/sys/fs/cgroup/{ctrl}/cgroup.procs")).exists()
}

#[test]
fn v1_limits_are_what_the_container_sees() {
    if !v1_available("memory") {
        eprintln!("skipped: no cgroup v1 memory hierarchy on this host");
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    // Throttles need a real block device: the one holding the root filesystem.
    let st = rustix::fs::stat("/").unwrap();
    let dev = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    b.config["linux"]["resources"] = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swappiness": 10},
        "pids": {"limit": 64},
        "blockIO": {"throttleReadBpsDevice": [{"major": dev.0, "minor": dev.1, "rate": 1048576}]}
    });
    b.write();
    b.sh("cd /sys/fs/cgroup; cat cpu/cpu.shares cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpuset/cpuset.cpus \
          memory/memory.limit_in_bytes memory/memory.soft_limit_in_bytes memory/memory.swappiness pids/pids.max \
          blkio/blkio.throttle.read_bps_device; grep Cpus_allowed_list /proc/self/status");
    let out = rt.output_of(&b, &unique_id("v1"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..9],
        [
            "512",
            "50000",
            "100000",
            "0",
            "67108864",
            "33554432",
            "10",
            "64",
            &format!("{}:{} 1048576", dev.0, dev.1)
        ],
        "{out}"
    );
    assert_eq!(lines[9], "Cpus_allowed_list:\t0");
}

#[test]
fn a_memory_hog_is_oom_killed() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["resources"]["memory"] = json!({"limit": 16 << 20, "swap": 16 << 20});
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|n| n["type"] != "pid");
    b.args(&["sleep", "1000"]);
    let id = unique_id("oom");
    let _g = rt.create(&b, &id);
    rt.ok(&["start", &id]);
    // tail keeps the last line of a stream in memory, and /dev/zero has no newline.
    let out = rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "head -c 200000000 /dev/zero | tail >/dev/null; echo tail=$?",
    ]);
    // The OOM killer takes tail, the hog; under a loaded machine it has been seen to
    // take the shell whose child tail is instead (the exec then ends with 137).
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tail=137") || out.status.code() == Some(137),
        "the OOM killer killed tail or its shell: {out:?}"
    );
    let ev: serde_json::Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert!(
        ev["data"]["memory"]["oomKill"].as_u64().unwrap() >= 1,
        "the OOM killer struck: {ev}"
    );
    assert_eq!(
        ev["data"]["memory"]["usage"]["max"],
        16 << 20,
        "usage peaked at the limit: {ev}"
    );
}

#[test]
fn a_fork_bomb_is_stopped_by_the_pids_limit() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    b.config["linux"]["resources"]["pids"] = json!({"limit": 12});
    // Builtins only after the bomb: once the limit is reached the shell cannot fork.
    b.sh(
        "(for i in $(seq 40); do sleep 2 & done) 2>/dev/null; echo bomb-exit=$?; \
          read cur < /sys/fs/cgroup/pids/pids.current; echo current=$cur; \
          read ev < /sys/fs/cgroup/pids/pids.events; echo $ev",
    );
    let out = rt.output_of(&b, &unique_id("forkbomb"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "bomb-exit=2",
        "the bomb's shell failed to fork: {out}"
    );
    let cur: u32 = lines[1].strip_prefix("current=").unwrap().parse().unwrap();
    assert!(cur <= 12, "{out}");
    let refused: u32 = lines[2].strip_prefix("max ").unwrap().parse().unwrap();
    assert!(refused > 0, "the kernel refused forks: {out}");
}

#[test]
fn relative_and_absolute_cgroups_paths() {
    let rt = Runtime::new();
    let mut b = Bundle::busybox();
    let id = unique_id("cgpath");
    b.config["linux"]["cgroupsPath"] = json!(format!("/berthtest-{id}/inner"));
    b.sh("cat /proc/self/cgroup | grep pids");
    let out = rt.output_of(&b, &id);
    assert!(out.contains("pids:/"), "{out}");
    assert!(
        cgroup_dirs_named(&format!("berthtest-{id}")).is_empty(),
        "parents created for the container are removed"
    );
}

/// A cgroup directory on this host's cgroup2 hierarchy, removed on drop.
struct V2Dir(CgroupPaths);
impl Drop for V2Dir {
    fn drop(&mut self) {
        let _ = self.0.destroy();
    }
}

fn unified_root() -> Option<PathBuf> {
    let layout = berth_runtime::cgroups::Layout::detect().ok()?;
    layout.unified.map(|m| m.mountpoint)
}

/// Runs `sh -c script` after moving the shell into `dir`; returns (exit code, output).
fn in_cgroup(dir: &std::path::Path, script: &str) -> (i32, String) {
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("echo $$ > {}/cgroup.procs && {script}", dir.display()),
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn v2_device_filter_freeze_and_kill_on_the_cgroup2_hierarchy() {
    let Some(root) = unified_root() else {
        eprintln!("skipped: no cgroup2 hierarchy");
        return;
    };
    let id = unique_id("v2");
    let mut paths = CgroupPaths::unified_only(root.join(&id));
    paths.create().unwrap();
    let guard = V2Dir(paths.clone());
    // Deny everything but the default devices: /dev/full (1:7) is in the default list,
    // /dev/kmsg (1:11) is not.
    let linux: oci_spec::runtime::Linux = serde_json::from_value(json!({
        "resources": {"devices": [{"allow": false, "access": "rwm"}]}
    }))
    .unwrap();
    let rules = DeviceRules::for_spec(&linux).unwrap();
    berth_runtime::cgroups::bpf_devices::install(guard.0.unified.as_deref().unwrap(), &rules)
        .unwrap();
    let (code, out) = in_cgroup(
        &guard.0.unified.clone().unwrap(),
        "head -c1 /dev/full >/dev/null && echo full-ok; head -c1 /dev/kmsg",
    );
    assert!(out.contains("full-ok"), "{out}");
    assert_ne!(code, 0, "reading /dev/kmsg must be denied: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");

    // Freeze and thaw through cgroup.freeze / cgroup.events.
    let dir = guard.0.unified.clone().unwrap();
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && exec sleep 1000",
                dir.display()
            ),
        ])
        .spawn()
        .unwrap();
    wait_for("the child to join", 2000, || {
        guard.0.procs().unwrap().len() == 1
    });
    guard.0.freeze().unwrap();
    assert!(guard.0.is_frozen());
    assert!(std::fs::read_to_string(dir.join("cgroup.events"))
        .unwrap()
        .contains("frozen 1"));
    guard.0.thaw().unwrap();
    assert!(!guard.0.is_frozen());
    // SIGKILL through cgroup.kill.
    guard.0.signal_all(libc::SIGKILL).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
    drop(guard);
    assert!(!root.join(&id).exists());
}
