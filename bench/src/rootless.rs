//! `berth-bench rootless`: `berth run --rm --network none IMAGE true` as an
//! unprivileged user beside `podman run --rm --network none` of the same image as the
//! same user, both rootless, interleaved. The user is made for the run (useradd, with
//! subordinate ids) and removed after, with its sessions' pause processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::engine::{busybox_tar, run};
use crate::stats;

#[path = "../../crates/runtime/tests/support/user.rs"]
mod user;

/// The bench's user (made with subordinate ids, removed on drop), its sessions'
/// pause processes ended first (by pid: a user with processes cannot be removed).
struct BenchUser(user::TestUser);

impl std::ops::Deref for BenchUser {
    type Target = user::TestUser;
    fn deref(&self) -> &user::TestUser {
        &self.0
    }
}

impl Drop for BenchUser {
    fn drop(&mut self) {
        for pid_file in ["berth/pause.pid", "libpod/tmp/pause.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.runtime_dir().join(pid_file)) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// podman's global flags: cgroupfs (no systemd user session here) and runc, as crun
/// refuses rootless containers on a hybrid cgroup host.
const PODMAN: &[&str] = &["--cgroup-manager=cgroupfs", "--runtime", "runc"];

/// Makes one side's command afresh for each run.
type CommandMaker<'a> = Box<dyn Fn() -> Command + 'a>;

/// Runs the benchmark.
pub fn rootless_bench(runs: usize, berth: &Path, tools: &Path) -> Result<()> {
    if Command::new("podman").arg("--version").output().is_err() {
        bail!("podman is not installed (scripts/deps.sh installs it)");
    }
    let user = BenchUser(user::TestUser::new(true));
    let berth = user.copy_binary(berth, "berth");
    user.copy_binary(&tools.join("berth-runtime"), "berth-runtime");
    user.copy_binary(&tools.join("berth-monitor"), "berth-monitor");
    let tar = busybox_tar(user.home.path())?;
    std::os::unix::fs::chown(&tar, Some(user.uid), Some(user.gid))?;
    let podman = PathBuf::from("podman");
    let image = "localhost/bench/busybox:1";
    let tar_arg = tar.to_str().context("path")?;
    run(user.cmd(&berth).args(["import", tar_arg, image]))?;
    run(user
        .cmd(&podman)
        .args(PODMAN)
        .args(["import", tar_arg, image]))?;
    let sides: [(&str, CommandMaker); 2] = [
        (
            "berth run --rm",
            Box::new(|| {
                let mut c = user.cmd(&berth);
                c.args(["run", "--rm", "--network", "none", image, "true"]);
                c
            }),
        ),
        (
            "podman run --rm (runc)",
            Box::new(|| {
                let mut c = user.cmd(&podman);
                c.args(PODMAN)
                    .args(["run", "--rm", "--network", "none", image, "true"]);
                c
            }),
        ),
    ];
    // One of each first: each side's session (pause process, storage) starts outside
    // the measurement.
    for (_, cmd) in &sides {
        run(&mut cmd())?;
    }
    let mut ms: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..runs {
        for k in 0..2 {
            let i = (round + k) % 2;
            let t = Instant::now();
            run(&mut (sides[i].1)())?;
            ms[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "rootless run --rm --network none busybox true as user {}, {runs} interleaved runs each",
        user.name
    );
    println!("{:<20} {:>10} {:>8} {:>8}", "", "median ms", "p10", "p90");
    for (i, (label, _)) in sides.iter().enumerate() {
        println!(
            "{label:<20} {:>10.1} {:>8.1} {:>8.1}",
            stats::median(&ms[i]),
            stats::percentile(&ms[i], 10.0),
            stats::percentile(&ms[i], 90.0)
        );
    }
    println!(
        "podman / berth: {:.1}x",
        stats::median(&ms[1]) / stats::median(&ms[0])
    );
    Ok(())
}
