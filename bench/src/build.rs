//! `berth-bench build`: a multi-stage Dockerfile with two independent stages, built
//! by `berth build` and by `podman build` from the same context, interleaved: cold
//! (no cache) and warm (every step cached). Both start from the same busybox image.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::engine::{busybox_tar, hard, podman_in, run};
use crate::stats;

/// Two stages that do not use each other (each a few RUN steps), and a final one
/// that copies from both.
const DOCKERFILE: &str = r#"FROM localhost/bench/busybox:1 AS left
RUN mkdir -p /out && i=0; while [ $i -lt 2000 ]; do echo "left $i" >> /out/left.txt; i=$((i+1)); done
RUN sha256sum /out/left.txt > /out/left.sum
FROM localhost/bench/busybox:1 AS right
COPY note.txt /srv/note.txt
RUN mkdir -p /out && i=0; while [ $i -lt 2000 ]; do echo "right $i" >> /out/right.txt; i=$((i+1)); done
RUN sha256sum /out/right.txt > /out/right.sum
FROM localhost/bench/busybox:1
COPY --from=left /out/ /data/
COPY --from=right /out/ /data/
COPY --from=right /srv/note.txt /data/note.txt
CMD ["ls", "/data"]
"#;

/// Runs the build benchmark.
pub fn build_bench(runs: usize, berth: &Path) -> Result<()> {
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (cargo build --release)", berth.display()))?;
    let work = tempfile::Builder::new()
        .prefix("berth-bench-build")
        .tempdir_in("/var/tmp")?;
    let w = work.path();
    let tar = busybox_tar(w)?;
    let ctx = w.join("context");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE)?;
    std::fs::write(ctx.join("note.txt"), "a note\n")?;
    let broot = w.join("berth");
    let berth_cmd = |args: &[&str]| {
        let mut c = Command::new(&berth);
        c.env("BERTH_ROOT", &broot).args(args);
        c
    };
    run(&mut berth_cmd(&[
        "import",
        tar.to_str().unwrap(),
        "localhost/bench/busybox:1",
    ]))?;
    let proot = w.join("podman");
    // As in the engine benchmark: runc (crun refuses this hybrid cgroup host), the
    // host's open-file limit and 4096 processes (no CAP_SYS_RESOURCE to go higher).
    let nofile = format!("nofile={0}:{0}", hard("Max open files"));
    let podman = |args: &[&str]| {
        let mut c = podman_in(&proot);
        c.arg("--cgroup-manager=cgroupfs").args(args);
        c
    };
    let have_podman = Command::new("podman").arg("--version").output().is_ok();
    if have_podman {
        run(&mut podman(&[
            "import",
            tar.to_str().unwrap(),
            "localhost/bench/busybox:1",
        ]))?;
    }
    let berth_build = |cold: bool| {
        let mut c = berth_cmd(&["build", "-q", "-t", "localhost/bench/ms:1"]);
        if cold {
            c.arg("--no-cache");
        }
        c.arg(&ctx);
        c
    };
    let podman_build = |cold: bool| {
        let mut c = podman(&[
            "build",
            "-q",
            "--runtime",
            "runc",
            "--ulimit",
            &nofile,
            "--ulimit",
            "nproc=4096:4096",
            "--pull=never",
            "-t",
            "localhost/bench/ms:1",
        ]);
        if cold {
            c.arg("--no-cache");
        }
        c.arg(&ctx);
        c
    };
    let names = [
        "berth build (cold)",
        "podman build (cold)",
        "berth build (warm)",
        "podman build (warm)",
    ];
    let tools = if have_podman { 2 } else { 1 };
    let make = |tool: usize, cold: bool| {
        if tool == 0 {
            berth_build(cold)
        } else {
            podman_build(cold)
        }
    };
    // Warm-up (fills both caches), not counted.
    for t in 0..tools {
        run(&mut make(t, false))?;
    }
    let mut s: Vec<Vec<f64>> = vec![Vec::new(); 4];
    for round in 0..runs {
        for (cold, base) in [(true, 0), (false, 2)] {
            for k in 0..tools {
                let t = (round + k) % tools;
                let start = Instant::now();
                run(&mut make(t, cold))?;
                s[base + t].push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    println!("a two-stage-plus-final Dockerfile (4 RUN, 4 COPY), {runs} interleaved builds each (podman with runc)");
    println!("{:<24} {:>10} {:>8} {:>8}", "", "median ms", "p10", "p90");
    for (n, v) in names.iter().zip(&s) {
        if !v.is_empty() {
            println!(
                "{n:<24} {:>10.0} {:>8.0} {:>8.0}",
                stats::median(v),
                stats::percentile(v, 10.0),
                stats::percentile(v, 90.0)
            );
        }
    }
    if have_podman {
        let m = |i: usize| stats::median(&s[i]);
        println!(
            "podman/berth: cold {:.1}x, warm {:.1}x",
            m(1) / m(0),
            m(3) / m(2)
        );
        let _ = podman(&["system", "reset", "-f"]).output();
    }
    // berth's containers are gone with each step; its state goes with the directory.
    drop(work);
    Ok(())
}
