//! `berth-bench soak`: the datastore in operation. Two `berth server`s side by side
//! for the same time under the same steady load — one on its embedded SQLite store,
//! one on etcd (the peer: what kube-apiserver and k3s's HA servers run on) — each
//! compacted every `--compaction` as kube-apiserver compacts etcd. Each takes
//! creates, updates and deletes of ConfigMaps at a fixed rate (a pool of names cycled
//! through create → update → update → delete) with `--watchers` watches open on the
//! namespace (resumed from their last resourceVersion every minute, as clients
//! resume). Every window it prints, per store, the write latency (p50, p99, max),
//! the database and WAL sizes and the server's RSS (etcd's too, for the etcd side);
//! at the end, the first and last windows side by side and the worst write seen, the
//! stall compaction would cause.
//!
//! `--secs 3600` is the hour-long soak; the default (2 minutes, compaction every
//! 20 s) shows several compactions quickly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;

use crate::apiserver::{client, etcd, rss_mib, start_with};
use crate::stats::percentile;

/// What one window saw of one server.
#[derive(Clone, Copy, Default)]
struct Window {
    p50: f64,
    p99: f64,
    max: f64,
    writes: usize,
    errors: u64,
    db_mib: f64,
    wal_mib: f64,
    rss_mib: f64,
    peer_rss_mib: f64,
    events: u64,
}

/// The load on one server, and what it measured.
struct Side {
    label: &'static str,
    latencies: Mutex<Vec<f64>>,
    errors: AtomicU64,
    events: AtomicU64,
}

fn file_mib(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len() as f64).unwrap_or(0.0) / (1 << 20) as f64
}

fn dir_mib(p: &Path) -> f64 {
    let mut total = 0u64;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total as f64 / (1 << 20) as f64
}

/// Writes at `rate` per second until `end`: name i cycles create, update, update,
/// delete.
async fn load(
    side: Arc<Side>,
    c: reqwest::Client,
    url: String,
    rate: u32,
    names: usize,
    end: Instant,
) {
    let base = format!("{url}/api/v1/namespaces/soak/configmaps");
    let payload = "x".repeat(1024);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    while Instant::now() < end {
        tick.tick().await;
        let name = format!("cm-{}", n as usize % names);
        let step = (n as usize / names) % 4;
        n += 1;
        let (c, base, payload, side) = (c.clone(), base.clone(), payload.clone(), side.clone());
        // Each write on its own: a slow one does not hold the rate back.
        tokio::spawn(async move {
            let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name}, "data": {"v": payload, "step": step.to_string()}});
            let t = Instant::now();
            let r = match step {
                0 => c.post(&base).json(&body).send().await,
                3 => c.delete(format!("{base}/{name}")).send().await,
                _ => c.put(format!("{base}/{name}")).json(&body).send().await,
            };
            let ok = matches!(&r, Ok(resp) if resp.status().is_success() || resp.status() == 404 || resp.status() == 409);
            if let Ok(resp) = r {
                let _ = resp.bytes().await;
            }
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if ok {
                side.latencies.lock().unwrap().push(ms);
            } else {
                side.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// A watch on the namespace, counting events, resumed from the last resourceVersion
/// it saw when it ends (as clients resume), from scratch only after a 410.
async fn watch(side: Arc<Side>, c: reqwest::Client, url: String, end: Instant) {
    let mut rv = String::new();
    while Instant::now() < end {
        let mut q = format!("{url}/api/v1/namespaces/soak/configmaps?watch=true&timeoutSeconds=60&allowWatchBookmarks=true");
        if !rv.is_empty() {
            q.push_str(&format!("&resourceVersion={rv}"));
        }
        let Ok(r) = c.get(q).send().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut body = r.bytes_stream();
        let mut partial = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            partial.extend_from_slice(&chunk);
            while let Some(at) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=at).collect();
                let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                match ev["type"].as_str() {
                    Some("ERROR") => rv.clear(), // 410: start over
                    Some("BOOKMARK") => {}
                    _ => {
                        side.events.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(v) = ev
                    .pointer("/object/metadata/resourceVersion")
                    .and_then(|v| v.as_str())
                {
                    if ev["type"] != "ERROR" {
                        rv = v.to_string();
                    }
                }
            }
            if Instant::now() >= end {
                return;
            }
        }
    }
}

fn take(side: &Side) -> (Vec<f64>, u64, u64) {
    let lat = std::mem::take(&mut *side.latencies.lock().unwrap());
    (
        lat,
        side.errors.swap(0, Ordering::Relaxed),
        side.events.swap(0, Ordering::Relaxed),
    )
}

fn window(lat: &[f64], errors: u64, events: u64) -> Window {
    Window {
        p50: percentile(lat, 50.0),
        p99: percentile(lat, 99.0),
        max: lat.iter().copied().fold(0.0, f64::max),
        writes: lat.len(),
        errors,
        events,
        ..Default::default()
    }
}

fn row(w: &Window, etcd: bool, secs: u64) -> String {
    let store = format!("db {:>6.1} MiB wal {:>5.1} MiB", w.db_mib, w.wal_mib);
    let rss = if etcd {
        format!("rss {:>5.0}+{:<4.0} MiB", w.rss_mib, w.peer_rss_mib)
    } else {
        format!("rss {:>5.0} MiB     ", w.rss_mib)
    };
    format!(
        "{:>5.0} w/s p50 {:>5.1} p99 {:>6.1} max {:>7.1} ms  {store}  {rss}  {:>6.0} ev/s{}",
        w.writes as f64 / secs as f64,
        w.p50,
        w.p99,
        w.max,
        w.events as f64 / secs as f64,
        if w.errors > 0 {
            format!("  {} errors", w.errors)
        } else {
            String::new()
        }
    )
}

/// Runs the soak.
pub fn run(
    berth: &Path,
    secs: u64,
    rate: u32,
    watchers: usize,
    every: u64,
    compaction: &str,
) -> Result<()> {
    let berth = std::fs::canonicalize(berth)
        .with_context(|| format!("{} (cargo build --release -p berth)", berth.display()))?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let work = tempfile::Builder::new().prefix("berth-bench-soak").tempdir_in("/var/tmp")?;
        let flags = [
            "--disable-agent",
            "--disable",
            "scheduler,controllers",
            "--etcd-compaction-interval",
            compaction,
        ];
        let e = etcd(work.path())?;
        let (sqlite_dir, etcd_dir) = (work.path().join("sqlite"), work.path().join("etcd"));
        let (s1, _) = start_with(&berth, &sqlite_dir, None, &flags).await?;
        let (s2, _) = start_with(&berth, &etcd_dir, Some(&e.url), &flags).await?;
        let sides = [
            Arc::new(Side { label: "sqlite", latencies: Default::default(), errors: AtomicU64::new(0), events: AtomicU64::new(0) }),
            Arc::new(Side { label: "etcd", latencies: Default::default(), errors: AtomicU64::new(0), events: AtomicU64::new(0) }),
        ];
        let servers = [(&s1, &sqlite_dir), (&s2, &etcd_dir)];
        let end = Instant::now() + Duration::from_secs(secs);
        // A pool of names the size of 10 s of writes: each name lives ~30 s.
        let names = (rate as usize * 10).max(10);
        let mut clients = Vec::new();
        for (i, (s, dir)) in servers.iter().enumerate() {
            let c = client(&dir.join("pki"))?;
            crate::apiserver::ok(
                c.post(format!("{}/api/v1/namespaces", s.url))
                    .json(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "soak"}})),
            )
            .await?;
            for _ in 0..watchers {
                tokio::spawn(watch(sides[i].clone(), c.clone(), s.url.clone(), end));
            }
            tokio::spawn(load(sides[i].clone(), c.clone(), s.url.clone(), rate, names, end));
            clients.push(c);
        }
        println!(
            "soak: {secs} s at {rate} writes/s per server ({names} names cycled create/update/update/delete, 1 KiB each), {watchers} watches each, compaction every {compaction}; windows of {every} s"
        );
        let etcd_data: PathBuf = e.data_dir();
        let mut history: Vec<[Window; 2]> = Vec::new();
        let t0 = Instant::now();
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(every)).await;
            let mut ws = [Window::default(); 2];
            for (i, side) in sides.iter().enumerate() {
                let (lat, errors, events) = take(side);
                let mut w = window(&lat, errors, events);
                w.rss_mib = rss_mib(servers[i].0.child.id());
                if i == 0 {
                    w.db_mib = file_mib(&sqlite_dir.join("state.db"));
                    w.wal_mib = file_mib(&sqlite_dir.join("state.db-wal"));
                } else {
                    // bbolt's file, and the WAL segments (etcd preallocates 64 MB each).
                    w.db_mib = file_mib(&etcd_data.join("member/snap/db"));
                    w.wal_mib = dir_mib(&etcd_data.join("member/wal"));
                    w.peer_rss_mib = rss_mib(e.pid());
                }
                ws[i] = w;
            }
            let at = t0.elapsed().as_secs();
            println!("{at:>5}s sqlite {}", row(&ws[0], false, every));
            println!("       etcd   {}", row(&ws[1], true, every));
            history.push(ws);
        }
        // Let the last writes finish before the servers go.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(clients);
        if history.len() >= 2 {
            let (first, last) = (history[0], history[history.len() - 1]);
            println!("\nfirst window → last window (the soak's drift):");
            for (i, side) in sides.iter().enumerate() {
                let worst = history.iter().map(|w| w[i].max).fold(0.0, f64::max);
                let p99s: Vec<f64> = history.iter().map(|w| w[i].p99).collect();
                let db_max = history.iter().map(|w| w[i].db_mib).fold(0.0, f64::max);
                let wal_max = history.iter().map(|w| w[i].wal_mib).fold(0.0, f64::max);
                println!(
                    "  {:<6} p99 {:>6.1} → {:>6.1} ms (median window {:.1} ms), worst write {:.1} ms; db {:.1} → {:.1} MiB (max {:.1}), wal max {:.1} MiB; rss {:.0} → {:.0} MiB",
                    side.label,
                    first[i].p99,
                    last[i].p99,
                    crate::stats::median(&p99s),
                    worst,
                    first[i].db_mib,
                    last[i].db_mib,
                    db_max,
                    wal_max,
                    first[i].rss_mib,
                    last[i].rss_mib,
                );
            }
            let ratio = crate::stats::median(&history.iter().map(|w| w[0].p99).collect::<Vec<_>>())
                / crate::stats::median(&history.iter().map(|w| w[1].p99).collect::<Vec<_>>()).max(0.001);
            println!("  p99 ratio sqlite/etcd (median windows): {ratio:.2}");
        }
        drop(s1);
        drop(s2);
        Ok(())
    })
}
