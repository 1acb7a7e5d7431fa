//! The agent's part of `berth explain path`: `GET /netpath`, read from this node's
//! kernel.
//!
//! - `?pod=NS/NAME&dst=IP[&port=P&protocol=TCP|UDP][&probe=false]`: the way from a
//!   pod of this node to `dst`. With a port, a Service address is looked up in the
//!   Service proxy's table and a probe (a TCP connection, or a UDP datagram, made from
//!   the pod's network namespace) shows which endpoint the kernel chose: the
//!   connection tracking entry says so, or else the endpoint slot whose counter moved.
//!   The path then goes on to that endpoint.
//! - `?arrive=IP`: the way in from the overlay to this node's pod with that address.
//!
//! The answer is a [`berth_net::netpath::Trace`] as JSON.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_engine::cri::{RuntimeService, SandboxFilter, SandboxState};
use berth_net::netpath::service::{self, Lookup};
use berth_net::netpath::{self, Hop, Trace};

use crate::error::{Error, Result};
use crate::{labels, Ctx};

/// This node's pods with an address: address → (`NS/NAME`, network namespace).
async fn local_pods(ctx: &Ctx) -> Result<BTreeMap<Ipv4Addr, (String, PathBuf)>> {
    let node = ctx.cfg.node_name.clone();
    ctx.engine(move |core| {
        let mut out = BTreeMap::new();
        let all = core.list_pod_sandbox(&SandboxFilter {
            labels: BTreeMap::from([(labels::NODE.to_string(), node)]),
            state: Some(SandboxState::Ready),
            ..Default::default()
        })?;
        for s in all {
            let Ok(st) = core.pod_sandbox_status(&s.id) else {
                continue;
            };
            let (Some(std::net::IpAddr::V4(ip)), Some(ns)) =
                (st.ip, st.namespace_paths.get("net").cloned())
            else {
                continue;
            };
            let l = &st.config.labels;
            let name = format!(
                "{}/{}",
                l.get(labels::POD_NAMESPACE).map_or("?", String::as_str),
                l.get(labels::POD_NAME).map_or("?", String::as_str)
            );
            out.insert(ip, (name, ns));
        }
        Ok(out)
    })
    .await
}

/// The protocol of a probe and of the Service maps' keys.
#[derive(Clone, Copy)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Makes one connection (or sends one datagram) to `dst` from inside `netns`; returns
/// the local address used and what happened.
fn probe(
    netns: &std::path::Path,
    dst: SocketAddrV4,
    proto: Proto,
) -> Result<(SocketAddrV4, String)> {
    let fd = berth_net::netns::open(netns).map_err(|e| Error::Internal(e.to_string()))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<(SocketAddrV4, String)> {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| Error::Io("enter the pod's network namespace".into(), e.into()))?;
            let started = Instant::now();
            match proto {
                Proto::Tcp => {
                    let sock = socket2::Socket::new(
                        socket2::Domain::IPV4,
                        socket2::Type::STREAM,
                        Some(socket2::Protocol::TCP),
                    )
                    .map_err(|e| Error::Io("make the probe's socket".into(), e))?;
                    // Bound first, so the local port is known even if nothing answers.
                    sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())
                        .map_err(|e| Error::Io("bind the probe's socket".into(), e))?;
                    let local = sock
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_socket_ipv4())
                        .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
                    let outcome =
                        match sock.connect_timeout(&dst.into(), Duration::from_millis(1500)) {
                            Ok(()) => format!(
                                "TCP connection to {dst} made in {:.1} ms",
                                started.elapsed().as_secs_f64() * 1e3
                            ),
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                format!("TCP connection to {dst} refused (nothing listens there)")
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => format!(
                                "TCP connection to {dst}: no answer in 1.5 s (dropped on the way)"
                            ),
                            Err(e) => format!("TCP connection to {dst} failed: {e}"),
                        };
                    let local = sock
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_socket_ipv4())
                        .unwrap_or(local);
                    Ok((local, outcome))
                }
                Proto::Udp => {
                    let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                        .map_err(|e| Error::Io("bind the probe's socket".into(), e))?;
                    let outcome = match sock.send_to(b"berth explain path probe", dst) {
                        Ok(_) => format!("one UDP datagram sent to {dst}"),
                        Err(e) => format!("UDP datagram to {dst} not sent: {e}"),
                    };
                    let local = match sock.local_addr() {
                        Ok(std::net::SocketAddr::V4(a)) => a,
                        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                    };
                    Ok((local, outcome))
                }
            }
        })
        .join()
        .map_err(|_| Error::Internal("the probe thread panicked".into()))?
    })
}

/// The Service hop and the endpoint the path goes on to.
fn service_hop(
    at: &str,
    addr: SocketAddrV4,
    proto: Proto,
    before: &Lookup,
    after: &Lookup,
    conntrack: Option<SocketAddrV4>,
) -> Option<(Hop, Option<SocketAddrV4>)> {
    let what = format!("nft table ip {}", berth_net::svcproxy::TABLE);
    let key = format!("{} . {} . {}", addr.ip(), proto.nft(), addr.port());
    match after {
        Lookup::NotService => None,
        Lookup::NoEndpoints(e) => Some((
            Hop {
                at: at.into(),
                what,
                facts: vec![format!(
                    "no-endpoint-services[{key}] → {} ({} packets): the Service has no ready endpoint, connections are rejected",
                    e.value, e.packets
                )],
                packets: None,
            },
            None,
        )),
        Lookup::Service {
            element,
            slots,
            chain,
        } => {
            let mut facts = vec![format!(
                "service-ips[{key}] → {} ({} new connections)",
                element.value, element.packets
            )];
            let old: BTreeMap<&str, u64> = match before {
                Lookup::Service { slots, .. } => slots
                    .iter()
                    .map(|(e, _)| (e.key.as_str(), e.packets))
                    .collect(),
                _ => BTreeMap::new(),
            };
            let moved: Vec<SocketAddrV4> = slots
                .iter()
                .filter(|(e, _)| old.get(e.key.as_str()).is_some_and(|b| e.packets > *b))
                .map(|(_, a)| *a)
                .collect();
            let chosen = conntrack.or(if moved.len() == 1 {
                Some(moved[0])
            } else {
                None
            });
            for (i, (e, a)) in slots.iter().enumerate() {
                let mark = if Some(*a) == chosen {
                    "   ← chosen for the probe"
                } else {
                    ""
                };
                facts.push(format!(
                    "endpoints[{key} . {i}] → {a} ({} connections){mark}",
                    e.packets
                ));
            }
            if !chain.is_empty() {
                facts.push(format!(
                    "session affinity: {} picks, remembering each client:",
                    element.value.trim_start_matches("goto ")
                ));
                facts.extend(chain.iter().map(|r| format!("  {r}")));
            }
            match (chosen, conntrack) {
                (Some(c), Some(_)) => {
                    facts.push(format!("conntrack: the probe's connection was DNATed to {c}"))
                }
                (Some(_), None) => {
                    facts.push("the probe moved that endpoint's counter".to_string())
                }
                (None, _) => {}
            }
            Some((
                Hop {
                    at: at.into(),
                    what,
                    facts,
                    packets: None,
                },
                chosen.or(slots.first().map(|(_, a)| *a)),
            ))
        }
    }
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Answers `GET /netpath`.
pub(crate) async fn handle(ctx: Arc<Ctx>, q: Vec<(String, String)>) -> Result<Trace> {
    let node = format!("node {}", ctx.cfg.node_name);
    let pods = local_pods(&ctx).await?;
    let parse_ip = |k: &str| -> Result<Ipv4Addr> {
        let v = param(&q, k).ok_or_else(|| Error::Spec(format!("netpath needs {k}=")))?;
        v.parse()
            .map_err(|_| Error::Spec(format!("{k}={v} is not an IPv4 address")))
    };
    if param(&q, "arrive").is_some() {
        let ip = parse_ip("arrive")?;
        return tokio::task::spawn_blocking(move || arrival(&node, ip, &pods))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
    }
    let pod = param(&q, "pod")
        .ok_or_else(|| Error::Spec("netpath needs pod=NAMESPACE/NAME or arrive=IP".into()))?
        .to_string();
    let dst = parse_ip("dst")?;
    let port = match param(&q, "port") {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Error::Spec(format!("port={p} is not a port number")))?,
        ),
        None => None,
    };
    let proto = match param(&q, "protocol")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("TCP") => Proto::Tcp,
        Some("UDP") => Proto::Udp,
        Some(p) => {
            return Err(Error::Spec(format!(
                "protocol={p}: berth explain path probes TCP or UDP"
            )))
        }
    };
    let probe_wanted = param(&q, "probe") != Some("false");
    let (src_ip, netns) = pods
        .iter()
        .find(|(_, (n, _))| *n == pod)
        .map(|(ip, (_, ns))| (*ip, ns.clone()))
        .ok_or_else(|| {
            Error::Missing(format!(
                "pod {pod} has no running sandbox with an address on node {}",
                ctx.cfg.node_name
            ))
        })?;
    tokio::task::spawn_blocking(move || {
        departure(
            &node,
            &pod,
            src_ip,
            &netns,
            dst,
            port,
            proto,
            probe_wanted,
            &pods,
        )
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

fn net(e: berth_net::Error) -> Error {
    Error::Internal(e.to_string())
}

fn local_pod_hops(
    node: &str,
    pods: &BTreeMap<Ipv4Addr, (String, PathBuf)>,
    ip: Ipv4Addr,
) -> berth_net::Result<Option<Vec<Hop>>> {
    let Some((name, ns)) = pods.get(&ip) else {
        return Ok(None);
    };
    let mut hops: Vec<Hop> = netpath::policy::hop(node, ip, netpath::policy::Direction::Ingress)?
        .into_iter()
        .collect();
    hops.extend(netpath::pod_arrival(ns, name, node, ip)?);
    Ok(Some(hops))
}

fn arrival(
    node: &str,
    ip: Ipv4Addr,
    pods: &BTreeMap<Ipv4Addr, (String, PathBuf)>,
) -> Result<Trace> {
    let node = node.to_string();
    let pods = pods.clone();
    berth_net::link::run(move |h| async move {
        let mut first = Vec::new();
        if let Some(i) = berth_net::link::index_of(&h, berth_net::overlay::VXLAN_DEVICE).await? {
            let d = netpath::device(&h, i).await?;
            first.push(d.hop(&node, "the packet arrives here and is decapsulated"));
        }
        let lookup = |ip| local_pod_hops(&node, &pods, ip);
        let mut t = netpath::node_part(&h, &node, ip, &lookup).await?;
        first.append(&mut t.hops);
        t.hops = first;
        Ok(t)
    })
    .map_err(net)
}

#[allow(clippy::too_many_arguments)]
fn departure(
    node: &str,
    pod: &str,
    src_ip: Ipv4Addr,
    netns: &std::path::Path,
    dst: Ipv4Addr,
    port: Option<u16>,
    proto: Proto,
    probe_wanted: bool,
    pods: &BTreeMap<Ipv4Addr, (String, PathBuf)>,
) -> Result<Trace> {
    let mut hops = netpath::pod_departure(netns, pod, node, dst).map_err(net)?;
    hops.extend(
        netpath::policy::hop(node, src_ip, netpath::policy::Direction::Egress).map_err(net)?,
    );
    let mut target = dst;
    if let Some(port) = port {
        let addr = SocketAddrV4::new(dst, port);
        let before = service::lookup(dst, proto.nft(), port).map_err(net)?;
        let mut conntrack = None;
        if probe_wanted {
            let (local, outcome) = probe(netns, addr, proto)?;
            hops.insert(
                0,
                Hop {
                    at: format!("pod {pod}"),
                    what: "probe".into(),
                    facts: vec![format!("from {src_ip}:{}: {outcome}", local.port())],
                    packets: None,
                },
            );
            if !matches!(before, Lookup::NotService) {
                conntrack =
                    service::conntrack_endpoint(SocketAddrV4::new(src_ip, local.port()), addr);
            }
        }
        let after = if probe_wanted {
            service::lookup(dst, proto.nft(), port).map_err(net)?
        } else {
            before.clone()
        };
        if let Some((hop, chosen)) = service_hop(node, addr, proto, &before, &after, conntrack) {
            hops.push(hop);
            match chosen {
                Some(c) => target = *c.ip(),
                None => {
                    return Ok(Trace {
                        hops,
                        target,
                        next: netpath::Next::Dropped(format!(
                            "the Service at {addr} has no endpoint"
                        )),
                    })
                }
            }
        }
    }
    let node = node.to_string();
    let pods = pods.clone();
    let mut rest = berth_net::link::run(move |h| async move {
        let lookup = |ip| local_pod_hops(&node, &pods, ip);
        netpath::node_part(&h, &node, target, &lookup).await
    })
    .map_err(net)?;
    hops.append(&mut rest.hops);
    rest.hops = hops;
    Ok(rest)
}
