//! CPU counters kept between metrics requests, so that usage is an average over a
//! window as metrics-server's is.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

/// How old a reading may be and still begin a window (metrics-server keeps its
/// scrapes for about as long).
const READING_MAX_AGE_NS: i128 = 10 * 60 * 1_000_000_000;
/// The shortest window worth averaging over: a shorter one is read again.
pub(super) const MIN_WINDOW_NS: i128 = 1_000_000_000;

/// A CPU counter as read: when (ns since the epoch) and its cumulative core-nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Reading {
    at_ns: i128,
    core_ns: u64,
}

impl Reading {
    /// The reading in a summary's `cpu` object (`time`, `usageCoreNanoSeconds`).
    fn of(cpu: &Value) -> Option<Reading> {
        let at: k8s_openapi::jiff::Timestamp = cpu.get("time")?.as_str()?.parse().ok()?;
        Some(Reading {
            at_ns: at.as_nanosecond(),
            core_ns: cpu.get("usageCoreNanoSeconds")?.as_u64()?,
        })
    }
}

/// The last reading of each node's, pod's and container's CPU counter, kept between
/// requests so that usage is the average since then, as metrics-server's is.
#[derive(Default)]
pub struct CpuReadings(Mutex<HashMap<String, Reading>>);

/// Usage over a window: nanocores, and the window as a Go duration.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Rate {
    pub(super) nano_cores: u64,
    pub(super) window: String,
}

impl CpuReadings {
    /// Whether `cpu` read now can be averaged against the kept reading of `key`: one
    /// old enough to make a window and not so old it says little.
    pub(super) fn can_average(&self, key: &str, cpu: &Value) -> bool {
        let Some(now) = Reading::of(cpu) else {
            return true; // nothing to average: the agent's own figure is used
        };
        let readings = self.0.lock().unwrap_or_else(|e| e.into_inner());
        readings.get(key).is_some_and(|before| {
            (MIN_WINDOW_NS..=READING_MAX_AGE_NS).contains(&(now.at_ns - before.at_ns))
        })
    }

    /// The average use since the kept reading of `key` (which `cpu` replaces), or,
    /// with no such reading, the agent's own `usageNanoCores` over an unknown window
    /// (given as "0s").
    pub(super) fn rate(&self, key: &str, cpu: &Value) -> Rate {
        let agents = Rate {
            nano_cores: cpu
                .get("usageNanoCores")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            window: "0s".into(),
        };
        let Some(now) = Reading::of(cpu) else {
            return agents;
        };
        let mut readings = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let before = readings.get(key).copied();
        let rate = match before {
            Some(b)
                if (MIN_WINDOW_NS..=READING_MAX_AGE_NS).contains(&(now.at_ns - b.at_ns))
                    && now.core_ns >= b.core_ns =>
            {
                let window = now.at_ns - b.at_ns;
                Rate {
                    nano_cores: ((now.core_ns - b.core_ns) as i128 * 1_000_000_000 / window) as u64,
                    window: go_duration(window),
                }
            }
            // Too recent to average over: the previous figure stands, the reading kept.
            Some(b) if now.at_ns - b.at_ns < MIN_WINDOW_NS && now.core_ns >= b.core_ns => {
                return agents;
            }
            _ => agents,
        };
        readings.insert(key.to_string(), now);
        rate
    }

    /// Keeps `cpu` as the reading of `key`, to average the next against.
    pub(super) fn remember(&self, key: &str, cpu: &Value) {
        if let Some(now) = Reading::of(cpu) {
            let mut readings = self.0.lock().unwrap_or_else(|e| e.into_inner());
            readings.insert(key.to_string(), now);
        }
    }

    /// Forgets readings too old to begin a window (deleted pods', gone nodes').
    pub(super) fn prune(&self, now_ns: i128) {
        let mut readings = self.0.lock().unwrap_or_else(|e| e.into_inner());
        readings.retain(|_, r| now_ns - r.at_ns <= READING_MAX_AGE_NS);
    }
}

/// A duration as Go's time.Duration prints it (what metav1.Duration serializes to), to
/// the millisecond: "850ms", "15.2s", "1m5s", "2h0m0s".
pub(super) fn go_duration(ns: i128) -> String {
    let ms = ns.max(0) / 1_000_000;
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_print_as_go_durations() {
        let ms = 1_000_000i128;
        assert_eq!(go_duration(850 * ms), "850ms");
        assert_eq!(go_duration(1000 * ms), "1s");
        assert_eq!(go_duration(15_200 * ms), "15.2s");
        assert_eq!(go_duration(20_044 * ms), "20.044s");
        assert_eq!(go_duration(65_000 * ms), "1m5s");
        assert_eq!(go_duration(7_200_000 * ms), "2h0m0s");
    }

    fn cpu_at(secs: i64, core_ns: u64, agents: u64) -> Value {
        let t = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap();
        json!({"time": t.to_string(), "usageCoreNanoSeconds": core_ns, "usageNanoCores": agents})
    }

    #[test]
    fn usage_is_the_average_since_the_previous_reading() {
        let r = CpuReadings::default();
        // No reading before: the agent's figure, over a window nobody knows.
        assert!(!r.can_average("k", &cpu_at(0, 0, 7)));
        assert_eq!(
            r.rate("k", &cpu_at(0, 0, 7)),
            Rate {
                nano_cores: 7,
                window: "0s".into()
            }
        );
        // Ten seconds and five core-seconds later: half a core over 10 s.
        assert!(r.can_average("k", &cpu_at(10, 5_000_000_000, 7)));
        assert_eq!(
            r.rate("k", &cpu_at(10, 5_000_000_000, 7)),
            Rate {
                nano_cores: 500_000_000,
                window: "10s".into()
            }
        );
        // A counter that went back (a container made again): start over.
        assert_eq!(r.rate("k", &cpu_at(20, 1, 3)).nano_cores, 3);
        // Readings older than the longest window are forgotten.
        r.prune(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + 20 + 601)
                .unwrap()
                .as_nanosecond(),
        );
        assert!(!r.can_average("k", &cpu_at(700, 2, 3)));
    }
}
