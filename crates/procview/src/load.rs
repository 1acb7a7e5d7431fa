//! Load averages per container, kept as the kernel keeps the host's: every 5 seconds
//! the number of runnable (and uninterruptible) tasks in each container that was read
//! recently is folded into 1, 5 and 15 minute exponential averages.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cgroup::Cgroups;

/// How often tasks are counted, as the kernel does.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Containers not read for this long are no longer sampled.
const FORGET: Duration = Duration::from_secs(600);

struct Entry {
    cg: Cgroups,
    avg: [f64; 3],
    read_at: Instant,
}

/// The load averages of the containers that read /proc/loadavg.
#[derive(Default)]
pub struct Loads {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Runnable tasks and all tasks (threads included) of a cgroup.
pub fn tasks(cg: &Cgroups) -> (usize, usize) {
    let (mut running, mut total) = (0, 0);
    for pid in cg.pids() {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in rd.flatten() {
            total += 1;
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            if matches!(state, Some("R") | Some("D")) {
                running += 1;
            }
        }
    }
    (running, total)
}

impl Loads {
    /// The averages of `cg` (registering it for sampling on first use).
    pub fn get(&self, cg: &Cgroups) -> (f64, f64, f64) {
        let mut m = self.entries.lock().expect("not poisoned");
        let e = m.entry(cg.key()).or_insert_with(|| Entry {
            cg: cg.clone(),
            avg: [0.0; 3],
            read_at: Instant::now(),
        });
        e.read_at = Instant::now();
        (e.avg[0], e.avg[1], e.avg[2])
    }

    /// One sampling round.
    pub fn sample(&self) {
        let mut m = self.entries.lock().expect("not poisoned");
        m.retain(|_, e| e.read_at.elapsed() < FORGET);
        let secs = INTERVAL.as_secs_f64();
        for e in m.values_mut() {
            let (running, _) = tasks(&e.cg);
            for (avg, minutes) in e.avg.iter_mut().zip([1.0, 5.0, 15.0]) {
                let decay = (-secs / (minutes * 60.0)).exp();
                *avg = *avg * decay + running as f64 * (1.0 - decay);
            }
        }
    }
}
