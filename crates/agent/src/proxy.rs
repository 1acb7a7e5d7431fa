//! The node's Service proxy — kube-proxy's job, run by the agent as k3s runs it beside
//! the kubelet: Services and EndpointSlices watched, turned into the ports and
//! endpoints [`berth_net::svcproxy`] programs into nftables, and each change sent to
//! the kernel as it comes (the difference only). The same watches feed the node's
//! cluster DNS ([`crate::clusterdns`]). Services that name another proxy
//! (`service.kubernetes.io/service-proxy-name`), headless and ExternalName Services
//! are left alone, as kube-proxy leaves them.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};

use berth_net::svcproxy::{Endpoint, Protocol, Proxy, ProxyConfig, ServicePort};

use crate::Ctx;

/// The label naming the proxy that serves a Service (others leave it alone).
const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// kube's default sessionAffinity ClientIP timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

/// Runs until the agent stops.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let (services, svc_writer) = reflector::store();
    let (slices, slice_writer) = reflector::store();
    let svc_events = berth_watch::reflect_all::<Service>(ctx.client.clone(), svc_writer).boxed();
    let slice_events =
        berth_watch::reflect_all::<EndpointSlice>(ctx.client.clone(), slice_writer).boxed();
    // Which stream each item came from: both must have listed before the first sync
    // (a Service without its slices yet would reject its clients).
    let mut events = futures_util::stream::select(
        svc_events.map(|e| (true, e)),
        slice_events.map(|e| (false, e)),
    )
    .ready_chunks(1024);
    let cfg = ProxyConfig {
        cluster_cidr: ctx.cfg.cluster_cidr,
    };
    let proxy = Arc::new(std::sync::Mutex::new(Proxy::default()));
    let dns = crate::clusterdns::start(&ctx).await;
    let (mut services_listed, mut slices_listed) = (false, false);
    let mut backoff = crate::backoff::Backoff::default();
    // An empty batch: a retry of a failed sync.
    while let Some(batch) = backoff.next(&mut events).await {
        for (from_services, listed) in batch.iter().flatten() {
            if *listed {
                if *from_services {
                    services_listed = true;
                } else {
                    slices_listed = true;
                }
            }
        }
        if !(services_listed && slices_listed) {
            continue;
        }
        if let Some(dns) = &dns {
            dns.set_zone(berth_dns::Zone::build(
                &ctx.cfg.cluster_domain,
                &services.state(),
                &slices.state(),
            ));
        }
        let ports = service_ports(&services, &slices, &ctx.cfg.node_name);
        let (p, c) = (proxy.clone(), cfg.clone());
        let started = Instant::now();
        let r = tokio::task::spawn_blocking(move || {
            p.lock().unwrap_or_else(|e| e.into_inner()).sync(&c, &ports)
        })
        .await;
        match r {
            Ok(Ok(stats)) => {
                if stats.lines > 0 {
                    tracing::debug!(lines = stats.lines, full = stats.full, took = ?started.elapsed(), "services programmed");
                }
                backoff.succeeded();
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "programming services failed; writing them all again shortly");
                backoff.failed();
            }
            Err(e) => {
                tracing::warn!(error = %e, "programming services panicked");
                backoff.failed();
            }
        }
    }
}

/// The ports of every Service this node proxies, with their endpoints.
pub fn service_ports(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    node: &str,
) -> Vec<ServicePort> {
    let by_service = berth_pods::services::slices_by_service(&slices.state());
    let mut out = Vec::new();
    for svc in services.state() {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let empty = Vec::new();
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .unwrap_or(&empty);
        out.extend(ports_of(&svc, slices, node));
    }
    out
}

/// One Service's ports (none for a Service this proxy leaves alone).
pub fn ports_of(svc: &Service, slices: &[Arc<EndpointSlice>], node: &str) -> Vec<ServicePort> {
    if svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(PROXY_NAME_LABEL))
    {
        return Vec::new();
    }
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Vec::new();
    }
    let cluster_ips: Vec<Ipv4Addr> = berth_pods::services::cluster_ips(spec)
        .into_iter()
        .filter_map(|ip| match ip {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    if cluster_ips.is_empty() {
        // Headless: DNS answers with the pods; nothing to proxy.
        return Vec::new();
    }
    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if kind == "LoadBalancer" {
        external_ips.extend(
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_ref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let external = kind == "NodePort" || kind == "LoadBalancer";
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            continue;
        };
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let port_name = p.name.clone().unwrap_or_default();
        out.push(ServicePort {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            port_name: port_name.clone(),
            protocol,
            cluster_ips: cluster_ips.clone(),
            port,
            node_port: if external {
                p.node_port.and_then(|n| u16::try_from(n).ok())
            } else {
                None
            },
            external_ips: external_ips.clone(),
            affinity_timeout,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: external && spec.external_traffic_policy.as_deref() == Some("Local"),
            endpoints: endpoints_for(slices, &port_name, protocol, node),
        });
    }
    out
}

/// The endpoints the slices give a Service port (by the port's name and protocol).
fn endpoints_for(
    slices: &[Arc<EndpointSlice>],
    port_name: &str,
    protocol: Protocol,
    node: &str,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for s in slices {
        let Some(port) = s.ports.iter().flatten().find_map(|p| {
            let name = p.name.as_deref().unwrap_or("");
            (name == port_name && Protocol::parse(p.protocol.as_deref()) == Some(protocol))
                .then_some(p.port)
                .flatten()
        }) else {
            continue;
        };
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        for e in &s.endpoints {
            let Some(ip) = e.addresses.first().and_then(|a| a.parse().ok()) else {
                continue;
            };
            let c = e.conditions.as_ref();
            // Absent conditions mean ready (the API's defaults); serving follows ready.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let ep = Endpoint {
                ip,
                port,
                ready,
                serving,
                terminating,
                local: e.node_name.as_deref() == Some(node),
            };
            if !out.contains(&ep) {
                out.push(ep);
            }
        }
    }
    out.sort();
    out
}
