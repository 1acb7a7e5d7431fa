//! The node's Ingress proxy ([`berth_ingress`]), run by the agent on the node's ports
//! 80 and 443 as k3s runs Traefik on every node: Ingresses and EndpointSlices watched,
//! Services and TLS Secrets read from the agent's caches, the proxy's routes swapped
//! after each burst of changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::reflector;

use berth_ingress::{Endpoints, Proxy, Routes, Snapshot, TlsSecret};

use crate::Ctx;

/// The ports the proxy listens on (`--ingress-http-port`, `--ingress-https-port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// Plain HTTP.
    pub http: u16,
    /// HTTPS.
    pub https: u16,
}

async fn bind(port: u16, what: &str) -> Option<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, port, "the Ingress proxy cannot listen for {what}: it serves no {what} on this node (choose another port with --ingress-{what}-port, or --disable-ingress)");
            None
        }
    }
}

/// Runs until the agent stops.
pub(crate) async fn run(ctx: Arc<Ctx>, ports: Ports) {
    let secrets = ctx.caches.secrets.clone();
    let proxy = Proxy::new(
        Box::new(move |ns, name| {
            let s = secrets.get(ns, name).flatten()?;
            let data = s.data.as_ref()?;
            Some(TlsSecret {
                version: s.metadata.resource_version.clone().unwrap_or_default(),
                cert_pem: data.get("tls.crt")?.0.clone(),
                key_pem: data.get("tls.key")?.0.clone(),
            })
        }),
        Some(berth_net::netpol::NODE_PROXY_DSCP),
    );
    let workers = match proxy.spawn_workers(berth_ingress::workers::default_threads()) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "the Ingress proxy cannot start its threads");
            return;
        }
    };
    // Dropped (with this function's future, when the agent aborts it): the accept
    // loops are aborted, and the threads stop once they and `workers` are gone.
    let mut servers = tokio::task::JoinSet::new();
    for (port, tls, what) in [(ports.http, false, "http"), (ports.https, true, "https")] {
        if let Some(l) = bind(port, what).await {
            servers.spawn(workers.clone().serve(l, tls));
        }
    }
    if servers.is_empty() {
        return;
    }
    drop(workers);
    let (ingresses, ing_writer) = reflector::store();
    let (slices, slice_writer) = reflector::store();
    let ing_events = berth_watch::reflect_all::<Ingress>(ctx.client.clone(), ing_writer).boxed();
    let slice_events =
        berth_watch::reflect_all::<EndpointSlice>(ctx.client.clone(), slice_writer).boxed();
    let mut events = futures_util::stream::select(ing_events, slice_events).ready_chunks(1024);
    let mut retry: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            e = events.next() => if e.is_none() { break },
            _ = async { retry.as_mut().expect("guarded").await }, if retry.is_some() => {}
        }
        retry = None;
        let ings = ingresses.state();
        // Each TLS Secret watched alone (what a node may read), from before its first
        // handshake; asked again at every change and every 30 s, so its watch lives.
        for (ns, name) in tls_secrets(&ings) {
            if ctx.caches.secrets.get(&ns, &name).is_none() {
                retry = Some(Box::pin(tokio::time::sleep(Duration::from_secs(1))));
            }
        }
        let routes = Routes::build(&ings);
        let services = ctx.caches.services.state();
        let endpoints = Endpoints::build(&routes, &services, &slices.state());
        // The Services come through the agent's own cache, which may lag a slice
        // that names one just made: look again shortly.
        if endpoints.missing_services() > 0 {
            retry = Some(Box::pin(tokio::time::sleep(Duration::from_secs(2))));
        }
        if retry.is_none() {
            retry = Some(Box::pin(tokio::time::sleep(Duration::from_secs(30))));
        }
        proxy.update(Snapshot { routes, endpoints });
    }
    servers.abort_all();
}

/// The Secrets Ingresses name for TLS: (namespace, name).
fn tls_secrets(ingresses: &[Arc<Ingress>]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ing in ingresses {
        let ns = ing.metadata.namespace.clone().unwrap_or_default();
        let tls = ing.spec.as_ref().and_then(|s| s.tls.as_ref());
        for t in tls.into_iter().flatten() {
            if let Some(name) = &t.secret_name {
                out.push((ns.clone(), name.clone()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
