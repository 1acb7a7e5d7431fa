//! The node's registration and heartbeats, as the kubelet keeps them: the Node object
//! (capacity and allocatable, addresses, nodeInfo, the Ready and pressure conditions,
//! the images it holds), its Lease in kube-node-lease renewed every 10 s, and its
//! status posted when a condition changes or a minute has passed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_engine::cri::{ImageService, RuntimeService};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::error::{is_conflict, ApiContext, Result};
use crate::hostinfo;
use crate::Ctx;

/// The Kubernetes version the agent reports (`kubectl get nodes`' VERSION).
pub const KUBELET_VERSION: &str = "v1.32.0+berth";
/// How long a Lease holds without renewal (the kubelet's 40 s).
const LEASE_SECONDS: i32 = 40;
/// How often the Lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often the status is posted even when nothing changed.
const STATUS_REPORT: Duration = Duration::from_secs(60);

fn quantity_ki(bytes: u64) -> Quantity {
    Quantity(format!("{}Ki", bytes / 1024))
}

/// The Node's status as read from the host now.
async fn status(ctx: &Ctx, old: Option<&NodeStatus>) -> NodeStatus {
    let cfg = &ctx.cfg;
    let mem = hostinfo::meminfo("MemTotal").unwrap_or(0);
    let (disk, _) = hostinfo::disk(&cfg.engine_root).unwrap_or((0, 0));
    let (pid_max, pids_now) = hostinfo::pids();
    let cpus = hostinfo::cpus();
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(cpus.to_string()));
    capacity.insert("memory".to_string(), quantity_ki(mem));
    capacity.insert("pods".to_string(), Quantity(cfg.max_pods.to_string()));
    capacity.insert("ephemeral-storage".to_string(), quantity_ki(disk));
    capacity.insert("hugepages-2Mi".to_string(), Quantity("0".into()));
    capacity.insert("hugepages-1Gi".to_string(), Quantity("0".into()));
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".to_string(),
        quantity_ki(mem.saturating_sub(cfg.eviction_hard.reserved_memory(mem))),
    );
    allocatable.insert(
        "ephemeral-storage".to_string(),
        Quantity(format!(
            "{}",
            disk.saturating_sub(cfg.eviction_hard.reserved_disk(disk))
        )),
    );
    // Device plugins' resources: every device is capacity, the healthy ones are
    // allocatable (a resource whose plugin is gone past its grace reports 0).
    for (resource, (all, healthy)) in ctx.devices.counts() {
        capacity.insert(resource.clone(), Quantity(all.to_string()));
        allocatable.insert(resource, Quantity(healthy.to_string()));
    }
    let now = Time(jiff::Timestamp::now());
    let cond =
        |kind: &str, bad: bool, good_reason: &str, bad_reason: &str, good: &str, badm: &str| {
            let status = if bad { "True" } else { "False" };
            let prev = old
                .and_then(|o| o.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == kind && c.status == status))
                .and_then(|c| c.last_transition_time.clone());
            NodeCondition {
                type_: kind.into(),
                status: status.into(),
                reason: Some(if bad { bad_reason } else { good_reason }.into()),
                message: Some(if bad { badm } else { good }.into()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(prev.unwrap_or_else(|| now.clone())),
            }
        };
    let memory_pressure = crate::eviction::memory_pressure(ctx);
    let disk_pressure = crate::eviction::disk_pressure(ctx);
    let pid_pressure = pids_now * 100 > pid_max * 90;
    let not_ready: Vec<String> = ctx
        .core
        .status()
        .into_iter()
        .filter(|c| !c.status)
        .map(|c| format!("{}: {}", c.reason, c.message))
        .chain(ctx.pod_cidr.not_ready())
        .collect();
    let runtime_ok = not_ready.is_empty();
    let ready_prev = old
        .and_then(|o| o.conditions.as_ref())
        .and_then(|cs| {
            cs.iter().find(|c| {
                c.type_ == "Ready" && c.status == if runtime_ok { "True" } else { "False" }
            })
        })
        .and_then(|c| c.last_transition_time.clone());
    let conditions = vec![
        cond(
            "MemoryPressure",
            memory_pressure,
            "KubeletHasSufficientMemory",
            "KubeletHasInsufficientMemory",
            "kubelet has sufficient memory available",
            "kubelet has insufficient memory available",
        ),
        cond(
            "DiskPressure",
            disk_pressure,
            "KubeletHasNoDiskPressure",
            "KubeletHasDiskPressure",
            "kubelet has no disk pressure",
            "kubelet has disk pressure",
        ),
        cond(
            "PIDPressure",
            pid_pressure,
            "KubeletHasSufficientPID",
            "KubeletHasInsufficientPID",
            "kubelet has sufficient PID available",
            "kubelet has insufficient PID available",
        ),
        NodeCondition {
            type_: "Ready".into(),
            status: if runtime_ok { "True" } else { "False" }.into(),
            reason: Some(
                if runtime_ok {
                    "KubeletReady"
                } else {
                    "KubeletNotReady"
                }
                .into(),
            ),
            message: Some(if runtime_ok {
                "kubelet is posting ready status".into()
            } else {
                format!("container runtime is not ready: {}", not_ready.join("; "))
            }),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(ready_prev.unwrap_or(now)),
        },
    ];
    let images = ctx
        .engine(|core| core.list_images(None))
        .await
        .unwrap_or_default();
    let mut images: Vec<ContainerImage> = images
        .into_iter()
        .map(|i| ContainerImage {
            names: Some(
                i.repo_digests
                    .iter()
                    .chain(i.repo_tags.iter())
                    .cloned()
                    .collect(),
            ),
            size_bytes: Some(i.size as i64),
        })
        .collect();
    images.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
    images.truncate(50);
    let system_uuid = std::fs::read_to_string("/sys/class/dmi/id/product_uuid")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| hostinfo::machine_id());
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: ctx.kubelet_port as i32,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            machine_id: hostinfo::machine_id(),
            system_uuid,
            boot_id: hostinfo::boot_id(),
            kernel_version: hostinfo::kernel_version(),
            os_image: hostinfo::os_image(),
            container_runtime_version: format!("berth://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            operating_system: "linux".into(),
            architecture: hostinfo::architecture().into(),
        }),
        images: Some(images),
        ..Default::default()
    }
}

fn labels(ctx: &Ctx) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (
            "kubernetes.io/hostname".to_string(),
            ctx.cfg.node_name.clone(),
        ),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            hostinfo::architecture().to_string(),
        ),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "beta.kubernetes.io/arch".to_string(),
            hostinfo::architecture().to_string(),
        ),
    ]);
    if ctx.cfg.ingress.is_some() {
        l.insert(
            berth_pods::services::INGRESS_PROXY_NODE_LABEL.to_string(),
            "true".to_string(),
        );
    }
    l
}

/// Creates the Node (or takes over the one of this name) and posts its status.
pub(crate) async fn register(ctx: &Ctx) -> Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let name = &ctx.cfg.node_name;
    let existing = api.get_opt(name).await.api(|| format!("get node {name}"))?;
    let node = match existing {
        Some(n) => {
            let mut patch = serde_json::json!({"metadata": {"labels": labels(ctx)}});
            if let Some(cidr) = &ctx.cfg.pod_cidr {
                patch["spec"] = serde_json::json!({"podCIDR": cidr, "podCIDRs": [cidr]});
            }
            let n2 = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .api(|| format!("update node {name}"))?;
            let _ = n;
            n2
        }
        None => {
            let n = Node {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(labels(ctx)),
                    ..Default::default()
                },
                spec: Some(NodeSpec {
                    pod_cidr: ctx.cfg.pod_cidr.clone(),
                    pod_cidrs: ctx.cfg.pod_cidr.clone().map(|c| vec![c]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &n).await {
                Ok(n) => n,
                Err(e) if is_conflict(&e) => {
                    api.get(name).await.api(|| format!("get node {name}"))?
                }
                Err(e) => return Err(e).api(|| format!("create node {name}")),
            }
        }
    };
    post_status(ctx, node.status.as_ref()).await?;
    renew_lease(ctx, &node).await
}

async fn post_status(ctx: &Ctx, old: Option<&NodeStatus>) -> Result<NodeStatus> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let st = status(ctx, old).await;
    let patch = serde_json::json!({"status": st});
    api.patch_status(
        &ctx.cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .api(|| format!("update status of node {}", ctx.cfg.node_name))?;
    Ok(st)
}

async fn renew_lease(ctx: &Ctx, node: &Node) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let name = &ctx.cfg.node_name;
    let now = MicroTime(jiff::Timestamp::now());
    match api
        .get_opt(name)
        .await
        .api(|| format!("get lease {name}"))?
    {
        Some(mut l) => {
            let spec = l.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some(name.clone());
            spec.lease_duration_seconds = Some(LEASE_SECONDS);
            spec.renew_time = Some(now);
            api.replace(name, &PostParams::default(), &l)
                .await
                .api(|| format!("renew lease kube-node-lease/{name}"))?;
        }
        None => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.clone(),
                        uid: node.metadata.uid.clone().unwrap_or_default(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &l)
                .await
                .api(|| format!("create lease kube-node-lease/{name}"))?;
        }
    }
    Ok(())
}

fn conditions_key(s: &NodeStatus) -> Vec<(String, String)> {
    s.conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect()
}

/// Registers the Node (again and again until the API server answers), then renews
/// the Lease every 10 s and posts the status on a change or every minute,
/// until aborted. A failure is logged and tried again at the next tick.
pub(crate) async fn heartbeat(ctx: Arc<Ctx>) {
    let mut wait = Duration::from_millis(200);
    while let Err(e) = register(&ctx).await {
        tracing::warn!(error = %e, "registering the node failed; retrying");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
    tracing::info!(node = %ctx.cfg.node_name, "node registered");
    let api: Api<Node> = Api::all(ctx.client.clone());
    // When the status was last posted, and its conditions then.
    let mut last_posted: Option<(Instant, Vec<(String, String)>)> = None;
    let mut tick = tokio::time::interval(LEASE_RENEW);
    tick.tick().await;
    loop {
        let devices_changed = tokio::select! {
            _ = tick.tick() => false,
            _ = ctx.devices.changed() => true,
        };
        if devices_changed {
            // A plugin's devices came, went or changed health: the scheduler sees it
            // now rather than at the next heartbeat.
            let old = api.get_opt(&ctx.cfg.node_name).await.ok().flatten();
            if let Some(n) = old {
                match post_status(&ctx, n.status.as_ref()).await {
                    Ok(st) => last_posted = Some((Instant::now(), conditions_key(&st))),
                    Err(e) => tracing::warn!(error = %e, "posting the node status failed"),
                }
            }
            continue;
        }
        let node = match api.get_opt(&ctx.cfg.node_name).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                // Deleted behind the agent's back: register again, as the kubelet does.
                if let Err(e) = register(&ctx).await {
                    tracing::warn!(error = %e, "registering the node again failed");
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the node failed");
                continue;
            }
        };
        if let Err(e) = renew_lease(&ctx, &node).await {
            tracing::warn!(error = %e, "renewing the node lease failed");
        }
        let fresh = status(&ctx, node.status.as_ref()).await;
        let due = match &last_posted {
            None => true,
            Some((at, key)) => at.elapsed() >= STATUS_REPORT || *key != conditions_key(&fresh),
        };
        if due {
            match post_status(&ctx, node.status.as_ref()).await {
                Ok(st) => last_posted = Some((Instant::now(), conditions_key(&st))),
                Err(e) => tracing::warn!(error = %e, "posting the node status failed"),
            }
        }
    }
}
