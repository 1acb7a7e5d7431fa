//! The metrics.k8s.io/v1beta1 kinds berth serves (NodeMetrics, PodMetrics), as the
//! resource table names them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The group.
pub const GROUP: &str = "metrics.k8s.io";

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
