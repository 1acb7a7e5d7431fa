//! The API server under load: `berth server` (release build) on SQLite, and on etcd
//! with `etcdctl check perf` beside it. Start to /readyz, idle RSS, GET, CREATE,
//! PATCH, LIST of 1,000 pods, and watch fan-out (1,000 watchers × 1,000 events), from
//! an HTTP/2 client with the admin certificate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::stats::{median, percentile};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTP/2 client with the admin identity of a server's data directory.
pub(crate) fn client(pki: &Path) -> Result<reqwest::Client> {
    let ca = std::fs::read(pki.join("ca.crt"))?;
    let cert = std::fs::read(pki.join("admin.crt"))?;
    let key = std::fs::read(pki.join("admin.key"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(c?)?;
    }
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert[..]).collect::<Result<_, _>>()?;
    let key = rustls_pemfile::private_key(&mut &key[..])?.context("admin key")?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .http2_prior_knowledge()
        .build()?)
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `berth server` as the API server alone (no node agent, no scheduler: the
/// pods created here are records to store, not to place or run); returns it once
/// /readyz answers, with the time that took.
async fn start(berth: &Path, dir: &Path, etcd: Option<&str>) -> Result<(Server, Duration)> {
    start_with(
        berth,
        dir,
        etcd,
        &["--disable-agent", "--disable", "scheduler"],
    )
    .await
}

/// Starts `berth server` with `flags`; returns it once /readyz answers, with the time
/// that took.
pub(crate) async fn start_with(
    berth: &Path,
    dir: &Path,
    etcd: Option<&str>,
    flags: &[&str],
) -> Result<(Server, Duration)> {
    let port = free_port();
    let mut cmd = Command::new(berth);
    cmd.args(["server", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(flags);
    if let Some(e) = etcd {
        cmd.args(["--datastore-endpoint", e]);
    }
    let t0 = Instant::now();
    // Its log, to read when something fails.
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("berth server")?;
    let url = format!("https://127.0.0.1:{port}");
    let s = Server {
        child,
        url,
        dir: dir.to_path_buf(),
    };
    let deadline = t0 + Duration::from_secs(30);
    // The certificates exist once the server listens; poll with a client made then.
    let mut c = None;
    loop {
        if Instant::now() > deadline {
            bail!("berth server did not become ready in 30 s");
        }
        if c.is_none() && dir.join("pki/admin.key").exists() {
            c = client(&dir.join("pki")).ok();
        }
        if let Some(c) = &c {
            if let Ok(r) = c.get(format!("{}/readyz", s.url)).send().await {
                if r.status() == 200 {
                    return Ok((s, t0.elapsed()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn pod(ns: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"],
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    })
}

/// Runs `n` requests with `conc` in flight; returns (requests/s, latencies ms).
pub(crate) async fn drive<F, Fut>(n: usize, conc: usize, f: F) -> Result<(f64, Vec<f64>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                f(i).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((n as f64 / t0.elapsed().as_secs_f64(), all))
}

pub(crate) async fn ok(r: reqwest::RequestBuilder) -> Result<()> {
    let resp = r.send().await?;
    if !resp.status().is_success() {
        bail!(
            "{} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    // Read the body so the stream completes.
    let _ = resp.bytes().await?;
    Ok(())
}

struct Figures {
    create_rate: f64,
    create_p99: f64,
    get_rate: f64,
    get_p99: f64,
    patch_rate: f64,
    patch_p99: f64,
    list_ms: f64,
    fanout_ms: f64,
}

/// One round of watch fan-out in namespace `ns`: 1,000 watchers on 4 connections,
/// 1,000 events; the time from the first write until every watcher has every event.
async fn fanout(s: &Server, c: &reqwest::Client, ns: &str) -> Result<f64> {
    let base = s.url.clone();
    ok(c.post(format!("{base}/api/v1/namespaces")).json(
        &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    ))
    .await?;
    let rv: String = {
        let v: serde_json::Value = c
            .get(format!("{base}/api/v1/namespaces/{ns}/configmaps"))
            .send()
            .await?
            .json()
            .await?;
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string()
    };
    let events = 1000;
    let clients: Vec<reqwest::Client> = (0..4)
        .map(|_| client(&s.dir.join("pki")))
        .collect::<Result<_>>()?;
    let done = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::new();
    let watchers_n: usize = std::env::var("BENCH_WATCHERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for w in 0..watchers_n {
        let c = clients[w % 4].clone();
        let url = format!("{base}/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion={rv}");
        let done = done.clone();
        let received = received.clone();
        watchers.push(tokio::spawn(async move {
            let mut resp = c.get(url).send().await?;
            let mut seen = 0;
            while let Some(chunk) = resp.chunk().await? {
                let n = chunk.iter().filter(|b| **b == b'\n').count();
                seen += n;
                received.fetch_add(n, Ordering::Relaxed);
                if seen >= events {
                    done.fetch_add(1, Ordering::Relaxed);
                    return Ok::<_, anyhow::Error>(Instant::now());
                }
            }
            bail!("a watch ended early after {seen} events")
        }));
    }
    // Every watch is registered before the events start.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let m = c
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let n = m
            .lines()
            .find(|l| l.starts_with("apiserver_registered_watchers "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
            .unwrap_or(0);
        if n >= watchers_n {
            break;
        }
        if Instant::now() > until {
            bail!("only {n} watchers registered");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let (c2, b2) = (c.clone(), format!("{base}/api/v1/namespaces/{ns}"));
    drive(events, 32, move |i| {
        let (c, b) = (c2.clone(), b2.clone());
        async move {
            ok(c.post(format!("{b}/configmaps"))
                .json(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("f{i}")}, "data": {"i": i.to_string()}})))
            .await
        }
    })
    .await?;
    let mut last = t0;
    for w in watchers {
        let t = match tokio::time::timeout(Duration::from_secs(60), w).await {
            Ok(r) => r??,
            Err(_) => bail!(
                "only {} of {watchers_n} watchers saw all {events} events within 60 s ({} events received in all)",
                done.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed)
            ),
        };
        last = last.max(t);
    }
    Ok((last - t0).as_secs_f64() * 1000.0)
}

async fn load(s: &Server, scale: usize) -> Result<Figures> {
    let c = client(&s.dir.join("pki"))?;
    let base = s.url.clone();
    let mk = |ns: &str| serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    for ns in ["bench", "list"] {
        ok(c.post(format!("{base}/api/v1/namespaces")).json(&mk(ns))).await?;
    }
    // CREATE
    let n_create = 2000 * scale;
    let (c2, b2) = (c.clone(), base.clone());
    let (create_rate, lat) = drive(n_create, 32, move |i| {
        let (c, b) = (c2.clone(), b2.clone());
        async move {
            ok(c.post(format!("{b}/api/v1/namespaces/bench/pods"))
                .json(&pod("bench", &format!("p{i}"))))
            .await
        }
    })
    .await?;
    let create_p99 = percentile(&lat, 99.0);
    // GET one object
    let (c2, b2) = (c.clone(), base.clone());
    let (get_rate, lat) = drive(10000 * scale, 64, move |i| {
        let (c, b) = (c2.clone(), b2.clone());
        async move { ok(c.get(format!("{b}/api/v1/namespaces/bench/pods/p{}", i % 100))).await }
    })
    .await?;
    let get_p99 = percentile(&lat, 99.0);
    // PATCH (merge patch of a label)
    let (c2, b2) = (c.clone(), base.clone());
    let (patch_rate, lat) = drive(1000 * scale, 32, move |i| {
        let (c, b) = (c2.clone(), b2.clone());
        async move {
            ok(c.patch(format!("{b}/api/v1/namespaces/bench/pods/p{i}"))
                .header("content-type", "application/merge-patch+json")
                .body(format!(r#"{{"metadata":{{"labels":{{"round":"{i}"}}}}}}"#)))
            .await
        }
    })
    .await?;
    let patch_p99 = percentile(&lat, 99.0);
    // LIST 1,000 pods
    let (c2, b2) = (c.clone(), base.clone());
    drive(1000, 32, move |i| {
        let (c, b) = (c2.clone(), b2.clone());
        async move {
            ok(c.post(format!("{b}/api/v1/namespaces/list/pods"))
                .json(&pod("list", &format!("l{i}"))))
            .await
        }
    })
    .await?;
    let mut list = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let body = c
            .get(format!("{base}/api/v1/namespaces/list/pods"))
            .send()
            .await?
            .bytes()
            .await?;
        list.push(t.elapsed().as_secs_f64() * 1000.0);
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        if v["items"].as_array().map(Vec::len) != Some(1000) {
            bail!("the list did not hold 1,000 pods");
        }
    }
    let mut fan = Vec::new();
    for round in 0..3 {
        fan.push(fanout(s, &c, &format!("fan{round}")).await?);
    }
    Ok(Figures {
        create_rate,
        create_p99,
        get_rate,
        get_p99,
        patch_rate,
        patch_p99,
        list_ms: median(&list),
        fanout_ms: median(&fan),
    })
}

fn print(label: &str, f: &Figures) {
    println!("{label}:");
    println!(
        "  CREATE pods        {:>9.0}/s   p99 {:>6.1} ms   (target ≥1,000/s, p99 <50 ms)",
        f.create_rate, f.create_p99
    );
    println!(
        "  GET one object     {:>9.0}/s   p99 {:>6.1} ms   (target ≥5,000/s)",
        f.get_rate, f.get_p99
    );
    println!(
        "  PATCH (merge)      {:>9.0}/s   p99 {:>6.1} ms",
        f.patch_rate, f.patch_p99
    );
    println!("  LIST 1,000 pods    {:>9.1} ms median", f.list_ms);
    println!(
        "  watch fan-out      {:>9.1} ms for 1,000 events to 1,000 watchers, median of 3 (target <1,000 ms)",
        f.fanout_ms
    );
}

/// An etcd member for the etcd half of the benchmark.
pub(crate) struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    pub(crate) url: String,
}

impl Etcd {
    /// The member's data directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// The member's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a one-member etcd whose data directory is made inside `parent`: on the
/// same file system as the berth store it is compared with, so neither side's
/// figures come from a faster disk (or tmpfs).
pub(crate) fn etcd(parent: &Path) -> Result<Etcd> {
    let d = tempfile::Builder::new()
        .prefix("etcd")
        .tempdir_in(parent)
        .with_context(|| format!("a directory for etcd's data in {}", parent.display()))?;
    let (cp, pp) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{cp}");
    let peer = format!("http://127.0.0.1:{pp}");
    let child = Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(d.path().join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("bench={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("etcd (apt-get install etcd-server)")?;
    let e = Etcd {
        child,
        _dir: d,
        url: url.clone(),
    };
    let end = Instant::now() + Duration::from_secs(20);
    while Command::new("etcdctl")
        .args(["--endpoints", &url, "endpoint", "health"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        if Instant::now() > end {
            bail!("etcd did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(e)
}

/// Creates `n` pod-sized keys in etcd with 32 in flight; returns creates/s.
async fn raw_etcd_creates(url: &str, n: usize) -> Result<f64> {
    use berth_store::Store;
    let store = Arc::new(berth_store::etcd::EtcdStore::connect(&[url.to_string()]).await?);
    let body = Arc::new(serde_json::to_vec(&pod("raw", "p"))?);
    let (rate, _) = drive(n, 32, move |i| {
        let (store, body) = (store.clone(), body.clone());
        async move {
            store.create(&format!("/raw/pods/p{i}"), &body).await?;
            Ok(())
        }
    })
    .await?;
    Ok(rate)
}

/// The benchmark.
pub fn run(
    berth: &Path,
    runs: usize,
    scale: usize,
    with_etcd: bool,
    etcd_perf: bool,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Start to /readyz: a fresh data directory (certificates made) and a restart.
        let mut fresh = Vec::new();
        let mut again = Vec::new();
        let mut idle = Vec::new();
        for _ in 0..runs {
            let d = tempfile::tempdir()?;
            let (s, t) = start(berth, d.path(), None).await?;
            fresh.push(t.as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_secs(1)).await;
            idle.push(rss_mib(s.child.id()));
            drop(s);
            let (s, t) = start(berth, d.path(), None).await?;
            again.push(t.as_secs_f64() * 1000.0);
            drop(s);
        }
        println!("berth server, {runs} runs (medians):");
        println!("  start → /readyz   {:>7.1} ms first start (CA and certificates made), {:>6.1} ms restart   (target <200 ms)", median(&fresh), median(&again));
        println!("  idle RSS          {:>7.1} MiB   (target <30 MiB)", median(&idle));
        let d = tempfile::tempdir()?;
        let (s, _) = start(berth, d.path(), None).await?;
        let f = load(&s, scale).await?;
        println!("  RSS after the load {:>6.1} MiB", rss_mib(s.child.id()));
        drop(s);
        print("SQLite (embedded)", &f);
        if with_etcd {
            let d = tempfile::tempdir()?;
            let e = etcd(d.path())?;
            let (s, _) = start(berth, d.path(), Some(&e.url)).await?;
            let fe = load(&s, scale).await?;
            drop(s);
            print("etcd 3.4 (one member, loopback)", &fe);
            // The same creates straight into etcd (one transaction each, 32 in flight):
            // what the API server adds on top.
            let raw = raw_etcd_creates(&e.url, 2000 * scale).await?;
            println!(
                "  etcd alone: {raw:.0} creates/s of the same pods as etcd transactions → the API server runs at {:.2}× etcd's rate",
                fe.create_rate / raw
            );
            if etcd_perf {
                let o = Command::new("etcdctl").args(["--endpoints", &e.url, "check", "perf", "--load=s"]).output()?;
                let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                println!("  etcdctl check perf --load=s:");
                // The progress bar shares lines with the verdicts (carriage returns).
                let verdicts: Vec<&str> = text
                    .split(['\n', '\r'])
                    .filter_map(|l| l.find("PASS").or_else(|| l.find("FAIL")).map(|i| &l[i..]))
                    .collect();
                for v in &verdicts {
                    println!("    {v}");
                }
                let writes = verdicts.iter().find_map(|l| {
                    let rest = &l[l.find("Throughput is ")? + "Throughput is ".len()..];
                    rest.split_whitespace().next()?.parse::<f64>().ok()
                });
                match writes {
                    Some(w) if w > 0.0 => println!(
                        "  API creates/s ÷ etcdctl writes/s: {:.2} (etcdctl's small load is 50 clients at a fixed 300 writes/s target)",
                        fe.create_rate / w
                    ),
                    _ => println!("  (no throughput line in etcdctl's output)"),
                }
            }
        }
        Ok(())
    })
}
