//! `berth-bench join`: a new node joining — `berth agent --server URL --token-file`
//! from its start to its Node Ready: the CA fetched from the server and checked
//! against the token's hash, the CertificateSigningRequest approved and signed by the
//! controller manager, the Node registered and Ready — beside the same agent started
//! again with the certificate it kept (no join), interleaved, each round a new node.
//! Medians and the ratio; the target is a join under 2 s. (No peer runs here: k3s's
//! and kubeadm's joins need their own binaries, which are not packaged for Debian.)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::apiserver::{client, start_with};
use crate::stats::median;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(
    berth: &Path,
    root: &Path,
    net: &Path,
    url: &str,
    token: &Path,
    node: &str,
) -> Result<Agent> {
    std::fs::create_dir_all(root)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("agent.log"))?;
    let child = Command::new(berth)
        .env("BERTH_ROOT", root)
        .env("BERTH_NET_ROOT", net)
        .env_remove("KUBECONFIG")
        .args(["agent", "--server", url, "--token-file"])
        .arg(token)
        .args([
            "--node-name",
            node,
            "--node-ip",
            "127.0.0.1",
            "--pod-cidr",
            "10.47.0.0/24",
            "--kubelet-port",
            "0",
            // The host's network is shared with whatever else runs here.
            "--disable-kube-proxy",
            "--disable-network-policy",
            "--disable-ingress",
            "--disable-device-plugins",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("berth agent")?;
    Ok(Agent(child))
}

/// Milliseconds from `t0` until `node` is Ready.
async fn until_ready(
    c: &reqwest::Client,
    url: &str,
    node: &str,
    t0: Instant,
    log: &Path,
) -> Result<f64> {
    loop {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!(
                "node {node} was not Ready within 60 s; its agent's log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(r) = c.get(format!("{url}/api/v1/nodes/{node}")).send().await {
            if let Ok(v) = r.json::<Value>().await {
                let ready = v["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                if ready {
                    return Ok(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs the comparison over `rounds` new nodes.
pub fn run(berth: &Path, rounds: usize) -> Result<()> {
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (cargo build --release -p berth)", berth.display()))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let work = tempfile::Builder::new()
            .prefix("berth-bench-join")
            .tempdir_in("/var/tmp")?;
        let w = work.path();
        let dir = w.join("server");
        let (s, _) = start_with(
            &berth,
            &dir,
            None,
            &["--disable-agent", "--disable", "scheduler"],
        )
        .await?;
        let admin = client(&dir.join("pki"))?;
        let token = dir.join("agent-token");
        let mut joins = Vec::new();
        let mut restarts = Vec::new();
        for round in 0..rounds {
            let node = format!("bench-join-{round}");
            let root = w.join("agents").join(&node);
            let log = root.join("agent.log");
            for (kind, out) in [("join", &mut joins), ("restart", &mut restarts)] {
                let t0 = Instant::now();
                let agent = start_agent(&berth, &root, &w.join("net"), &s.url, &token, &node)?;
                let ms = until_ready(&admin, &s.url, &node, t0, &log).await?;
                drop(agent);
                // The next start registers the Node anew.
                let _ = admin
                    .delete(format!("{}/api/v1/nodes/{node}", s.url))
                    .send()
                    .await?;
                out.push(ms);
                println!("round {}: {kind} to Ready {ms:.0} ms", round + 1);
            }
            let kept = std::fs::read_to_string(&log).unwrap_or_default();
            if kept.matches("joined the cluster").count() != 1 {
                bail!(
                    "node {node} joined {} times (expected once):\n{kept}",
                    kept.matches("joined the cluster").count()
                );
            }
        }
        let (j, r) = (median(&joins), median(&restarts));
        println!("\nA new node's agent, start to Node Ready, {rounds} rounds (medians):");
        println!(
            "  {:<46} {:>8.0} ms",
            "join with the token (CA check, CSR, register)", j
        );
        println!(
            "  {:<46} {:>8.0} ms",
            "restart with the kept certificate", r
        );
        println!(
            "  join / restart: {:.2}; the join's own cost {:.0} ms (target: join under 2000 ms)",
            j / r,
            j - r
        );
        drop(s);
        Ok(())
    })
}
