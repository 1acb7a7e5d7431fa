//! `berth-bench procview`: reading /proc/meminfo from inside a container's cgroups
//! through berth's /proc view, through Debian's lxcfs, and from the host's real /proc,
//! interleaved. `berth-bench throughput`: iperf3 between two containers across the
//! bridge, to a container through a published port, and over the host's loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::stats;

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A private berth root with the busybox image, and the containers it ran removed at
/// the end whatever happens.
pub(crate) struct Berth {
    bin: PathBuf,
    root: tempfile::TempDir,
    tools: PathBuf,
    names: Vec<String>,
}

impl Berth {
    pub(crate) fn new(bin: &Path, tools: &Path) -> Result<Berth> {
        let root = tempfile::Builder::new()
            .prefix("berth-bench-net")
            .tempdir()?;
        let b = Berth {
            bin: std::fs::canonicalize(bin)
                .with_context(|| format!("{} (cargo build --release)", bin.display()))?,
            root,
            tools: tools.to_path_buf(),
            names: Vec::new(),
        };
        let tar = crate::engine::busybox_tar(b.root.path())?;
        run(&mut b.cmd(&["import", tar.to_str().unwrap(), "localhost/bench/busybox:1"]))?;
        Ok(b)
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("BERTH_ROOT", self.root.path().join("root"))
            .args(args);
        let (rt, mon) = (
            self.tools.join("berth-runtime"),
            self.tools.join("berth-monitor"),
        );
        if rt.exists() && mon.exists() {
            c.env("BERTH_RUNTIME", rt).env("BERTH_MONITOR", mon);
        }
        c
    }

    pub(crate) fn detached(&mut self, name: &str, args: &[&str]) -> Result<()> {
        let mut a = vec!["run", "-d", "--name", name];
        a.extend_from_slice(args);
        a.extend_from_slice(&["localhost/bench/busybox:1", "sleep", "600"]);
        // Named before it runs: a start that fails leaves a created container to remove.
        self.names.push(name.to_string());
        run(&mut self.cmd(&a))?;
        Ok(())
    }

    fn inspect(&self, name: &str, format: &str) -> Result<String> {
        Ok(run(&mut self.cmd(&["inspect", "-f", format, name]))?
            .trim()
            .to_string())
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.cmd(&["rm", "-f", n]).output();
        }
    }
}

/// The cgroup directories of process `pid` on every hierarchy.
fn cgroup_dirs(pid: &str) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let root = mounts.lines().find_map(|m| {
            let (left, right) = m.split_once(" - ")?;
            let mp = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let (fstype, opts) = (r.next()?, r.nth(1)?);
            let hit = if ctrls.is_empty() {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup"
                    && ctrls.split(',').all(|c| {
                        opts.split(',').any(|o| {
                            o == c || o == format!("name={}", c.trim_start_matches("name="))
                        })
                    })
            };
            hit.then(|| PathBuf::from(mp))
        });
        if let Some(r) = root {
            let d = r.join(path.trim_start_matches('/'));
            if d.join("cgroup.procs").exists() {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// `berth-bench procview`.
pub fn procview_bench(runs: usize, berth: &Path, tools: &Path) -> Result<()> {
    let mut b = Berth::new(berth, tools)?;
    b.detached("pv", &["-m", "256m", "--cpus", "1"])?;
    let pid = b.inspect("pv", "{{.State.Pid}}")?;
    let lx = b.root.path().join("lxcfs");
    std::fs::create_dir_all(&lx)?;
    let mut lxcfs = Command::new("lxcfs")
        .arg("-f")
        .arg("-p")
        .arg(b.root.path().join("lxcfs.pid"))
        .arg(&lx)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start lxcfs (apt-get install lxcfs)")?;
    let end = Instant::now() + Duration::from_secs(5);
    while !lx.join("proc/meminfo").exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let dirs = cgroup_dirs(&pid)?;
    let files = [
        berth_procview_file(),
        lx.join("proc/meminfo"),
        PathBuf::from("/proc/meminfo"),
    ];
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("procview-reader")
        .arg("--runs")
        .arg(runs.to_string())
        .arg("--join")
        .arg(
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .args(&files)
        .output();
    let _ = lxcfs.kill();
    let _ = lxcfs.wait();
    let _ = Command::new("umount").arg("-l").arg(&lx).status();
    let out = out?;
    if !out.status.success() {
        bail!("reader: {}", String::from_utf8_lossy(&out.stderr));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

fn berth_procview_file() -> PathBuf {
    std::env::var_os("BERTH_PROCVIEW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/berth/procview"))
        .join("meminfo")
}

/// The reader: joins the container's cgroups (so both FUSE servers see a container
/// process), then times open+read+close of each file, interleaved.
pub fn procview_reader(runs: usize, join: &str, files: &[PathBuf]) -> Result<()> {
    let me = std::process::id().to_string();
    for d in join.split(',').filter(|d| !d.is_empty()) {
        std::fs::write(Path::new(d).join("cgroup.procs"), &me)
            .with_context(|| format!("join {d}"))?;
    }
    let names = ["berth procview", "lxcfs", "host /proc"];
    let total = |text: &str| -> String {
        text.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    let mut us: Vec<Vec<f64>> = vec![Vec::new(); files.len()];
    let mut totals = vec![String::new(); files.len()];
    for round in 0..runs {
        for k in 0..files.len() {
            let i = (round + k) % files.len();
            let t = Instant::now();
            let text = std::fs::read_to_string(&files[i])
                .with_context(|| format!("read {}", files[i].display()))?;
            us[i].push(t.elapsed().as_secs_f64() * 1e6);
            totals[i] = total(&text);
        }
    }
    println!("read /proc/meminfo from a container (-m 256m), {runs} interleaved reads each");
    println!(
        "{:<18} {:>10} {:>8} {:>8}   MemTotal kB",
        "", "median µs", "p10", "p90"
    );
    for i in 0..files.len() {
        println!(
            "{:<18} {:>10.1} {:>8.1} {:>8.1}   {}",
            names[i],
            stats::median(&us[i]),
            stats::percentile(&us[i], 10.0),
            stats::percentile(&us[i], 90.0),
            totals[i]
        );
    }
    println!(
        "ratio berth/lxcfs: {:.2} (below 1: faster)",
        stats::median(&us[0]) / stats::median(&us[1])
    );
    Ok(())
}

/// Gbit/s received in an iperf3 JSON report.
fn gbits(json: &str) -> Result<f64> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .map(|b| b / 1e9)
        .with_context(|| {
            format!(
                "iperf3: {}",
                v["error"]
                    .as_str()
                    .unwrap_or("no sum_received in its report")
            )
        })
}

/// One iperf3 measurement: a one-shot server on `listen` (in `server_ns` if given) and
/// a client (in `client_ns` if given) to `addr:port`.
pub(crate) fn iperf(
    server_ns: Option<&str>,
    client_ns: Option<&str>,
    listen: u16,
    addr: &str,
    port: u16,
    secs: u32,
) -> Result<f64> {
    let ns = |ns: Option<&str>, args: &[&str]| {
        let mut c = match ns {
            Some(n) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={n}")).arg("iperf3");
                c
            }
            None => Command::new("iperf3"),
        };
        c.args(args);
        c
    };
    let port_s = port.to_string();
    let listen_s = listen.to_string();
    let mut server = ns(server_ns, &["-s", "-1", "-p", &listen_s])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start iperf3 (apt-get install iperf3)")?;
    // The server takes a moment to listen: retry while the client is refused.
    let mut out = Err(anyhow::anyhow!("not run"));
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        let o = ns(
            client_ns,
            &["-c", addr, "-p", &port_s, "-t", &secs.to_string(), "-J"],
        )
        .output()?;
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        out = Ok(text.clone());
        if !text.contains("Connection refused") {
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    gbits(&out?)
}

/// `berth-bench throughput`.
pub fn throughput_bench(secs: u32, berth: &Path, tools: &Path) -> Result<()> {
    let mut b = Berth::new(berth, tools)?;
    let port = {
        let l = std::net::TcpListener::bind("0.0.0.0:0")?;
        l.local_addr()?.port()
    };
    b.detached("srv", &["-p", &format!("{port}:5201")])?;
    b.detached("cli", &[])?;
    let srv_ns = b.inspect("srv", "{{.NetworkSettings.SandboxKey}}")?;
    let cli_ns = b.inspect("cli", "{{.NetworkSettings.SandboxKey}}")?;
    let srv_ip = b.inspect("srv", "{{.NetworkSettings.IPAddress}}")?;
    let lo_port = port.wrapping_add(1).max(1024);
    let bridge = iperf(Some(&srv_ns), Some(&cli_ns), 5201, &srv_ip, 5201, secs)
        .context("across the bridge")?;
    let published = iperf(Some(&srv_ns), None, 5201, "127.0.0.1", port, secs)
        .context("through the published port")?;
    let loopback =
        iperf(None, None, lo_port, "127.0.0.1", lo_port, secs).context("over loopback")?;
    println!("iperf3 TCP, {secs} s each");
    println!("{:<44} {:>8} {:>12}", "", "Gbit/s", "of loopback");
    for (n, v) in [
        ("container to container across berth0", bridge),
        ("host to container through a published port", published),
        ("host loopback", loopback),
    ] {
        println!("{n:<44} {v:>8.2} {:>11.0}%", v / loopback * 100.0);
    }
    Ok(())
}
