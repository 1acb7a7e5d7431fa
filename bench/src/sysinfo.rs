//! `berth-bench sysinfo`: what the truthful sysinfo(2) costs. A call inside a
//! container whose sysinfo the /proc view's agent answers, beside a call in a
//! container with `--procview=false` (the kernel answers); `berth run --rm` with the
//! view (files and sysinfo) beside without; and berth-runtime's lifecycle with a
//! notifying seccomp profile (listener sent to an agent) beside the same profile
//! without notification — the runtime's own share. All interleaved.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::net::Berth;
use crate::stats;

/// The host's dynamic loader and library directories, seen from a container that has
/// the host's root at /host: the bench binary runs inside through them.
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const LIB_DIRS: &str = "/host/lib/x86_64-linux-gnu:/host/usr/lib/x86_64-linux-gnu";

/// Runs the benchmark.
pub fn sysinfo_bench(runs: usize, berth: &Path, tools: &Path) -> Result<()> {
    let mut b = Berth::new(berth, tools)?;
    b.detached("si-view", &["-m", "256m", "-v", "/:/host:ro"])?;
    b.detached(
        "si-kernel",
        &["-m", "256m", "--procview=false", "-v", "/:/host:ro"],
    )?;
    let exe = std::fs::canonicalize(std::env::current_exe()?)?;
    let host_exe = format!("/host{}", exe.display());
    // (Its own path: /lib64's is a link that would resolve outside /host.)
    let loader = format!("/host{}", std::fs::canonicalize(LOADER)?.display());
    // Each round: 200 calls in each container, in alternating order.
    let names = ["si-view", "si-kernel"];
    let mut per_call: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut totals = [String::new(), String::new()];
    for round in 0..runs {
        for k in 0..2 {
            let i = (round + k) % 2;
            let out = crate::engine::run(&mut b.cmd(&[
                "exec",
                names[i],
                &loader,
                "--library-path",
                LIB_DIRS,
                &host_exe,
                "sysinfo-caller",
                "--calls",
                "200",
            ]))?;
            let mut f = out.split_whitespace();
            let ns: f64 = f.next().context("caller output")?.parse()?;
            per_call[i].push(ns);
            totals[i] = f.next().unwrap_or("").to_string();
        }
    }
    println!("sysinfo(2) in a container (-m 256m), median of {runs} rounds of 200 calls each");
    println!(
        "{:<26} {:>10} {:>8} {:>8}   totalram MiB",
        "", "median µs", "p10", "p90"
    );
    for (i, label) in ["answered by the agent", "answered by the kernel"]
        .iter()
        .enumerate()
    {
        println!(
            "{label:<26} {:>10.1} {:>8.1} {:>8.1}   {}",
            stats::median(&per_call[i]) / 1e3,
            stats::percentile(&per_call[i], 10.0) / 1e3,
            stats::percentile(&per_call[i], 90.0) / 1e3,
            totals[i]
        );
    }
    drop(b);

    // A whole container: berth run --rm with the view and without.
    let b = Berth::new(berth, tools)?;
    let mut wall: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..runs {
        for k in 0..2 {
            let i = (round + k) % 2;
            let mut args = vec!["run", "--rm"];
            if i == 1 {
                args.push("--procview=false");
            }
            args.extend(["localhost/bench/busybox:1", "true"]);
            let t = Instant::now();
            crate::engine::run(&mut b.cmd(&args))?;
            wall[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!();
    println!("berth run --rm busybox true, {runs} interleaved runs each");
    println!("{:<26} {:>10} {:>8} {:>8}", "", "median ms", "p10", "p90");
    for (i, label) in ["with the /proc view", "--procview=false"]
        .iter()
        .enumerate()
    {
        println!(
            "{label:<26} {:>10.1} {:>8.1} {:>8.1}",
            stats::median(&wall[i]),
            stats::percentile(&wall[i], 10.0),
            stats::percentile(&wall[i], 90.0)
        );
    }
    drop(b);
    runtime_share(runs, &tools.join("berth-runtime"))
}

/// berth-runtime create/start/wait/delete of /bin/true with sysinfo notified to an
/// agent (a thread here that takes the listener and lets go), beside the same profile
/// logging sysinfo instead: the same filter size, no listener.
fn runtime_share(runs: usize, runtime: &Path) -> Result<()> {
    let runtime = &std::fs::canonicalize(runtime)
        .with_context(|| format!("{} (scripts/build-runtime.sh)", runtime.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-sysinfo")
        .tempdir()?;
    let bundles = [dir.path().join("notify"), dir.path().join("plain")];
    let sock = dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock)?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = berth_seccomp_listener::recv(conn.as_fd());
        }
    });
    for (i, bundle) in bundles.iter().enumerate() {
        std::fs::create_dir_all(bundle)?;
        crate::make_bundle(bundle, runtime)?;
        let path = bundle.join("config.json");
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        c["linux"]["seccomp"] = if i == 0 {
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock,
                "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}]})
        } else {
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_LOG"}]})
        };
        std::fs::write(&path, serde_json::to_vec_pretty(&c)?)?;
    }
    let root = dir.path().join("root");
    crate::sys::become_subreaper()?;
    let mut wall: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..runs {
        for k in 0..2 {
            let i = (round + k) % 2;
            let id = format!("si-{round}-{i}");
            let s = crate::lifecycle(runtime, &root, &bundles[i], &id)?;
            wall[i].push(s.wall.as_secs_f64() * 1e3);
        }
    }
    println!();
    println!("berth-runtime create+start+wait+delete of /bin/true, {runs} interleaved runs each");
    println!("{:<26} {:>10} {:>8} {:>8}", "", "median ms", "p10", "p90");
    for (i, label) in ["sysinfo notified", "sysinfo logged (no agent)"]
        .iter()
        .enumerate()
    {
        println!(
            "{label:<26} {:>10.2} {:>8.2} {:>8.2}",
            stats::median(&wall[i]),
            stats::percentile(&wall[i], 10.0),
            stats::percentile(&wall[i], 90.0)
        );
    }
    println!(
        "cost of the interception at start: {:+.2} ms",
        stats::median(&wall[0]) - stats::median(&wall[1])
    );
    Ok(())
}

/// The caller inside the container: `calls` sysinfo(2) calls, each timed; prints the
/// median in ns and the total RAM (MiB) the last one reported.
pub fn sysinfo_caller(calls: usize) -> Result<()> {
    if calls == 0 {
        bail!("--calls must be at least 1");
    }
    let mut ns = Vec::with_capacity(calls);
    let mut total = 0;
    for _ in 0..calls {
        let t = Instant::now();
        let s = rustix::system::sysinfo();
        ns.push(t.elapsed().as_nanos() as f64);
        total = (s.totalram * u64::from(s.mem_unit.max(1))) >> 20;
    }
    println!("{} {total}", stats::median(&ns));
    Ok(())
}
