//! metrics.k8s.io/v1beta1 — the built-in metrics-server: NodeMetrics and PodMetrics
//! read, when asked, from each node agent's Summary API (`/stats/summary`, through the
//! server's kubelet client certificate), so `kubectl top node|pod` works without an
//! add-on. Nothing is stored: each list asks the nodes (in parallel, a few seconds at
//! most each); a node that does not answer is left out, as metrics-server leaves it
//! out, and logged.

use std::collections::BTreeMap;
use std::sync::Arc;
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
    /// Over how long CPU use was averaged ("1s").
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

fn usage(v: &Value) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), cpu(num(v, "/cpu/usageNanoCores"))),
        (
            "memory".to_string(),
            memory(num(v, "/memory/workingSetBytes")),
        ),
    ])
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

/// Summaries of the nodes named, those that answered.
async fn summaries(api: &Arc<Api>, nodes: Vec<String>) -> Vec<(String, Value)> {
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
        window: "1s".into(),
        usage: usage(&s["node"]),
    }
}

fn pod_metrics(api: &Api, pod: &Value) -> Option<PodMetrics> {
    let ns = pod.pointer("/podRef/namespace")?.as_str()?;
    let name = pod.pointer("/podRef/name")?.as_str()?;
    let pods = resources::find("", "v1", "pods").expect("served");
    let stored = api.hub.get(&pods.key(Some(ns), name))?;
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
        window: "1s".into(),
        containers: pod["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| ContainerMetrics {
                name: c["name"].as_str().unwrap_or("").to_string(),
                usage: usage(c),
            })
            .collect(),
    })
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
