//! The `default/kubernetes` Service's endpoints, as kube-apiserver's lease endpoint
//! reconciler keeps them: every server renews a Lease of its own in kube-system
//! (`apiserver-<its address and port>`, labelled as kube labels apiserver identity
//! leases) every 10 s, and writes as the Service's endpoints the addresses of every
//! server whose Lease is fresh — so with several servers all are there, and one that
//! dies leaves within 30 s. Written as an Endpoints object and EndpointSlices (one per
//! port), so pods reach the API at 10.96.0.1:443 through the node proxy.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// The field manager of these writes (kube-apiserver's own).
const MANAGER: &str = "kube-apiserver";
/// The label of the servers' Leases (kube's apiserver identity label).
const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
/// The annotation holding a server's advertised address and port.
const ADDRESS_ANNOTATION: &str = "berth.dev/advertise-address";
/// How often a server renews its Lease and rewrites the endpoints.
const RENEW: Duration = Duration::from_secs(10);
/// How long a Lease not renewed still counts.
const LEASE_SECONDS: i32 = 30;

/// Keeps this server in the endpoints, for as long as it runs.
pub async fn publish(client: kube::Client, ip: IpAddr, port: u16) {
    let me = SocketAddr::new(ip, port);
    let mut announced = false;
    loop {
        match round(&client, me).await {
            Ok(n) if !announced => {
                tracing::info!(%ip, port, servers = n, "the kubernetes Service's endpoints include this server");
                announced = true;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "writing the kubernetes Service's endpoints; retrying")
            }
        }
        tokio::time::sleep(if announced {
            RENEW
        } else {
            Duration::from_millis(500)
        })
        .await;
    }
}

/// The name of the Lease of the server at `addr`: `apiserver-10-0-0-1-6443`.
fn lease_name(addr: SocketAddr) -> String {
    let text: String = format!("{}-{}", addr.ip(), addr.port())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("apiserver-{}", text.trim_matches('-'))
}

/// Renews this server's Lease and writes the endpoints of all live servers; returns
/// how many there are.
async fn round(client: &kube::Client, me: SocketAddr) -> Result<usize, kube::Error> {
    let pp = PatchParams::apply(MANAGER).force();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let now = k8s_openapi::jiff::Timestamp::now();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name(me), "namespace": "kube-system",
                     "labels": {IDENTITY_LABEL: "kube-apiserver"},
                     "annotations": {ADDRESS_ANNOTATION: me.to_string()}},
        "spec": {"holderIdentity": lease_name(me), "leaseDurationSeconds": LEASE_SECONDS,
                 "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
    });
    leases
        .patch(&lease_name(me), &pp, &Patch::Apply(&lease))
        .await?;
    let all = leases
        .list(&ListParams::default().labels(&format!("{IDENTITY_LABEL}=kube-apiserver")))
        .await?;
    // Leases of servers gone an hour are removed, as kube's apiserver identity
    // garbage collector does.
    for l in &all.items {
        let renewed = l
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        let stale =
            renewed.is_none_or(|r| r + k8s_openapi::jiff::SignedDuration::from_secs(3600) < now);
        if let (true, Some(name)) = (stale, l.metadata.name.as_deref()) {
            let _ = leases.delete(name, &Default::default()).await;
        }
    }
    let mut live: Vec<SocketAddr> = all
        .items
        .iter()
        .filter(|l| {
            let spec = l.spec.as_ref();
            let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
            let secs = spec
                .and_then(|s| s.lease_duration_seconds)
                .unwrap_or(LEASE_SECONDS);
            renewed.is_some_and(|r| {
                r + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(secs)) > now
            })
        })
        .filter_map(|l| {
            l.metadata
                .annotations
                .as_ref()?
                .get(ADDRESS_ANNOTATION)?
                .parse()
                .ok()
        })
        .collect();
    if !live.contains(&me) {
        live.push(me);
    }
    live.sort();
    write(client, &live).await?;
    Ok(live.len())
}

async fn write(client: &kube::Client, servers: &[SocketAddr]) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(MANAGER).force();
    // Addresses by port: servers on one machine (tests) listen on several.
    let mut by_port: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
    for s in servers {
        by_port.entry(s.port()).or_default().push(s.ip());
    }
    let subsets: Vec<_> = by_port
        .iter()
        .map(|(port, ips)| {
            json!({"addresses": ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
                   "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
        })
        .collect();
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    });
    Api::<Endpoints>::namespaced(client.clone(), "default")
        .patch("kubernetes", &pp, &Patch::Apply(&endpoints))
        .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let mut names = Vec::new();
    for (i, (port, ips)) in by_port.iter().enumerate() {
        let name = if i == 0 {
            "kubernetes".to_string()
        } else {
            format!("kubernetes-{port}")
        };
        names.push(name.clone());
        let family = if ips[0].is_ipv4() { "IPv4" } else { "IPv6" };
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": family,
            "endpoints": ips.iter().map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        });
        slices.patch(&name, &pp, &Patch::Apply(&slice)).await?;
    }
    // Slices of ports no server listens on any more.
    let lp = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
    for s in slices.list(&lp).await?.items {
        if let Some(n) = s
            .metadata
            .name
            .as_deref()
            .filter(|n| !names.iter().any(|x| x == n))
        {
            slices.delete(n, &Default::default()).await?;
        }
    }
    Ok(())
}
