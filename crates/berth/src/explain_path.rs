//! `berth explain path POD DEST [--port P]`: the way one packet goes from a pod to
//! another pod, a Service or an address, as the kernels of the nodes on the way hold
//! it. Each node's agent reads its own part (`GET /netpath` through the API server's
//! node proxy, see `berth_agent::netpath`); this joins the parts and prints them.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use berth_net::netpath::{Hop, Next, Trace};
use clap::Args;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, ListParams};

/// `berth explain path` options.
#[derive(Args)]
pub struct PathArgs {
    /// The namespace of the pods and Services named.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// The kubeconfig (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The port to probe (a Service needs one; default: its first port).
    #[arg(long)]
    port: Option<u16>,
    /// The protocol of the probe: TCP or UDP.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// Read the path without sending a probe (counters then show past traffic only,
    /// and a Service's path follows its first endpoint).
    #[arg(long)]
    no_probe: bool,
    /// Output: the path as text, or json.
    #[arg(short, long)]
    output: Option<String>,
    /// The pod the packet leaves from (`NAME` or `pod/NAME`).
    from: String,
    /// Where it goes: a pod (`NAME`, `pod/NAME`), a Service (`svc/NAME`) or an IPv4
    /// address.
    to: String,
}

/// The destination, resolved.
struct Destination {
    label: String,
    ip: Ipv4Addr,
    port: Option<u16>,
    protocol: String,
}

async fn resolve(client: &kube::Client, a: &PathArgs) -> anyhow::Result<Destination> {
    let ns = &a.namespace;
    if let Ok(ip) = a.to.parse::<Ipv4Addr>() {
        return Ok(Destination {
            label: ip.to_string(),
            ip,
            port: a.port,
            protocol: a.protocol.to_ascii_uppercase(),
        });
    }
    if let Some(name) =
        a.to.strip_prefix("svc/")
            .or_else(|| a.to.strip_prefix("service/"))
    {
        let svc = Api::<Service>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .with_context(|| format!("reading Service {ns}/{name}"))?;
        let spec = svc.spec.unwrap_or_default();
        let ip = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None")
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .with_context(|| {
                format!("Service {ns}/{name} has no IPv4 cluster IP (headless or ExternalName): name one of its pods instead")
            })?;
        let ports = spec.ports.unwrap_or_default();
        let port = match a.port {
            Some(p) => ports
                .iter()
                .find(|sp| sp.port == i32::from(p))
                .with_context(|| {
                    format!(
                        "Service {ns}/{name} has no port {p} (it has {})",
                        ports
                            .iter()
                            .map(|p| p.port.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?,
            None => ports
                .first()
                .with_context(|| format!("Service {ns}/{name} has no ports"))?,
        };
        return Ok(Destination {
            label: format!("svc/{name} {ip}:{}", port.port),
            ip,
            port: Some(port.port as u16),
            protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
        });
    }
    let name = a.to.strip_prefix("pod/").unwrap_or(&a.to);
    let (ip, _) = pod_address(client, ns, name).await?;
    Ok(Destination {
        label: format!("pod {ns}/{name} {ip}"),
        ip,
        port: a.port,
        protocol: a.protocol.to_ascii_uppercase(),
    })
}

/// A pod's address and node.
async fn pod_address(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<(Ipv4Addr, String)> {
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("reading pod {ns}/{name}"))?;
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .with_context(|| format!("pod {ns}/{name} is not scheduled to a node yet"))?;
    let st = pod.status.unwrap_or_default();
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        bail!("pod {ns}/{name} uses the host's network: its packets take the node's own path, not the pod network's");
    }
    let ip = st
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .with_context(|| {
            format!(
                "pod {ns}/{name} has no IPv4 address yet (phase {})",
                st.phase.unwrap_or_default()
            )
        })?;
    Ok((ip, node))
}

/// A node's part of the path, from its agent.
async fn part(client: &kube::Client, node: &str, query: &str) -> anyhow::Result<Trace> {
    let req = http::Request::get(format!("/api/v1/nodes/{node}/proxy/netpath?{query}"))
        .body(Vec::new())
        .context("building the request")?;
    let body = client
        .request_text(req)
        .await
        .with_context(|| format!("asking node {node}'s agent for its part of the path"))?;
    serde_json::from_str(&body)
        .with_context(|| format!("node {node}'s agent answered {body:?}, not a path"))
}

/// The node an address belongs to (an InternalIP of a Node).
async fn node_with_address(client: &kube::Client, ip: Ipv4Addr) -> anyhow::Result<Option<String>> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing nodes")?;
    Ok(nodes.items.into_iter().find_map(|n| {
        let has = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .is_some_and(|a| {
                a.iter()
                    .any(|a| a.type_ == "InternalIP" && a.address == ip.to_string())
            });
        if has {
            n.metadata.name
        } else {
            None
        }
    }))
}

fn print_hops(hops: &[Hop]) {
    let mut at = "";
    for h in hops {
        if h.at != at {
            println!("{}", h.at);
            at = &h.at;
        }
        let packets = h
            .packets
            .map(|p| format!("   [rx {} tx {} packets]", p.rx, p.tx))
            .unwrap_or_default();
        let mut facts = h.facts.iter();
        println!(
            "  {:<26} {}{packets}",
            h.what,
            facts.next().map_or("", String::as_str)
        );
        for f in facts {
            println!("  {:<26} {f}", "");
        }
    }
}

/// Runs `berth explain path`.
pub async fn explain_path(a: PathArgs) -> anyhow::Result<()> {
    let client = match &a.kubeconfig {
        Some(k) => crate::agent_cmd::client(k, None).await?,
        None => kube::Client::try_default().await.context(
            "making an API client from $KUBECONFIG or ~/.kube/config (--kubeconfig names another)",
        )?,
    };
    if !matches!(a.protocol.to_ascii_uppercase().as_str(), "TCP" | "UDP") {
        bail!("--protocol {}: the probe is TCP or UDP", a.protocol);
    }
    let ns = &a.namespace;
    let from = a.from.strip_prefix("pod/").unwrap_or(&a.from);
    let (src_ip, src_node) = pod_address(&client, ns, from).await?;
    let dst = resolve(&client, &a).await?;
    let mut query = format!("pod={ns}/{from}&dst={}", dst.ip);
    if let Some(p) = dst.port {
        query.push_str(&format!("&port={p}&protocol={}", dst.protocol));
    }
    if a.no_probe {
        query.push_str("&probe=false");
    }
    let mut parts = vec![part(&client, &src_node, &query).await?];
    let mut nodes = vec![src_node.clone()];
    // At most one crossing: pod networks are one hop apart (VXLAN or host-gw).
    if let Next::Node(ip) = parts[0].next {
        if let Some(n) = node_with_address(&client, ip).await? {
            let target = parts[0].target;
            parts.push(part(&client, &n, &format!("arrive={target}")).await?);
            nodes.push(n);
        }
    }
    if a.output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&parts)?);
        return Ok(());
    }
    if let Some(o) = &a.output {
        bail!("-o {o}: the path prints as text (no -o) or json");
    }
    let port = dst
        .port
        .map(|p| format!(", {} port {p}", dst.protocol))
        .unwrap_or_default();
    println!(
        "Path from pod {ns}/{from} ({src_ip}, node {src_node}) to {}{port}\n",
        dst.label
    );
    for p in &parts {
        print_hops(&p.hops);
    }
    let last = parts.last().expect("one part at least");
    println!();
    match &last.next {
        Next::Delivered => println!(
            "Delivered to {} across {} node{}: {}.",
            last.target,
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            nodes.join(" → ")
        ),
        Next::Node(ip) => {
            println!("Leaves through {ip}, which is no node of this cluster (not an InternalIP).")
        }
        Next::Leaves(dev) => println!("Leaves the cluster through {dev}."),
        Next::Dropped(why) => println!("Dropped: {why}."),
    }
    Ok(())
}
