//! `berth-bench engine`, pods: a pod sandbox and one container started in it —
//! RunPodSandbox + CreateContainer + StartContainer through berth's CRI-shaped traits,
//! in process as the node agent calls them — beside `podman pod create` + `podman run
//! -d --pod` of the same image (podman's infra container from the same image, as it
//! has no pause image here), interleaved; each pod removed before the next round.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use berth_engine::cri::{
    ContainerConfig, ContainerMetadata, ImageService, RuntimeService, SandboxConfig,
    SandboxMetadata,
};

use crate::stats;

/// Builds a podman command (on the benchmark's own storage) from its arguments.
pub type PodmanCmd<'a> = &'a dyn Fn(&[&str]) -> Command;

/// Runs the comparison with `runs` pods each; `broot` holds the busybox image as
/// `localhost/bench/busybox:1`; `podman` builds podman commands on the benchmark's own
/// storage (None without podman).
pub fn pod_bench(runs: usize, broot: &Path, podman: Option<PodmanCmd<'_>>) -> Result<()> {
    let core = berth_engine::Core::open(broot)?;
    core.image_status("localhost/bench/busybox:1")?
        .context("the busybox image is not in the benchmark's store")?;
    core.update_runtime_config("10.45.7.0/24")?;
    let pod = |i: usize| SandboxConfig {
        metadata: SandboxMetadata {
            name: format!("bench{i}"),
            uid: format!("bench-{i}-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        },
        cgroup_parent: format!("/kubepods/besteffort/podbench-{i}-{}", std::process::id()),
        ..Default::default()
    };
    let ctr = ContainerConfig {
        metadata: ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        },
        image: "localhost/bench/busybox:1".into(),
        command: vec!["sleep".into(), "3600".into()],
        ..Default::default()
    };
    let berth_pod = |i: usize| -> Result<(f64, String)> {
        let t = Instant::now();
        let sb = core.run_pod_sandbox(&pod(i))?;
        let c = core.create_container(&sb, &ctr)?;
        core.start_container(&c)?;
        Ok((t.elapsed().as_secs_f64() * 1000.0, sb))
    };
    // podman's pod infra container takes no --ulimit: give every podman container the
    // host's open-file limit and runc (crun refuses this hybrid cgroup host) in a
    // containers.conf of the benchmark's own.
    let conf = broot.with_file_name("containers.conf");
    let nofile = crate::engine::hard("Max open files");
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\n"
        ),
    )?;
    let podman_cmd = |args: &[&str]| -> Command {
        let mut c = (podman.expect("called only with podman"))(args);
        c.env("CONTAINERS_CONF", &conf);
        c
    };
    let podman_pod = |i: usize| -> Result<f64> {
        let p = &podman_cmd;
        let name = format!("benchpod{i}");
        let t = Instant::now();
        crate::engine::run(&mut p(&[
            "pod",
            "create",
            "--name",
            &name,
            "--infra-image",
            "localhost/bench/busybox:1",
            "--infra-command",
            "/pause",
        ]))?;
        crate::engine::run(&mut p(&[
            "run",
            "-d",
            "--pod",
            &name,
            "localhost/bench/busybox:1",
            "sleep",
            "3600",
        ]))?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let podman_rm = |i: usize| {
        if podman.is_some() {
            let _ = podman_cmd(&["pod", "rm", "-f", &format!("benchpod{i}")]).output();
        }
    };
    // Warm-up (the pod bridge, podman's infra image), not counted.
    let (_, sb) = berth_pod(runs + 1)?;
    core.remove_pod_sandbox(&sb)?;
    if podman.is_some() {
        podman_pod(runs + 1)?;
        podman_rm(runs + 1);
    }
    let (mut b, mut p) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let order: &[bool] = if i % 2 == 0 {
            &[true, false]
        } else {
            &[false, true]
        };
        for &berth_first in order {
            if berth_first {
                let (ms, sb) = berth_pod(i)?;
                b.push(ms);
                core.remove_pod_sandbox(&sb)?;
            } else if podman.is_some() {
                p.push(podman_pod(i)?);
                podman_rm(i);
            }
        }
    }
    println!(
        "\na pod and one container started in it, {runs} interleaved runs each (podman with runc)"
    );
    println!("{:<52} {:>10} {:>8} {:>8}", "", "median ms", "p10", "p90");
    let row = |n: &str, v: &[f64]| {
        println!(
            "{n:<52} {:>10.1} {:>8.1} {:>8.1}",
            stats::median(v),
            stats::percentile(v, 10.0),
            stats::percentile(v, 90.0)
        )
    };
    row("berth RunPodSandbox+CreateContainer+StartContainer", &b);
    if !p.is_empty() {
        row("podman pod create + podman run -d --pod", &p);
        println!(
            "pod start: podman/berth {:.1}x",
            stats::median(&p) / stats::median(&b)
        );
    }
    let _ = berth_net_cleanup(&core);
    Ok(())
}

/// The benchmark's pod bridge goes with it.
fn berth_net_cleanup(core: &berth_engine::Core) -> Result<()> {
    berth_net::network::Networks::host().remove(&core.pod_network().name)?;
    Ok(())
}
