//! `berth-bench cri` — berth's CRI endpoint (`berth cri`) beside containerd's CRI
//! plugin (Debian's containerd, started here on a private socket and state directory,
//! runc under it, the CNI bridge plugin for its pods), driven by one gRPC client with
//! crictl-shaped requests, interleaved: a pod sandbox and one container started in it
//! (RunPodSandbox + CreateContainer + StartContainer), then ExecSync round trips in
//! that container. The same busybox image on both, imported into each store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as pb;
use pb::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::stats;

/// The busybox image both runtimes run.
const IMAGE: &str = "localhost/bench/busybox:1";
/// containerd's sandbox ("pause") image: the same busybox, running /pause.
const PAUSE: &str = "localhost/bench/pause:1";

/// A server process, ended with SIGTERM (then SIGKILL) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.0),
            rustix::process::Signal::TERM,
        );
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(socket: &Path) -> Result<Channel> {
    Ok(berth_cri::client::connect(socket).await?)
}

fn wait_socket(socket: &Path, child: &mut Child, log: &Path, what: &str) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(st) = child.try_wait()? {
            bail!(
                "{what} exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > end {
            bail!("{what} did not listen on {} within 30 s", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// containerd's configuration: everything under `dir`, its CRI plugin on runc with
/// cgroupfs paths (as berth's), the oom_score_adj it asks for pods clamped (root here
/// lacks CAP_SYS_RESOURCE), CNI's bridge for pods.
fn containerd_config(dir: &Path) -> Result<PathBuf> {
    let d = dir.display();
    let net = dir.join("net.d");
    std::fs::create_dir_all(&net)?;
    std::fs::write(
        net.join("10-bench.conflist"),
        format!(
            r#"{{"cniVersion":"0.4.0","name":"bench","plugins":[{{"type":"bridge","bridge":"cbench0","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.45.10.0/24"}}]],"dataDir":"{d}/ipam"}}}}]}}"#
        ),
    )?;
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
"#
        ),
    )?;
    Ok(cfg)
}

/// A sandbox config as the kubelet sends it.
fn pod(i: usize, logs: &Path) -> pb::PodSandboxConfig {
    let uid = format!("bench-{i}-{}", std::process::id());
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: format!("bench{i}"),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("bench{i}"),
        log_directory: logs.join(&uid).display().to_string(),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container() -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        }),
        image: Some(pb::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "sleeper/0.log".into(),
        ..Default::default()
    }
}

/// One round on one runtime: the pod start's time, and the ExecSync round trips'.
async fn round(
    rt: &mut RuntimeServiceClient<Channel>,
    i: usize,
    logs: &Path,
    execs: usize,
) -> Result<(f64, Vec<f64>)> {
    let cfg = pod(i, logs);
    let t = Instant::now();
    let sb = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let c = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(container()),
            sandbox_config: Some(cfg),
        })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(pb::StartContainerRequest {
        container_id: c.clone(),
    })
    .await?;
    let start = t.elapsed().as_secs_f64() * 1000.0;
    let mut exec = Vec::new();
    for _ in 0..execs {
        let t = Instant::now();
        let r = rt
            .exec_sync(pb::ExecSyncRequest {
                container_id: c.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await?
            .into_inner();
        exec.push(t.elapsed().as_secs_f64() * 1000.0);
        if r.exit_code != 0 {
            bail!("ExecSync true exited {}", r.exit_code);
        }
    }
    rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await?;
    Ok((start, exec))
}

/// Runs the comparison: `runs` pods on each runtime, `execs` ExecSync calls in each.
pub fn cri_bench(runs: usize, execs: usize, berth: &Path) -> Result<()> {
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (cargo build --release)", berth.display()))?;
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2", "runc"] {
        if crate::which(tool).is_none() {
            bail!("{tool} is not installed (scripts/deps.sh installs containerd and runc)");
        }
    }
    let work = tempfile::Builder::new()
        .prefix("berth-bench-cri")
        .tempdir_in("/var/tmp")?;
    let w = work.path();
    let tar = crate::engine::busybox_tar(w)?;
    let broot = w.join("berth");
    let berth_cmd = |args: &[&str]| {
        let mut c = Command::new(&berth);
        c.arg("--root")
            .arg(&broot)
            .args(args)
            .env("BERTH_NET_ROOT", w.join("net"));
        c
    };
    let tar_s = tar.to_str().context("a UTF-8 path")?;
    crate::engine::run(&mut berth_cmd(&[
        "import",
        "-c",
        r#"CMD ["sh"]"#,
        tar_s,
        IMAGE,
    ]))?;
    crate::engine::run(&mut berth_cmd(&[
        "import",
        "-c",
        r#"ENTRYPOINT ["/pause"]"#,
        tar_s,
        PAUSE,
    ]))?;
    let archive = w.join("images.tar");
    crate::engine::run(&mut berth_cmd(&[
        "save",
        "-o",
        archive.to_str().context("a UTF-8 path")?,
        IMAGE,
        PAUSE,
    ]))?;

    // berth cri.
    let berth_sock = w.join("berth.sock");
    let berth_log = w.join("berth-cri.log");
    let mut child = berth_cmd(&["cri", "--socket"])
        .arg(&berth_sock)
        .args(["--pod-cidr", "10.45.9.0/24"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&berth_log)?)
        .stderr(std::fs::File::create(&berth_log)?)
        .spawn()?;
    wait_socket(&berth_sock, &mut child, &berth_log, "berth cri")?;
    let berth_server = Server(child);

    // containerd.
    let cdir = w.join("containerd");
    std::fs::create_dir_all(&cdir)?;
    let cfg = containerd_config(&cdir)?;
    let csock = cdir.join("containerd.sock");
    let clog = w.join("containerd.log");
    let mut child = Command::new("containerd")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&clog)?)
        .stderr(std::fs::File::create(&clog)?)
        .spawn()?;
    wait_socket(&csock, &mut child, &clog, "containerd")?;
    let containerd = Server(child);
    crate::engine::run(
        Command::new("ctr")
            .arg("--address")
            .arg(&csock)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive),
    )?;

    let logs = w.join("logs");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut b = RuntimeServiceClient::new(connect(&berth_sock).await?);
        let mut c = RuntimeServiceClient::new(connect(&csock).await?);
        // Warm-up (bridges, image snapshots), not counted.
        round(&mut b, runs, &logs, 1).await.context("berth")?;
        round(&mut c, runs, &logs, 1)
            .await
            .with_context(|| format!("containerd (its log: {})", clog.display()))?;
        let (mut bs, mut cs, mut be, mut ce) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            for berth_first in [i % 2 == 0, i % 2 != 0] {
                if berth_first {
                    let (s, e) = round(&mut b, i, &logs, execs).await.context("berth")?;
                    bs.push(s);
                    be.extend(e);
                } else {
                    let (s, e) = round(&mut c, i, &logs, execs).await.context("containerd")?;
                    cs.push(s);
                    ce.extend(e);
                }
            }
        }
        anyhow::Ok((bs, cs, be, ce))
    });
    drop(containerd);
    drop(berth_server);
    let _ = berth_net::network::Networks::new(&w.join("net")).remove("pods");
    let _ = Command::new("ip").args(["link", "del", "cbench0"]).status();
    berth_cgroups_unmount(w);
    let (bs, cs, be, ce) = result?;
    println!(
        "\nCRI: {runs} pods on each runtime, interleaved, {execs} ExecSync calls in each ({} with runc)",
        crate::engine::run(Command::new("containerd").arg("--version"))
            .unwrap_or_default()
            .trim()
    );
    println!("{:<58} {:>10} {:>8} {:>8}", "", "median ms", "p10", "p90");
    let row = |n: &str, v: &[f64]| {
        println!(
            "{n:<58} {:>10.1} {:>8.1} {:>8.1}",
            stats::median(v),
            stats::percentile(v, 10.0),
            stats::percentile(v, 90.0)
        )
    };
    row("berth RunPodSandbox+CreateContainer+StartContainer", &bs);
    row(
        "containerd RunPodSandbox+CreateContainer+StartContainer",
        &cs,
    );
    row("berth ExecSync true", &be);
    row("containerd ExecSync true", &ce);
    println!(
        "pod start: containerd/berth {:.1}x (target >= 3x); ExecSync: containerd/berth {:.1}x",
        stats::median(&cs) / stats::median(&bs),
        stats::median(&ce) / stats::median(&be)
    );
    Ok(())
}

/// Mounts containerd or berth left under the work directory (none when all went
/// well) go before it is removed.
fn berth_cgroups_unmount(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
    }
}
