//! `berth-bench`: runs berth and its peers side by side, interleaved in one run, and
//! prints medians and ratios. Targets live here, never in timed tests.
//!
//! `berth-bench runtime` — the full OCI lifecycle (create, start, wait for exit,
//! delete) of `/bin/true` in a busybox bundle with pid, mount, uts, ipc and network
//! namespaces, for berth-runtime, crun and runc, plus the bare `unshare` floor.
//!
//! `berth-bench engine` — `berth run --rm` vs `podman run --rm`, and 100 detached
//! containers (see engine.rs).
//!
//! `berth-bench images` — layer unpack vs `tar -x` and `umoci unpack`, rootfs prepare,
//! and pull vs `skopeo copy` (see images.rs).
//!
//! `berth-bench cri` — berth's CRI endpoint beside containerd's CRI plugin: pod start
//! and ExecSync through each socket (see cri.rs).
//!
//! `berth-bench net` — a two-node berth cluster's pod network: VXLAN beside one
//! bridge, a ClusterIP beside the pod IP, the Ingress proxy beside the pod (see
//! cluster.rs).
//!
//! `berth-bench procview` and `berth-bench throughput` — the /proc view against lxcfs
//! and the host's /proc; iperf3 across the bridge and through a published port against
//! loopback (see net.rs).

mod agent;
mod apiserver;
mod build;
mod cluster;
mod compaction;
mod control;
mod cri;
mod diskprobe;
mod dns;
mod engine;
mod failover;
mod images;
mod join;
mod net;
mod pods;
mod rbac;
mod rootless;
mod services;
mod soak;
mod stats;
mod steal;
mod sys;
mod sysinfo;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth-bench",
    about = "Benchmarks berth against its peers, side by side"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Container lifecycle: berth-runtime vs crun vs runc
    Runtime {
        /// Rounds (each runtime runs once per round, in rotating order)
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// The berth-runtime binary to measure (scripts/build-runtime.sh builds it)
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-gnu/runtime/berth-runtime"
        )]
        berth: PathBuf,
        /// Peers to compare with (those not installed are skipped)
        #[arg(long, value_delimiter = ',', default_value = "crun,runc")]
        peers: Vec<String>,
    },
    /// Engine: berth run --rm vs podman run --rm, and many detached containers
    Engine {
        /// Rounds (each tool runs once per round, in rotating order)
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// The berth binary (cargo build --release; berth-runtime next to it)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Detached containers to start
        #[arg(long, default_value_t = 100)]
        many: usize,
        /// Where the static berth-runtime and berth-monitor are (scripts/build-runtime.sh)
        #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/runtime")]
        tools: PathBuf,
    },
    /// The /proc view: reading /proc/meminfo from a container via berth, lxcfs, the host
    Procview {
        /// Reads of each file (interleaved)
        #[arg(long, default_value_t = 2000)]
        runs: usize,
        /// The berth binary (cargo build --release)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Where the static berth-runtime and berth-monitor are (scripts/build-runtime.sh)
        #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/runtime")]
        tools: PathBuf,
    },
    /// The truthful sysinfo(2): a call answered by the agent vs the kernel, run --rm
    /// with the view vs without, the runtime's lifecycle with a listener vs without
    Sysinfo {
        /// Rounds (each side once per round, in rotating order)
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// The berth binary (cargo build --release)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Where the static berth-runtime and berth-monitor are (scripts/build-runtime.sh)
        #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/runtime")]
        tools: PathBuf,
    },
    /// Rootless: berth run --rm as an unprivileged user beside rootless podman run --rm
    Rootless {
        /// Runs of each (interleaved)
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// The berth binary (cargo build --release)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Where the static berth-runtime and berth-monitor are (scripts/build-runtime.sh)
        #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/runtime")]
        tools: PathBuf,
    },
    /// The pod network of a two-node berth cluster: VXLAN vs one bridge (iperf3),
    /// connect latency through a ClusterIP vs the pod IP, HTTP through the Ingress
    /// proxy vs straight to the pod
    Net {
        /// Rounds (each pair measured once per round, in rotating order)
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds of each iperf3 and HTTP load run
        #[arg(long, default_value_t = 3)]
        secs: u32,
        /// The berth binary (cargo build --release)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Where the static berth-runtime and berth-monitor are (scripts/build-runtime.sh)
        #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/runtime")]
        tools: PathBuf,
    },
    /// (internal) connection latency, inside a pod's network namespace
    #[command(hide = true)]
    ConnectLatency {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 500)]
        count: usize,
    },
    /// (internal) a keep-alive HTTP server, inside a pod's network namespace
    #[command(hide = true)]
    HttpServe {
        #[arg(long)]
        port: u16,
    },
    /// (internal) HTTP load, inside a pod's network namespace
    #[command(hide = true)]
    HttpLoad {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        host: String,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        conns: usize,
    },
    /// (internal) the caller of `sysinfo`, inside a container
    #[command(hide = true)]
    SysinfoCaller {
        /// sysinfo calls to time
        #[arg(long, default_value_t = 200)]
        calls: usize,
    },
    /// (internal) the reader process of `procview`, inside the container's cgroups
    #[command(hide = true)]
    ProcviewReader {
        #[arg(long)]
        runs: usize,
        #[arg(long)]
        join: String,
        files: Vec<PathBuf>,
    },
    /// CRI: berth cri beside containerd's CRI plugin, pod start and ExecSync
    Cri {
        /// Pods on each runtime (in rotating order)
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// ExecSync calls in each pod
        #[arg(long, default_value_t = 5)]
        execs: usize,
        /// The berth binary (cargo build --release; berth-runtime and berth-monitor
        /// next to it)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
    },
    /// Cluster DNS: queries per second and latency for a Service name, the load on the
    /// same machine
    Dns {
        /// Seconds of load
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// UDP clients
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Queries each client keeps in flight
        #[arg(long, default_value_t = 4)]
        window: usize,
        /// Services in the zone
        #[arg(long, default_value_t = 10000)]
        services: usize,
    },
    /// The node proxy's nftables programming: N Services from scratch, one endpoint
    /// changed
    Services {
        /// Rounds (each in a fresh network namespace)
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Services
        #[arg(long, default_value_t = 10000)]
        services: usize,
        /// Endpoints per Service
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
        /// One-endpoint changes per round (each added, then removed)
        #[arg(long, default_value_t = 20)]
        changes: usize,
    },
    /// Network throughput with iperf3: across the bridge, through a published port, loopback
    Throughput {
        /// Seconds per measurement
        #[arg(long, default_value_t = 3)]
        secs: u32,
        /// The berth binary (cargo build --release)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Where the static berth-runtime and berth-monitor are (scripts/build-runtime.sh)
        #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/runtime")]
        tools: PathBuf,
    },
    /// The datastore in operation: SQLite and etcd side by side under the same steady
    /// writes with watches open, compacted as kube-apiserver compacts; write latency,
    /// database and WAL size and RSS per window
    Soak {
        /// How long (3600: the hour-long soak)
        #[arg(long, default_value_t = 120)]
        secs: u64,
        /// Writes per second to each server
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Watches open on each server
        #[arg(long, default_value_t = 10)]
        watchers: usize,
        /// Seconds per reported window
        #[arg(long, default_value_t = 10)]
        window: u64,
        /// The servers' --etcd-compaction-interval
        #[arg(long, default_value = "20s")]
        compaction: String,
        /// The berth binary (cargo build --release -p berth)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
    },
    /// How long compaction holds writers up: berth's SQLite store and etcd, store
    /// against store, filled, then compacted while steady writes go on
    CompactionStall {
        /// Rounds per store (alternating)
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Revisions compacted away each round
        #[arg(long, default_value_t = 100_000)]
        revisions: usize,
        /// Writes per second during the round
        #[arg(long, default_value_t = 500)]
        rate: u32,
    },
    /// Two servers on one etcd: the leading one killed, the other's controller
    /// manager taking over, with the default and a 5 s lease
    Failover {
        /// Kills per lease setting
        #[arg(long, default_value = "5")]
        rounds: usize,
        /// The berth binary (cargo build --release -p berth)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
    },
    /// A new node's agent joining with a token, start to Node Ready, beside the same
    /// agent restarted with the certificate it kept
    Join {
        /// Interleaved rounds (a new node each)
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// The berth binary (cargo build --release -p berth)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
    },
    /// What RBAC costs a GET: a user allowed by a RoleBinding among thousands, beside
    /// a member of system:masters
    Rbac {
        /// Interleaved rounds
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// GETs each way per round
        #[arg(long, default_value_t = 5000)]
        gets: usize,
        /// RoleBindings in the cluster
        #[arg(long, default_value_t = 5000)]
        bindings: usize,
        /// The berth binary (cargo build --release -p berth)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
    },
    /// The API server: start to ready, idle RSS, GET/CREATE/PATCH/LIST rates, watch
    /// fan-out, on SQLite and on etcd
    Apiserver {
        /// Start-up rounds
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The berth binary (cargo build --release -p berth)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Load multiplier (1: 2,000 creates, 10,000 GETs, 1,000 patches)
        #[arg(long, default_value_t = 1)]
        scale: usize,
        /// Skip the etcd backend
        #[arg(long)]
        skip_etcd: bool,
        /// Also run `etcdctl check perf --load=s` (60 s) for the overhead ratio
        #[arg(long)]
        etcd_perf: bool,
    },
    /// Pods on a node: POST to Running through berth server vs podman kube play,
    /// density, start to node Ready, memory
    Pods {
        /// Pods started one after another (and podman kube plays, interleaved)
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// The berth binary (cargo build --release)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Pods created at once for the density figure
        #[arg(long, default_value_t = 100)]
        density: usize,
        /// Where the static berth-runtime and berth-monitor are (scripts/build-runtime.sh)
        #[arg(long, default_value = "target/x86_64-unknown-linux-gnu/runtime")]
        tools: PathBuf,
    },
    /// The scheduler on simulated nodes (scheduler_perf's SchedulingBasic shape):
    /// pods bound per second, server memory
    Control {
        /// The berth binary (cargo build --release)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Simulated nodes
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Pods to place
        #[arg(long, default_value_t = 10000)]
        pods: usize,
        /// Replicas of the Deployment timed from create to all available (0: none)
        #[arg(long, default_value_t = 10000)]
        deployment: usize,
        /// Replicas of the Deployment whose rolling update is timed (0: none)
        #[arg(long, default_value_t = 1000)]
        rollout: usize,
        /// The pods' shape (kube's scheduler_perf cases)
        #[arg(long, value_enum, default_value = "basic")]
        shape: control::Shape,
    },
    /// Builds: a multi-stage Dockerfile by berth build vs podman build, cold and warm
    Build {
        /// Rounds (each tool builds once cold and once warm per round)
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The berth binary (cargo build --release)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
    },
    /// Images: unpack vs tar and umoci, rootfs prepare, pull vs skopeo
    Images {
        /// Rounds (each tool runs once per round, in rotating order)
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The berth binary (cargo build --release -p berth)
        #[arg(long, default_value = "target/release/berth")]
        berth: PathBuf,
        /// Skip the registry pull comparison
        #[arg(long)]
        skip_pull: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Runtime { runs, berth, peers } => runtime_bench(runs, &berth, &peers),
        Cmd::Join { rounds, berth } => join::run(&berth, rounds),
        Cmd::Failover { rounds, berth } => failover::run(&berth, rounds),
        Cmd::CompactionStall {
            rounds,
            revisions,
            rate,
        } => compaction::run(rounds, revisions, rate),
        Cmd::Soak {
            secs,
            rate,
            watchers,
            window,
            compaction,
            berth,
        } => soak::run(&berth, secs, rate, watchers, window, &compaction),
        Cmd::Rbac {
            rounds,
            gets,
            bindings,
            berth,
        } => rbac::run(&berth, rounds, gets, bindings),
        Cmd::Apiserver {
            runs,
            berth,
            scale,
            skip_etcd,
            etcd_perf,
        } => apiserver::run(&berth, runs, scale, !skip_etcd, etcd_perf),
        Cmd::Engine {
            runs,
            berth,
            many,
            tools,
        } => engine::engine_bench(runs, &berth, many, &tools),
        Cmd::Images {
            runs,
            berth,
            skip_pull,
        } => images::images_bench(runs, &berth, skip_pull),
        Cmd::Pods {
            runs,
            berth,
            density,
            tools,
        } => agent::pods_bench(runs, &berth, density, &tools),
        Cmd::Control {
            berth,
            nodes,
            pods,
            deployment,
            rollout,
            shape,
        } => control::control_bench(&berth, nodes, pods, deployment, rollout, shape),
        Cmd::Build { runs, berth } => build::build_bench(runs, &berth),
        Cmd::Procview { runs, berth, tools } => net::procview_bench(runs, &berth, &tools),
        Cmd::Sysinfo { runs, berth, tools } => sysinfo::sysinfo_bench(runs, &berth, &tools),
        Cmd::Rootless { runs, berth, tools } => rootless::rootless_bench(runs, &berth, &tools),
        Cmd::SysinfoCaller { calls } => sysinfo::sysinfo_caller(calls),
        Cmd::Net {
            runs,
            secs,
            berth,
            tools,
        } => cluster::net_bench(runs, secs, &berth, &tools),
        Cmd::ConnectLatency { addr, count } => cluster::connect_latency(&addr, count),
        Cmd::HttpServe { port } => cluster::http_serve(port),
        Cmd::HttpLoad {
            addr,
            host,
            secs,
            conns,
        } => cluster::http_load(&addr, &host, secs, conns),
        Cmd::ProcviewReader { runs, join, files } => net::procview_reader(runs, &join, &files),
        Cmd::Throughput { secs, berth, tools } => net::throughput_bench(secs, &berth, &tools),
        Cmd::Cri { runs, execs, berth } => cri::cri_bench(runs, execs, &berth),
        Cmd::Dns {
            secs,
            clients,
            window,
            services,
        } => dns::dns_bench(secs, clients, window, services),
        Cmd::Services {
            runs,
            services,
            endpoints,
            changes,
        } => services::services_bench(runs, services, endpoints, changes),
    }
}

/// Writes a busybox bundle whose config runs /bin/true with the five namespaces.
fn make_bundle(dir: &Path, berth: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin"))?;
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .context("copy /bin/busybox (install busybox-static)")?;
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let out = Command::new(berth).arg("spec").current_dir(dir).output()?;
    if !out.status.success() {
        bail!(
            "berth-runtime spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    // crun 1.8 refuses newer versions; the config uses nothing newer than 1.0.2.
    c["ociVersion"] = "1.0.2".into();
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(["/bin/true"]);
    c["linux"]["namespaces"] = serde_json::json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}
    ]);
    // The same config for every runtime; mounts limited to what all of them handle the
    // same way on this host.
    let mounts: Vec<serde_json::Value> = c["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] != "cgroup")
        .cloned()
        .collect();
    c["mounts"] = mounts.into();
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&c)?)?;
    Ok(())
}

/// One measured lifecycle: total wall time, the time of each step (create, start,
/// wait, delete), and the peak RSS of the runtime processes.
struct Sample {
    wall: Duration,
    steps: [Duration; 4],
    peak_rss_kb: i64,
}

/// create, start, wait for the init (we are subreaper), delete.
fn lifecycle(runtime: &Path, root: &Path, bundle: &Path, id: &str) -> Result<Sample> {
    let pid_file = bundle.join(format!("{id}.pid"));
    let start = Instant::now();
    let mut peak = 0;
    let mut steps = [Duration::ZERO; 4];
    let mut step = |args: &[&str]| -> Result<Duration> {
        let t = Instant::now();
        let (status, rss) = sys::run_with_rusage(runtime, root, args)?;
        peak = peak.max(rss);
        if status != 0 {
            bail!("{} {args:?} exited {status}", runtime.display());
        }
        Ok(t.elapsed())
    };
    steps[0] = step(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        id,
    ])?;
    let pid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    steps[1] = step(&["start", id])?;
    let t = Instant::now();
    sys::wait_pid(pid)?;
    steps[2] = t.elapsed();
    steps[3] = step(&["delete", id])?;
    let wall = start.elapsed();
    let _ = std::fs::remove_file(pid_file);
    Ok(Sample {
        wall,
        steps,
        peak_rss_kb: peak,
    })
}

/// The floor: the same namespaces and a chroot, with nothing else.
fn floor(rootfs: &Path) -> Result<Sample> {
    let start = Instant::now();
    let (status, rss) = sys::run_with_rusage(
        Path::new("unshare"),
        Path::new(""),
        &[
            "--pid",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--fork",
            "chroot",
            rootfs.to_str().unwrap(),
            "/bin/true",
        ],
    )?;
    if status != 0 {
        bail!("unshare exited {status}");
    }
    Ok(Sample {
        wall: start.elapsed(),
        steps: [Duration::ZERO; 4],
        peak_rss_kb: rss,
    })
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn runtime_bench(runs: usize, berth: &Path, peers: &[String]) -> Result<()> {
    if !rustix_is_root() {
        bail!("the runtime benchmark needs root (it creates namespaces and cgroups)");
    }
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (build with cargo build --release)", berth.display()))?;
    sys::become_subreaper()?;
    // crun refuses hybrid hosts whose cgroup2 mount has no controllers unless it sees an
    // empty cgroup.controllers; give every runtime the same private view.
    sys::private_mount_ns_with_empty_controllers()?;
    let work = tempfile::Builder::new().prefix("berth-bench").tempdir()?;
    let bundle = work.path().join("bundle");
    std::fs::create_dir(&bundle)?;
    make_bundle(&bundle, &berth)?;

    let mut names = vec!["berth".to_string()];
    let mut bins = vec![berth.clone()];
    for p in peers {
        match which(p) {
            Some(b) => {
                names.push(p.clone());
                bins.push(b);
            }
            None => eprintln!("{p} is not installed: skipped"),
        }
    }
    let n = names.len();
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); n + 1];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); n + 1];
    let mut steps: Vec<[Vec<f64>; 4]> = (0..=n).map(|_| Default::default()).collect();
    // Warm-up round (page cache, first cgroup creation), not counted.
    for (i, b) in bins.iter().enumerate() {
        let root = work.path().join(format!("root-{i}"));
        lifecycle(b, &root, &bundle, &format!("warm-{i}"))?;
    }
    for round in 0..runs {
        for k in 0..=n {
            let i = (round + k) % (n + 1);
            let s = if i == n {
                floor(&bundle.join("rootfs"))?
            } else {
                let root = work.path().join(format!("root-{i}"));
                lifecycle(&bins[i], &root, &bundle, &format!("b{round}-{i}"))?
            };
            wall[i].push(s.wall.as_secs_f64() * 1000.0);
            for (k, d) in s.steps.iter().enumerate() {
                steps[i][k].push(d.as_secs_f64() * 1000.0);
            }
            rss[i].push(s.peak_rss_kb as f64 / 1024.0);
        }
    }
    names.push("unshare (floor)".into());
    println!("container lifecycle of /bin/true (create, start, wait, delete), {runs} interleaved runs each");
    println!(
        "{:<18} {:>10} {:>8} {:>8} {:>14}   {:>8} {:>8} {:>8} {:>8}",
        "runtime", "median ms", "p10", "p90", "peak RSS MiB", "create", "start", "wait", "delete"
    );
    for i in 0..=n {
        let st: Vec<String> = steps[i]
            .iter()
            .map(|v| format!("{:>8.2}", stats::median(v)))
            .collect();
        println!(
            "{:<18} {:>10.2} {:>8.2} {:>8.2} {:>14.2}   {}",
            names[i],
            stats::median(&wall[i]),
            stats::percentile(&wall[i], 10.0),
            stats::percentile(&wall[i], 90.0),
            stats::median(&rss[i]),
            if i == n { String::new() } else { st.join(" ") }
        );
    }
    let b = stats::median(&wall[0]);
    for i in 1..n {
        println!(
            "ratio berth/{}: {:.2} (time), {:.2} (peak RSS)",
            names[i],
            b / stats::median(&wall[i]),
            stats::median(&rss[0]) / stats::median(&rss[i])
        );
    }
    println!("ratio berth/floor: {:.2}", b / stats::median(&wall[n]));
    Ok(())
}

fn rustix_is_root() -> bool {
    sys::euid() == 0
}
