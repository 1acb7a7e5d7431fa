//! Prometheus metrics at /metrics: request counts by verb, resource and code, latency
//! histograms by verb and resource, registered watchers — and, when the scheduler and
//! controllers run in this process, theirs (berth-metrics' global registry).

use std::time::Duration;

use berth_metrics::Registry;

/// The server's request metrics.
#[derive(Default)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        self.registry.inc(
            "apiserver_request_total",
            "Counter of apiserver requests broken out by verb, resource and HTTP response code.",
            &[
                ("verb", verb),
                ("resource", resource),
                ("code", &code.to_string()),
            ],
        );
        self.registry.observe(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb and resource.",
            &[("verb", verb), ("resource", resource)],
            took.as_secs_f64(),
        );
    }

    /// The exposition text.
    pub fn render(&self, watchers: usize) -> String {
        self.registry.set(
            "apiserver_registered_watchers",
            "Number of currently registered watchers.",
            &[],
            watchers as f64,
        );
        let mut out = self.registry.render();
        out.push_str(&berth_metrics::global().render());
        out
    }
}
