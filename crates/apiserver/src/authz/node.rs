//! The Node authorizer (kube's `--authorization-mode=Node`): a node's user
//! (`system:node:NAME`, group `system:nodes`) may read a Secret, ConfigMap or
//! PersistentVolumeClaim, and ask a ServiceAccount's token, only when a pod bound to
//! that node uses it — one object at a time, by name, never a namespace's or the
//! cluster's whole list. (PersistentVolumes, which kube narrows too, a berth node
//! lists: its local-path directories follow them.) Beyond those it holds the rights of the
//! `system:node` role and of berth's per-node Service proxy, DNS, NetworkPolicy and
//! Ingress (Services, EndpointSlices, pods, namespaces, policies, Ingresses, and the
//! Secrets Ingresses name for TLS). What it may write is narrowed further by
//! [`super::restriction`] (NodeRestriction).
//!
//! The relations come from an index of pods by node and of Ingresses'
//! TLS Secrets that the watch hub keeps current as it applies each change.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::Deserialize;
use serde_json::Value;

use super::{rules, Attributes, Decision};
use crate::hub::{Hub, Observer};

/// The group of every node's user.
pub const NODES_GROUP: &str = "system:nodes";

/// The node a user is, when it is one.
pub fn node_of(user: &crate::request::User) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// What a pod uses that its node must read: (kind, namespace, name).
type Ref = (&'static str, String, String);

#[derive(Default)]
struct Graph {
    /// Each pod's node and what it uses, by storage key.
    pods: HashMap<String, (String, Vec<Ref>)>,
    /// For each node, what its pods use, counted.
    uses: HashMap<String, HashMap<Ref, usize>>,
    /// The Secrets Ingresses name for TLS, counted: every node serves Ingresses.
    tls: HashMap<(String, String), usize>,
    /// What each Ingress names, by storage key.
    ingresses: HashMap<String, Vec<(String, String)>>,
}

/// What a pod spec uses by name.
fn refs_of(ns: &str, pod_name: &str, spec: &PodSpec) -> Vec<Ref> {
    let mut out: Vec<Ref> = Vec::new();
    let mut add = |kind: &'static str, name: &str| {
        let r = (kind, ns.to_string(), name.to_string());
        if !name.is_empty() && !out.contains(&r) {
            out.push(r);
        }
    };
    // Only a named one: a mirror pod (which admission gives none) must not let its
    // node mint the namespace's default tokens.
    if let Some(sa) = spec.service_account_name.as_deref() {
        add("serviceaccounts", sa);
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        add("secrets", &s.name);
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = &v.secret {
            add("secrets", s.secret_name.as_deref().unwrap_or(""));
        }
        if let Some(c) = &v.config_map {
            add("configmaps", &c.name);
        }
        if let Some(c) = &v.persistent_volume_claim {
            add("persistentvolumeclaims", &c.claim_name);
        }
        if v.ephemeral.is_some() {
            add("persistentvolumeclaims", &format!("{pod_name}-{}", v.name));
        }
        if let Some(p) = &v.projected {
            for src in p.sources.iter().flatten() {
                if let Some(s) = &src.secret {
                    add("secrets", &s.name);
                }
                if let Some(c) = &src.config_map {
                    add("configmaps", &c.name);
                }
            }
        }
        if let Some(r) = v
            .csi
            .as_ref()
            .and_then(|c| c.node_publish_secret_ref.as_ref())
        {
            add("secrets", &r.name);
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(f) = &e.value_from {
                if let Some(s) = &f.secret_key_ref {
                    add("secrets", &s.name);
                }
                if let Some(m) = &f.config_map_key_ref {
                    add("configmaps", &m.name);
                }
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(s) = &e.secret_ref {
                add("secrets", &s.name);
            }
            if let Some(m) = &e.config_map_ref {
                add("configmaps", &m.name);
            }
        }
    }
    out
}

impl Graph {
    fn unset_pod(&mut self, key: &str) {
        let Some((node, refs)) = self.pods.remove(key) else {
            return;
        };
        if let Some(uses) = self.uses.get_mut(&node) {
            for r in refs {
                if let Some(n) = uses.get_mut(&r) {
                    *n -= 1;
                    if *n == 0 {
                        uses.remove(&r);
                    }
                }
            }
            if uses.is_empty() {
                self.uses.remove(&node);
            }
        }
    }

    /// Runs under the hub's lock on every pod change (status writes included): only
    /// a bound pod's spec is decoded, from the stored value without a copy.
    fn set_pod(&mut self, key: &str, pod: Option<&Value>) {
        self.unset_pod(key);
        let Some(pod) = pod else {
            return;
        };
        let Some(node) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            return;
        };
        let Some(spec) = pod.get("spec").and_then(|s| PodSpec::deserialize(s).ok()) else {
            return;
        };
        let meta = |k: &str| {
            pod.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let refs = refs_of(meta("namespace"), meta("name"), &spec);
        let uses = self.uses.entry(node.to_string()).or_default();
        for r in &refs {
            *uses.entry(r.clone()).or_default() += 1;
        }
        self.pods.insert(key.to_string(), (node.to_string(), refs));
    }

    fn set_ingress(&mut self, key: &str, ing: Option<&Value>) {
        for s in self.ingresses.remove(key).unwrap_or_default() {
            if let Some(n) = self.tls.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    self.tls.remove(&s);
                }
            }
        }
        let Some(ing) = ing else {
            return;
        };
        let ns = ing
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut names: Vec<(String, String)> = ing
            .pointer("/spec/tls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("secretName").and_then(Value::as_str))
            .map(|s| (ns.to_string(), s.to_string()))
            .collect();
        names.sort();
        names.dedup();
        for s in &names {
            *self.tls.entry(s.clone()).or_default() += 1;
        }
        self.ingresses.insert(key.to_string(), names);
    }

    /// Whether `node` uses the object.
    fn related(&self, node: &str, resource: &str, ns: &str, name: &str) -> bool {
        let uses = self.uses.get(node);
        let has = |kind: &'static str, ns: &str, name: &str| {
            uses.is_some_and(|u| u.contains_key(&(kind, ns.to_string(), name.to_string())))
        };
        match resource {
            "secrets" => {
                has("secrets", ns, name)
                    || self.tls.contains_key(&(ns.to_string(), name.to_string()))
            }
            r => {
                let kind = match r {
                    "configmaps" => "configmaps",
                    "persistentvolumeclaims" => "persistentvolumeclaims",
                    "serviceaccounts" => "serviceaccounts",
                    _ => return false,
                };
                has(kind, ns, name)
            }
        }
    }
}

/// Keeps one part of the graph current from the hub.
struct Follow {
    graph: Arc<RwLock<Graph>>,
    set: fn(&mut Graph, &str, Option<&Value>),
    clear: fn(&mut Graph),
}

impl Observer for Follow {
    fn reset(&self, objects: &mut dyn Iterator<Item = (&str, Value)>) {
        let mut g = self.graph.write().unwrap_or_else(|e| e.into_inner());
        (self.clear)(&mut g);
        for (k, v) in objects {
            (self.set)(&mut g, k, Some(&v));
        }
    }

    fn changed(&self, key: &str, object: Option<&Value>) {
        let mut g = self.graph.write().unwrap_or_else(|e| e.into_inner());
        (self.set)(&mut g, key, object);
    }
}

/// The rights every node holds beyond its own objects: the `system:node` role's and
/// those of the Service proxy, DNS, NetworkPolicy and Ingress each berth node runs.
fn node_rules() -> Vec<PolicyRule> {
    let mut rules: Vec<PolicyRule> = super::policy::node_rule_values()
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    // The graph decides these, one object at a time.
    for r in rules.iter_mut() {
        if let Some(res) = &mut r.resources {
            res.retain(|x| {
                !matches!(
                    x.as_str(),
                    "secrets" | "configmaps" | "persistentvolumeclaims"
                )
            });
        }
    }
    rules.retain(|r| r.resources.as_ref().is_none_or(|x| !x.is_empty()));
    rules
}

/// The Node authorizer.
pub struct NodeAuthorizer {
    graph: Arc<RwLock<Graph>>,
    rules: Vec<PolicyRule>,
}

impl NodeAuthorizer {
    /// An authorizer over the hub's pods, claims and Ingresses, kept current.
    pub fn start(hub: &Hub) -> NodeAuthorizer {
        let graph = Arc::new(RwLock::new(Graph::default()));
        let follow = |set: fn(&mut Graph, &str, Option<&Value>), clear: fn(&mut Graph)| {
            Arc::new(Follow {
                graph: graph.clone(),
                set,
                clear,
            })
        };
        hub.observe(
            "/registry/core/pods/",
            follow(Graph::set_pod, |g| {
                g.pods.clear();
                g.uses.clear();
            }),
        );
        hub.observe(
            "/registry/networking.k8s.io/ingresses/",
            follow(Graph::set_ingress, |g| {
                g.tls.clear();
                g.ingresses.clear();
            }),
        );
        NodeAuthorizer {
            graph,
            rules: node_rules(),
        }
    }

    /// The decision for a node's request (None: the user is not a node). A denial
    /// carries kube's reason; RBAC is asked after it, as kube chains them.
    pub fn authorize(&self, a: &Attributes<'_>) -> Option<Decision> {
        let node = node_of(a.user)?;
        if !a.resource_request {
            return Some(if self.rules.iter().any(|r| rules::allows(r, a)) {
                Decision::Allow(String::new())
            } else {
                Decision::Deny(String::new())
            });
        }
        let graphed = a.api_group.is_empty()
            && matches!(
                (a.resource, a.subresource),
                ("secrets" | "configmaps" | "persistentvolumeclaims", None)
                    | ("serviceaccounts", Some("token"))
            );
        if !graphed {
            return Some(if self.rules.iter().any(|r| rules::allows(r, a)) {
                Decision::Allow(String::new())
            } else {
                Decision::Deny(String::new())
            });
        }
        let verb_ok = match a.resource {
            "serviceaccounts" => a.verb == "create",
            _ => matches!(a.verb, "get" | "list" | "watch"),
        };
        let Some(name) = a.name.filter(|_| verb_ok) else {
            return Some(Decision::Deny(format!(
                "can only {} individual {} objects by name",
                if a.resource == "serviceaccounts" {
                    "create tokens of"
                } else {
                    "read"
                },
                a.resource
            )));
        };
        let ns = a.namespace.unwrap_or("");
        let g = self.graph.read().unwrap_or_else(|e| e.into_inner());
        Some(if g.related(node, a.resource, ns, name) {
            Decision::Allow(String::new())
        } else {
            Decision::Deny(format!(
                "no relationship found between node '{node}' and this object"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::User;
    use serde_json::json;

    fn attrs<'a>(
        user: &'a User,
        verb: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes::resource(user, verb, Some("default"), "", resource, sub, name)
    }

    #[test]
    fn a_node_reads_what_its_pods_use_and_nothing_else() {
        let mut g = Graph::default();
        g.set_pod(
            "/registry/core/pods/default/web",
            Some(&json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"nodeName": "n1", "serviceAccountName": "app",
                         "imagePullSecrets": [{"name": "pull"}],
                         "containers": [{"name": "c", "image": "x",
                            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}],
                            "envFrom": [{"configMapRef": {"name": "settings"}}]}],
                         "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                                     {"name": "t", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}]}})),
        );
        g.set_ingress(
            "/registry/networking.k8s.io/ingresses/default/site",
            Some(&json!({"metadata": {"namespace": "default"}, "spec": {"tls": [{"secretName": "site-tls"}]}})),
        );
        let na = NodeAuthorizer {
            graph: Arc::new(RwLock::new(g)),
            rules: node_rules(),
        };
        let n1 = User::component("system:node:n1", vec![NODES_GROUP.into()]);
        let n2 = User::component("system:node:n2", vec![NODES_GROUP.into()]);
        let allowed = |u: &User, verb: &str, res: &str, sub: Option<&str>, name: Option<&str>| {
            matches!(
                na.authorize(&attrs(u, verb, res, sub, name)),
                Some(Decision::Allow(_))
            )
        };
        for (res, name) in [
            ("secrets", "db"),
            ("secrets", "pull"),
            ("configmaps", "settings"),
            ("configmaps", "kube-root-ca.crt"),
            ("persistentvolumeclaims", "data"),
            ("secrets", "site-tls"),
        ] {
            assert!(allowed(&n1, "get", res, None, Some(name)), "{res}/{name}");
        }
        assert!(allowed(
            &n1,
            "create",
            "serviceaccounts",
            Some("token"),
            Some("app")
        ));
        assert!(!allowed(
            &n1,
            "create",
            "serviceaccounts",
            Some("token"),
            Some("default")
        ));
        assert!(
            !allowed(&n2, "get", "secrets", None, Some("db")),
            "another node's pod's secret"
        );
        assert!(
            allowed(&n2, "get", "secrets", None, Some("site-tls")),
            "Ingress TLS: every node"
        );
        assert!(!allowed(&n1, "list", "secrets", None, None), "no lists");
        assert!(!allowed(&n1, "delete", "secrets", None, Some("db")));
        assert_eq!(
            na.authorize(&attrs(&n2, "get", "secrets", None, Some("db"))),
            Some(Decision::Deny(
                "no relationship found between node 'n2' and this object".into()
            ))
        );
        // The node role's rights, and not more.
        assert!(allowed(&n1, "list", "pods", None, None));
        assert!(allowed(&n1, "update", "pods", Some("status"), Some("web")));
        assert!(!allowed(&n1, "create", "deployments", None, None));
        // Not a node: no opinion.
        let bob = User::component("bob", vec![]);
        assert_eq!(
            na.authorize(&attrs(&bob, "get", "secrets", None, Some("db"))),
            None
        );
        // A pod gone takes its relations with it.
        let mut g = na.graph.write().unwrap();
        g.set_pod("/registry/core/pods/default/web", None);
        assert!(g.uses.is_empty() && g.pods.is_empty());
    }
}
