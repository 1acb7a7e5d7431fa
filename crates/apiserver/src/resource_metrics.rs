//! metrics.k8s.io/v1beta1 — the built-in metrics-server: NodeMetrics and PodMetrics
//! read, when asked, from each node agent's Summary API (`/stats/summary`, through the
//! server's kubelet client certificate), so `kubectl top node|pod` works without an
//! add-on. Nothing is stored: each list asks the nodes (in parallel, a few seconds at
//! most each); a node that does not answer is left out, as metrics-server leaves it
//! out, and logged. CPU use is averaged between two reads of each counter, as
//! metrics-server averages it between two scrapes, and the window says over how long.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{Api, Request, Response};
use crate::resources::{self, Resource};
use crate::selector::LabelSelector;
use crate::status::ApiError;

/// The group.
pub const GROUP: &str = "metrics.k8s.io";
/// How long a node's agent gets to answer.
const NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's usage (metrics.k8s.io/v1beta1 NodeMetrics).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "io.k8s.metrics.pkg.apis.metrics.v1beta1.NodeMetrics")]
#[serde(rename_all = "camelCase")]
pub struct NodeMetrics {
    /// Standard object metadata (the node's name and labels).
    pub metadata: ObjectMeta,
    /// When the usage was read.
    pub timestamp: String,
    /// Over how long CPU use was averaged (a Go duration: "10.5s").
    pub window: String,
    /// cpu and memory in use.
    pub usage: BTreeMap<String, Quantity>,
}

/// A container's usage within PodMetrics.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "io.k8s.metrics.pkg.apis.metrics.v1beta1.ContainerMetrics")]
pub struct ContainerMetrics {
    /// The container's name.
    pub name: String,
    /// cpu and memory in use.
    pub usage: BTreeMap<String, Quantity>,
}

/// A pod's usage (metrics.k8s.io/v1beta1 PodMetrics).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics")]
#[serde(rename_all = "camelCase")]
pub struct PodMetrics {
    /// Standard object metadata (the pod's name, namespace and labels).
    pub metadata: ObjectMeta,
    /// When the usage was read.
    pub timestamp: String,
    /// Over how long CPU use was averaged.
    pub window: String,
    /// Each running container's usage.
    pub containers: Vec<ContainerMetrics>,
}

impl k8s_openapi::Resource for NodeMetrics {
    const API_VERSION: &'static str = "metrics.k8s.io/v1beta1";
    const GROUP: &'static str = GROUP;
    const KIND: &'static str = "NodeMetrics";
    const VERSION: &'static str = "v1beta1";
    const URL_PATH_SEGMENT: &'static str = "nodes";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Resource for PodMetrics {
    const API_VERSION: &'static str = "metrics.k8s.io/v1beta1";
    const GROUP: &'static str = GROUP;
    const KIND: &'static str = "PodMetrics";
    const VERSION: &'static str = "v1beta1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

/// CPU as Kubernetes writes small quantities: nanocores.
fn cpu(nano_cores: u64) -> Quantity {
    Quantity(format!("{nano_cores}n"))
}

/// Memory in KiB, as metrics-server answers.
fn memory(bytes: u64) -> Quantity {
    Quantity(format!("{}Ki", bytes / 1024))
}

fn num(v: &Value, p: &str) -> u64 {
    v.pointer(p).and_then(Value::as_u64).unwrap_or(0)
}

/// How old a reading may be and still begin a window (metrics-server keeps its
/// scrapes for about as long).
const READING_MAX_AGE_NS: i128 = 10 * 60 * 1_000_000_000;
/// The shortest window worth averaging over: a shorter one is read again.
const MIN_WINDOW_NS: i128 = 1_000_000_000;

/// A CPU counter as read: when (ns since the epoch) and its cumulative core-nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reading {
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
struct Rate {
    nano_cores: u64,
    window: String,
}

impl CpuReadings {
    /// Whether `cpu` read now can be averaged against the kept reading of `key`: one
    /// old enough to make a window and not so old it says little.
    fn can_average(&self, key: &str, cpu: &Value) -> bool {
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
    fn rate(&self, key: &str, cpu: &Value) -> Rate {
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
    fn remember(&self, key: &str, cpu: &Value) {
        if let Some(now) = Reading::of(cpu) {
            let mut readings = self.0.lock().unwrap_or_else(|e| e.into_inner());
            readings.insert(key.to_string(), now);
        }
    }

    /// Forgets readings too old to begin a window (deleted pods', gone nodes').
    fn prune(&self, now_ns: i128) {
        let mut readings = self.0.lock().unwrap_or_else(|e| e.into_inner());
        readings.retain(|_, r| now_ns - r.at_ns <= READING_MAX_AGE_NS);
    }
}

/// A duration as Go's time.Duration prints it (what metav1.Duration serializes to), to
/// the millisecond: "850ms", "15.2s", "1m5s", "2h0m0s".
fn go_duration(ns: i128) -> String {
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

/// cpu (averaged per `readings` under `key`) and memory in use of a summary's node,
/// pod or container object; with the CPU window.
fn usage(readings: &CpuReadings, key: &str, v: &Value) -> (BTreeMap<String, Quantity>, String) {
    let rate = readings.rate(key, &v["cpu"]);
    (
        BTreeMap::from([
            ("cpu".to_string(), cpu(rate.nano_cores)),
            (
                "memory".to_string(),
                memory(num(v, "/memory/workingSetBytes")),
            ),
        ]),
        rate.window,
    )
}

/// The names of registered nodes.
fn node_names(api: &Api) -> Vec<String> {
    let nodes = resources::find("", "v1", "nodes").expect("served");
    api.hub
        .under(&nodes.prefix())
        .into_iter()
        .filter_map(|(_, n)| {
            n.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// Summaries of the nodes named, those that answered, read so that every CPU counter
/// in them can be averaged over a window: a node with a counter not read before (the
/// first request, a new pod) is read, and read again a second later.
async fn summaries(api: &Arc<Api>, nodes: Vec<String>) -> Vec<(String, Value)> {
    api.cpu_readings
        .prune(k8s_openapi::jiff::Timestamp::now().as_nanosecond());
    let mut first = read_summaries(api, nodes).await;
    let again: Vec<String> = first
        .iter()
        .filter(|(node, s)| {
            counters(node, s)
                .iter()
                .any(|(key, cpu)| !api.cpu_readings.can_average(key, cpu))
        })
        .map(|(node, _)| node.clone())
        .collect();
    if again.is_empty() {
        return first;
    }
    for (node, s) in first.iter().filter(|(n, _)| again.contains(n)) {
        for (key, cpu) in counters(node, s) {
            if !api.cpu_readings.can_average(&key, &cpu) {
                api.cpu_readings.remember(&key, &cpu);
            }
        }
    }
    tokio::time::sleep(Duration::from_nanos(MIN_WINDOW_NS as u64)).await;
    let second = read_summaries(api, again).await;
    first.retain(|(n, _)| !second.iter().any(|(m, _)| m == n));
    first.extend(second);
    first
}

/// One read of the summaries of the nodes named, those that answered.
async fn read_summaries(api: &Arc<Api>, nodes: Vec<String>) -> Vec<(String, Value)> {
    let asks = nodes.into_iter().map(|node| {
        let api = api.clone();
        async move {
            match crate::nodeproxy::get_from_agent(
                &api,
                &node,
                "/stats/summary?only_cpu_and_memory=true",
                NODE_TIMEOUT,
            )
            .await
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
            {
                Ok(s) => Some((node, s)),
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "metrics: no summary from the node");
                    None
                }
            }
        }
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn node_metrics(api: &Api, node: &str, s: &Value) -> NodeMetrics {
    let nodes = resources::find("", "v1", "nodes").expect("served");
    let labels = api
        .hub
        .get(&nodes.key(None, node))
        .and_then(|n| serde_json::from_value(n.pointer("/metadata/labels")?.clone()).ok());
    let (usage, window) = usage(&api.cpu_readings, &node_key(node), &s["node"]);
    let time = s
        .pointer("/node/cpu/time")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    NodeMetrics {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            labels,
            creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        },
        timestamp: time,
        window,
        usage,
    }
}

fn pod_metrics(api: &Api, pod: &Value) -> Option<PodMetrics> {
    let ns = pod.pointer("/podRef/namespace")?.as_str()?;
    let name = pod.pointer("/podRef/name")?.as_str()?;
    let pods = resources::find("", "v1", "pods").expect("served");
    let stored = api.hub.get(&pods.key(Some(ns), name))?;
    let mut window = String::new();
    let containers = pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let (usage, w) = usage(&api.cpu_readings, &container_key(pod, c), c);
            // The pod's window: its containers', read together.
            window = w;
            ContainerMetrics {
                name: c["name"].as_str().unwrap_or("").to_string(),
                usage,
            }
        })
        .collect();
    if window.is_empty() {
        window = "0s".into();
    }
    Some(PodMetrics {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: serde_json::from_value(stored.pointer("/metadata/labels")?.clone()).ok(),
            creation_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        },
        timestamp: pod
            .pointer("/cpu/time")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        window,
        containers,
    })
}

fn node_key(node: &str) -> String {
    format!("node/{node}")
}

/// A container's key: its pod's UID (a pod made again under the same name starts
/// over) and its name.
fn container_key(pod: &Value, container: &Value) -> String {
    format!(
        "container/{}/{}",
        pod.pointer("/podRef/uid")
            .and_then(Value::as_str)
            .unwrap_or(""),
        container["name"].as_str().unwrap_or("")
    )
}

/// Every CPU counter in a summary that kubectl top would show, with its key.
fn counters(node: &str, s: &Value) -> Vec<(String, Value)> {
    let mut out = vec![(node_key(node), s["node"]["cpu"].clone())];
    for p in s["pods"].as_array().into_iter().flatten() {
        for c in p["containers"].as_array().into_iter().flatten() {
            out.push((container_key(p, c), c["cpu"].clone()));
        }
    }
    out
}

/// Answers GET on nodes and pods of metrics.k8s.io.
pub async fn handle(
    api: &Arc<Api>,
    req: &Request,
    res: &'static Resource,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<Response, ApiError> {
    if req.method != http::Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "{} only supports get and list",
            res.qualified()
        )));
    }
    if matches!(req.q("watch"), Some("true" | "1")) {
        return Err(ApiError::method_not_allowed(format!(
            "{} cannot be watched: ask again for fresh usage",
            res.qualified()
        )));
    }
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?;
    let items: Vec<Value> = if res.kind == "NodeMetrics" {
        let names = match name {
            Some(n) => vec![n.to_string()],
            None => node_names(api),
        };
        summaries(api, names)
            .await
            .iter()
            .map(|(node, s)| node_metrics(api, node, s))
            .map(|m| serde_json::to_value(m).unwrap_or_default())
            .collect()
    } else {
        let want_pod = |p: &Value| {
            ns.is_none_or(|ns| p.pointer("/podRef/namespace").and_then(Value::as_str) == Some(ns))
                && name.is_none_or(|n| p.pointer("/podRef/name").and_then(Value::as_str) == Some(n))
        };
        summaries(api, node_names(api))
            .await
            .iter()
            .flat_map(|(_, s)| s["pods"].as_array().cloned().unwrap_or_default())
            .filter(want_pod)
            .filter_map(|p| pod_metrics(api, &p))
            .map(|m| serde_json::to_value(m).unwrap_or_default())
            .collect()
    };
    let mut items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            o["apiVersion"] = json!(res.api_version());
            o["kind"] = json!(res.kind);
            o
        })
        .filter(|o| labels.matches(o))
        .collect();
    if let Some(n) = name {
        return match items.pop() {
            Some(o) => Ok(Response::json(200, &o)),
            None => Err(ApiError::not_found(GROUP, res.plural, n)),
        };
    }
    Ok(Response::json(
        200,
        &json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version(),
            "metadata": {},
            "items": items,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
