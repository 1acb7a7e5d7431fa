//! The node's share of cluster DNS: the node's loopback interface holding the kube-dns
//! address (`--cluster-dns`, 10.96.0.10), so the pods' name server is this node itself, and
//! berth-dns answering there from the Services and EndpointSlices the proxy watches
//! (the zone is rebuilt on each change), forwarding other names to the node's
//! resolvers (`--resolv-conf`). The kube-dns Service carries `service.kubernetes.io/service-proxy-name`,
//! so the proxy leaves its address to this server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use berth_dns::forward::{nameservers, Forwarder};
use berth_dns::Shared;

use crate::Ctx;

/// Starts the server on the node's cluster DNS address; None (logged) when the node
/// serves no DNS or the address cannot be taken.
pub(crate) async fn start(ctx: &Arc<Ctx>) -> Option<Arc<Shared>> {
    let IpAddr::V4(ip) = ctx.cfg.cluster_dns? else {
        tracing::warn!("cluster DNS on an IPv6 address is not served");
        return None;
    };
    let linked = tokio::task::spawn_blocking(move || {
        berth_net::link::run(
            move |h| async move { berth_net::link::ensure_local_address(&h, ip).await },
        )
    })
    .await;
    match linked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "no cluster DNS: the address cannot be taken");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "no cluster DNS: setting its address panicked");
            return None;
        }
    }
    let path = &ctx.cfg.resolv_conf;
    let conf = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cluster DNS: the resolver configuration cannot be read (--resolv-conf); names outside the cluster will fail");
            String::new()
        }
    };
    let upstreams = nameservers(&conf, false);
    if upstreams.is_empty() {
        tracing::warn!(path = %path.display(), "cluster DNS: the resolver configuration names no resolver reachable from the node's network (--resolv-conf); names outside the cluster will fail");
    }
    let shared = Shared::new(&ctx.cfg.cluster_domain, Forwarder::new(upstreams));
    let addr = SocketAddr::new(IpAddr::V4(ip), 53);
    let serving = shared.clone();
    tokio::spawn(async move {
        if let Err(e) = berth_dns::server::serve(addr, serving).await {
            tracing::warn!(%addr, error = %e, "cluster DNS stopped");
        }
    });
    tracing::info!(%addr, "cluster DNS serving");
    Some(shared)
}
