//! `berth-bench compaction-stall`: how long compaction holds writers up, the
//! figure k3s's users report as write stalls on kine's SQLite (k3s#4044). Store
//! against store, no API server between: berth's SQLite store and etcd (the peer:
//! kube-apiserver's and k3s's HA store), each filled with `--revisions` revisions
//! of 1 KiB values, then written to at a steady `--rate` while compacted to its
//! newest revision until the space is given back to the file system (SQLite: the
//! store's stepped compaction and reclaim, as the server does; etcd: a physical
//! compaction, the one `etcdctl compact --physical` waits for, then a defragment,
//! the only way etcd gives space back, as `etcdctl defrag`). Rounds alternate the
//! stores; each prints the writes' latency before and during compaction, and at the
//! end the medians over rounds of the worst write during compaction, side by side.
//! A plain-file flush probe runs beside each round ([`crate::diskprobe`]): the part
//! of a write's wait that the probe's flush waited through too was the file
//! system's (perhaps kept busy by the store itself: the probe's stall rate before
//! and during compaction is printed), and the worst wait beyond that is reported
//! apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use berth_store::{Backend, Store};

use crate::apiserver::etcd;
use crate::diskprobe::{self, Probe};
use crate::stats::{median, percentile};

/// A write: when it was due, and its latency (ms) from then.
type Timed = (Instant, f64);

/// What one round saw of one store.
struct Round {
    compaction: Duration,
    before: Vec<f64>,
    during: Vec<Timed>,
    probe: Vec<diskprobe::Sample>,
    /// When compaction began (it took `compaction`).
    started: Instant,
    /// CPU time the hypervisor took during compaction, in percent.
    steal: f64,
}

impl Round {
    fn during_ms(&self) -> Vec<f64> {
        self.during.iter().map(|w| w.1).collect()
    }

    /// Writes during compaction that waited over [`diskprobe::STALL`]: how many, and
    /// how many of those the probe's stalls explain down to under it.
    fn slow(&self) -> (usize, usize) {
        let stall = diskprobe::STALL.as_secs_f64() * 1000.0;
        let slow: Vec<&Timed> = self.during.iter().filter(|w| w.1 > stall).collect();
        let explained = slow.iter().filter(|w| self.own(w) <= stall).count();
        (slow.len(), explained)
    }

    /// The most any write during compaction waited beyond what the probe's stalls
    /// covered (ms).
    fn worst_own(&self) -> f64 {
        self.during.iter().map(|w| self.own(w)).fold(0.0, f64::max)
    }

    /// What of a write's wait the probe's stalls do not cover (ms).
    fn own(&self, w: &Timed) -> f64 {
        let took = Duration::from_secs_f64(w.1 / 1000.0);
        diskprobe::unexplained(&self.probe, w.0, took).as_secs_f64() * 1000.0
    }

    /// Probe stalls per minute before compaction (from the probe's start) and
    /// during it.
    fn stall_rates(&self) -> (f64, f64) {
        let start = self.probe.first().map_or(self.started, |s| s.at);
        let per_min = |from: Instant, to: Instant| {
            let n = diskprobe::stalls_between(&self.probe, from, to);
            n as f64 * 60.0 / (to - from).as_secs_f64().max(1e-3)
        };
        (
            per_min(start, self.started),
            per_min(self.started, self.started + self.compaction),
        )
    }
}

/// Fills `store` with `revisions` revisions: keys updated in turn.
async fn fill(store: &Backend, revisions: usize) -> Result<()> {
    let keys = 2000.min(revisions);
    let value = vec![b'x'; 1024];
    let mut revs = vec![0i64; keys];
    let mut done = 0;
    // Many writes in flight, as a busy server makes them (etcd is slow one by one).
    while done < revisions {
        let batch = 64.min(revisions - done);
        let mut writes = Vec::with_capacity(batch);
        for j in 0..batch {
            let i = (done + j) % keys;
            let key = format!("/registry/configmaps/fill/k{i}");
            let (store, value, rev) = (store.clone(), value.clone(), revs[i]);
            writes.push(tokio::spawn(async move {
                if rev == 0 {
                    store.create(&key, &value).await
                } else {
                    store.update(&key, &value, rev).await
                }
                .map(|kv| (i, kv.mod_revision))
            }));
        }
        // A key twice in one batch would conflict with itself: batches are smaller
        // than the key count, so each key is written once per batch.
        for w in writes {
            let (i, rev) = w.await??;
            revs[i] = rev;
        }
        done += batch;
    }
    Ok(())
}

/// Writes at `rate` per second while `running`, each latency (ms) into `before`
/// or `during` as `compacting` says.
async fn writer(
    store: Backend,
    rate: u32,
    running: Arc<AtomicBool>,
    compacting: Arc<AtomicBool>,
    samples: Arc<Mutex<(Vec<f64>, Vec<Timed>)>>,
) -> Result<()> {
    let value = vec![b'y'; 1024];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    // Each write is timed from when it was due, so a stall counts for every write
    // that waited behind it (not as one slow write).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut revs: Vec<i64> = vec![0; 100];
    let mut n = 0usize;
    while running.load(Ordering::Relaxed) {
        let due = tick.tick().await.into_std();
        let i = n % revs.len();
        n += 1;
        let key = format!("/registry/configmaps/load/k{i}");
        let during = compacting.load(Ordering::Relaxed);
        let kv = if revs[i] == 0 {
            store.create(&key, &value).await?
        } else {
            store.update(&key, &value, revs[i]).await?
        };
        let ms = due.elapsed().as_secs_f64() * 1000.0;
        revs[i] = kv.mod_revision;
        let mut s = samples.lock().unwrap();
        if during || compacting.load(Ordering::Relaxed) {
            s.1.push((due, ms));
        } else {
            s.0.push(ms);
        }
    }
    Ok(())
}

/// Compacts `store` to `head` and waits until the space is given back: on SQLite,
/// the store's stepped compaction and reclaim (what the server does); on etcd, a
/// physical compaction (etcd's compaction API answers at once and compacts in the
/// background unless asked to wait for it), then a defragment.
async fn compact(store: &Backend, head: i64) -> Result<()> {
    match store {
        Backend::Sqlite(s) => {
            store.compact(head).await.context("compacting")?;
            s.reclaim().await.context("giving space back")?;
        }
        Backend::Etcd(e) => {
            e.compact_physically(head).await.context("compacting")?;
            e.defragment().await.context("defragmenting")?;
        }
    }
    Ok(())
}

async fn round(
    store: Backend,
    revisions: usize,
    rate: u32,
    dir: &std::path::Path,
) -> Result<Round> {
    fill(&store, revisions).await.context("filling the store")?;
    let probe = Probe::start(dir)?;
    let running = Arc::new(AtomicBool::new(true));
    let compacting = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let w = tokio::spawn(writer(
        store.clone(),
        rate,
        running.clone(),
        compacting.clone(),
        samples.clone(),
    ));
    // Long enough for the probe's stall rate before compaction to mean something.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let head = store.revision().await?;
    compacting.store(true, Ordering::Relaxed);
    let t = Instant::now();
    let ticks = crate::steal::now()?;
    compact(&store, head).await?;
    let compaction = t.elapsed();
    let steal = crate::steal::percent(ticks, crate::steal::now()?);
    // Stopped with compaction: what comes after is neither before nor during.
    running.store(false, Ordering::Relaxed);
    w.await??;
    let probe = probe.stop()?;
    let (before, during) = std::mem::take(&mut *samples.lock().unwrap());
    Ok(Round {
        compaction,
        before,
        during,
        probe,
        started: t,
        steal,
    })
}

fn show(label: &str, r: &Round) {
    let during = r.during_ms();
    let probe: Vec<f64> = r
        .probe
        .iter()
        .map(|s| s.took.as_secs_f64() * 1000.0)
        .collect();
    let (slow, explained) = r.slow();
    let (stalls_before, stalls_during) = r.stall_rates();
    println!(
        "  {label:<6} compaction {:>7.0} ms   before: p50 {:>5.2} p99 {:>6.2} max {:>7.2} ms   during ({} writes): p50 {:>5.2} p99 {:>6.2} max {:>7.2} ms",
        r.compaction.as_secs_f64() * 1000.0,
        median(&r.before),
        percentile(&r.before, 99.0),
        percentile(&r.before, 100.0),
        during.len(),
        median(&during),
        percentile(&during, 99.0),
        percentile(&during, 100.0),
    );
    println!(
        "         cpu steal {:>4.1}%; flush probe worst {:>6.2} ms, stalls {stalls_before:.1}/min before, {stalls_during:.1}/min during; writes over {stall} ms during compaction: {slow}, {explained} of them under {stall} ms but for the probe's stalls; worst wait beyond them {:>6.2} ms",
        r.steal,
        percentile(&probe, 100.0),
        r.worst_own(),
        stall = diskprobe::STALL.as_millis(),
    );
}

/// Runs the benchmark: `rounds` per store, alternating.
pub fn run(rounds: usize, revisions: usize, rate: u32) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        println!(
            "compaction-stall: {revisions} revisions of 1 KiB compacted away while {rate} writes/s go on; {rounds} rounds per store, alternating"
        );
        let mut worst: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut worst_own: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut took: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for n in 0..rounds {
            println!("round {}", n + 1);
            for (i, label) in ["sqlite", "etcd"].into_iter().enumerate() {
                let dir = tempfile::Builder::new()
                    .prefix("berth-bench-compaction")
                    .tempdir_in("/var/tmp")?;
                let peer = if i == 0 { None } else { Some(etcd(dir.path())?) };
                let store = match &peer {
                    None => Backend::Sqlite(berth_store::sqlite::SqliteStore::open(
                        &dir.path().join("state.db"),
                    )?),
                    Some(p) => Backend::Etcd(Box::new(
                        berth_store::etcd::EtcdStore::connect(std::slice::from_ref(&p.url)).await?,
                    )),
                };
                let r = round(store, revisions, rate, dir.path())
                    .await
                    .with_context(|| label.to_string())?;
                show(label, &r);
                worst[i].push(percentile(&r.during_ms(), 100.0));
                worst_own[i].push(r.worst_own());
                took[i].push(r.compaction.as_secs_f64() * 1000.0);
            }
        }
        let (s, e) = (median(&worst[0]), median(&worst[1]));
        println!(
            "median worst write during compaction: sqlite {s:.2} ms, etcd {e:.2} ms (ratio {:.2}); compaction took sqlite {:.0} ms, etcd {:.0} ms",
            s / e,
            median(&took[0]),
            median(&took[1]),
        );
        let (s, e) = (median(&worst_own[0]), median(&worst_own[1]));
        println!(
            "median worst wait beyond the flush probe's stalls: sqlite {s:.2} ms, etcd {e:.2} ms (ratio {:.2})",
            s / e,
        );
        Ok(())
    })
}
