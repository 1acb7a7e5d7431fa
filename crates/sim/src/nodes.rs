//! The simulated Nodes and their Leases.

use std::net::Ipv4Addr;
use std::sync::Arc;

use futures_util::{stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::{Error, SimConfig, LEASE_RENEW};

/// The label every simulated node carries (`true`).
pub const SIM_LABEL: &str = "sim.berth.dev/node";
/// The most nodes: one /24 of 10.128.0.0/9 each for their pods' addresses.
pub const MAX_NODES: usize = 32768;
/// Requests in flight at once while registering, renewing and removing.
const PARALLEL: usize = 32;
/// The namespace of node Leases.
const LEASE_NS: &str = "kube-node-lease";

/// Node `i`'s address (its InternalIP, its pods' hostIP): 100.64.0.0/10, shared
/// address space that no real network here uses.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i as u32 + 1)
}

/// Node `i`'s pod CIDR's first three octets: 10.128.0.0/9 in /24s.
pub fn pod_net(i: usize) -> [u8; 3] {
    let n = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + ((i as u32) << 8);
    let o = n.to_be_bytes();
    [o[0], o[1], o[2]]
}

fn node_object(cfg: &SimConfig, i: usize) -> Value {
    let name = cfg.node_name(i);
    let mut labels = json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "berth-sim",
        SIM_LABEL: "true",
    });
    if cfg.zones > 0 {
        labels["topology.kubernetes.io/zone"] = json!(format!("zone-{}", i % cfg.zones));
    }
    for (k, v) in &cfg.labels {
        labels[k] = json!(v);
    }
    let [a, b, c] = pod_net(i);
    let cidr = format!("{a}.{b}.{c}.0/24");
    let now = jiff::Timestamp::now().to_string();
    let cond = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let resources = json!({
        "cpu": cfg.cpu, "memory": cfg.memory, "pods": cfg.pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "simulated"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "simulated"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "simulated"),
                cond("Ready", "True", "KubeletReady", "a simulated node (berth sim): nothing runs here"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": node_ip(i).to_string()},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "", "osImage": "berth simulated node",
                "containerRuntimeVersion": "sim://0",
                "kubeletVersion": "v1.32.0+berth-sim", "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    })
}

fn api_err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::Api(what, Box::new(e))
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Registers node `i` (or takes over a simulated node of that name left by an earlier
/// run) and its Lease.
async fn register(client: &kube::Client, cfg: &SimConfig, i: usize) -> Result<(), Error> {
    let name = cfg.node_name(i);
    let nodes: Api<Node> = Api::all(client.clone());
    let obj = node_object(cfg, i);
    let node: Node = serde_json::from_value(obj.clone()).expect("a valid Node");
    let created = match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        Err(e) if is_status(&e, 409) => {
            let old = nodes
                .get(&name)
                .await
                .map_err(api_err(format!("reading node {name}")))?;
            let ours = old
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get(SIM_LABEL).is_some_and(|v| v == "true"));
            if !ours {
                return Err(Error::Config(format!(
                    "node {name} exists and is not a simulated node: choose another --prefix"
                )));
            }
            old
        }
        Err(e) => return Err(api_err(format!("registering node {name}"))(e)),
    };
    // The status as the kubelet reports it (a create may have dropped it; an earlier
    // run's is stale).
    let status = json!({"status": obj["status"]});
    nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(api_err(format!("reporting node {name}'s status")))?;
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NS,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                 "uid": created.metadata.uid.unwrap_or_default()}],
        },
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": now_micro()},
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    let l: Lease = serde_json::from_value(lease).expect("a valid Lease");
    match leases.create(&PostParams::default(), &l).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => renew(client, &name).await,
        Err(e) => Err(api_err(format!("creating node {name}'s lease"))(e)),
    }
}

/// A Lease's renewTime: RFC 3339 with microseconds, as MicroTime is written.
fn now_micro() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Microsecond)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

async fn renew(client: &kube::Client, name: &str) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    let patch = json!({"spec": {"holderIdentity": name, "renewTime": now_micro()}});
    leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(api_err(format!("renewing node {name}'s lease")))
}

/// Registers every node, a few at a time; the first failure stops it.
pub async fn register_all(client: &kube::Client, cfg: &Arc<SimConfig>) -> Result<(), Error> {
    let mut results = stream::iter(0..cfg.count)
        .map(|i| async move { register(client, cfg, i).await })
        .buffer_unordered(PARALLEL);
    let mut done = 0usize;
    while let Some(r) = results.next().await {
        r?;
        done += 1;
        if done % 1000 == 0 {
            tracing::info!(done, of = cfg.count, "registering simulated nodes");
        }
    }
    Ok(())
}

/// Renews every node's Lease every [`LEASE_RENEW`], spread over the period.
pub async fn renew_leases(client: kube::Client, cfg: Arc<SimConfig>) {
    let mut tick = tokio::time::interval(LEASE_RENEW);
    tick.tick().await; // the first tick is now: the leases were just made
    loop {
        tick.tick().await;
        let client = &client;
        let failed = stream::iter(0..cfg.count)
            .map(|i| {
                let name = cfg.node_name(i);
                async move { renew(client, &name).await.err() }
            })
            .buffer_unordered(PARALLEL)
            .filter_map(|e| async move { e })
            .collect::<Vec<_>>()
            .await;
        if let Some(e) = failed.first() {
            tracing::warn!(failed = failed.len(), error = %e, "renewing simulated nodes' leases");
        }
    }
}

/// Removes every node and its Lease (whatever is already gone is fine).
pub async fn remove_all(client: &kube::Client, cfg: &Arc<SimConfig>) {
    stream::iter(0..cfg.count)
        .map(|i| async move {
            let name = cfg.node_name(i);
            let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
            let nodes: Api<Node> = Api::all(client.clone());
            for r in [
                leases.delete(&name, &DeleteParams::default()).await.err(),
                nodes.delete(&name, &DeleteParams::default()).await.err(),
            ]
            .into_iter()
            .flatten()
            {
                if !is_status(&r, 404) {
                    tracing::warn!(node = %name, error = %r, "removing a simulated node");
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_per_node() {
        assert_eq!(node_ip(0), Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(node_ip(255), Ipv4Addr::new(100, 64, 1, 0));
        assert_eq!(pod_net(0), [10, 128, 0]);
        assert_eq!(pod_net(257), [10, 129, 1]);
        assert_eq!(pod_net(MAX_NODES - 1), [10, 255, 255]);
    }

    #[test]
    fn a_node_object_is_a_valid_ready_node() {
        let cfg = SimConfig {
            count: 2,
            labels: [("zone".to_string(), "a".to_string())].into(),
            ..Default::default()
        };
        let n: Node = serde_json::from_value(node_object(&cfg, 1)).unwrap();
        let labels = n.metadata.labels.unwrap();
        assert_eq!(labels["zone"], "a");
        assert_eq!(labels[SIM_LABEL], "true");
        let status = n.status.unwrap();
        assert_eq!(status.capacity.unwrap()["pods"].0, "110");
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }
}
