//! `berth-bench pods`: pods through the whole stack as kubectl users meet them — a Pod
//! POSTed to an all-in-one `berth server`, Running seen by a watch — beside `podman
//! kube play` of the same YAML, interleaved; then density (many pods created at once,
//! until all run), the server's start to node Ready, and its memory idle and with the
//! pods running.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::stats;

const NODE: &str = "bench-node";
const IMAGE: &str = "localhost/bench/busybox:1";

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}]
        }
    })
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits on a watch of pods for `names` to be Running; returns when each was seen so.
async fn until_running(
    c: &reqwest::Client,
    url: &str,
    rv: &str,
    names: &[String],
) -> Result<Vec<(String, Instant)>> {
    let mut resp = c
        .get(format!(
            "{url}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"
        ))
        .send()
        .await?;
    let mut buf = Vec::new();
    let mut seen: Vec<(String, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < names.len() {
        if Instant::now() > deadline {
            bail!(
                "pods not Running within 120 s ({} of {})",
                seen.len(),
                names.len()
            );
        }
        let Some(chunk) = resp.chunk().await? else {
            bail!("the watch ended");
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let ev: Value = serde_json::from_slice(&line).unwrap_or_default();
            let o = &ev["object"];
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            if o["status"]["phase"] == "Running"
                && names.contains(&name)
                && !seen.iter().any(|(n, _)| *n == name)
            {
                seen.push((name, Instant::now()));
            }
        }
    }
    Ok(seen)
}

async fn create(c: &reqwest::Client, url: &str, name: &str) -> Result<String> {
    let r = c
        .post(format!("{url}/api/v1/namespaces/default/pods"))
        .json(&pod(name))
        .send()
        .await?;
    let st = r.status();
    let v: Value = r.json().await?;
    if !st.is_success() {
        bail!("create pod {name}: {st} {v}");
    }
    Ok(v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string())
}

async fn current_rv(c: &reqwest::Client, url: &str) -> Result<String> {
    let v: Value = c
        .get(format!("{url}/api/v1/namespaces/default/pods?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    Ok(v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string())
}

/// Deletes the pods and waits until the engine holds no sandbox of them.
async fn delete_all(
    c: &reqwest::Client,
    url: &str,
    core: &berth_engine::Core,
    pods_dir: &Path,
) -> Result<()> {
    use berth_engine::cri::{RuntimeService, SandboxFilter};
    c.delete(format!(
        "{url}/api/v1/namespaces/default/pods?gracePeriodSeconds=0"
    ))
    .send()
    .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    // The agent removes a pod's sandbox, then its volumes (tmpfs mounts): both gone
    // before the server is stopped, or its mounts outlive the benchmark.
    let files_left = || std::fs::read_dir(pods_dir).is_ok_and(|mut d| d.next().is_some());
    while !core.list_pod_sandbox(&SandboxFilter::default())?.is_empty() || files_left() {
        if Instant::now() > deadline {
            bail!("the agent did not remove the deleted pods within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs the comparison.
pub fn pods_bench(runs: usize, berth: &Path, density: usize, tools: &Path) -> Result<()> {
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (cargo build --release)", berth.display()))?;
    let work = tempfile::Builder::new()
        .prefix("berth-bench-pods")
        .tempdir_in("/var/tmp")?;
    let w = work.path();
    let tar = crate::engine::busybox_tar(w)?;
    let broot = w.join("berth");
    let runtime = std::fs::canonicalize(tools.join("berth-runtime")).unwrap_or_default();
    let monitor = std::fs::canonicalize(tools.join("berth-monitor")).unwrap_or_default();
    let use_static = runtime.exists() && monitor.exists();
    let berth_cmd = |args: &[&str]| {
        let mut c = Command::new(&berth);
        c.env("BERTH_ROOT", &broot).args(args);
        if use_static {
            c.env("BERTH_RUNTIME", &runtime)
                .env("BERTH_MONITOR", &monitor);
        }
        c
    };
    crate::engine::run(&mut berth_cmd(&["import", tar.to_str().unwrap(), IMAGE]))?;
    // podman: its own storage, the same image as its pod infra image (running the
    // image's /pause), runc and the host's open-file limit (see the engine benchmark).
    let proot = w.join("podman");
    let conf = w.join("containers.conf");
    let nofile = crate::engine::hard("Max open files");
    std::fs::write(
        &conf,
        format!(
            "[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\ninfra_image = \"{IMAGE}\"\ninfra_command = \"/pause\"\n"
        ),
    )?;
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(proot.join("root"))
            .arg("--runroot")
            .arg(proot.join("run"))
            .arg("--tmpdir")
            .arg(proot.join("tmp"))
            .args(args);
        c
    };
    let have_podman = Command::new("podman").arg("--version").output().is_ok();
    if have_podman {
        // kube play's infra container runs the image's command: /pause.
        crate::engine::run(&mut podman(&[
            "import",
            "--change",
            "CMD [\"/pause\"]",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            tar.to_str().unwrap(),
            IMAGE,
        ]))?;
    }
    let yaml = w.join("pod.yaml");

    // The server: start to node Ready.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let t0 = Instant::now();
    let server = Server(
        berth_cmd(&[
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node-name",
            NODE,
            "--node-ip",
            "127.0.0.1",
            "--pod-cidr",
            "10.47.0.0/24",
            "--kubelet-port",
            "0",
            // The host's network is shared with whatever else runs here: no Service
            // table or DNS address of the node's on it.
            "--disable-kube-proxy",
            "--disable-network-policy",
            "--disable-ingress",
            // A speed benchmark: a nearly full disk must not evict its pods.
            "--eviction-hard",
            "memory.available<100Mi,nodefs.available<1%",
        ])
        .env("BERTH_NET_ROOT", w.join("net"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("berth server")?,
    );
    let pid = server.0.id();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pki = broot.join("server/pki");
    let (client, ready) = rt.block_on(async {
        let mut c = None;
        loop {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("the node was not Ready within 60 s");
            }
            if c.is_none() && pki.join("admin.key").exists() {
                c = crate::apiserver::client(&pki).ok();
            }
            if let Some(c) = &c {
                if let Ok(r) = c.get(format!("{url}/api/v1/nodes/{NODE}")).send().await {
                    if let Ok(v) = r.json::<Value>().await {
                        let ready = v["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        });
                        if ready {
                            return Ok((c.clone(), t0.elapsed()));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = crate::apiserver::rss_mib(pid);
    // SAFETY of set_var: no other thread of this process reads the environment now.
    std::env::set_var("BERTH_NET_ROOT", w.join("net"));
    if use_static {
        std::env::set_var("BERTH_RUNTIME", &runtime);
        std::env::set_var("BERTH_MONITOR", &monitor);
    }
    let core = berth_engine::Core::open(&broot)?;

    // Startup latency, one pod after another, interleaved with podman kube play.
    let berth_once = |i: usize| -> Result<f64> {
        rt.block_on(async {
            let name = format!("lat{i}");
            let rv = current_rv(&client, &url).await?;
            let t = Instant::now();
            let watch = until_running(&client, &url, &rv, std::slice::from_ref(&name));
            let (r, created) = tokio::join!(watch, create(&client, &url, &name));
            created?;
            let seen = r?;
            let ms = seen[0].1.duration_since(t).as_secs_f64() * 1000.0;
            delete_all(&client, &url, &core, &broot.join("agent/pods")).await?;
            Ok(ms)
        })
    };
    let podman_once = |i: usize| -> Result<f64> {
        let mut p = pod(&format!("lat{i}"));
        p["spec"]["containers"][0]["imagePullPolicy"] = json!("Never");
        std::fs::write(&yaml, serde_json::to_vec(&p)?)?;
        let t = Instant::now();
        crate::engine::run(&mut podman(&["kube", "play", yaml.to_str().unwrap()]))?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let _ = podman(&["kube", "down", yaml.to_str().unwrap()]).output();
        Ok(ms)
    };
    // Warm-up (the pod bridge, podman's network), not counted.
    berth_once(runs + 1)?;
    if have_podman {
        podman_once(runs + 1)?;
    }
    let (mut b, mut p) = (Vec::new(), Vec::new());
    for i in 0..runs {
        if i % 2 == 0 || !have_podman {
            b.push(berth_once(i)?);
            if have_podman {
                p.push(podman_once(i)?);
            }
        } else {
            p.push(podman_once(i)?);
            b.push(berth_once(i)?);
        }
    }

    // Density: many pods at once.
    let (dens, rss_busy, idle_ticks) = rt.block_on(async {
        let names: Vec<String> = (0..density).map(|i| format!("dense{i}")).collect();
        let rv = current_rv(&client, &url).await?;
        let t = Instant::now();
        let watch = until_running(&client, &url, &rv, &names);
        let creates = async {
            for chunk in names.chunks(10) {
                let fs = chunk.iter().map(|n| create(&client, &url, n));
                for r in futures_util::future::join_all(fs).await {
                    r?;
                }
            }
            Ok::<(), anyhow::Error>(())
        };
        let (seen, created) = tokio::join!(watch, creates);
        created?;
        let seen = seen?;
        let all = seen
            .iter()
            .map(|(_, at)| at.duration_since(t))
            .max()
            .unwrap_or_default();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = crate::apiserver::rss_mib(pid);
        let before = crate::engine::cpu_ticks(pid);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let ticks = crate::engine::cpu_ticks(pid) - before;
        delete_all(&client, &url, &core, &broot.join("agent/pods")).await?;
        Ok::<_, anyhow::Error>((all, rss, ticks))
    })?;
    drop(server);
    let _ = berth_net::network::Networks::host().remove(&core.pod_network().name);

    println!(
        "\npods through berth server (API server + agent in one process), {runs} interleaved runs"
    );
    println!("{:<56} {:>9} {:>8} {:>8}", "", "p50 ms", "p99 ms", "max ms");
    let row = |n: &str, v: &[f64]| {
        println!(
            "{n:<56} {:>9.1} {:>8.1} {:>8.1}",
            stats::median(v),
            stats::percentile(v, 99.0),
            v.iter().cloned().fold(0.0, f64::max)
        )
    };
    row("berth: POST pod -> Running seen by a watch", &b);
    if !p.is_empty() {
        row("podman kube play (returns once started)", &p);
        println!(
            "pod startup: podman/berth {:.1}x (p50)",
            stats::median(&p) / stats::median(&b)
        );
    }
    println!(
        "server start -> node Ready        {:>8.0} ms",
        ready.as_secs_f64() * 1000.0
    );
    println!("server RSS idle (no pods)         {idle_rss:>8.1} MiB");
    println!(
        "{density} pods created at once -> all Running {:>6.2} s",
        dens.as_secs_f64()
    );
    println!("server RSS with {density} pods running   {rss_busy:>6.1} MiB");
    println!("server CPU while {density} pods idle (5 s) {idle_ticks:>4} ticks");
    Ok(())
}
