//! A plain-file flush probe beside a store benchmark, to tell a store's own stalls
//! from the file system's. On this machine's virtual disk a flush now and then
//! takes 20–65 ms whatever asked for it (a 4 KiB write and fdatasync of an idle file
//! as much as a store's commit), and a file system mounted with `discard` stalls
//! every flush when freed blocks are trimmed (a file deleted, a database truncated).
//! A store's write that waited while the probe's flush waited too waited for the
//! file system — which the store's own I/O may have kept busy: the probe says when,
//! not why, so benchmarks also print how often it stalled before the work began.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Probe writes per second: often enough to see a stall of a few ms, too few to
/// load the disk.
const RATE: u32 = 100;

/// A probe answer slower than this is a disk stall.
pub const STALL: Duration = Duration::from_millis(10);

/// One probe write: when it began, and how long the write and flush took (a thread
/// started late by a busy CPU is not counted against the disk).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When the write began.
    pub at: Instant,
    /// The write and its fdatasync.
    pub took: Duration,
}

/// A running probe; [`Probe::stop`] ends it and returns what it saw.
pub struct Probe {
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Vec<Sample>>>>,
}

impl Probe {
    /// Starts writing and fsyncing a 4 KiB block of a file in `dir` (on the store's
    /// file system) [`RATE`] times a second.
    pub fn start(dir: &Path) -> Result<Probe> {
        let path = dir.join("disk-probe");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        // Written out first, so that probe writes allocate nothing.
        file.write_all(&vec![0u8; 1 << 20])?;
        file.sync_all()?;
        let running = Arc::new(AtomicBool::new(true));
        let run = running.clone();
        let thread = std::thread::Builder::new()
            .name("disk-probe".into())
            .spawn(move || {
                let block = [b'p'; 4096];
                let every = Duration::from_secs(1) / RATE;
                let start = Instant::now();
                let mut samples = Vec::new();
                let mut n = 0u32;
                while run.load(Ordering::Relaxed) {
                    let due = start + every * n;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let at = Instant::now();
                    file.write_all_at(&block, u64::from(n % 256) * 4096)?;
                    file.sync_data()?;
                    samples.push(Sample {
                        at,
                        took: at.elapsed(),
                    });
                    n += 1;
                }
                Ok(samples)
            })?;
        Ok(Probe {
            running,
            thread: Some(thread),
        })
    }

    /// Stops the probe and returns its samples.
    pub fn stop(mut self) -> Result<Vec<Sample>> {
        self.running.store(false, Ordering::Relaxed);
        self.thread
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| anyhow::anyhow!("the disk probe panicked"))?
    }
}

impl Drop for Probe {
    /// A round that failed drops its probe unstopped: the thread ends too.
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

/// Of the interval from `start` for `took`, the part no probe stall in `probe`
/// covered: what the file system does not explain of a write's wait.
pub fn unexplained(probe: &[Sample], start: Instant, took: Duration) -> Duration {
    let end = start + took;
    // Stalls as intervals clipped to the write's, in order, merged as they overlap.
    let mut stalls: Vec<(Instant, Instant)> = probe
        .iter()
        .filter(|s| s.took > STALL)
        .map(|s| (s.at.max(start), (s.at + s.took).min(end)))
        .filter(|(a, b)| a < b)
        .collect();
    stalls.sort();
    let mut covered = Duration::ZERO;
    let mut reach = start;
    for (a, b) in stalls {
        let a = a.max(reach);
        if b > a {
            covered += b - a;
            reach = b;
        }
    }
    took.saturating_sub(covered)
}

/// How many probe flushes that began in `[from, to)` stalled.
pub fn stalls_between(probe: &[Sample], from: Instant, to: Instant) -> usize {
    probe
        .iter()
        .filter(|s| s.at >= from && s.at < to && s.took > STALL)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_part_of_a_write_under_probe_stalls_is_the_file_systems() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let at = |start: u64, took: u64| Sample {
            at: t0 + ms(start),
            took: ms(took),
        };
        // A fast flush, a 40-ms stall, and two overlapping stalls later.
        let probe = [at(0, 1), at(100, 40), at(200, 20), at(210, 30)];
        // Wholly inside a stall: all explained.
        assert_eq!(unexplained(&probe, t0 + ms(105), ms(30)), ms(0));
        // Half under the stall: the other half is the store's.
        assert_eq!(unexplained(&probe, t0 + ms(120), ms(40)), ms(20));
        // The fast flush explains nothing; after the stall nothing is covered.
        assert_eq!(unexplained(&probe, t0, ms(20)), ms(20));
        assert_eq!(unexplained(&probe, t0 + ms(141), ms(30)), ms(30));
        // Overlapping stalls are counted once: 200..240 of 190..250.
        assert_eq!(unexplained(&probe, t0 + ms(190), ms(60)), ms(20));
        assert_eq!(stalls_between(&probe, t0, t0 + ms(150)), 1);
        assert_eq!(stalls_between(&probe, t0 + ms(150), t0 + ms(300)), 2);
    }
}
