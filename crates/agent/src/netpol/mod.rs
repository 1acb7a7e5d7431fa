//! The node's NetworkPolicy enforcement (what k3s's embedded network policy
//! controller does beside the kubelet): NetworkPolicies, pods, namespaces and nodes
//! watched, turned into what each of this node's pods may send and take ([`resolve`]),
//! and the difference sent to the kernel's `berth-netpol` table
//! ([`berth_net::netpol`]) after each burst of changes.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector;

use berth_net::netpol::{Enforcer, Wanted};

use crate::Ctx;

pub mod resolve;

/// Where the kernel says whether bridged traffic passes the IPv4 hooks: without it,
/// pods on one node talk past the filter.
const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Makes bridged IPv4 traffic pass the netfilter hooks (br_netfilter, as kubeadm's
/// preflight and k3s ask), loading the module when it is missing.
fn bridge_netfilter() {
    if !std::path::Path::new(BRIDGE_NF).exists() {
        let _ = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .status();
    }
    match std::fs::read_to_string(BRIDGE_NF) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => {
            if let Err(e) = std::fs::write(BRIDGE_NF, "1") {
                tracing::warn!(error = %e, "cannot set {BRIDGE_NF} to 1: NetworkPolicies do not filter traffic between pods of this node");
            }
        }
        Err(_) => tracing::warn!(
            "the br_netfilter module is not loaded and cannot be (modprobe br_netfilter): NetworkPolicies do not filter traffic between pods of this node"
        ),
    }
}

/// Runs until the agent stops.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    bridge_netfilter();
    let (policies, pol_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let (namespaces, ns_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let client = ctx.client.clone();
    let pol_events = berth_watch::reflect_all::<NetworkPolicy>(client.clone(), pol_writer)
        .map(|e| (0usize, e))
        .boxed();
    let pod_events = berth_watch::reflect_all::<Pod>(client.clone(), pod_writer)
        .map(|e| (1usize, e))
        .boxed();
    let ns_events = berth_watch::reflect_all::<Namespace>(client.clone(), ns_writer)
        .map(|e| (2usize, e))
        .boxed();
    let node_events = berth_watch::reflect_all::<Node>(client, node_writer)
        .map(|e| (3usize, e))
        .boxed();
    let mut events =
        futures_util::stream::select_all([pol_events, pod_events, ns_events, node_events])
            .ready_chunks(1024);
    let mut listed_all = [false; 4];
    let enforcer = Arc::new(std::sync::Mutex::new(Enforcer::default()));
    let mut last: Option<Wanted> = None;
    let mut backoff = crate::backoff::Backoff::default();
    // An empty batch: a retry of a failed sync.
    while let Some(batch) = backoff.next(&mut events).await {
        for (which, listed) in batch.iter().flatten() {
            if *listed {
                listed_all[*which] = true;
            }
        }
        // Until all are listed, a pod would be judged without its policies.
        if !listed_all.iter().all(|l| *l) {
            continue;
        }
        let wanted = resolve::wanted(&resolve::View {
            policies: &policies.state(),
            pods: &pods.state(),
            namespaces: &namespaces.state(),
            nodes: &nodes.state(),
            node: &ctx.cfg.node_name,
        });
        if last.as_ref() == Some(&wanted) {
            continue;
        }
        let (enf, w) = (enforcer.clone(), wanted.clone());
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            enf.lock().unwrap_or_else(|e| e.into_inner()).sync(&w)
        })
        .await;
        match r {
            Ok(Ok(stats)) => {
                tracing::debug!(lines = stats.lines, full = stats.full, took = ?started.elapsed(), "network policies programmed");
                last = Some(wanted);
                backoff.succeeded();
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "programming network policies failed; writing them all again shortly");
                last = None;
                backoff.failed();
            }
            Err(e) => {
                tracing::warn!(error = %e, "programming network policies panicked");
                last = None;
                backoff.failed();
            }
        }
    }
}
