//! What the Service proxy, the cluster DNS, the Ingress proxy and the controllers
//! read alike of Services and their EndpointSlices: which slices are a Service's, its
//! ClusterIPs, and the names berth's Ingress class goes by.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceSpec;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The IngressClass berth's built-in Ingress proxy serves (with Ingresses of no
/// class).
pub const INGRESS_CLASS: &str = "berth";
/// The `spec.controller` of that IngressClass.
pub const INGRESS_CONTROLLER: &str = "berth.dev/ingress";
/// The Node label of nodes whose agent runs the Ingress proxy: their addresses are
/// the Ingresses' `status.loadBalancer`.
pub const INGRESS_PROXY_NODE_LABEL: &str = "node.berth.dev/ingress-proxy";

/// The Services' cluster IP range (kube-apiserver's --service-cluster-ip-range as
/// berth fixes it; the cluster DNS is at [`CLUSTER_DNS_IP`]).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The cluster DNS address: the kube-dns Service's cluster IP (where kubeadm puts
/// it), which every node's agent serves and gives pods as their name server.
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";

/// The annotation that named an Ingress's class before `spec.ingressClassName`
/// (deprecated, still honoured by controllers, kube's own validation included).
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Whether berth's Ingress proxy serves an Ingress: of class [`INGRESS_CLASS`] (by
/// `spec.ingressClassName`, or else the old annotation), or of none (berth's class is
/// the cluster's default).
pub fn ingress_is_berths(ing: &k8s_openapi::api::networking::v1::Ingress) -> bool {
    let class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(INGRESS_CLASS_ANNOTATION))
                .map(String::as_str)
        });
    match class {
        Some(c) => c == INGRESS_CLASS,
        None => true,
    }
}

/// Slices by (namespace, Service name).
pub type SlicesByService = BTreeMap<(String, String), Vec<Arc<EndpointSlice>>>;

/// Groups slices by the Service they belong to (slices without the label are no
/// Service's).
pub fn slices_by_service(slices: &[Arc<EndpointSlice>]) -> SlicesByService {
    let mut out = SlicesByService::new();
    for s in slices {
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        out.entry((ns, svc.clone())).or_default().push(s.clone());
    }
    out
}

/// A Service's ClusterIPs (`clusterIPs`, else `clusterIP`), each once; empty for a
/// headless Service (`None`) or one without.
pub fn cluster_ips(spec: &ServiceSpec) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for ip in spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
    {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
