//! `berth-bench engine`: `berth run --rm IMAGE /bin/true` against `podman run --rm
//! --network none` of the same image, interleaved; then 100 detached `sleep`
//! containers: total and per-container start time, the monitors' memory, and their CPU
//! time while idle.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::stats;

/// This process's hard limit named `name` in /proc/self/limits ("Max open files").
pub(crate) fn hard(name: &str) -> String {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[25..].split_whitespace().nth(1).map(String::from))
        .unwrap_or_else(|| "1024".into())
}

pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// podman with its storage, run state and temporary files under `dir`.
pub(crate) fn podman_in(dir: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"));
    c
}

/// A busybox root filesystem as a tar (every applet linked).
pub(crate) fn busybox_tar(dir: &Path) -> Result<PathBuf> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    for d in ["etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("busybox-static is installed")?;
    let list = run(Command::new("/bin/busybox").arg("--list"))?;
    for a in list.lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a))?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    // A pod's infra command for podman (whose --infra-command is a single word).
    let pause = root.join("pause");
    std::fs::write(&pause, "#!/bin/sh\nexec sleep 2147483647\n")?;
    std::fs::set_permissions(&pause, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let tar = dir.join("busybox.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    Ok(tar)
}

/// Resident, proportional and private memory of a process, in KiB (VmRSS; Pss;
/// Private_Clean+Dirty).
fn memory_kib(pid: u32) -> (u64, u64, u64) {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (
        field(&status, "VmRSS:"),
        field(&smaps, "Pss:"),
        field(&smaps, "Private_Clean:") + field(&smaps, "Private_Dirty:"),
    )
}

/// utime + stime of a process in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(i) = s.rfind(')') else { return 0 };
    let f: Vec<&str> = s[i + 2..].split(' ').collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Runs the engine benchmark.
pub fn engine_bench(runs: usize, berth: &Path, many: usize, tools: &Path) -> Result<()> {
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (cargo build --release)", berth.display()))?;
    let work = tempfile::Builder::new()
        .prefix("berth-bench-engine")
        .tempdir_in("/var/tmp")?;
    let w = work.path();
    let tar = busybox_tar(w)?;
    let broot = w.join("berth");
    // The static runtime and monitor (scripts/build-runtime.sh), as installed.
    let runtime = std::fs::canonicalize(tools.join("berth-runtime")).unwrap_or_default();
    let monitor = std::fs::canonicalize(tools.join("berth-monitor")).unwrap_or_default();
    let use_static = runtime.exists() && monitor.exists();
    println!(
        "berth-runtime and berth-monitor: {}",
        if use_static {
            "static builds (scripts/build-runtime.sh)"
        } else {
            "next to berth"
        }
    );
    let berth_cmd = |args: &[&str]| {
        let mut c = Command::new(&berth);
        c.env("BERTH_ROOT", &broot).args(args);
        if use_static {
            c.env("BERTH_RUNTIME", &runtime)
                .env("BERTH_MONITOR", &monitor);
        }
        c
    };
    run(&mut berth_cmd(&[
        "import",
        tar.to_str().unwrap(),
        "localhost/bench/busybox:1",
    ]))?;
    let proot = w.join("podman");
    let podman = |args: &[&str]| {
        let mut c = podman_in(&proot);
        c.args(args);
        c
    };
    let have_podman = Command::new("podman").arg("--version").output().is_ok();
    let _cleanup = Cleanup {
        berth: berth.clone(),
        broot: broot.clone(),
        proot: proot.clone(),
        env: if use_static {
            vec![
                ("BERTH_RUNTIME".into(), runtime.clone()),
                ("BERTH_MONITOR".into(), monitor.clone()),
            ]
        } else {
            Vec::new()
        },
    };
    // podman asks for a 1048576 open-file limit and more processes than this host may
    // grant without CAP_SYS_RESOURCE: give it the host's open-file limit and 4096
    // processes. It runs runc: crun refuses this hybrid cgroup host.
    let nofile = format!("nofile={0}:{0}", hard("Max open files"));
    let _ = hard("Max processes");
    let nproc = "nproc=4096:4096".to_string();
    if have_podman {
        run(&mut podman(&[
            "import",
            tar.to_str().unwrap(),
            "localhost/bench/busybox:1",
        ]))?;
    }
    // Four ways to run /bin/true: berth and podman, each without networking and on
    // its default bridge; interleaved, each starting at a different place per round.
    let berth_run = |net: &str| {
        let mut c = berth_cmd(&["run", "--rm", "--network", net]);
        c.args(["localhost/bench/busybox:1", "/bin/true"]);
        c
    };
    let podman_run = |net: &str| {
        let mut c = podman(&[
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--network",
            net,
            "--ulimit",
            &nofile,
            "--ulimit",
            &nproc,
        ]);
        c.args(["localhost/bench/busybox:1", "/bin/true"]);
        c
    };
    let names = [
        "berth run --rm --network none",
        "berth run --rm (bridge)",
        "podman run --rm --network none",
        "podman run --rm (bridge)",
    ];
    let variants = if have_podman { 4 } else { 2 };
    let make = |i: usize| match i {
        0 => berth_run("none"),
        1 => berth_run("bridge"),
        2 => podman_run("none"),
        _ => podman_run("bridge"),
    };
    // Warm-up, not counted (also creates the bridges and firewall rules).
    for i in 0..variants {
        run(&mut make(i))?;
    }
    let mut s: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for round in 0..runs {
        for k in 0..variants {
            let i = (round + k) % variants;
            let t = Instant::now();
            run(&mut make(i))?;
            s[i].push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    println!("run --rm IMAGE /bin/true, {runs} interleaved runs each (podman with runc)");
    println!("{:<32} {:>10} {:>8} {:>8}", "", "median ms", "p10", "p90");
    for (n, v) in names.iter().zip(&s) {
        if !v.is_empty() {
            println!(
                "{n:<32} {:>10.1} {:>8.1} {:>8.1}",
                stats::median(v),
                stats::percentile(v, 10.0),
                stats::percentile(v, 90.0)
            );
        }
    }
    let m = |i: usize| stats::median(&s[i]);
    println!(
        "bridge networking adds {:.1} ms per berth container",
        m(1) - m(0)
    );
    if have_podman {
        println!(
            "without networking: podman/berth {:.1}x; on the default bridge: podman/berth {:.1}x (podman's bridge adds {:.1} ms)",
            m(2) / m(0),
            m(3) / m(1),
            m(3) - m(2)
        );
    }

    // Pods through the traits, in this process (the runtime and monitor as above; the
    // network helper from the berth binary).
    std::env::set_var("BERTH_BIN", &berth);
    if use_static {
        std::env::set_var("BERTH_RUNTIME", &runtime);
        std::env::set_var("BERTH_MONITOR", &monitor);
    } else {
        std::env::set_var("BERTH_RUNTIME", berth.with_file_name("berth-runtime"));
        std::env::set_var("BERTH_MONITOR", berth.with_file_name("berth-monitor"));
    }
    crate::pods::pod_bench(
        runs,
        &broot,
        have_podman.then_some(&podman as crate::pods::PodmanCmd<'_>),
    )?;

    // Many detached containers.
    let t0 = Instant::now();
    let mut each = Vec::new();
    let mut ids = Vec::new();
    for i in 0..many {
        let t = Instant::now();
        let id = run(&mut berth_cmd(&[
            "run",
            "-d",
            "--name",
            &format!("s{i}"),
            "localhost/bench/busybox:1",
            "sleep",
            "3600",
        ]))?;
        each.push(t.elapsed().as_secs_f64() * 1000.0);
        ids.push(id.trim().to_string());
    }
    let total = t0.elapsed();
    let running = run(&mut berth_cmd(&["ps", "-q"]))?.lines().count();
    let mut monitors = Vec::new();
    for id in &ids {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(
            broot.join("containers").join(id).join("monitor.pid"),
        )?)?;
        monitors.push(v["pid"].as_u64().unwrap_or(0) as u32);
    }
    let fresh: Vec<(u64, u64, u64)> = monitors.iter().map(|p| memory_kib(*p)).collect();
    let before: u64 = monitors.iter().map(|p| cpu_ticks(*p)).sum();
    std::thread::sleep(Duration::from_secs(5));
    let after: u64 = monitors.iter().map(|p| cpu_ticks(*p)).sum();
    // An idle monitor lets go of its start-up code after a quiet second.
    let mems: Vec<(u64, u64, u64)> = monitors.iter().map(|p| memory_kib(*p)).collect();
    println!(
        "{many} detached sleep containers: {running} running, {:.2} s in all, {:.1} ms median each (p90 {:.1})",
        total.as_secs_f64(),
        stats::median(&each),
        stats::percentile(&each, 90.0)
    );
    let fresh_rss: Vec<f64> = fresh.iter().map(|m| m.0 as f64 / 1024.0).collect();
    let rss: Vec<f64> = mems.iter().map(|m| m.0 as f64 / 1024.0).collect();
    let pss: Vec<f64> = mems.iter().map(|m| m.1 as f64 / 1024.0).collect();
    let private: Vec<f64> = mems.iter().map(|m| m.2 as f64 / 1024.0).collect();
    println!(
        "monitor memory per container (medians): RSS {:.2} MiB right after start, idle: RSS {:.2} MiB, PSS {:.2} MiB, private {:.2} MiB; CPU while idle for 5 s: {} ticks in all",
        stats::median(&fresh_rss),
        stats::median(&rss),
        stats::median(&pss),
        stats::median(&private),
        after - before
    );
    Ok(())
}

/// Removes what a run made — berth's containers, podman's storage (its overlay mount)
/// — on every path out of the benchmark, errors included.
struct Cleanup {
    berth: PathBuf,
    broot: PathBuf,
    proot: PathBuf,
    env: Vec<(String, PathBuf)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut b = Command::new(&self.berth);
        b.env("BERTH_ROOT", &self.broot).args(["ps", "-a", "-q"]);
        for (k, v) in &self.env {
            b.env(k, v);
        }
        if let Ok(o) = b.output() {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let mut rm = Command::new(&self.berth);
                rm.env("BERTH_ROOT", &self.broot).args(["rm", "-f", id]);
                for (k, v) in &self.env {
                    rm.env(k, v);
                }
                let _ = rm.stdout(Stdio::null()).stderr(Stdio::null()).status();
            }
        }
        if self.proot.exists() {
            let _ = Command::new("podman")
                .arg("--root")
                .arg(self.proot.join("root"))
                .arg("--runroot")
                .arg(self.proot.join("run"))
                .arg("--tmpdir")
                .arg(self.proot.join("tmp"))
                .args(["system", "reset", "-f"])
                .output();
        }
    }
}
