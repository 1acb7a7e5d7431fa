//! The `default/kubernetes` Service's endpoints, as kube-apiserver's endpoint
//! reconciler keeps them: this server's advertised address and port, as an Endpoints
//! object and an EndpointSlice, so pods reach the API at 10.96.0.1:443 through the
//! node proxy (operators, kube-rs clients in pods).

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// The field manager of these writes (kube-apiserver's own).
const MANAGER: &str = "kube-apiserver";

/// Writes the endpoints until it succeeds (the API comes up meanwhile).
pub async fn publish(client: kube::Client, ip: IpAddr, port: u16) {
    let mut wait = Duration::from_millis(200);
    loop {
        match write(&client, ip, port).await {
            Ok(()) => {
                tracing::info!(%ip, port, "the kubernetes Service's endpoints are this server");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "writing the kubernetes Service's endpoints; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn write(client: &kube::Client, ip: IpAddr, port: u16) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(MANAGER).force();
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip.to_string()}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    Api::<Endpoints>::namespaced(client.clone(), "default")
        .patch("kubernetes", &pp, &Patch::Apply(&endpoints))
        .await?;
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .patch("kubernetes", &pp, &Patch::Apply(&slice))
        .await?;
    Ok(())
}
