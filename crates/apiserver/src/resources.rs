//! The one resource table: every served resource with its group, version, kind, names,
//! scope, subresources and verbs, and its schema (from k8s-openapi's types). Routing,
//! discovery, OpenAPI, strict field validation, storage keys and table printing all
//! read from here, so a resource added here is served everywhere at once.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
    autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling, batch::v1 as batch,
    certificates::v1 as certs, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc,
    events::v1 as events, networking::v1 as net, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as sched, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::crd::custom::Custom;

/// The verbs of a resource kept in the store.
pub const STORE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A served resource.
pub struct Resource {
    /// The API group ("" for core).
    pub group: &'static str,
    /// The version.
    pub version: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// The plural resource name (the URL segment).
    pub plural: &'static str,
    /// Short names for kubectl.
    pub short_names: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Categories (kubectl get all).
    pub categories: &'static [&'static str],
    /// Subresources served.
    pub subresources: &'static [&'static str],
    /// What answers for its objects.
    pub backing: Backing,
    /// What the object path does for the kind beyond the generic rules.
    pub strategy: Strategy,
    /// The OpenAPI schema name of the kind.
    pub schema_name: fn() -> Cow<'static, str>,
    /// Adds the kind's schema (and what it references) to a generator.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Checks that a JSON object decodes as the kind; returns the field path and the
    /// error when it does not.
    pub decode: fn(&serde_json::Value) -> Result<(), (String, String)>,
    /// A custom resource's version: its schema, columns and scale paths (its
    /// `schema_name` and `schema` are unused; `crate::crd` answers instead).
    pub custom: Option<&'static Custom>,
}

/// What answers for a resource's objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// The store: every verb, watches.
    Store,
    /// Create-only reviews answered at once (SelfSubjectReview).
    Review,
    /// Read from the nodes when asked (metrics.k8s.io): get and list.
    NodeMetrics,
    /// The store, through the stored version of the same group and kind (found by
    /// [`storage_of`]), converted both ways: every verb, watches. Today only
    /// autoscaling/v1 HorizontalPodAutoscaler, which `hpa_v1` converts.
    Converted,
}

/// What the object path does for a kind beyond the generic rules (kube's
/// per-resource strategies): what a new object is given, what a write reserves or
/// releases, and how a delete proceeds. `objects::strategy` acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The generic rules only (a new object's status is dropped when the kind has a
    /// status subresource).
    Plain,
    /// Admission (service account, toleration seconds, priority), a Pending status
    /// with its QoS class, and graceful deletion on a node.
    Pod,
    /// An Active status on create, the default ServiceAccount and CA bundle after;
    /// deletion marks it Terminating for the namespace controller to empty.
    Namespace,
    /// A cluster IP and node ports reserved on create and released on delete.
    Service,
    /// The default StorageClass, and a Pending status until a volume binds it.
    PersistentVolumeClaim,
    /// A generated selector and an empty status.
    Job,
    /// The requester recorded in the spec; approval and signing authorized against
    /// the signer (see `certificates::csr`).
    CertificateSigningRequest,
    /// The cleanup finalizer and an empty status on create; its objects are served
    /// once it is (see `crate::crd`).
    CustomResourceDefinition,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}", self.group, self.version, self.plural)
    }
}

impl Resource {
    /// `apiVersion` of the kind.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The singular name (lower-case kind, or a custom resource's own).
    pub fn singular(&self) -> String {
        match self.custom {
            Some(c) => c.singular.clone(),
            None => self.kind.to_ascii_lowercase(),
        }
    }

    /// Whether `o`, one of this resource's objects as stored, names another version
    /// than this one: a custom object written before its definition's storage
    /// version changed (served at this version, as kube converts on read).
    pub fn names_other_version(&self, o: &serde_json::Value) -> bool {
        // Custom groups always have a dot: apiVersion is GROUP/VERSION (compared in
        // place, for each object of a list or watch).
        self.custom.is_some()
            && o.get("kind").and_then(serde_json::Value::as_str) == Some(self.kind)
            && o.get("apiVersion")
                .and_then(serde_json::Value::as_str)
                .and_then(|av| av.split_once('/'))
                != Some((self.group, self.version))
    }

    /// Whether objects read change on their way out ([`Resource::as_served`]):
    /// stored at another version, or under a schema with defaults.
    pub fn changes_on_read(&self, o: &serde_json::Value) -> bool {
        self.custom.is_some_and(|c| c.defaults) || self.names_other_version(o)
    }

    /// `o` as this version serves it: its apiVersion when it names another (see
    /// [`Resource::names_other_version`]), a custom object's schema defaults filled
    /// in (kube defaults what it reads from storage too).
    pub fn as_served(&self, o: &mut serde_json::Value) {
        if self.names_other_version(o) {
            o["apiVersion"] = serde_json::Value::String(self.api_version());
        }
        if let Some(schema) = self
            .custom
            .filter(|c| c.defaults)
            .and_then(|c| c.schema.as_ref())
        {
            crate::crd::values::default(schema, o);
        }
    }

    /// The kind of a list of its objects.
    pub fn list_kind(&self) -> String {
        match self.custom {
            Some(c) => c.list_kind.clone(),
            None => format!("{}List", self.kind),
        }
    }

    /// Whether objects are kept in the store in this version.
    pub fn stored(&self) -> bool {
        self.backing == Backing::Store
    }

    /// Whether every verb is served from the store (in this version or converted).
    pub fn from_store(&self) -> bool {
        matches!(self.backing, Backing::Store | Backing::Converted)
    }

    /// The verbs on the collection and its objects.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.backing == Backing::NodeMetrics {
            &["get", "list"]
        } else if self.from_store() {
            STORE_VERBS
        } else {
            &["create"]
        }
    }

    /// The storage key prefix of the resource (all namespaces).
    pub fn prefix(&self) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{g}/{}/", self.plural)
    }

    /// The storage key prefix of one namespace (or all, for cluster-scoped).
    pub fn ns_prefix(&self, ns: Option<&str>) -> String {
        match ns {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    /// The storage key of one object.
    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.ns_prefix(ns))
    }

    /// The `group.resource` name used in messages ("deployments.apps").
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether objects have a spec whose changes bump metadata.generation.
    pub fn has_generation(&self) -> bool {
        self.custom.is_some()
            || !matches!(
                self.kind,
                "Pod"
                    | "ConfigMap"
                    | "Secret"
                    | "ServiceAccount"
                    | "Event"
                    | "Endpoints"
                    | "EndpointSlice"
                    | "Namespace"
                    | "Node"
                    | "ControllerRevision"
            )
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<(), (String, String)> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(_) => Ok(()),
        Err(e) => {
            let path = e.path().to_string();
            Err((path, e.into_inner().to_string()))
        }
    }
}

macro_rules! resource {
    ($t:ty, short: [$($s:expr),*], ns: $ns:expr, cats: [$($c:expr),*], subs: [$($sub:expr),*]) => {
        resource!($t, short: [$($s),*], ns: $ns, cats: [$($c),*], subs: [$($sub),*], backing: Backing::Store, strategy: Strategy::Plain)
    };
    ($t:ty, short: [$($s:expr),*], ns: $ns:expr, cats: [$($c:expr),*], subs: [$($sub:expr),*], strategy: $strategy:expr) => {
        resource!($t, short: [$($s),*], ns: $ns, cats: [$($c),*], subs: [$($sub),*], backing: Backing::Store, strategy: $strategy)
    };
    ($t:ty, short: [$($s:expr),*], ns: $ns:expr, cats: [$($c:expr),*], subs: [$($sub:expr),*], backing: $backing:expr) => {
        resource!($t, short: [$($s),*], ns: $ns, cats: [$($c),*], subs: [$($sub),*], backing: $backing, strategy: Strategy::Plain)
    };
    ($t:ty, short: [$($s:expr),*], ns: $ns:expr, cats: [$($c:expr),*], subs: [$($sub:expr),*], backing: $backing:expr, strategy: $strategy:expr) => {
        Resource {
            group: <$t as k8s_openapi::Resource>::GROUP,
            version: <$t as k8s_openapi::Resource>::VERSION,
            kind: <$t as k8s_openapi::Resource>::KIND,
            plural: <$t as k8s_openapi::Resource>::URL_PATH_SEGMENT,
            short_names: &[$($s),*],
            namespaced: $ns,
            categories: &[$($c),*],
            subresources: &[$($sub),*],
            backing: $backing,
            strategy: $strategy,
            schema_name: <$t as JsonSchema>::schema_name,
            schema: |g| g.subschema_for::<$t>(),
            decode: decode::<$t>,
            custom: None,
        }
    };
}

/// Every resource the server serves.
pub static RESOURCES: &[Resource] = &[
    resource!(core::Namespace, short: ["ns"], ns: false, cats: [], subs: ["status", "finalize"],
        strategy: Strategy::Namespace),
    resource!(core::Pod, short: ["po"], ns: true, cats: ["all"],
        subs: ["status", "binding", "eviction", "log", "exec", "attach", "portforward", "ephemeralcontainers"],
        strategy: Strategy::Pod),
    resource!(core::Node, short: ["no"], ns: false, cats: [], subs: ["status", "proxy"]),
    resource!(core::Service, short: ["svc"], ns: true, cats: ["all"], subs: ["status", "proxy"],
        strategy: Strategy::Service),
    resource!(core::Endpoints, short: ["ep"], ns: true, cats: [], subs: []),
    resource!(core::ReplicationController, short: ["rc"], ns: true, cats: ["all"], subs: ["status", "scale"]),
    resource!(core::ConfigMap, short: ["cm"], ns: true, cats: [], subs: []),
    resource!(core::Secret, short: [], ns: true, cats: [], subs: []),
    resource!(core::ServiceAccount, short: ["sa"], ns: true, cats: [], subs: ["token"]),
    resource!(core::Event, short: ["ev"], ns: true, cats: [], subs: []),
    resource!(core::PersistentVolume, short: ["pv"], ns: false, cats: [], subs: ["status"]),
    resource!(core::PersistentVolumeClaim, short: ["pvc"], ns: true, cats: [], subs: ["status"],
        strategy: Strategy::PersistentVolumeClaim),
    resource!(core::LimitRange, short: ["limits"], ns: true, cats: [], subs: []),
    resource!(core::ResourceQuota, short: ["quota"], ns: true, cats: [], subs: ["status"]),
    resource!(apps::Deployment, short: ["deploy"], ns: true, cats: ["all"], subs: ["status", "scale"]),
    resource!(apps::ReplicaSet, short: ["rs"], ns: true, cats: ["all"], subs: ["status", "scale"]),
    resource!(apps::StatefulSet, short: ["sts"], ns: true, cats: ["all"], subs: ["status", "scale"]),
    resource!(apps::DaemonSet, short: ["ds"], ns: true, cats: ["all"], subs: ["status"]),
    resource!(apps::ControllerRevision, short: [], ns: true, cats: [], subs: []),
    resource!(batch::Job, short: [], ns: true, cats: ["all"], subs: ["status"], strategy: Strategy::Job),
    resource!(batch::CronJob, short: ["cj"], ns: true, cats: ["all"], subs: ["status"]),
    resource!(autoscaling::HorizontalPodAutoscaler, short: ["hpa"], ns: true, cats: ["all"], subs: ["status"]),
    // After v2: discovery names the first version of a group its preferred one.
    resource!(autoscaling_v1::HorizontalPodAutoscaler, short: ["hpa"], ns: true, cats: ["all"], subs: ["status"],
        backing: Backing::Converted),
    resource!(coord::Lease, short: [], ns: true, cats: [], subs: []),
    resource!(disc::EndpointSlice, short: [], ns: true, cats: [], subs: []),
    resource!(net::Ingress, short: ["ing"], ns: true, cats: [], subs: ["status"]),
    resource!(net::IngressClass, short: [], ns: false, cats: [], subs: []),
    resource!(net::NetworkPolicy, short: ["netpol"], ns: true, cats: [], subs: []),
    resource!(policy::PodDisruptionBudget, short: ["pdb"], ns: true, cats: [], subs: ["status"]),
    resource!(sched::PriorityClass, short: ["pc"], ns: false, cats: [], subs: []),
    resource!(storage::StorageClass, short: ["sc"], ns: false, cats: [], subs: []),
    resource!(storage::CSIDriver, short: [], ns: false, cats: [], subs: []),
    resource!(storage::CSINode, short: [], ns: false, cats: [], subs: []),
    resource!(events::Event, short: ["ev"], ns: true, cats: [], subs: []),
    resource!(authn::SelfSubjectReview, short: [], ns: false, cats: [], subs: [], backing: Backing::Review),
    resource!(rbac::ClusterRole, short: [], ns: false, cats: [], subs: []),
    resource!(rbac::ClusterRoleBinding, short: [], ns: false, cats: [], subs: []),
    resource!(rbac::Role, short: [], ns: true, cats: [], subs: []),
    resource!(rbac::RoleBinding, short: [], ns: true, cats: [], subs: []),
    resource!(certs::CertificateSigningRequest, short: ["csr"], ns: false, cats: [], subs: ["status", "approval"],
        strategy: Strategy::CertificateSigningRequest),
    resource!(apiext::CustomResourceDefinition, short: ["crd", "crds"], ns: false, cats: ["api-extensions"],
        subs: ["status"], strategy: Strategy::CustomResourceDefinition),
    resource!(authz::SubjectAccessReview, short: [], ns: false, cats: [], subs: [], backing: Backing::Review),
    resource!(authz::SelfSubjectAccessReview, short: [], ns: false, cats: [], subs: [], backing: Backing::Review),
    resource!(authz::SelfSubjectRulesReview, short: [], ns: false, cats: [], subs: [], backing: Backing::Review),
    resource!(authz::LocalSubjectAccessReview, short: [], ns: true, cats: [], subs: [], backing: Backing::Review),
    resource!(crate::resource_metrics::types::NodeMetrics, short: [], ns: false, cats: [], subs: [],
        backing: Backing::NodeMetrics),
    resource!(crate::resource_metrics::types::PodMetrics, short: [], ns: true, cats: [], subs: [],
        backing: Backing::NodeMetrics),
];

/// The custom resources served (every served version of every accepted definition),
/// kept by `crate::crd`'s registry. A snapshot is cheap to take: an `Arc` of the list.
static CUSTOM: RwLock<Option<Arc<Vec<&'static Resource>>>> = RwLock::new(None);

/// The custom resources served now.
pub fn custom() -> Arc<Vec<&'static Resource>> {
    CUSTOM
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Replaces the custom resources served (by `crate::crd`'s registry only).
pub(crate) fn set_custom(list: Vec<&'static Resource>) {
    *CUSTOM.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(list));
}

/// Every resource served: the built-in ones, then the custom ones.
pub fn all() -> impl Iterator<Item = &'static Resource> {
    let custom = custom();
    RESOURCES
        .iter()
        .chain((0..custom.len()).map(move |i| custom[i]))
}

/// The groups served, in discovery order, each with its versions.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in all() {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// The resources of one group and version.
pub fn of<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static Resource> + 'a {
    all().filter(move |r| r.group == group && r.version == version)
}

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    all().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by apiVersion and kind.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    all().find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The version a resource's objects are stored in: its own, or for one served by
/// conversion, the stored version of the same group and kind.
pub fn storage_of(r: &'static Resource) -> &'static Resource {
    if r.backing != Backing::Converted {
        return r;
    }
    all()
        .find(|s| s.backing == Backing::Store && s.group == r.group && s.plural == r.plural)
        .unwrap_or(r)
}

/// The resource, namespace and name a storage key belongs to.
pub fn from_key(key: &str) -> Option<(&'static Resource, Option<&str>, &str)> {
    let rest = key.strip_prefix("/registry/")?;
    let mut it = rest.splitn(3, '/');
    let (g, plural, tail) = (it.next()?, it.next()?, it.next()?);
    let g = if g == "core" { "" } else { g };
    // The stored version only: a version served by conversion shares its keys.
    let res = all().find(|r| {
        r.stored() && r.group == g && r.plural == plural && r.custom.is_none_or(|c| c.storage)
    })?;
    if res.namespaced {
        let (ns, name) = tail.split_once('/')?;
        Some((res, Some(ns), name))
    } else {
        Some((res, None, tail))
    }
}
