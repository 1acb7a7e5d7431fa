//! The control plane on simulated nodes, shaped like kube-scheduler's scheduler_perf
//! SchedulingBasic: `berth server` (API server and scheduler, no node agent) with
//! `berth sim nodes`, then pods created as fast as the API takes them; the figure is
//! pods bound per second, from the first create to the last binding seen. No
//! kube-scheduler runs here (Kubernetes' binaries are not packaged for Debian), so its
//! own published scheduler_perf thresholds stand beside the figure. Then the
//! controllers: a Deployment timed from create to every replica available, and a
//! rolling update (maxSurge 25%) timed to completion.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::apiserver::{client, rss_mib, start_with};

/// kube-scheduler's scheduler_perf threshold for SchedulingBasic at 5,000 nodes (its
/// performance-config.yaml: 680-810 pods/s depending on the case's size).
const KUBE_SCHEDULER_PODS_PER_S: f64 = 810.0;

struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        crate::sys::terminate(self.0.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pods' shape, as kube's scheduler_perf cases: plain, each group of pods keeping
/// one per node by required anti-affinity, or spread over zones with maxSkew 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// SchedulingBasic: requests only.
    Basic,
    /// SchedulingPodAntiAffinity: pods of a group never share a node.
    AntiAffinity,
    /// SchedulingPodTopologySpread: DoNotSchedule, maxSkew 1 over 3 zones.
    Spread,
}

fn pod(i: usize, shape: Shape, groups: usize) -> serde_json::Value {
    let group = format!("g{}", i % groups.max(1));
    let mut p = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{i}"), "namespace": "bench",
                     "labels": {"app": "bench", "group": group}},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/pause",
                                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    });
    match shape {
        Shape::Basic => {}
        Shape::AntiAffinity => {
            p["spec"]["affinity"] = serde_json::json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"group": group}},
                    "topologyKey": "kubernetes.io/hostname"}]}});
        }
        Shape::Spread => {
            p["spec"]["topologySpreadConstraints"] = serde_json::json!([{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "bench"}}}]);
        }
    }
    p
}

// Every response body is read to its end, even when only the status matters: a
// response dropped early leaves its DATA frames arriving for a stream h2 (0.4.11 on)
// has forgotten, which it counts as errors, closing the connection after 1,024 with
// "too_many_internal_resets".

/// Whether pods of the namespace are still unbound (0 or 1: asks for one).
async fn unbound(c: &reqwest::Client, url: &str) -> Result<usize> {
    let r = c
        .get(format!(
            "{url}/api/v1/namespaces/bench/pods?fieldSelector=spec.nodeName%3D&limit=1"
        ))
        .send()
        .await?;
    let v: serde_json::Value = r.json().await?;
    Ok(v["items"].as_array().map_or(0, Vec::len))
}

/// Runs the benchmark: `nodes` simulated nodes, `pods` pods.
pub fn control_bench(
    berth: &Path,
    nodes: usize,
    pods: usize,
    deployment: usize,
    rollout: usize,
    shape: Shape,
) -> Result<()> {
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (cargo build --release)", berth.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let d = tempfile::tempdir()?;
    let data = d.path().join("server");
    let r = rt.block_on(run(&berth, &data, nodes, pods, deployment, rollout, shape));
    if r.is_err() {
        let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("the server's log, last lines:");
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    r
}

async fn run(
    berth: &Path,
    data: &Path,
    nodes: usize,
    pods: usize,
    deployment: usize,
    rollout: usize,
    shape: Shape,
) -> Result<()> {
    {
        let (s, _) = start_with(berth, data, None, &["--disable-agent"]).await?;
        let c = Arc::new(client(&s.dir.join("pki"))?);
        let kubeconfig = s.dir.join("pki/admin.kubeconfig");
        let t0 = Instant::now();
        let mut child = Command::new(berth)
            .args(["sim", "nodes", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--server", &s.url, "--prefix", "bench", "--count"])
            .arg(nodes.to_string())
            .args(["--zones", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("berth sim nodes")?;
        let out = child.stdout.take().context("the simulation's stdout")?;
        let _sim = Sim(child);
        // It says when every node is registered.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).map(|_| line)
        })
        .await??;
        if !line.contains("registered") {
            bail!("berth sim nodes: {line:?}");
        }
        let registered = t0.elapsed();
        c.post(format!("{}/api/v1/namespaces", s.url))
            .json(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        // Pods created by 64 writers at once; the scheduler binds them meanwhile.
        let t1 = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Anti-affinity groups small enough that each fits one pod per node.
        let groups = pods.div_ceil(nodes.max(1)).max(1) * 2;
        let mut writers = Vec::new();
        for _ in 0..64 {
            let (c, next, url) = (c.clone(), next.clone(), s.url.clone());
            writers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= pods {
                        return Ok::<_, anyhow::Error>(());
                    }
                    c.post(format!("{url}/api/v1/namespaces/bench/pods"))
                        .json(&pod(i, shape, groups))
                        .send()
                        .await?
                        .error_for_status()?
                        .bytes()
                        .await?;
                }
            }));
        }
        for w in writers {
            w.await??;
        }
        let created = t1.elapsed();
        loop {
            if unbound(&c, &s.url).await? == 0 {
                break;
            }
            if t1.elapsed() > Duration::from_secs(600) {
                bail!("pods still unbound after 10 min");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all_bound = t1.elapsed();
        let rss = rss_mib(s.child.id());
        let rate = pods as f64 / all_bound.as_secs_f64();
        println!(
            "control plane on simulated nodes (berth server --disable-agent + berth sim nodes), pods shaped {shape:?}"
        );
        println!(
            "  {nodes} nodes registered in {:.1} s",
            registered.as_secs_f64()
        );
        println!(
            "  {pods} pods created in {:.2} s ({:.0}/s), all bound after {:.2} s",
            created.as_secs_f64(),
            pods as f64 / created.as_secs_f64(),
            all_bound.as_secs_f64()
        );
        if shape == Shape::Basic {
            println!(
                "  scheduling throughput: {rate:.0} pods/s (kube-scheduler's scheduler_perf threshold at 5,000 nodes: {KUBE_SCHEDULER_PODS_PER_S:.0} pods/s; ratio {:.1}x)",
                rate / KUBE_SCHEDULER_PODS_PER_S
            );
        } else {
            // kube's thresholds for these cases are not at hand to compare with.
            println!("  scheduling throughput: {rate:.0} pods/s");
        }
        println!("  server RSS holding {nodes} nodes and {pods} pods: {rss:.0} MiB");
        if deployment > 0 {
            let t = Instant::now();
            create_deployment(&c, &s.url, "big", deployment).await?;
            wait_rolled_out(&c, &s.url, "big", deployment, 1).await?;
            println!(
                "  a Deployment of {deployment} replicas: create to all available in {:.2} s (target: under 10 s)",
                t.elapsed().as_secs_f64()
            );
        }
        if rollout > 0 {
            create_deployment(&c, &s.url, "roll", rollout).await?;
            wait_rolled_out(&c, &s.url, "roll", rollout, 1).await?;
            let t = Instant::now();
            let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "example.invalid/pause:2"}]}}}});
            c.patch(format!(
                "{}/apis/apps/v1/namespaces/bench/deployments/roll",
                s.url
            ))
            .header("content-type", "application/strategic-merge-patch+json")
            .json(&patch)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
            wait_rolled_out(&c, &s.url, "roll", rollout, 2).await?;
            println!(
                "  a rolling update of {rollout} replicas (maxSurge 25%, maxUnavailable 25%): done in {:.2} s (target: under 10 s)",
                t.elapsed().as_secs_f64()
            );
        }
        let rss = rss_mib(s.child.id());
        println!("  server RSS at the end: {rss:.0} MiB");
        Ok(())
    }
}

async fn create_deployment(
    c: &reqwest::Client,
    url: &str,
    name: &str,
    replicas: usize,
) -> Result<()> {
    let d = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/pause",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
    });
    c.post(format!("{url}/apis/apps/v1/namespaces/bench/deployments"))
        .json(&d)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(())
}

/// Waits until the Deployment's revision `revision` has every replica updated and
/// available and no old one is left (what `kubectl rollout status` waits for).
async fn wait_rolled_out(
    c: &reqwest::Client,
    url: &str,
    name: &str,
    replicas: usize,
    revision: u32,
) -> Result<()> {
    let t = Instant::now();
    loop {
        let d: serde_json::Value = c
            .get(format!(
                "{url}/apis/apps/v1/namespaces/bench/deployments/{name}"
            ))
            .send()
            .await?
            .json()
            .await?;
        let n = |f: &str| d["status"][f].as_u64().unwrap_or(0) as usize;
        let rev = d["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .unwrap_or("");
        let seen = d["status"]["observedGeneration"] == d["metadata"]["generation"];
        if seen
            && rev == revision.to_string()
            && n("updatedReplicas") == replicas
            && n("availableReplicas") == replicas
            && n("replicas") == replicas
        {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!(
                "deployment {name} not rolled out after 10 min: {}",
                d["status"]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
