//! `berth-bench failover`: two servers on one etcd, the second joined to the first
//! by token; the server whose controller manager leads is killed with SIGKILL, and
//! the time until the other's holds the kube-controller-manager Lease is measured —
//! with kube's default lease (15 s, renew deadline 10 s, retry 2 s) and with a 5 s
//! lease (4 s, 1 s), rounds alternating which server dies (the dead one is restarted
//! between rounds). Medians; the takeover cannot be shorter than what is left of the
//! dead leader's lease, so the figures sit near the lease duration.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::apiserver::{client, etcd, start_with, Server};
use crate::stats::median;

const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager";

async fn holder(c: &reqwest::Client, url: &str) -> Option<String> {
    let r = c.get(format!("{url}{LEASE_PATH}")).send().await.ok()?;
    let v: Value = r.json().await.ok()?;
    v["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// Which of the servers in `dirs` logged that it leads as `identity`.
fn leader_of(dirs: &[&Path], identity: &str) -> Option<usize> {
    dirs.iter().position(|d| {
        std::fs::read_to_string(d.join("server.log"))
            .unwrap_or_default()
            .contains(&format!("identity={identity}"))
    })
}

/// One setting: `rounds` kills, the takeover of each in milliseconds.
async fn setting(berth: &Path, work: &Path, lease: &[&str], rounds: usize) -> Result<Vec<f64>> {
    let etcd = etcd(work)?;
    let (da, db) = (work.join("a"), work.join("b"));
    let mut flags = vec!["--disable-agent"];
    flags.extend(lease);
    let (a, _) = start_with(berth, &da, Some(&etcd.url), &flags).await?;
    let token = da.join("token");
    let a_url = a.url.clone();
    let mut b_flags = flags.clone();
    b_flags.extend([
        "--server",
        &a_url,
        "--token-file",
        token.to_str().context("a UTF-8 path")?,
    ]);
    let (b, _) = start_with(berth, &db, Some(&etcd.url), &b_flags).await?;
    let admin = client(&da.join("pki"))?;
    let mut servers: [Option<Server>; 2] = [Some(a), Some(b)];
    let mut out = Vec::new();
    for round in 0..rounds {
        let url0 = servers[0]
            .as_ref()
            .map(|s| s.url.clone())
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        let identity = loop {
            if let Some(h) = holder(&admin, &url0).await.filter(|h| !h.is_empty()) {
                if leader_of(&[&da, &db], &h).is_some() {
                    break h;
                }
            }
            if Instant::now() > deadline {
                bail!("no leader among the servers");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let dead = leader_of(&[&da, &db], &identity).context("the leader")?;
        let survivor_url = servers[1 - dead]
            .as_ref()
            .map(|s| s.url.clone())
            .unwrap_or_default();
        let t0 = Instant::now();
        servers[dead] = None; // SIGKILL (Server's drop)
        loop {
            if let Some(h) = holder(&admin, &survivor_url).await {
                if h != identity && !h.is_empty() {
                    break;
                }
            }
            if t0.elapsed() > Duration::from_secs(90) {
                bail!("no takeover within 90 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        println!(
            "  round {}: server {} killed, takeover after {ms:.0} ms",
            round + 1,
            ["a", "b"][dead]
        );
        out.push(ms);
        // Back as a candidate for the next round (its log starts afresh, so only
        // leadership won from now on names it).
        let dir = if dead == 0 { &da } else { &db };
        let f = if dead == 0 { &flags } else { &b_flags };
        // (The second server has joined already: --server is not asked again.)
        let (s, _) = start_with(berth, dir, Some(&etcd.url), f).await?;
        servers[dead] = Some(s);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(out)
}

/// Runs both settings.
pub fn run(berth: &Path, rounds: usize) -> Result<()> {
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (cargo build --release -p berth)", berth.display()))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut results = Vec::new();
        for (name, lease) in [
            ("default lease (15 s / 10 s / 2 s)", &[][..]),
            (
                "5 s lease (5 s / 4 s / 1 s)",
                &[
                    "--leader-elect-lease-duration",
                    "5s",
                    "--leader-elect-renew-deadline",
                    "4s",
                    "--leader-elect-retry-period",
                    "1s",
                ][..],
            ),
        ] {
            println!("{name}:");
            let work = tempfile::Builder::new().prefix("berth-bench-failover").tempdir_in("/var/tmp")?;
            let ms = match setting(&berth, work.path(), lease, rounds).await {
                Ok(ms) => ms,
                Err(e) => {
                    for d in ["a", "b"] {
                        let log = std::fs::read_to_string(work.path().join(d).join("server.log")).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(15).collect();
                        eprintln!("--- server {d}'s log, last lines:");
                        for l in tail.iter().rev() {
                            eprintln!("{l}");
                        }
                    }
                    return Err(e);
                }
            };
            results.push((name, median(&ms)));
        }
        println!("\nController-manager takeover after kill -9 of the leading server, {rounds} rounds (medians):");
        for (name, m) in results {
            println!("  {name:<36} {m:>8.0} ms");
        }
        Ok(())
    })
}
