//! Node IPAM, as kube-controller-manager's range allocator (`--allocate-node-cidrs`
//! with `--cluster-cidr` and `--node-cidr-mask-size`): every Node without a pod CIDR
//! gets the first block of the cluster CIDR no other Node holds. A pod CIDR a Node
//! already has (given to its agent with `--pod-cidr`, or by an earlier allocation) is
//! kept and counted as taken; a node's CIDR is free again once the Node is deleted.
//! When the range is used up the Node gets a `CIDRNotAvailable` event, as kube writes
//! it, and is tried again every 30 s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_events::EventType;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::informer::{itself, Change};
use crate::{Error, Shared};

/// The cluster's pod address range and the size of each node's share of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// The cluster CIDR (k3s's default: 10.42.0.0/16).
    pub cluster: Cidr,
    /// The prefix length of one node's block (24: 254 pods a node).
    pub node_prefix: u8,
}

/// A node block or the cluster range.
pub type Cidr = ipnet::Ipv4Net;

/// Whether the two share an address.
pub fn overlaps(a: &Cidr, b: &Cidr) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Parses `A.B.C.D/N` with its host bits clear (`10.42.0.0/16`, not `10.42.0.1/16`):
/// what `--cluster-cidr` takes.
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let c: Cidr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 CIDR (A.B.C.D/N)"))?;
    if c.trunc() != c {
        return Err(format!(
            "{s:?} has host bits set: did you mean {}?",
            c.trunc()
        ));
    }
    Ok(c)
}

impl Range {
    /// The range, checked: a node's block must fit in the cluster CIDR and hold a few
    /// addresses (prefix 30 at most).
    pub fn new(cluster: Cidr, node_prefix: u8) -> Result<Range, String> {
        if node_prefix < cluster.prefix_len() || node_prefix > 30 {
            return Err(format!(
                "--node-cidr-mask-size {node_prefix} does not fit --cluster-cidr {cluster}: give {} to 30",
                cluster.prefix_len()
            ));
        }
        Ok(Range {
            cluster,
            node_prefix,
        })
    }

    /// The first node block that overlaps none of `taken`.
    pub fn first_free<'a>(&self, taken: impl Iterator<Item = &'a Cidr> + Clone) -> Option<Cidr> {
        self.cluster
            .subnets(self.node_prefix)
            .ok()?
            .find(|c| !taken.clone().any(|t| overlaps(t, c)))
    }
}

/// The pod CIDRs a Node holds (IPv4 ones; others are not this allocator's).
fn node_cidrs(n: &Node) -> Vec<Cidr> {
    let Some(spec) = &n.spec else {
        return Vec::new();
    };
    spec.pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .filter_map(|c| c.parse().ok())
        .collect()
}

struct Ctx {
    client: kube::Client,
    nodes: Store<Node>,
    range: Range,
    recorder: berth_events::Recorder,
    /// Blocks given and not yet seen in the cache, by node name; one allocation at a
    /// time, so two nodes never get one block.
    given: tokio::sync::Mutex<HashMap<String, Cidr>>,
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared, range: Range) -> impl std::future::Future<Output = ()> + Send {
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::NODE),
        nodes: shared.nodes.store(),
        range,
        recorder: shared.recorder("node-ipam-controller", berth_pods::identities::NODE),
        given: Default::default(),
    });
    let forget = ctx.clone();
    shared.nodes.on(move |c| {
        if let Change::Deleted(n) = c {
            let name = n.metadata.name.clone().unwrap_or_default();
            if let Ok(mut g) = forget.given.try_lock() {
                g.remove(&name);
            } else {
                // Held by an allocation: forget it once that ends.
                let forget = forget.clone();
                tokio::spawn(async move {
                    forget.given.lock().await.remove(&name);
                });
            }
        }
    });
    // A node that goes frees its block for the nodes still waiting for one.
    let store = shared.nodes.store();
    let freed = shared.nodes.trigger(move |c: &Change<'_, Node>| match c {
        Change::Deleted(_) => store
            .state()
            .iter()
            .filter(|n| node_cidrs(n).is_empty())
            .map(|n| ObjectRef::from_obj(n.as_ref()))
            .collect(),
        Change::Applied { .. } => Vec::new(),
    });
    crate::drive(
        "nodeipam",
        shared.nodes.store(),
        futures_util::stream::select(shared.nodes.trigger(itself), freed),
        reconcile,
        ctx,
    )
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !node_cidrs(&node).is_empty() || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut given = ctx.given.lock().await;
    // The cache may be behind our own write: the block we gave is the node's.
    let cidr = match given.get(&name) {
        Some(c) => *c,
        None => {
            let nodes = ctx.nodes.state();
            let taken: Vec<Cidr> = nodes
                .iter()
                .flat_map(|n| node_cidrs(n))
                .chain(given.values().copied())
                .collect();
            match ctx.range.first_free(taken.iter()) {
                Some(c) => c,
                None => {
                    ctx.recorder.about(
                        node.as_ref(),
                        EventType::Normal,
                        "CIDRNotAvailable",
                        &format!("Node {name} status is now: CIDRNotAvailable"),
                    );
                    tracing::warn!(node = %name, cluster_cidr = %ctx.range.cluster, "no pod CIDR left for the node");
                    return Ok(Action::requeue(Duration::from_secs(30)));
                }
            }
        }
    };
    let patch = serde_json::json!({
        "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}
    });
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
        Err(e) => return Err(e.into()),
    }
    given.insert(name.clone(), cidr);
    tracing::info!(node = %name, pod_cidr = %cidr, "pod CIDR assigned");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn blocks_are_given_in_order_around_the_taken_ones() {
        let r = Range::new(c("10.42.0.0/16"), 24).unwrap();
        assert_eq!(r.first_free([].iter()), Some(c("10.42.0.0/24")));
        let taken = [c("10.42.0.0/24"), c("10.42.2.0/24")];
        assert_eq!(r.first_free(taken.iter()), Some(c("10.42.1.0/24")));
        // A wider block held by a node covers several.
        let taken = [c("10.42.0.0/23"), c("10.42.2.0/24")];
        assert_eq!(r.first_free(taken.iter()), Some(c("10.42.3.0/24")));
        // Outside the range: no matter.
        let taken = [c("100.64.0.0/24")];
        assert_eq!(r.first_free(taken.iter()), Some(c("10.42.0.0/24")));
    }

    #[test]
    fn a_used_up_range_gives_nothing() {
        let r = Range::new(c("10.42.0.0/23"), 24).unwrap();
        let taken = [c("10.42.0.0/24"), c("10.42.1.0/24")];
        assert_eq!(r.first_free(taken.iter()), None);
        let r = Range::new(c("10.42.0.0/24"), 24).unwrap();
        assert_eq!(r.first_free([c("10.42.0.0/16")].iter()), None);
    }

    #[test]
    fn bad_ranges_say_what_to_give() {
        assert!(Range::new(c("10.42.0.0/16"), 8)
            .unwrap_err()
            .contains("give 16 to 30"));
        assert!(Range::new(c("10.42.0.0/16"), 31).is_err());
        assert_eq!(
            parse_cidr("10.42.0.1/16").unwrap_err(),
            "\"10.42.0.1/16\" has host bits set: did you mean 10.42.0.0/16?"
        );
        assert!(parse_cidr("10.42.0.0").is_err());
        assert!(parse_cidr("10.42.0.0/33").is_err());
        assert!(parse_cidr("fd00::/64").is_err());
    }
}
