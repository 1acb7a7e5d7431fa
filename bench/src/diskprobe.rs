//! A plain-file fsync probe beside a store benchmark, to tell a store's own stalls
//! from the disk's. On this machine's virtual disk a flush now and then takes
//! 20–65 ms whatever asked for it (a 4 KiB write and fsync of an idle file as much
//! as a store's commit), and a file system mounted with `discard` stalls every
//! fsync when freed blocks are trimmed (a file deleted, a database truncated). A
//! store's write that waited while the probe waited too waited for the disk.

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

/// One probe write: when it was due, and how long it took from then.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When the write was due.
    pub due: Instant,
    /// From due to fsync done.
    pub took: Duration,
}

/// A running probe; [`Probe::stop`] ends it and returns what it saw.
pub struct Probe {
    running: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<Sample>>>,
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
                    file.write_all_at(&block, u64::from(n % 256) * 4096)?;
                    file.sync_data()?;
                    samples.push(Sample {
                        due,
                        took: due.elapsed(),
                    });
                    n += 1;
                }
                Ok(samples)
            })?;
        Ok(Probe { running, thread })
    }

    /// Stops the probe and returns its samples.
    pub fn stop(self) -> Result<Vec<Sample>> {
        self.running.store(false, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the disk probe panicked"))?
    }
}

/// Whether the interval from `due` for `took` overlaps a probe stall in `probe`.
pub fn disk_stalled(probe: &[Sample], due: Instant, took: Duration) -> bool {
    let end = due + took;
    probe
        .iter()
        .filter(|s| s.took > STALL)
        .any(|s| s.due < end && due < s.due + s.took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_overlapping_a_probe_stall_is_the_disks() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let probe = [
            Sample {
                due: t0,
                took: ms(1),
            },
            Sample {
                due: t0 + ms(100),
                took: ms(40),
            },
        ];
        assert!(disk_stalled(&probe, t0 + ms(120), ms(30)));
        assert!(disk_stalled(&probe, t0 + ms(90), ms(15)));
        // The fast sample is no stall, and a write after the stall overlaps none.
        assert!(!disk_stalled(&probe, t0, ms(20)));
        assert!(!disk_stalled(&probe, t0 + ms(141), ms(30)));
    }
}
