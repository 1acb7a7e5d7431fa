//! metrics.k8s.io/v1beta1 — the built-in metrics-server: NodeMetrics and PodMetrics
//! read, when asked, from each node agent's Summary API (`/stats/summary`, through the
//! server's kubelet client certificate), so `kubectl top node|pod` works without an
//! add-on. Nothing is stored: each list asks the nodes (in parallel, a few seconds at
//! most each); a node that does not answer is left out, as metrics-server leaves it
//! out, and logged. CPU use is averaged between two reads of each counter, as
//! metrics-server averages it between two scrapes, and the window says over how long.

pub(crate) mod readings;
pub(crate) mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{json, Value};

pub use readings::CpuReadings;
use readings::MIN_WINDOW_NS;
pub use types::{ContainerMetrics, NodeMetrics, PodMetrics, GROUP};

use crate::request::{Request, Response};
use crate::resources::{self, Resource};
use crate::selector::LabelSelector;
use crate::state::Api;
use crate::status::ApiError;

/// How long a node's agent gets to answer.
const NODE_TIMEOUT: Duration = Duration::from_secs(5);

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
