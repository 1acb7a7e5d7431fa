//! What the Ingresses say, compiled for lookups: host and path rules to backends, the
//! default backend, which Secret holds each host's certificate; and the endpoints of
//! every backend, from the Services and their EndpointSlices.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::Authority;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressServiceBackend};

pub use berth_pods::services::INGRESS_CLASS as CLASS;

/// A Service port, by number or name, as a backend names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// `port.number`.
    Number(u16),
    /// `port.name`.
    Name(String),
}

/// A Service port traffic goes to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The Ingress's namespace.
    pub namespace: String,
    /// The Service.
    pub service: String,
    /// Its port.
    pub port: PortRef,
}

/// One path rule.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PathRule {
    exact: bool,
    /// Without a trailing slash (but "/" itself).
    path: String,
    backend: Backend,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        if self.exact {
            return path == self.path;
        }
        // Prefix: whole path elements ("/foo" takes "/foo" and "/foo/bar", not
        // "/foobar").
        self.path == "/"
            || path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Rules sorted as Kubernetes orders them: Exact before Prefix, longer paths first.
fn sort_rules(rules: &mut [PathRule]) {
    rules.sort_by(|a, b| {
        b.exact
            .cmp(&a.exact)
            .then_with(|| b.path.len().cmp(&a.path.len()))
    });
}

/// The compiled Ingresses of this proxy's class.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    exact_hosts: HashMap<String, Vec<PathRule>>,
    /// `*.example.com` as `.example.com`: one label in front.
    wildcard_hosts: Vec<(String, Vec<PathRule>)>,
    any_host: Vec<PathRule>,
    default: Option<Backend>,
    /// Host (or `*.suffix`) -> (namespace, Secret name).
    tls: HashMap<String, (String, String)>,
    /// The Secret of the oldest `tls` entry without hosts: the certificate for every
    /// host without one of its own (and for clients that send no SNI name).
    default_tls: Option<(String, String)>,
}

fn backend_of(ns: &str, svc: &IngressServiceBackend) -> Option<Backend> {
    let port = svc.port.as_ref()?;
    let port = match (&port.number, &port.name) {
        (Some(n), _) => PortRef::Number(u16::try_from(*n).ok()?),
        (None, Some(name)) => PortRef::Name(name.clone()),
        _ => return None,
    };
    Some(Backend {
        namespace: ns.to_string(),
        service: svc.name.clone(),
        port,
    })
}

impl Routes {
    /// Compiles the Ingresses of this proxy's class (oldest first wins a tie).
    pub fn build(ingresses: &[Arc<Ingress>]) -> Routes {
        let mut ings: Vec<&Arc<Ingress>> = ingresses
            .iter()
            .filter(|i| berth_pods::services::ingress_is_berths(i))
            .collect();
        ings.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let mut r = Routes::default();
        for ing in ings {
            let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
            let Some(spec) = &ing.spec else { continue };
            if r.default.is_none() {
                r.default = spec
                    .default_backend
                    .as_ref()
                    .and_then(|b| b.service.as_ref())
                    .and_then(|s| backend_of(ns, s));
            }
            for t in spec.tls.iter().flatten() {
                let Some(secret) = &t.secret_name else {
                    continue;
                };
                let hosts = t.hosts.as_deref().unwrap_or(&[]);
                if hosts.is_empty() && r.default_tls.is_none() {
                    r.default_tls = Some((ns.to_string(), secret.clone()));
                }
                for h in hosts {
                    r.tls
                        .entry(h.to_ascii_lowercase())
                        .or_insert_with(|| (ns.to_string(), secret.clone()));
                }
            }
            for rule in spec.rules.iter().flatten() {
                let paths = rule
                    .http
                    .as_ref()
                    .map(|h| h.paths.as_slice())
                    .unwrap_or(&[]);
                let compiled: Vec<PathRule> = paths
                    .iter()
                    .filter_map(|p| {
                        let backend = backend_of(ns, p.backend.service.as_ref()?)?;
                        let path = p.path.clone().unwrap_or_else(|| "/".into());
                        let exact = p.path_type == "Exact";
                        let path = if !exact && path.len() > 1 {
                            path.trim_end_matches('/').to_string()
                        } else {
                            path
                        };
                        Some(PathRule {
                            exact,
                            path,
                            backend,
                        })
                    })
                    .collect();
                let host = rule.host.as_deref().filter(|h| !h.is_empty());
                let into = match host.map(str::to_ascii_lowercase) {
                    None => &mut r.any_host,
                    Some(h) => match h.strip_prefix('*') {
                        Some(suffix) => {
                            let i = match r.wildcard_hosts.iter().position(|(s, _)| s == suffix) {
                                Some(i) => i,
                                None => {
                                    r.wildcard_hosts.push((suffix.to_string(), Vec::new()));
                                    r.wildcard_hosts.len() - 1
                                }
                            };
                            &mut r.wildcard_hosts[i].1
                        }
                        None => r.exact_hosts.entry(h).or_default(),
                    },
                };
                into.extend(compiled);
            }
        }
        // Stable sorts: among equals, the older Ingress stays first.
        for rules in r.exact_hosts.values_mut() {
            sort_rules(rules);
        }
        for (_, rules) in &mut r.wildcard_hosts {
            sort_rules(rules);
        }
        sort_rules(&mut r.any_host);
        r
    }

    /// The backend of a request for `host` (no port) and `path` (no query): the host's
    /// own rules, then wildcard hosts', then host-less ones; the default backend when
    /// no path matches.
    pub fn route(&self, host: &str, path: &str) -> Option<&Backend> {
        let host = host.to_ascii_lowercase();
        let exact = self.exact_hosts.get(&host).map(Vec::as_slice);
        let wild = self
            .wildcard_hosts
            .iter()
            .filter(|(suffix, _)| {
                host.strip_suffix(suffix.as_str())
                    .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            })
            .map(|(_, r)| r.as_slice());
        exact
            .into_iter()
            .chain(wild)
            .chain(std::iter::once(self.any_host.as_slice()))
            .flat_map(|rules| rules.iter())
            .find(|r| r.matches(path))
            .map(|r| &r.backend)
            .or(self.default.as_ref())
    }

    /// The Secret (namespace, name) holding the certificate of `host` (None: no SNI
    /// name): its own, a wildcard's, or a host-less `tls` entry's.
    pub fn tls_secret(&self, host: Option<&str>) -> Option<&(String, String)> {
        let own = host.and_then(|h| {
            let h = h.to_ascii_lowercase();
            self.tls.get(&h).or_else(|| {
                let (_, parent) = h.split_once('.')?;
                self.tls.get(&format!("*.{parent}"))
            })
        });
        own.or(self.default_tls.as_ref())
    }
}

/// One ready endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// The same, as the authority of a request sent to it (made once, not per request).
    pub authority: Authority,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Option<Endpoint> {
        let authority = Authority::try_from(addr.to_string()).ok()?;
        Some(Endpoint { addr, authority })
    }
}

/// Every backend's ready endpoints.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    /// Every backend whose Service exists (an empty list: no endpoint ready).
    by_backend: HashMap<Backend, Vec<Endpoint>>,
    missing: usize,
}

impl Endpoints {
    /// The endpoints of the backends `routes` names, from the Services and slices.
    pub fn build(
        routes: &Routes,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> Endpoints {
        let mut wanted: Vec<&Backend> = routes
            .exact_hosts
            .values()
            .chain(routes.wildcard_hosts.iter().map(|(_, r)| r))
            .chain(std::iter::once(&routes.any_host))
            .flatten()
            .map(|r| &r.backend)
            .chain(routes.default.iter())
            .collect();
        wanted.sort_by(|a, b| (&a.namespace, &a.service).cmp(&(&b.namespace, &b.service)));
        wanted.dedup();
        let svc_by_name: HashMap<(&str, &str), &Service> = services
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    s.as_ref(),
                ))
            })
            .collect();
        let by_service = berth_pods::services::slices_by_service(slices);
        let mut out = Endpoints::default();
        for b in wanted {
            let Some(svc) = svc_by_name.get(&(b.namespace.as_str(), b.service.as_str())) else {
                out.missing += 1;
                continue;
            };
            let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
            let Some(port) = ports.into_iter().flatten().find(|p| match &b.port {
                PortRef::Number(n) => p.port == i32::from(*n),
                PortRef::Name(n) => p.name.as_deref() == Some(n),
            }) else {
                out.by_backend.insert(b.clone(), Vec::new());
                continue;
            };
            let port_name = port.name.clone().unwrap_or_default();
            let mut addrs = Vec::new();
            let key = (b.namespace.clone(), b.service.clone());
            for s in by_service.get(&key).into_iter().flatten() {
                let Some(target) = s.ports.iter().flatten().find_map(|p| {
                    (p.name.as_deref().unwrap_or("") == port_name)
                        .then_some(p.port)
                        .flatten()
                }) else {
                    continue;
                };
                let Ok(target) = u16::try_from(target) else {
                    continue;
                };
                for e in &s.endpoints {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    for a in &e.addresses {
                        if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                            addrs.push(SocketAddr::new(ip, target));
                        }
                    }
                }
            }
            addrs.sort();
            addrs.dedup();
            let endpoints = addrs.into_iter().filter_map(Endpoint::new).collect();
            out.by_backend.insert(b.clone(), endpoints);
        }
        out
    }

    /// How many routed backends name a Service that does not exist.
    pub fn missing_services(&self) -> usize {
        self.missing
    }

    /// A backend's ready endpoints; None when its Service does not exist.
    pub fn of(&self, b: &Backend) -> Option<&[Endpoint]> {
        self.by_backend.get(b).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests;
