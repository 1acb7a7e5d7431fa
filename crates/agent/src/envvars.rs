//! A container's environment as the kubelet makes it: envFrom, then env in order
//! (values with `$(VAR)` expanded against what came before; fieldRef,
//! resourceFieldRef, configMapKeyRef, secretKeyRef), and `$(VAR)` in command and args.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use std::time::Duration;

use kube::runtime::reflector;
use std::sync::Arc;

use crate::objwatch::Watched;
use kube::Api;

use crate::error::{ApiContext, Error, Result};
use crate::qos;

/// Expands `$(NAME)` from `vars` as Kubernetes does: `$$` is a literal `$`, and a
/// reference to a name that is not defined stays as written.
pub fn expand(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match vars(name) {
                        Some(v) => out.push_str(&v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The node's view of the ConfigMaps and Secrets its pods use (each watched alone:
/// [`crate::objwatch`]) and of Services (a reflector), so a pod's sync reads them from
/// memory instead of asking the API server every time.
#[derive(Clone)]
pub struct Caches {
    /// ConfigMaps.
    pub config_maps: Arc<Watched<ConfigMap>>,
    /// Secrets.
    pub secrets: Arc<Watched<Secret>>,
    /// Services (for the variables the kubelet gives every container).
    pub services: reflector::Store<Service>,
}

/// How long a sync waits for the Services cache's first list.
const CACHE_WAIT: Duration = Duration::from_secs(5);

/// ConfigMaps and Secrets read once per pod sync.
pub struct Sources {
    client: kube::Client,
    caches: Option<Caches>,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl Sources {
    /// Sources in the pod's namespace, from the caches when given.
    pub fn new(client: kube::Client, caches: Option<Caches>, namespace: &str) -> Sources {
        Sources {
            client,
            caches,
            namespace: namespace.into(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    /// A ConfigMap, or None when it does not exist.
    pub async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>> {
        if !self.config_maps.contains_key(name) {
            let from_cache = match &self.caches {
                Some(c) => c
                    .config_maps
                    .get(&self.namespace, name)
                    .map(|o| o.map(|cm| (*cm).clone())),
                None => None,
            };
            let cm = match from_cache {
                Some(cm) => cm,
                None => {
                    let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
                    api.get_opt(name)
                        .await
                        .api(|| format!("get configmap {}/{name}", self.namespace))?
                }
            };
            self.config_maps.insert(name.into(), cm);
        }
        Ok(self.config_maps[name].as_ref())
    }

    /// A Secret, or None when it does not exist.
    pub async fn secret(&mut self, name: &str) -> Result<Option<&Secret>> {
        if !self.secrets.contains_key(name) {
            let from_cache = match &self.caches {
                Some(c) => c
                    .secrets
                    .get(&self.namespace, name)
                    .map(|o| o.map(|s| (*s).clone())),
                None => None,
            };
            let s = match from_cache {
                Some(s) => s,
                None => {
                    let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
                    api.get_opt(name)
                        .await
                        .api(|| format!("get secret {}/{name}", self.namespace))?
                }
            };
            self.secrets.insert(name.into(), s);
        }
        Ok(self.secrets[name].as_ref())
    }

    /// A ConfigMap's keys as strings (binaryData as lossy UTF-8).
    pub async fn config_map_data(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        Ok(self.config_map(name).await?.map(|cm| {
            let mut m: BTreeMap<String, Vec<u8>> = cm
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect();
            for (k, v) in cm.binary_data.iter().flatten() {
                m.insert(k.clone(), v.0.clone());
            }
            m
        }))
    }

    /// A Secret's keys (stringData is folded into data by the API server).
    pub async fn secret_data(&mut self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        Ok(self.secret(name).await?.map(|s| {
            let mut m: BTreeMap<String, Vec<u8>> = s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            for (k, v) in s.string_data.iter().flatten() {
                m.insert(k.clone(), v.clone().into_bytes());
            }
            m
        }))
    }
}

/// What fieldRefs read beyond the pod object.
pub struct PodFacts<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The node's address.
    pub host_ip: String,
    /// The pod's address ("" before it has one, or the host's with hostNetwork).
    pub pod_ip: String,
    /// The node's allocatable CPU in millicores and memory in bytes: what a
    /// resourceFieldRef reads for a container without a limit.
    pub node_cpu_milli: i128,
    /// Node memory in bytes.
    pub node_memory: i64,
}

/// The value of a downward API field path (`metadata.labels['app']`).
pub fn field_value(facts: &PodFacts, path: &str) -> Result<String> {
    let m = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    let key_in = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?;
        let k = rest.strip_prefix("['")?.strip_suffix("']")?;
        Some(k.to_string())
    };
    let render = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| {
                format!(
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => render(&m.labels),
        "metadata.annotations" => render(&m.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        _ => {
            if let Some(k) = key_in("metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = key_in("metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(Error::Spec(format!(
                    "fieldRef {path:?} is not a field the downward API offers (metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.hostIP, status.podIP)"
                )));
            }
        }
    })
}

/// The value of a resourceFieldRef (`limits.memory` with a divisor), for `c`.
pub fn resource_value(
    facts: &PodFacts,
    c: &Container,
    resource: &str,
    divisor: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Result<String> {
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let q = match kind {
        "limits" => qos::limit(c, name),
        "requests" => qos::request(c, name),
        _ => None,
    };
    let milli = match (q, name) {
        (Some(q), _) => qos::milli_value(&q)?,
        (None, "cpu") if kind == "limits" => facts.node_cpu_milli,
        (None, "memory") if kind == "limits" => facts.node_memory as i128 * 1000,
        (None, _) => 0,
    };
    let div = match divisor {
        Some(d) => qos::milli_value(d)?,
        None => 1000,
    }
    .max(1);
    // Rounded up, as the kubelet does (a CPU limit of 250m reads as 1 core).
    Ok(((milli + div - 1) / div).to_string())
}

/// The variables the kubelet gives every container for Services: the `kubernetes`
/// Service of the default namespace, and (with enableServiceLinks, the default) every
/// Service of the pod's namespace that has a cluster IP — `NAME_SERVICE_HOST`,
/// `NAME_SERVICE_PORT[_PORTNAME]` and docker's link variables (`NAME_PORT`,
/// `NAME_PORT_80_TCP`, `_PROTO`, `_PORT`, `_ADDR`).
pub fn service_env(services: &[Service], namespace: &str, links: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chosen: Vec<&Service> = services
        .iter()
        .filter(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or("");
            let name = s.metadata.name.as_deref().unwrap_or("");
            (links && ns == namespace) || (ns == "default" && name == "kubernetes")
        })
        .collect();
    chosen.sort_by_key(|s| s.metadata.name.clone());
    chosen.dedup_by_key(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()));
    for s in chosen {
        let Some(spec) = &s.spec else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let Some(first) = spec.ports.as_ref().and_then(|p| p.first()) else {
            continue;
        };
        let name = s
            .metadata
            .name
            .clone()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in spec.ports.iter().flatten() {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        pn.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in spec.ports.iter().flatten() {
            let pr = proto(p);
            let base = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), pr.to_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    out
}

/// A container's resolved environment, in order.
pub async fn resolve(
    facts: &PodFacts<'_>,
    c: &Container,
    sources: &mut Sources,
) -> Result<Vec<(String, String)>> {
    let links = facts
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let ns = facts.pod.metadata.namespace.clone().unwrap_or_default();
    let mut out: Vec<(String, String)> = match &sources.caches {
        Some(c) => {
            // As the kubelet does, a container starts with the Services listed.
            let _ = tokio::time::timeout(CACHE_WAIT, c.services.wait_until_ready()).await;
            let services: Vec<Service> = c.services.state().iter().map(|s| (**s).clone()).collect();
            service_env(&services, &ns, links)
        }
        None => Vec::new(),
    };
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            match sources.config_map_data(&r.name).await? {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(Error::Missing(format!(
                        "configmap \"{}\" not found (envFrom of container {})",
                        r.name, c.name
                    )))
                }
            }
        } else if let Some(r) = &from.secret_ref {
            match sources.secret_data(&r.name).await? {
                Some(d) => d,
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(Error::Missing(format!(
                        "secret \"{}\" not found (envFrom of container {})",
                        r.name, c.name
                    )))
                }
            }
        } else {
            continue;
        };
        for (k, v) in data {
            set(
                &mut out,
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let known = out.clone();
            expand(v, &|n| {
                known.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_value(facts, &f.field_path)?
            } else if let Some(r) = &src.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    Some(n) if !n.is_empty() && n != c.name => facts
                        .pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.iter().find(|x| x.name == n))
                        .ok_or_else(|| {
                            Error::Spec(format!(
                                "env {} of container {}: resourceFieldRef names container {n:?}, which the pod does not have",
                                e.name, c.name
                            ))
                        })?,
                    _ => c,
                };
                resource_value(facts, target, &r.resource, r.divisor.as_ref())?
            } else if let Some(r) = &src.config_map_key_ref {
                match sources.config_map_data(&r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(Error::Missing(format!(
                                "couldn't find key {} in ConfigMap {}/{} (env {} of container {})",
                                r.key, sources.namespace, r.name, e.name, c.name
                            )))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(Error::Missing(format!(
                            "configmap \"{}\" not found (env {} of container {})",
                            r.name, e.name, c.name
                        )))
                    }
                }
            } else if let Some(r) = &src.secret_key_ref {
                match sources.secret_data(&r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(Error::Missing(format!(
                                "couldn't find key {} in Secret {}/{} (env {} of container {})",
                                r.key, sources.namespace, r.name, e.name, c.name
                            )))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(Error::Missing(format!(
                            "secret \"{}\" not found (env {} of container {})",
                            r.name, e.name, c.name
                        )))
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

/// Command and args with `$(VAR)` expanded from the container's environment.
pub fn expand_all(list: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    list.iter().map(|s| expand(s, &lookup)).collect()
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn service_variables_as_the_kubelet_writes_them() {
        let svc: Vec<k8s_openapi::api::core::v1::Service> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "kubernetes", "namespace": "default"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
            {"metadata": {"name": "web-api", "namespace": "shop"},
             "spec": {"clusterIP": "10.96.0.7", "ports": [{"port": 80}]}},
            {"metadata": {"name": "headless", "namespace": "shop"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}},
            {"metadata": {"name": "other", "namespace": "elsewhere"}, "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 9}]}},
        ])).unwrap();
        let env = super::service_env(&svc, "shop", true);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("WEB_API_SERVICE_HOST"), Some("10.96.0.7"));
        assert_eq!(get("WEB_API_PORT_80_TCP_ADDR"), Some("10.96.0.7"));
        assert_eq!(get("HEADLESS_SERVICE_HOST"), None);
        assert_eq!(get("OTHER_SERVICE_HOST"), None);
        let no_links = super::service_env(&svc, "shop", false);
        assert!(no_links.iter().all(|(k, _)| k.starts_with("KUBERNETES_")));
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = |n: &str| match n {
            "A" => Some("one".to_string()),
            "B" => Some("$(A)".to_string()),
            _ => None,
        };
        assert_eq!(expand("x$(A)y", &vars), "xoney");
        assert_eq!(expand("$(B)", &vars), "$(A)", "no second round");
        assert_eq!(expand("$$(A)", &vars), "$(A)", "$$ escapes");
        assert_eq!(expand("$(NOPE)", &vars), "$(NOPE)", "undefined stays");
        assert_eq!(expand("$(A", &vars), "$(A", "unterminated stays");
        assert_eq!(expand("a$b$", &vars), "a$b$");
        assert_eq!(expand("ünï$(A)", &vars), "ünïone");
    }
}
