//! The API servers an agent talks to, as k3s's agent load balancer keeps them: the
//! one it was given, and every server in the `default/kubernetes` Service's
//! endpoints (each server publishes itself there). Requests go to the current one;
//! when a connection to it fails, the next takes over and the request goes there
//! (see `super::client`), so an agent rides out the loss of a server without a
//! restart. A read whose connection broke after it was sent goes to the next too; a
//! write that was sent when its connection broke, or a request whose body is a
//! stream, is not resent: the agent's loops try again on their own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::uri::Authority;
use k8s_openapi::api::core::v1::Endpoints;

use crate::error::{Error, Result};

/// The servers, and which one is in use.
#[derive(Debug)]
pub struct Servers {
    list: RwLock<Vec<Authority>>,
    current: AtomicUsize,
    given: Authority,
}

impl Servers {
    /// Starts with the server of `url` (https://HOST:PORT).
    pub fn new(url: &str) -> Result<Arc<Servers>> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::Config(format!("the server URL {url:?}: {e}")))?;
        let given = uri
            .authority()
            .cloned()
            .ok_or_else(|| Error::Config(format!("the server URL {url:?} has no host")))?;
        Ok(Arc::new(Servers {
            list: RwLock::new(vec![given.clone()]),
            current: AtomicUsize::new(0),
            given,
        }))
    }

    /// The server requests go to now.
    pub fn current(&self) -> Authority {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        list[self.current.load(Ordering::Relaxed) % list.len()].clone()
    }

    /// Every server known, the one in use first.
    pub fn all(&self) -> Vec<Authority> {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        let at = self.current.load(Ordering::Relaxed) % list.len();
        list[at..].iter().chain(&list[..at]).cloned().collect()
    }

    /// A connection to `server` failed: the next server takes over (if `server` is
    /// still the one in use).
    pub fn failed(&self, server: &Authority) {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        let at = self.current.load(Ordering::Relaxed) % list.len();
        if &list[at] == server && list.len() > 1 {
            let next = (at + 1) % list.len();
            self.current.store(next, Ordering::Relaxed);
            tracing::warn!(failed = %server, now = %list[next], "API server unreachable; using another");
        }
    }

    /// Replaces the list with `found` (and the server given at start), keeping the
    /// one in use when it is still there.
    pub fn set(&self, found: Vec<Authority>) {
        let in_use = self.current();
        let mut list = found;
        if !list.contains(&self.given) {
            list.push(self.given.clone());
        }
        list.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        list.dedup();
        let at = list.iter().position(|a| a == &in_use).unwrap_or(0);
        let mut cur = self.list.write().unwrap_or_else(|e| e.into_inner());
        if *cur != list {
            tracing::info!(servers = ?list.iter().map(Authority::as_str).collect::<Vec<_>>(), "API servers");
        }
        *cur = list;
        self.current.store(at, Ordering::Relaxed);
    }
}

/// The servers in the `kubernetes` Service's endpoints.
fn from_endpoints(ep: &Endpoints) -> Vec<Authority> {
    let mut out = Vec::new();
    for s in ep.subsets.iter().flatten() {
        let port = s
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().is_none_or(|n| n == "https"))
            .map(|p| p.port);
        let Some(port) = port else { continue };
        for a in s.addresses.iter().flatten() {
            let host = match a.ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
                _ => a.ip.clone(),
            };
            if let Ok(auth) = format!("{host}:{port}").parse() {
                out.push(auth);
            }
        }
    }
    out
}

/// Keeps `servers` to the servers the cluster lists, every 10 s, for as long as the
/// agent runs.
pub async fn follow(client: kube::Client, servers: Arc<Servers>) {
    let api: kube::Api<Endpoints> = kube::Api::namespaced(client, "default");
    loop {
        match api.get_opt("kubernetes").await {
            Ok(Some(ep)) => {
                let found = from_endpoints(&ep);
                if !found.is_empty() {
                    servers.set(found);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading the API servers' endpoints"),
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_server_hands_over_and_the_list_follows_the_cluster() {
        let s = Servers::new("https://10.0.0.1:6443").unwrap();
        s.failed(&s.current());
        assert_eq!(s.current().as_str(), "10.0.0.1:6443", "alone, it stays");
        s.set(vec![
            "10.0.0.2:6443".parse().unwrap(),
            "10.0.0.3:6443".parse().unwrap(),
        ]);
        assert_eq!(
            s.current().as_str(),
            "10.0.0.1:6443",
            "the one in use stays in use"
        );
        s.failed(&"10.0.0.1:6443".parse().unwrap());
        assert_eq!(s.current().as_str(), "10.0.0.2:6443");
        // A late failure report for a server no longer in use changes nothing.
        s.failed(&"10.0.0.1:6443".parse().unwrap());
        assert_eq!(s.current().as_str(), "10.0.0.2:6443");
        assert_eq!(s.all().len(), 3);
        let ep: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes"},
            "subsets": [{"addresses": [{"ip": "10.0.0.5"}, {"ip": "fd00::1"}], "ports": [{"name": "https", "port": 6443}]}]
        }))
        .unwrap();
        let found: Vec<String> = from_endpoints(&ep).iter().map(|a| a.to_string()).collect();
        assert_eq!(found, vec!["10.0.0.5:6443", "[fd00::1]:6443"]);
    }
}
