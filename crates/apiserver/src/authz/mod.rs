//! Authorization: whether a user may do what a request asks. As kube-apiserver with
//! `--authorization-mode=Node,RBAC`: members of system:masters may do anything; a
//! node what its pods need ([`node`]); then RBAC (Roles, ClusterRoles and their
//! bindings, read from an index the watch hub keeps current). NodeRestriction
//! ([`restriction`]) narrows what nodes write. Also what rides on it: impersonation (`kubectl --as`), the
//! escalation check on roles and bindings, and the access reviews behind
//! `kubectl auth can-i`.

pub mod controller_policy;
pub mod escalation;
pub mod impersonate;
pub mod index;
pub mod node;
pub mod policy;
pub mod reconcile;
pub mod restriction;
pub mod reviews;
pub mod rules;

use std::sync::{Arc, RwLock};

use http::Method;

use crate::api::Target;
use crate::hub::{Hub, Observer};
use crate::request::{Request, User};
use crate::status::ApiError;

/// The group whose members may do anything (kube's privileged group).
pub const MASTERS: &str = "system:masters";

/// What a request asks, in kube's authorizer terms.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    /// Who.
    pub user: &'a User,
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection
    /// (and impersonate, bind, escalate...); a non-resource request's is the
    /// lower-case HTTP method.
    pub verb: &'a str,
    /// The namespace, if any (a namespace's own name for the namespace object).
    pub namespace: Option<&'a str>,
    /// The API group ("" for core).
    pub api_group: &'a str,
    /// The resource (plural).
    pub resource: &'a str,
    /// The subresource.
    pub subresource: Option<&'a str>,
    /// The object's name, if the request names one.
    pub name: Option<&'a str>,
    /// The request path (what non-resource rules match).
    pub path: &'a str,
    /// Whether the request is about a resource (else a non-resource URL).
    pub resource_request: bool,
}

impl<'a> Attributes<'a> {
    /// A request about a resource, with no path (reviews, internal checks).
    pub fn resource(
        user: &'a User,
        verb: &'a str,
        namespace: Option<&'a str>,
        api_group: &'a str,
        resource: &'a str,
        subresource: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            user,
            verb,
            namespace,
            api_group,
            resource,
            subresource,
            name,
            path: "",
            resource_request: true,
        }
    }

    /// The attributes of a request to `target`, asked with `verb`.
    pub fn of(
        user: &'a User,
        req: &'a Request,
        verb: &'a str,
        target: &'a Target<'a>,
    ) -> Attributes<'a> {
        match target {
            Target::Resource { res, ns, name, sub } => {
                // A namespace object is in itself (by the name in its path only).
                let namespace = if res.plural == "namespaces" {
                    name.or(*ns)
                } else {
                    *ns
                };
                // A list or watch of one object by name is authorized as that object;
                // no other verb takes a name from a selector.
                let name = name.or_else(|| {
                    req.q("fieldSelector")
                        .filter(|_| matches!(verb, "list" | "watch"))
                        .and_then(|f| f.strip_prefix("metadata.name="))
                        .filter(|n| !n.contains(','))
                });
                Attributes {
                    user,
                    verb,
                    namespace,
                    api_group: res.group,
                    resource: res.plural,
                    subresource: *sub,
                    name,
                    path: &req.path,
                    resource_request: true,
                }
            }
            Target::Other => Attributes {
                user,
                verb: non_resource_verb(&req.method),
                namespace: None,
                api_group: "",
                resource: "",
                subresource: None,
                name: None,
                path: &req.path,
                resource_request: false,
            },
        }
    }
}

/// The verb of a non-resource request: its method in lower case (HEAD as get).
pub fn non_resource_verb(m: &Method) -> &'static str {
    match *m {
        Method::GET | Method::HEAD => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// An authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with the reason.
    Allow(String),
    /// Not allowed, with the reason (often empty, as RBAC gives none).
    Deny(String),
}

/// The server's authorizer.
pub struct Authorizer {
    index: Arc<RwLock<index::Index>>,
    nodes: Option<node::NodeAuthorizer>,
}

impl Authorizer {
    /// An authorizer over the hub's RBAC objects, kept current as the hub applies
    /// each change.
    pub fn start(hub: &Hub) -> Authorizer {
        let index = Arc::new(RwLock::new(index::Index::default()));
        hub.observe(index::PREFIX, Arc::new(Follower(index.clone())));
        Authorizer {
            index,
            nodes: Some(node::NodeAuthorizer::start(hub)),
        }
    }

    /// An authorizer over the given objects only (tests, benchmarks).
    pub fn from_objects<'a>(
        objects: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
    ) -> Authorizer {
        let mut ix = index::Index::default();
        for (k, v) in objects {
            ix.apply(k, Some(v));
        }
        Authorizer {
            index: Arc::new(RwLock::new(ix)),
            nodes: None,
        }
    }

    /// Decides a request.
    pub fn authorize(&self, a: &Attributes<'_>) -> Decision {
        if a.user.groups.iter().any(|g| g == MASTERS) {
            return Decision::Allow(String::new());
        }
        // Node, then RBAC, as kube chains them: a node's denial leaves RBAC to
        // decide, and names its reason when RBAC refuses too.
        let node_reason = match self.nodes.as_ref().and_then(|n| n.authorize(a)) {
            Some(Decision::Allow(why)) => return Decision::Allow(why),
            Some(Decision::Deny(why)) => why,
            None => String::new(),
        };
        let ix = self.index.read().unwrap_or_else(|e| e.into_inner());
        match ix.allowed_by(a) {
            Some(why) => Decision::Allow(why),
            None => Decision::Deny(node_reason),
        }
    }

    /// Ok, or kube's 403 for the request.
    pub fn check(&self, a: &Attributes<'_>) -> Result<(), ApiError> {
        match self.authorize(a) {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(why) => Err(forbidden(a, &why)),
        }
    }

    /// Reads the index.
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, index::Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// kube's 403 for a refused request: `pods "web" is forbidden: User "bob" cannot get
/// resource "pods" in API group "" in the namespace "default"`, the reason after.
pub fn forbidden(a: &Attributes<'_>, reason: &str) -> ApiError {
    let who = &a.user.name;
    let mut msg = if !a.resource_request {
        format!("User {who:?} cannot {} path {:?}", a.verb, a.path)
    } else {
        let resource = match a.subresource {
            Some(s) => format!("{}/{s}", a.resource),
            None => a.resource.to_string(),
        };
        let scope = match a.namespace {
            Some(ns) => format!("in the namespace {ns:?}"),
            None => "at the cluster scope".to_string(),
        };
        format!(
            "User {who:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            a.verb, a.api_group
        )
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let mut e = if !a.resource_request {
        ApiError::forbidden(format!("forbidden: {msg}"))
    } else {
        let qualified = if a.api_group.is_empty() {
            a.resource.to_string()
        } else {
            format!("{}.{}", a.resource, a.api_group)
        };
        let head = match a.name {
            Some(n) => format!("{qualified} {n:?}"),
            None => qualified,
        };
        let mut e = ApiError::forbidden(format!("{head} is forbidden: {msg}"));
        e.group = Some(a.api_group.to_string());
        e.kind = Some(a.resource.to_string());
        e.name = a.name.map(str::to_string);
        e
    };
    e.reason = "Forbidden";
    e
}

/// Keeps the index current from the hub.
struct Follower(Arc<RwLock<index::Index>>);

impl Observer for Follower {
    fn reset(&self, objects: &mut dyn Iterator<Item = (&str, serde_json::Value)>) {
        let mut ix = index::Index::default();
        for (k, v) in objects {
            ix.apply(k, Some(&v));
        }
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = ix;
    }

    fn changed(&self, key: &str, object: Option<&serde_json::Value>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(key, object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str, query: &[(&str, &str)]) -> Request {
        Request {
            method,
            path: path.into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: Default::default(),
            body: Default::default(),
            user: None,
        }
    }

    #[test]
    fn only_lists_and_watches_take_a_name_from_a_selector() {
        let u = User::component("bob", vec![]);
        let sel = [("fieldSelector", "metadata.name=only")];
        let list = request(Method::GET, "/api/v1/namespaces/dev/configmaps", &sel);
        let t = crate::api::parse_path(&list.path).unwrap();
        assert_eq!(Attributes::of(&u, &list, "list", &t).name, Some("only"));
        let create = request(Method::POST, "/api/v1/namespaces/dev/configmaps", &sel);
        assert_eq!(Attributes::of(&u, &create, "create", &t).name, None);
        // A namespace is in itself only by the name in its path.
        let ns = request(
            Method::POST,
            "/api/v1/namespaces",
            &[("fieldSelector", "metadata.name=foo")],
        );
        let t = crate::api::parse_path(&ns.path).unwrap();
        let a = Attributes::of(&u, &ns, "create", &t);
        assert_eq!((a.namespace, a.name), (None, None));
        let one = request(Method::GET, "/api/v1/namespaces/foo", &[]);
        let t = crate::api::parse_path(&one.path).unwrap();
        let a = Attributes::of(&u, &one, "get", &t);
        assert_eq!((a.namespace, a.name), (Some("foo"), Some("foo")));
    }
}
