//! What the NetworkPolicies mean for this node's pods, as Kubernetes defines it: a pod
//! that a policy of its namespace selects is isolated in that policy's directions
//! (`policyTypes`, by default Ingress, and Egress when the policy has egress rules);
//! an isolated pod takes only what some selecting policy's rules allow — from or to
//! peers picked by podSelector (the policy's namespace), namespaceSelector, both, or
//! ipBlock with `except`s; on ports given by number, range (`endPort`) or name (the
//! destination pod's container port of that name).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use berth_net::netpol::{cidr_range, subtract, AddrRange, PortMatch, Protocol, Rule, Wanted};
use berth_pods::labels;

/// The cluster as the policies see it.
pub struct View<'a> {
    /// Every NetworkPolicy.
    pub policies: &'a [Arc<NetworkPolicy>],
    /// Every pod (of every node).
    pub pods: &'a [Arc<Pod>],
    /// Every namespace.
    pub namespaces: &'a [Arc<Namespace>],
    /// Every node (the other nodes' proxies are let in).
    pub nodes: &'a [Arc<Node>],
    /// This node's name.
    pub node: &'a str,
}

/// The addresses the other nodes' proxies connect from: their InternalIPs (host-gw,
/// and the node's own network) and their pod CIDR's first address (the VXLAN device's).
pub fn node_proxies(nodes: &[Arc<Node>], this: &str) -> Vec<AddrRange> {
    let mut out = Vec::new();
    for n in nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(this))
    {
        let internal = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse::<Ipv4Addr>().ok());
        let overlay = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<ipnet::Ipv4Net>().ok())
            .map(|c| c.network());
        out.extend(internal.chain(overlay).map(|ip| (ip, ip)));
    }
    out.sort();
    out.dedup();
    out
}

/// A pod that policies can select or name as a peer: with an address of its own (not
/// on the host's network) and not finished.
struct Member<'a> {
    pod: &'a Pod,
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    ip: Ipv4Addr,
}

fn members(pods: &[Arc<Pod>]) -> Vec<Member<'_>> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    pods.iter()
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            if spec.host_network == Some(true) {
                return None;
            }
            let status = p.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            Some(Member {
                pod: p,
                namespace: p.metadata.namespace.as_deref()?,
                labels: p.metadata.labels.as_ref().unwrap_or(&EMPTY),
                ip: status.pod_ip.as_deref()?.parse().ok()?,
            })
        })
        .collect()
}

/// The container port named `name` of `pod`, for `protocol`.
fn named_port(pod: &Pod, name: &str, protocol: Protocol) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name)
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// A rule's ports, split: by number (or the whole protocol), and by name.
fn split_ports(ports: &[NetworkPolicyPort]) -> (Vec<PortMatch>, Vec<(String, Protocol)>) {
    let (mut numbers, mut names) = (Vec::new(), Vec::new());
    for p in ports {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            continue;
        };
        match &p.port {
            None => numbers.push(PortMatch {
                protocol,
                ports: None,
            }),
            Some(IntOrString::Int(n)) => {
                let Ok(first) = u16::try_from(*n) else {
                    continue;
                };
                let last = p
                    .end_port
                    .and_then(|e| u16::try_from(e).ok())
                    .unwrap_or(first);
                numbers.push(PortMatch {
                    protocol,
                    ports: Some((first, last.max(first))),
                });
            }
            Some(IntOrString::String(name)) => names.push((name.clone(), protocol)),
        }
    }
    (numbers, names)
}

struct Resolver<'a> {
    members: Vec<Member<'a>>,
    namespace_labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
}

impl<'a> Resolver<'a> {
    /// The pods a peer picks (none for an ipBlock).
    fn peer_pods(&self, peer: &NetworkPolicyPeer, policy_ns: &str) -> Vec<&Member<'a>> {
        if peer.ip_block.is_some()
            || (peer.pod_selector.is_none() && peer.namespace_selector.is_none())
        {
            return Vec::new();
        }
        self.members
            .iter()
            .filter(|m| match &peer.namespace_selector {
                None => m.namespace == policy_ns,
                Some(sel) => self
                    .namespace_labels
                    .get(m.namespace)
                    .is_some_and(|l| labels::matches(sel, l)),
            })
            .filter(|m| {
                peer.pod_selector
                    .as_ref()
                    .is_none_or(|sel| labels::matches(sel, m.labels))
            })
            .collect()
    }

    /// The addresses a peer covers.
    fn peer_ranges(&self, peer: &NetworkPolicyPeer, policy_ns: &str) -> Vec<AddrRange> {
        if let Some(block) = &peer.ip_block {
            let Ok(net) = block.cidr.parse::<ipnet::Ipv4Net>() else {
                return Vec::new();
            };
            let holes: Vec<AddrRange> = block
                .except
                .iter()
                .flatten()
                .filter_map(|e| e.parse::<ipnet::Ipv4Net>().ok())
                .map(cidr_range)
                .collect();
            return subtract(cidr_range(net), &holes);
        }
        self.peer_pods(peer, policy_ns)
            .into_iter()
            .map(|m| (m.ip, m.ip))
            .collect()
    }
}

/// Which directions a policy isolates: (ingress, egress).
fn directions(np: &NetworkPolicy) -> (bool, bool) {
    let Some(spec) = &np.spec else {
        return (true, false);
    };
    match &spec.policy_types {
        Some(t) if !t.is_empty() => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// A name nft takes for a policy's set (letters, digits, `.`, `-`; namespaces have
/// no dots, so `p.NS.NAME` is unambiguous), hashed when too long for the kernel.
fn set_name(ns: &str, name: &str, suffix: &str) -> String {
    let full = format!("p.{ns}.{name}.{suffix}");
    if full.len() <= 200 {
        return full;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (ns, name).hash(&mut h);
    format!("p.{:016x}.{suffix}", h.finish())
}

/// What the policies want of this node's pods.
pub fn wanted(view: &View) -> Wanted {
    let r = Resolver {
        members: members(view.pods),
        namespace_labels: view
            .namespaces
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.labels.as_ref()?)))
            .collect(),
    };
    let mut out = Wanted {
        node_proxies: node_proxies(view.nodes, view.node),
        ..Default::default()
    };
    for np in view.policies {
        let (Some(ns), Some(name), Some(spec)) = (
            np.metadata.namespace.as_deref(),
            np.metadata.name.as_deref(),
            np.spec.as_ref(),
        ) else {
            continue;
        };
        let targets: Vec<&Member> = r
            .members
            .iter()
            .filter(|m| m.namespace == ns)
            .filter(|m| m.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(view.node))
            .filter(|m| {
                spec.pod_selector
                    .as_ref()
                    .is_none_or(|s| labels::matches(s, m.labels))
            })
            .collect();
        if targets.is_empty() {
            continue;
        }
        let (ingress, egress) = directions(np);
        // (direction's pods, its rules as (peers, ports), set prefix)
        let mut dirs = Vec::new();
        if ingress {
            let rules: Vec<_> = spec
                .ingress
                .iter()
                .flatten()
                .map(|r| {
                    (
                        r.from.as_deref().unwrap_or(&[]),
                        r.ports.as_deref().unwrap_or(&[]),
                    )
                })
                .collect();
            dirs.push((true, rules));
        }
        if egress {
            let rules: Vec<_> = spec
                .egress
                .iter()
                .flatten()
                .map(|r| {
                    (
                        r.to.as_deref().unwrap_or(&[]),
                        r.ports.as_deref().unwrap_or(&[]),
                    )
                })
                .collect();
            dirs.push((false, rules));
        }
        for (is_ingress, rules) in dirs {
            let letter = if is_ingress { "i" } else { "e" };
            for t in &targets {
                let pods = if is_ingress {
                    &mut out.ingress
                } else {
                    &mut out.egress
                };
                pods.entry(t.ip).or_default();
            }
            for (i, (peers, ports)) in rules.into_iter().enumerate() {
                let set = (!peers.is_empty()).then(|| {
                    let set = set_name(ns, name, &format!("{letter}{i}"));
                    let ranges = peers.iter().flat_map(|p| r.peer_ranges(p, ns)).collect();
                    out.sets.insert(set.clone(), ranges);
                    set
                });
                let (numbers, names) = split_ports(ports);
                let mut per_target: Vec<Rule> = Vec::new();
                if ports.is_empty() || !numbers.is_empty() {
                    per_target.push(Rule {
                        peers: set.clone(),
                        ports: numbers,
                    });
                }
                let pods = if is_ingress {
                    &mut out.ingress
                } else {
                    &mut out.egress
                };
                for t in &targets {
                    let rules = pods.entry(t.ip).or_default();
                    rules.extend(per_target.iter().cloned());
                    if is_ingress {
                        // A name is the target's own port of that name.
                        let resolved: Vec<PortMatch> = names
                            .iter()
                            .filter_map(|(n, proto)| {
                                named_port(t.pod, n, *proto).map(|p| PortMatch {
                                    protocol: *proto,
                                    ports: Some((p, p)),
                                })
                            })
                            .collect();
                        if !resolved.is_empty() {
                            rules.insert(Rule {
                                peers: set.clone(),
                                ports: resolved,
                            });
                        }
                    }
                }
                if !is_ingress {
                    // A name is each destination pod's port of that name: one set per
                    // (name, number) of the peers that have it.
                    let candidates: Vec<&Member> = if peers.is_empty() {
                        r.members.iter().collect()
                    } else {
                        peers.iter().flat_map(|p| r.peer_pods(p, ns)).collect()
                    };
                    for (n, proto) in &names {
                        let mut by_port: BTreeMap<u16, Vec<AddrRange>> = BTreeMap::new();
                        for m in &candidates {
                            if let Some(p) = named_port(m.pod, n, *proto) {
                                by_port.entry(p).or_default().push((m.ip, m.ip));
                            }
                        }
                        for (port, ranges) in by_port {
                            let set = set_name(
                                ns,
                                name,
                                &format!("{letter}{i}.{n}.{}.{port}", proto.nft()),
                            );
                            out.sets.insert(set.clone(), ranges);
                            let rule = Rule {
                                peers: Some(set),
                                ports: vec![PortMatch {
                                    protocol: *proto,
                                    ports: Some((port, port)),
                                }],
                            };
                            for t in &targets {
                                out.egress.entry(t.ip).or_default().insert(rule.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
