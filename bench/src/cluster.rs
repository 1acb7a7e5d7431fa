//! `berth-bench net`: the pod network of a real two-node `berth cluster` on this
//! machine, each figure beside its baseline, interleaved round by round:
//!
//! - TCP throughput (iperf3) from a pod on the server node to a pod on the agent node,
//!   across the VXLAN overlay, beside the same server pod's throughput from a pod on
//!   its own node's bridge (no VXLAN). Target: a ratio of at least 0.9.
//! - TCP connection latency (connect() to established) from the server node's pod to
//!   the agent node's pod through its Service's ClusterIP, beside the pod IP directly.
//!   Target: under 10% more.
//! - HTTP requests per second through the node's Ingress proxy to the pod, beside the
//!   same load straight to the pod (8 kept-alive connections; the server is this
//!   program's small keep-alive HTTP server in the pod's namespace, as busybox httpd
//!   closes every connection). Target: at least 0.8 of it. When nginx is installed,
//!   the same load through nginx as a reverse proxy on the same node, the peer.
//!
//! iperf3 and the load generators are this machine's binaries run inside the pods'
//! network namespaces (nsenter), so the images need nothing but busybox.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::net::Berth;
use crate::stats::median;

/// A `berth cluster` of the benchmark's own, deleted when dropped.
struct Cluster<'a> {
    berth: &'a Berth,
    name: String,
    kubeconfig: PathBuf,
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        let _ = self.berth.cmd(&["cluster", "delete", &self.name]).output();
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl Cluster<'_> {
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        output(
            Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args),
        )
    }

    fn apply(&self, json: &str) -> Result<()> {
        let mut c = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("run kubectl (scripts/deps.sh installs it)")?;
        c.stdin.take().expect("piped").write_all(json.as_bytes())?;
        let o = c.wait_with_output()?;
        if !o.status.success() {
            bail!("kubectl apply: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(())
    }

    /// Waits for a pod to run; its IP.
    fn pod_ip(&self, name: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let p: Value =
                serde_json::from_str(&self.kubectl(&["get", "pod", name, "-o", "json"])?)?;
            if p["status"]["phase"] == "Running" {
                if let Some(ip) = p["status"]["podIP"].as_str() {
                    return Ok(ip.to_string());
                }
            }
            if Instant::now() > deadline {
                bail!("pod {name} did not run within 120 s: {}", p["status"]);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The network namespace file of the pod with address `ip`, found among the
    /// nodes' pinned namespaces.
    fn netns_of(&self, ip: &str) -> Result<String> {
        let base = PathBuf::from("/run/berth/clusters").join(&self.name);
        let mut stack = vec![base.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(p);
                } else if p.parent().is_some_and(|d| d.ends_with("netns")) {
                    let o = Command::new("nsenter")
                        .arg(format!("--net={}", p.display()))
                        .args(["ip", "-4", "-o", "addr", "show"])
                        .output();
                    if let Ok(o) = o {
                        if String::from_utf8_lossy(&o.stdout).contains(&format!(" {ip}/")) {
                            return Ok(p.display().to_string());
                        }
                    }
                }
            }
        }
        bail!("no network namespace under {} holds {ip}", base.display())
    }
}

fn pod(name: &str, node: &str, script: &str) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "localhost/bench/busybox:1",
                "imagePullPolicy": "Never", "command": ["sh", "-c", script]}]}})
    .to_string()
}

/// This program, run in network namespace `ns` with `args`; its standard output.
fn self_in(ns: &str, args: &[&str]) -> Result<String> {
    let me = std::env::current_exe()?;
    output(
        Command::new("nsenter")
            .arg(format!("--net={ns}"))
            .arg(me)
            .args(args),
    )
}

/// `berth-bench net`.
pub fn net_bench(runs: usize, secs: u32, berth: &Path, tools: &Path) -> Result<()> {
    for tool in ["kubectl", "iperf3"] {
        if Command::new(tool).arg("--help").output().is_err() {
            bail!("{tool} is not installed (scripts/deps.sh installs it)");
        }
    }
    let b = Berth::new(berth, tools)?;
    let name = format!("bn{}", std::process::id());
    let o = b
        .cmd(&[
            "cluster",
            "create",
            &name,
            "--agents",
            "1",
            "--server-arg=--eviction-hard=memory.available<100Mi,nodefs.available<1%",
            "--agent-arg=--eviction-hard=memory.available<100Mi,nodefs.available<1%",
        ])
        .output()?;
    let kubeconfig = output(&mut b.cmd(&["cluster", "kubeconfig", &name]))
        .map(|s| PathBuf::from(s.trim()))
        .unwrap_or_default();
    let c = Cluster {
        berth: &b,
        name: name.clone(),
        kubeconfig,
    };
    if !o.status.success() {
        bail!(
            "berth cluster create: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    output(&mut b.cmd(&["cluster", "load", &name, "localhost/bench/busybox:1"]))?;
    let (server, agent) = (format!("{name}-server"), format!("{name}-agent-1"));
    c.apply(&pod("srv", &agent, "exec sleep 3600"))?;
    c.apply(&pod("near", &agent, "exec sleep 3600"))?;
    c.apply(&pod("cli", &server, "exec sleep 3600"))?;
    c.apply(
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"srv"},
"spec":{"selector":{"app":"srv"},"ports":[{"name":"app","port":81,"targetPort":8081}]}}"#,
    )?;
    c.apply(
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"srv"},
"spec":{"rules":[{"host":"bench.example","http":{"paths":[{"path":"/","pathType":"Prefix",
"backend":{"service":{"name":"srv","port":{"number":81}}}}]}}]}}"#,
    )?;
    let srv_ip = c.pod_ip("srv")?;
    let near_ip = c.pod_ip("near")?;
    let cli_ip = c.pod_ip("cli")?;
    let cluster_ip = c.kubectl(&["get", "svc", "srv", "-o", "jsonpath={.spec.clusterIP}"])?;
    let server_ip = c.kubectl(&[
        "get",
        "node",
        &server,
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ])?;
    let (srv_ns, near_ns, cli_ns) = (
        c.netns_of(&srv_ip)?,
        c.netns_of(&near_ip)?,
        c.netns_of(&cli_ip)?,
    );
    // The HTTP backend: this program's keep-alive server, in the srv pod's namespace.
    let mut app = Command::new("nsenter")
        .arg(format!("--net={srv_ns}"))
        .arg(std::env::current_exe()?)
        .args(["http-serve", "--port", "8081"])
        .stdout(Stdio::null())
        .spawn()
        .context("start the HTTP backend")?;
    let peer = match Command::new("nginx").arg("-v").output() {
        Ok(_) => match c
            .netns_of(&server_ip)
            .and_then(|ns| Nginx::start(&ns, &server_ip, &srv_ip))
        {
            Ok(n) => Some(n),
            Err(e) => {
                eprintln!("nginx did not start, the peer proxy's row is left out: {e:#}");
                None
            }
        },
        Err(_) => {
            eprintln!("nginx is not installed: the peer proxy's row is left out (apt-get install nginx-light; on a systemd host it also starts nginx on port 80: systemctl disable --now nginx)");
            None
        }
    };
    let result = measure(
        runs,
        secs,
        [&srv_ns, &near_ns, &cli_ns],
        [&srv_ip, &cluster_ip, &server_ip],
        peer.as_ref().map(|p| p.addr.as_str()),
    );
    drop(peer);
    let _ = app.kill();
    let _ = app.wait();
    result
}

/// nginx as a reverse proxy in a node's network namespace, the peer beside the
/// Ingress proxy: as many workers as CPUs, kept-alive upstream connections, no access
/// log — the configuration a tuned nginx ingress runs with.
struct Nginx {
    /// Where it listens (IP:PORT).
    addr: String,
    master: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(node_ns: &str, node_ip: &str, upstream_ip: &str) -> Result<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("berth-bench-nginx")
            .tempdir()?;
        // nginx's workers run as an unprivileged user and keep temporary files here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let d = dir.path().display();
        let addr = format!("{node_ip}:8088");
        let conf = format!(
            "worker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\ndaemon off;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             upstream srv {{ server {upstream_ip}:8081; keepalive 32; }}\n\
             server {{ listen {addr}; location / {{ proxy_pass http://srv; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf)?;
        let master = Command::new("nsenter")
            .arg(format!("--net={node_ns}"))
            .args(["nginx", "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .context("start nginx")?;
        let mut n = Nginx {
            addr,
            master,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while output(
            Command::new("nsenter")
                .arg(format!("--net={node_ns}"))
                .args(["ss", "-Hltn", "sport", "=", ":8088"]),
        )?
        .trim()
        .is_empty()
        {
            if let Ok(Some(status)) = n.master.try_wait() {
                bail!("nginx exited ({status}) before listening on {}", n.addr);
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {} within 10 s", n.addr);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: the master stops its workers, then itself (SIGKILL would leave the
        // workers listening).
        let pid = rustix::process::Pid::from_raw(self.master.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
        }
        let _ = self.master.wait();
    }
}

/// The rounds, and the table.
fn measure(
    runs: usize,
    secs: u32,
    [srv_ns, near_ns, cli_ns]: [&str; 3],
    [srv_ip, cluster_ip, server_ip]: [&str; 3],
    peer: Option<&str>,
) -> Result<()> {
    // Ready once the ingress routes.
    let ingress_addr = format!("{server_ip}:80");
    let deadline = Instant::now() + Duration::from_secs(60);
    while self_in(
        cli_ns,
        &[
            "http-load",
            "--addr",
            &ingress_addr,
            "--host",
            "bench.example",
            "--secs",
            "0.2",
            "--conns",
            "1",
        ],
    )
    .map(|o| o.trim().parse::<f64>().unwrap_or(0.0) <= 0.0)
    .unwrap_or(true)
    {
        if Instant::now() > deadline {
            bail!("the Ingress did not route within 60 s");
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let (mut overlay, mut bridge) = (Vec::new(), Vec::new());
    let (mut via_pod, mut via_vip) = (Vec::new(), Vec::new());
    let (mut rps_direct, mut rps_ingress, mut rps_peer) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..runs {
        eprintln!("round {}/{runs}", round + 1);
        // Rotating order: neither side always goes first.
        let first = round % 2 == 0;
        for pick in [first, !first] {
            if pick {
                overlay.push(crate::net::iperf(
                    Some(srv_ns),
                    Some(cli_ns),
                    5201,
                    srv_ip,
                    5201,
                    secs,
                )?);
            } else {
                bridge.push(crate::net::iperf(
                    Some(srv_ns),
                    Some(near_ns),
                    5201,
                    srv_ip,
                    5201,
                    secs,
                )?);
            }
        }
        for pick in [first, !first] {
            let addr = if pick {
                format!("{srv_ip}:8081")
            } else {
                format!("{cluster_ip}:81")
            };
            let out = self_in(
                cli_ns,
                &["connect-latency", "--addr", &addr, "--count", "500"],
            )?;
            let us: f64 = out.trim().parse().context("connect-latency's answer")?;
            if pick {
                via_pod.push(us)
            } else {
                via_vip.push(us)
            }
        }
        // Straight to the pod, through the Ingress, through the peer proxy: the
        // order turns each round.
        let mut targets = vec![
            (format!("{srv_ip}:8081"), "x", &mut rps_direct),
            (ingress_addr.clone(), "bench.example", &mut rps_ingress),
        ];
        if let Some(p) = peer {
            targets.push((p.to_string(), "bench.example", &mut rps_peer));
        }
        let n = targets.len();
        targets.rotate_left(round % n);
        for (addr, host, into) in targets {
            let s = format!("{secs}");
            let out = self_in(
                cli_ns,
                &[
                    "http-load",
                    "--addr",
                    &addr,
                    "--host",
                    host,
                    "--secs",
                    &s,
                    "--conns",
                    "8",
                ],
            )?;
            into.push(out.trim().parse::<f64>().context("http-load's answer")?);
        }
    }
    println!("two-node berth cluster, {runs} rounds, medians (HTTP: 8 kept-alive connections to a keep-alive server)");
    println!(
        "{:<58} {:>12} {:>12} {:>8}",
        "", "berth path", "baseline", "ratio"
    );
    let row = |what: &str, a: f64, b: f64, unit: &str, target: &str| {
        println!(
            "{what:<58} {a:>9.2} {unit:<2} {b:>9.2} {unit:<2} {:>8.3}  ({target})",
            a / b
        );
    };
    row(
        "TCP pod to pod: over VXLAN / on one bridge (Gbit/s)",
        median(&overlay),
        median(&bridge),
        "G",
        "target >= 0.9",
    );
    row(
        "TCP connect: ClusterIP / pod IP (us)",
        median(&via_vip),
        median(&via_pod),
        "us",
        "target <= 1.10",
    );
    row(
        "HTTP: through the Ingress / straight to the pod (req/s)",
        median(&rps_ingress),
        median(&rps_direct),
        "/s",
        "target >= 0.8",
    );
    if !rps_peer.is_empty() {
        row(
            "HTTP: through nginx (peer) / straight to the pod (req/s)",
            median(&rps_peer),
            median(&rps_direct),
            "/s",
            "the peer's ratio",
        );
        row(
            "HTTP: through the Ingress / through nginx (req/s)",
            median(&rps_ingress),
            median(&rps_peer),
            "/s",
            "berth beside the peer",
        );
    }
    Ok(())
}

/// `connect-latency` (in a pod's namespace): the median microseconds from connect()
/// to established, over `count` connections.
pub fn connect_latency(addr: &str, count: usize) -> Result<()> {
    let addr: SocketAddr = addr.parse().context("--addr IP:PORT")?;
    let mut us = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .with_context(|| format!("connect to {addr}"))?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
        drop(s);
    }
    println!("{:.1}", median(&us));
    Ok(())
}

/// One HTTP/1.1 GET on a kept-alive connection (made again when the server closes
/// it); whether a 200 came back.
fn get(conn: &mut Option<BufReader<TcpStream>>, addr: SocketAddr, host: &str) -> bool {
    if conn.is_none() {
        let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
            return false;
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        *conn = Some(BufReader::new(s));
    }
    let r = conn.as_mut().expect("made above");
    if write!(r.get_mut(), "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").is_err() {
        *conn = None;
        return false;
    }
    let mut status = String::new();
    if r.read_line(&mut status).unwrap_or(0) == 0 {
        *conn = None;
        return false;
    }
    let (mut len, mut close) = (None, false);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            *conn = None;
            return false;
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse::<usize>().ok();
        } else if l == "connection: close" {
            close = true;
        }
    }
    match len {
        Some(n) => {
            let mut body = vec![0; n];
            if r.read_exact(&mut body).is_err() {
                close = true;
            }
        }
        None => {
            // No length: the body ends with the connection.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
            close = true;
        }
    }
    if close {
        *conn = None;
    }
    status.split_whitespace().nth(1) == Some("200")
}

/// `http-serve` (in a pod's namespace): a small HTTP/1.1 server that keeps
/// connections alive (as application servers do; busybox httpd closes each), one
/// thread per connection, answering every request with "ok".
pub fn http_serve(port: u16) -> Result<()> {
    let l = std::net::TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("listen on {port}"))?;
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut r = BufReader::new(match s.try_clone() {
                Ok(c) => c,
                Err(_) => return,
            });
            let mut w = s;
            loop {
                let mut len = 0usize;
                let mut first = true;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end().to_ascii_lowercase();
                    if l.is_empty() && !first {
                        break;
                    }
                    first = false;
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err()
                    || w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                        .is_err()
                {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// `http-load` (in a pod's namespace): requests per second that got a 200, from
/// `conns` threads each with its kept-alive connection, for `secs`.
pub fn http_load(addr: &str, host: &str, secs: f64, conns: usize) -> Result<()> {
    let addr: SocketAddr = addr.parse().context("--addr IP:PORT")?;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let host = host.to_string();
            std::thread::spawn(move || {
                let mut conn = None;
                let mut ok = 0u64;
                while Instant::now() < end {
                    if get(&mut conn, addr, &host) {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    println!("{:.1}", total as f64 / started.elapsed().as_secs_f64());
    Ok(())
}
