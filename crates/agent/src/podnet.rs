//! The node's pod network, kept in step with the Node objects: this node's pod CIDR
//! (given with `--pod-cidr`, else the one node IPAM writes into its Node, as the
//! kubelet and flannel take it) handed to the engine, and the routes to the other
//! nodes' pods ([`berth_net::overlay`]) following every Node that comes, changes or
//! goes. Pods other than hostNetwork ones wait for the CIDR; the node reports
//! NetworkReady=false until then.
//!
//! Each node publishes what the others need to reach it on its Node object, as
//! flannel's annotations do: [`VTEP_MAC`] and [`BACKEND`].

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;

use berth_net::overlay::{self, Backend, Local, Peer};

use crate::{AgentConfig, Ctx};

/// The annotation holding a node's VXLAN device MAC.
pub const VTEP_MAC: &str = "berth.dev/vtep-mac";
/// The annotation naming a node's backend (vxlan, host-gw).
pub const BACKEND: &str = "berth.dev/backend";

/// How often the routes are checked against the Nodes even when nothing changed
/// (someone may have removed a route by hand).
const RESYNC: Duration = Duration::from_secs(60);

/// The pod CIDR this node uses, once known (shared by the workers and the status).
#[derive(Clone)]
pub struct PodCidr(Arc<tokio::sync::watch::Sender<Option<String>>>);

impl PodCidr {
    /// Known from the start (`--pod-cidr`), or not yet.
    pub fn new(given: Option<String>) -> PodCidr {
        PodCidr(Arc::new(tokio::sync::watch::Sender::new(given)))
    }

    /// The CIDR, if known.
    pub fn get(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    fn set(&self, cidr: String) {
        self.0.send_replace(Some(cidr));
    }

    /// Why pods cannot be wired yet, kubelet's wording; None once they can.
    pub fn not_ready(&self) -> Option<String> {
        self.get().is_none().then(|| {
            "network is not ready: container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:the node has no pod CIDR yet (the controller manager assigns one; or give the agent --pod-cidr)".to_string()
        })
    }
}

/// The overlay this node runs, if any: none with `--flannel-backend none`, nor for a
/// node on a loopback or IPv6 address (nothing to tunnel to).
fn overlay_of(cfg: &AgentConfig) -> Option<(Backend, Ipv4Addr)> {
    let backend = cfg.overlay?;
    match cfg.node_ip {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some((backend, ip)),
        _ => None,
    }
}

/// The MTU pods get with the node's overlay: the uplink's (the interface holding the
/// node IP; 1500 if none does) less the overlay's headers. None without an overlay.
pub(crate) async fn pod_mtu(cfg: &AgentConfig) -> Option<u32> {
    let (backend, ip) = overlay_of(cfg)?;
    let uplink = tokio::task::spawn_blocking(move || overlay::mtu_of_address(ip))
        .await
        .ok()
        .flatten()
        .unwrap_or(1500);
    Some(overlay::pod_mtu(backend, uplink))
}

/// Runs until the agent stops.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let overlay = overlay_of(&ctx.cfg);
    if overlay.is_none() && ctx.cfg.overlay.is_some() {
        tracing::info!(node_ip = %ctx.cfg.node_ip, "no overlay for a node on a loopback or IPv6 address");
    }
    let (store, writer) = reflector::store();
    let events = reflector(
        writer,
        watcher(
            Api::<Node>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .backoff(berth_watch::backoff())
    .boxed();
    let mut events = events.ready_chunks(256);
    let mut resync = tokio::time::interval(RESYNC);
    let mut synced: Option<Vec<Peer>> = None;
    let mut published = false;
    // The store holds every Node once the first list is done (acting before would take
    // nodes not yet listed for gone).
    let mut listed = false;
    loop {
        tokio::select! {
            batch = events.next() => {
                let Some(batch) = batch else { return };
                listed |= batch.iter().any(|e| matches!(e, Ok(watcher::Event::InitDone)));
            }
            _ = resync.tick() => synced = None,
        }
        if !listed {
            continue;
        }
        adopt_cidr(&ctx, &store).await;
        let Some((backend, node_ip)) = overlay else {
            continue;
        };
        let Some(own) = ctx.pod_cidr.get().and_then(|c| c.parse().ok()) else {
            continue;
        };
        if !published || !annotated(&ctx, &store, backend) {
            published = publish(&ctx, backend).await;
        }
        let peers = peers(&ctx, &store);
        if synced.as_ref() == Some(&peers) {
            continue;
        }
        let local = Local {
            node_ip,
            pod_cidr: own,
            vtep_mac: overlay::vtep_mac(&ctx.cfg.node_name),
        };
        let mtu = ctx.pod_mtu.unwrap_or(overlay::pod_mtu(backend, 1500));
        let p = peers.clone();
        let r = tokio::task::spawn_blocking(move || overlay::sync(backend, &local, &p, mtu)).await;
        match r {
            Ok(Ok(())) => {
                tracing::info!(
                    peers = peers.len(),
                    ?backend,
                    "routes to other nodes' pods in place"
                );
                synced = Some(peers);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "programming the routes to other nodes failed; trying again")
            }
            Err(e) => tracing::warn!(error = %e, "programming the routes to other nodes panicked"),
        }
    }
}

/// Takes the pod CIDR node IPAM gave this node, when the agent was given none.
async fn adopt_cidr(ctx: &Arc<Ctx>, store: &Store<Node>) {
    if ctx.cfg.pod_cidr.is_some() {
        return;
    }
    let own = store
        .get(&reflector::ObjectRef::new(&ctx.cfg.node_name))
        .and_then(|n| n.spec.as_ref()?.pod_cidr.clone());
    let Some(cidr) = own else { return };
    if ctx.pod_cidr.get().as_deref() == Some(cidr.as_str()) {
        return;
    }
    let c = cidr.clone();
    let mtu = ctx.pod_mtu;
    let applied = ctx
        .engine(move |core| {
            core.set_pod_network(&c, mtu)?;
            core.ensure_pod_network()
        })
        .await;
    match applied {
        Ok(()) => {
            tracing::info!(pod_cidr = %cidr, "the node's pod CIDR, from its Node");
            ctx.pod_cidr.set(cidr);
            ctx.hub.wake_all();
        }
        Err(e) => {
            tracing::warn!(pod_cidr = %cidr, error = %e, "the node's pod CIDR cannot be used")
        }
    }
}

/// Whether this node's Node carries its annotations.
fn annotated(ctx: &Ctx, store: &Store<Node>, backend: Backend) -> bool {
    let Some(n) = store.get(&reflector::ObjectRef::new(&ctx.cfg.node_name)) else {
        return false;
    };
    let a = n.metadata.annotations.as_ref();
    let get = |k: &str| a.and_then(|a| a.get(k)).cloned();
    get(VTEP_MAC) == Some(overlay::format_mac(&overlay::vtep_mac(&ctx.cfg.node_name)))
        && get(BACKEND).as_deref() == Some(backend_name(backend))
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Vxlan => "vxlan",
        Backend::HostGw => "host-gw",
    }
}

/// Writes this node's annotations; whether that worked.
async fn publish(ctx: &Ctx, backend: Backend) -> bool {
    let patch = serde_json::json!({"metadata": {"annotations": {
        VTEP_MAC: overlay::format_mac(&overlay::vtep_mac(&ctx.cfg.node_name)),
        BACKEND: backend_name(backend),
    }}});
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api
        .patch(
            &ctx.cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "annotating the node failed (not registered yet?)");
            false
        }
    }
}

/// The other nodes with a pod CIDR and an IPv4 InternalIP, sorted.
fn peers(ctx: &Ctx, store: &Store<Node>) -> Vec<Peer> {
    let mut out: Vec<Peer> = store
        .state()
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(ctx.cfg.node_name.as_str()))
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| peer_of(n))
        .collect();
    out.sort();
    out
}

/// What the overlay needs of a Node, if it has it.
pub fn peer_of(n: &Node) -> Option<Peer> {
    let pod_cidr = n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()?;
    let node_ip = n
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())?;
    let vtep_mac = n
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VTEP_MAC))
        .and_then(|m| overlay::parse_mac(m));
    Some(Peer {
        name: n.metadata.name.clone()?,
        node_ip,
        pod_cidr,
        vtep_mac,
    })
}
