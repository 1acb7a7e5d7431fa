//! The RBAC objects as the authorizer reads them: each role's rules and, for every
//! subject (a user or a group; a ServiceAccount is the user it authenticates as),
//! the bindings naming it — cluster-wide and per namespace — so a decision looks up
//! the asking user's few bindings instead of scanning every binding in the cluster.
//! Kept current from the watch hub.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject as RbacSubject,
};
use serde::Deserialize;
use serde_json::Value;

use super::rules;
use super::Attributes;
use crate::request::User;

/// The storage key prefix of the RBAC group.
pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// Who a binding names.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Subject {
    /// A user by name (ServiceAccounts as `system:serviceaccount:NS:NAME`).
    User(String),
    /// A group.
    Group(String),
}

impl Subject {
    fn of(s: &RbacSubject, binding_ns: Option<&str>) -> Option<Subject> {
        match s.kind.as_str() {
            "User" => Some(Subject::User(s.name.clone())),
            "Group" => Some(Subject::Group(s.name.clone())),
            "ServiceAccount" => {
                let ns = s.namespace.as_deref().or(binding_ns)?;
                Some(Subject::User(format!(
                    "system:serviceaccount:{ns}:{}",
                    s.name
                )))
            }
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::User(n) => format!("User {n:?}"),
            Subject::Group(n) => format!("Group {n:?}"),
        }
    }
}

/// A role reference of a binding.
#[derive(Clone, Debug)]
struct Grant {
    /// The binding's name.
    binding: String,
    /// A ClusterRole (else a Role of the binding's namespace).
    cluster_role: bool,
    role: String,
}

#[derive(Clone, Debug)]
struct BindingEntry {
    namespace: Option<String>,
    subjects: Vec<Subject>,
    grant: Grant,
}

/// The index.
#[derive(Default)]
pub struct Index {
    cluster_roles: HashMap<String, Arc<Vec<PolicyRule>>>,
    roles: HashMap<(String, String), Arc<Vec<PolicyRule>>>,
    cluster_bindings: HashMap<Subject, Vec<Grant>>,
    role_bindings: HashMap<(String, Subject), Vec<Grant>>,
    /// What each binding (by storage key) put in the maps above.
    bindings: HashMap<String, BindingEntry>,
}

/// The subjects a user is: its name and its groups.
pub fn subjects_of(user: &User) -> Vec<Subject> {
    std::iter::once(Subject::User(user.name.clone()))
        .chain(user.groups.iter().map(|g| Subject::Group(g.clone())))
        .collect()
}

impl Index {
    /// Applies one stored object (None: deleted) at `key`.
    pub fn apply(&mut self, key: &str, object: Option<&Value>) {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            return;
        };
        let mut parts = rest.splitn(3, '/');
        let (Some(plural), Some(a)) = (parts.next(), parts.next()) else {
            return;
        };
        let b = parts.next();
        match (plural, b) {
            ("clusterroles", None) => match object.and_then(|o| ClusterRole::deserialize(o).ok()) {
                Some(r) => {
                    self.cluster_roles
                        .insert(a.to_string(), Arc::new(r.rules.unwrap_or_default()));
                }
                None => {
                    self.cluster_roles.remove(a);
                }
            },
            ("roles", Some(name)) => {
                let k = (a.to_string(), name.to_string());
                match object.and_then(|o| Role::deserialize(o).ok()) {
                    Some(r) => {
                        self.roles.insert(k, Arc::new(r.rules.unwrap_or_default()));
                    }
                    None => {
                        self.roles.remove(&k);
                    }
                }
            }
            ("clusterrolebindings", None) => {
                self.unbind(key);
                if let Some(b) = object.and_then(|o| ClusterRoleBinding::deserialize(o).ok()) {
                    let subjects = b
                        .subjects
                        .iter()
                        .flatten()
                        .filter_map(|s| Subject::of(s, None))
                        .collect();
                    self.bind(
                        key,
                        BindingEntry {
                            namespace: None,
                            subjects,
                            grant: Grant {
                                binding: a.to_string(),
                                cluster_role: true,
                                role: b.role_ref.name,
                            },
                        },
                    );
                }
            }
            ("rolebindings", Some(name)) => {
                self.unbind(key);
                if let Some(b) = object.and_then(|o| RoleBinding::deserialize(o).ok()) {
                    let subjects = b
                        .subjects
                        .iter()
                        .flatten()
                        .filter_map(|s| Subject::of(s, Some(a)))
                        .collect();
                    self.bind(
                        key,
                        BindingEntry {
                            namespace: Some(a.to_string()),
                            subjects,
                            grant: Grant {
                                binding: name.to_string(),
                                cluster_role: b.role_ref.kind == "ClusterRole",
                                role: b.role_ref.name,
                            },
                        },
                    );
                }
            }
            _ => {}
        }
    }

    fn bind(&mut self, key: &str, e: BindingEntry) {
        for s in &e.subjects {
            let list = match &e.namespace {
                None => self.cluster_bindings.entry(s.clone()).or_default(),
                Some(ns) => self
                    .role_bindings
                    .entry((ns.clone(), s.clone()))
                    .or_default(),
            };
            list.push(e.grant.clone());
        }
        self.bindings.insert(key.to_string(), e);
    }

    fn unbind(&mut self, key: &str) {
        let Some(e) = self.bindings.remove(key) else {
            return;
        };
        for s in &e.subjects {
            let map_key;
            let list = match &e.namespace {
                None => self.cluster_bindings.get_mut(s),
                Some(ns) => {
                    map_key = (ns.clone(), s.clone());
                    self.role_bindings.get_mut(&map_key)
                }
            };
            if let Some(list) = list {
                if let Some(i) = list.iter().position(|g| g.binding == e.grant.binding) {
                    list.swap_remove(i);
                }
            }
        }
    }

    fn rules_of(&self, g: &Grant, ns: Option<&str>) -> Option<&Arc<Vec<PolicyRule>>> {
        if g.cluster_role {
            self.cluster_roles.get(&g.role)
        } else {
            self.roles.get(&(ns?.to_string(), g.role.clone()))
        }
    }

    /// Every (grant, its namespace, its subject) that applies to `user` in `ns`
    /// (cluster-wide bindings always; a namespace's bindings within it).
    fn grants<'a>(
        &'a self,
        subjects: &'a [Subject],
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Grant, Option<&'a str>, &'a Subject)> + 'a {
        subjects.iter().flat_map(move |s| {
            let cluster = self
                .cluster_bindings
                .get(s)
                .into_iter()
                .flatten()
                .map(move |g| (g, None, s));
            let local = ns
                .and_then(|ns| {
                    self.role_bindings
                        .get(&(ns.to_string(), s.clone()))
                        .map(|l| (ns, l))
                })
                .into_iter()
                .flat_map(move |(ns, l)| l.iter().map(move |g| (g, Some(ns), s)));
            cluster.chain(local)
        })
    }

    /// Why the request is allowed (kube's "RBAC: allowed by ..."), or None.
    pub fn allowed_by(&self, a: &Attributes<'_>) -> Option<String> {
        let subjects = subjects_of(a.user);
        for (g, ns, s) in self.grants(&subjects, a.namespace) {
            let Some(rules) = self.rules_of(g, ns) else {
                continue;
            };
            if rules.iter().any(|r| rules::allows(r, a)) {
                let binding = match ns {
                    Some(ns) => format!("RoleBinding \"{}/{ns}\"", g.binding),
                    None => format!("ClusterRoleBinding {:?}", g.binding),
                };
                let role = if g.cluster_role {
                    format!("ClusterRole {:?}", g.role)
                } else {
                    format!("Role {:?}", g.role)
                };
                return Some(format!(
                    "RBAC: allowed by {binding} of {role} to {}",
                    s.describe()
                ));
            }
        }
        None
    }

    /// Every rule `user` holds in `ns` (cluster-wide only, for None).
    pub fn rules_for(&self, user: &User, ns: Option<&str>) -> Vec<PolicyRule> {
        let subjects = subjects_of(user);
        let mut out = Vec::new();
        for (g, gns, _) in self.grants(&subjects, ns) {
            if let Some(rules) = self.rules_of(g, gns) {
                out.extend(rules.iter().cloned());
            }
        }
        out
    }

    /// A ClusterRole's rules.
    pub fn cluster_role(&self, name: &str) -> Option<Arc<Vec<PolicyRule>>> {
        self.cluster_roles.get(name).cloned()
    }

    /// A Role's rules.
    pub fn role(&self, ns: &str, name: &str) -> Option<Arc<Vec<PolicyRule>>> {
        self.roles.get(&(ns.to_string(), name.to_string())).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index() -> Index {
        let mut ix = Index::default();
        ix.apply(
            &format!("{PREFIX}clusterroles/view"),
            Some(&json!({"metadata": {"name": "view"},
                "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]})),
        );
        ix.apply(
            &format!("{PREFIX}rolebindings/dev/bob-view"),
            Some(&json!({"metadata": {"name": "bob-view", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "ci"}]})),
        );
        ix
    }

    fn get_pods<'a>(user: &'a User, ns: &'a str) -> Attributes<'a> {
        Attributes::resource(user, "list", Some(ns), "", "pods", None, None)
    }

    #[test]
    fn bindings_grant_in_their_namespace_only() {
        let mut ix = index();
        let bob = User::component("bob", vec![]);
        assert_eq!(
            ix.allowed_by(&get_pods(&bob, "dev")).as_deref(),
            Some("RBAC: allowed by RoleBinding \"bob-view/dev\" of ClusterRole \"view\" to User \"bob\"")
        );
        assert_eq!(ix.allowed_by(&get_pods(&bob, "prod")), None);
        // A ServiceAccount subject is its user, in the binding's namespace.
        let ci = User::component("system:serviceaccount:dev:ci", vec![]);
        assert!(ix.allowed_by(&get_pods(&ci, "dev")).is_some());
        // A changed binding replaces what it granted; a deleted one grants nothing.
        ix.apply(
            &format!("{PREFIX}rolebindings/dev/bob-view"),
            Some(&json!({"metadata": {"name": "bob-view", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "Group", "name": "devs"}]})),
        );
        assert_eq!(ix.allowed_by(&get_pods(&bob, "dev")), None);
        let dev = User::component("carol", vec!["devs".into()]);
        assert!(ix.allowed_by(&get_pods(&dev, "dev")).is_some());
        ix.apply(&format!("{PREFIX}rolebindings/dev/bob-view"), None);
        assert_eq!(ix.allowed_by(&get_pods(&dev, "dev")), None);
        // A role that goes takes its rights with it.
        ix.apply(
            &format!("{PREFIX}clusterrolebindings/all-view"),
            Some(&json!({"metadata": {"name": "all-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": "bob"}]})),
        );
        assert!(ix.allowed_by(&get_pods(&bob, "prod")).is_some());
        ix.apply(&format!("{PREFIX}clusterroles/view"), None);
        assert_eq!(ix.allowed_by(&get_pods(&bob, "prod")), None);
    }
}
