//! CPU time the hypervisor took from this machine (steal), read from /proc/stat:
//! on a shared virtual machine it comes in bursts (vmstat showed 13–17% here) and
//! delays a store's writes without the store doing anything, so `compaction-stall`
//! prints it beside its figures.

use anyhow::{Context, Result};

/// The machine's CPU counters at one moment (in ticks).
#[derive(Clone, Copy, Debug)]
pub struct Ticks {
    total: u64,
    steal: u64,
}

/// Reads the machine-wide CPU counters now.
pub fn now() -> Result<Ticks> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse(&stat).context("/proc/stat has no cpu line")
}

fn parse(stat: &str) -> Option<Ticks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is counted in user)
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    (fields.len() == 8).then(|| Ticks {
        total: fields.iter().sum(),
        steal: fields[7],
    })
}

/// The share of CPU time stolen between `from` and `to`, in percent.
pub fn percent(from: Ticks, to: Ticks) -> f64 {
    let total = to.total.saturating_sub(from.total);
    if total == 0 {
        return 0.0;
    }
    to.steal.saturating_sub(from.steal) as f64 * 100.0 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_counter_of_the_cpu_line() {
        let a = parse("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n").unwrap();
        let b = parse("cpu  200 0 100 1600 20 0 10 70 0 0\n").unwrap();
        assert_eq!((a.total, a.steal), (1000, 35));
        assert!((percent(a, b) - 3.5).abs() < 1e-9);
        assert!(parse("intr 1 2 3\n").is_none());
    }
}
