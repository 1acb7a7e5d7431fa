//! Prometheus metrics in the text exposition format: counters, gauges and latency
//! histograms, each a named family with help text and labelled series. Hand-written
//! rather than a metrics crate: a map per family and fixed buckets are all the format
//! needs, and the components stay small. The API server keeps a registry of its own;
//! the scheduler and controllers of a process record into [`global`], which the API
//! server's /metrics includes when they run inside it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

/// Latency bucket bounds, seconds (kube's usual ones).
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    n: u64,
}

struct Family {
    help: &'static str,
    kind: Kind,
    /// Rendered labels ("a=\"b\",c=\"d\"") → value.
    values: BTreeMap<String, f64>,
    histograms: BTreeMap<String, Histogram>,
}

/// A set of metric families.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Registry {
    fn with(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        f: impl FnOnce(&mut Family),
    ) {
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let fam = fams.entry(name).or_insert_with(|| Family {
            help,
            kind,
            values: BTreeMap::new(),
            histograms: BTreeMap::new(),
        });
        f(fam);
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) {
        self.with(name, help, Kind::Counter, |f| {
            *f.values.entry(render_labels(labels)).or_default() += 1.0;
        });
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], v: f64) {
        self.with(name, help, Kind::Gauge, |f| {
            f.values.insert(render_labels(labels), v);
        });
    }

    /// Removes one series (a gauge of something that is gone).
    pub fn remove(&self, name: &'static str, labels: &[(&str, &str)]) {
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = fams.get_mut(name) {
            let key = render_labels(labels);
            f.values.remove(&key);
            f.histograms.remove(&key);
        }
    }

    /// Records one duration in a histogram, seconds.
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        secs: f64,
    ) {
        self.with(name, help, Kind::Histogram, |f| {
            let h = f.histograms.entry(render_labels(labels)).or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.n += 1;
        });
    }

    /// The exposition text of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        for (name, f) in fams.iter() {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind.name());
            let braced = |labels: &str| {
                if labels.is_empty() {
                    String::new()
                } else {
                    format!("{{{labels}}}")
                }
            };
            for (labels, v) in &f.values {
                let _ = writeln!(out, "{name}{} {v}", braced(labels));
            }
            for (labels, h) in &f.histograms {
                let sep = if labels.is_empty() { "" } else { "," };
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.n);
                let _ = writeln!(out, "{name}_sum{} {}", braced(labels), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", braced(labels), h.n);
            }
        }
        out
    }
}

/// The registry of the scheduler and controllers of this process.
pub fn global() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_exposition_format() {
        let r = Registry::default();
        r.inc("jobs_total", "Jobs done.", &[("result", "ok")]);
        r.inc("jobs_total", "Jobs done.", &[("result", "ok")]);
        r.set("queue_depth", "Keys waiting.", &[("name", "a\"b")], 3.0);
        r.observe("took_seconds", "How long.", &[("name", "x")], 0.02);
        let t = r.render();
        assert!(
            t.contains("# TYPE jobs_total counter\njobs_total{result=\"ok\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("queue_depth{name=\"a\\\"b\"} 3"), "{t}");
        assert!(
            t.contains("took_seconds_bucket{name=\"x\",le=\"0.01\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("took_seconds_bucket{name=\"x\",le=\"0.025\"} 1"),
            "{t}"
        );
        assert!(t.contains("took_seconds_count{name=\"x\"} 1"), "{t}");
        r.set("up", "Whether it is up.", &[], 1.0);
        assert!(r.render().contains("\nup 1\n"));
    }
}
