//! The roles and bindings every cluster starts with, named and shaped as Kubernetes
//! ships them (cluster-admin; admin, edit and view built by aggregation; the
//! discovery, basic-user and public-info roles every user has; the roles of the
//! scheduler, the controller manager, nodes and Service proxies), so manifests and
//! habits written for Kubernetes find what they expect. The server writes them at
//! start and puts back what a default lost (unless annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "false"`), as kube-apiserver does.

use serde_json::{json, Value};

/// The annotation that stops the server from restoring a default role or binding.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

pub(super) const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &["*"];

/// A rule on resources of some groups.
pub(super) fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

/// A rule on resources with given names.
pub(super) fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
}

/// A rule on non-resource URLs.
fn urls(verbs: &[&str], paths: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": paths})
}

fn labels(extra: &[(&str, &str)]) -> Value {
    let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    for (k, v) in extra {
        l[*k] = json!(v);
    }
    l
}

fn cluster_role(name: &str, extra_labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels(extra_labels),
                     "annotations": {AUTOUPDATE: "true"}},
        "rules": rules,
    })
}

/// A role whose rules are those of every ClusterRole labelled `aggregate-to-NAME`.
fn aggregated(name: &str, extra_labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    let mut r = cluster_role(name, extra_labels, rules);
    r["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {
        format!("rbac.authorization.k8s.io/aggregate-to-{name}"): "true"}}]});
    r
}

/// A subject: ("User" | "Group", name) or ("ServiceAccount", "ns/name").
fn subject(kind: &str, name: &str) -> Value {
    match kind {
        "ServiceAccount" => {
            let (ns, n) = name.split_once('/').unwrap_or(("kube-system", name));
            json!({"kind": "ServiceAccount", "name": n, "namespace": ns})
        }
        _ => json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name}),
    }
}

fn cluster_binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": labels(&[]), "annotations": {AUTOUPDATE: "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects.iter().map(|(k, n)| subject(k, n)).collect::<Vec<_>>(),
    })
}

/// The rules of `edit` (and so of `admin`): changing workloads and their config.
fn edit_rules() -> Vec<Value> {
    vec![
        rule(
            WRITE,
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
            ],
        ),
        rule(
            &["create"],
            &[""],
            &["pods/eviction", "serviceaccounts/token"],
        ),
        rule(
            WRITE,
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
        ),
        rule(&["impersonate"], &[""], &["serviceaccounts"]),
        rule(
            WRITE,
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
        ),
        rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
        rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
        rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
        rule(
            WRITE,
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
        ),
        // What edit can change it can also read (secrets are not in view).
        rule(
            READ,
            &[""],
            &[
                "secrets",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "services/proxy",
            ],
        ),
    ]
}

/// The rules of `view`: reading what is not secret.
fn view_rules() -> Vec<Value> {
    vec![
        rule(
            READ,
            &[""],
            &[
                "bindings",
                "configmaps",
                "endpoints",
                "events",
                "limitranges",
                "namespaces",
                "namespaces/status",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "pods/log",
                "pods/status",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
                "serviceaccounts",
                "services",
                "services/status",
            ],
        ),
        rule(
            READ,
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
        ),
        rule(
            READ,
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
        ),
        rule(
            READ,
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(READ, &["events.k8s.io"], &["events"]),
        rule(READ, &["metrics.k8s.io"], &["pods", "nodes"]),
    ]
}

/// The rules of `admin` beyond edit: roles and bindings in its namespace.
fn admin_rules() -> Vec<Value> {
    vec![
        rule(
            crate::resources::STORE_VERBS,
            &["rbac.authorization.k8s.io"],
            &["rolebindings", "roles"],
        ),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
        ),
    ]
}

const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
];

const PUBLIC_URLS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// The scheduler's rights: read what placement depends on, bind pods, write their
/// scheduling status, delete preemption victims, and hold its Lease.
fn scheduler_rules() -> Vec<Value> {
    vec![
        rule(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        named(
            &["get", "update"],
            &["coordination.k8s.io"],
            &["leases"],
            &["kube-scheduler"],
        ),
        rule(
            READ,
            &[""],
            &[
                "nodes",
                "namespaces",
                "persistentvolumeclaims",
                "persistentvolumes",
                "replicationcontrollers",
                "services",
            ],
        ),
        rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
        rule(&["create"], &[""], &["bindings", "pods/binding"]),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(&["patch", "update"], &[""], &["persistentvolumeclaims"]),
        rule(READ, &["apps"], &["replicasets", "statefulsets"]),
        rule(READ, &["policy"], &["poddisruptionbudgets"]),
        rule(
            READ,
            &["storage.k8s.io"],
            &[
                "csinodes",
                "csidrivers",
                "csistoragecapacities",
                "storageclasses",
            ],
        ),
        rule(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
    ]
}

/// A node's rights, which the Node authorizer narrows to its own objects.
fn node_rules() -> Vec<Value> {
    vec![
        rule(
            &["create", "get", "list", "watch", "patch", "update"],
            &[""],
            &["nodes"],
        ),
        rule(&["patch", "update"], &[""], &["nodes/status"]),
        rule(
            &["create", "delete", "get", "list", "watch"],
            &[""],
            &["pods"],
        ),
        rule(&["patch", "update"], &[""], &["pods/status"]),
        rule(
            &["create"],
            &[""],
            &["pods/eviction", "serviceaccounts/token"],
        ),
        rule(
            &["get"],
            &[""],
            &[
                "configmaps",
                "secrets",
                "persistentvolumeclaims",
                "persistentvolumes",
            ],
        ),
        rule(READ, &[""], &["services", "endpoints", "namespaces"]),
        rule(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(
            &["create", "delete", "get", "patch", "update"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(READ, &["storage.k8s.io"], &["csidrivers", "csinodes"]),
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

/// What a berth node holds (through the Node authorizer, which narrows Secrets,
/// ConfigMaps, claims and volumes to its pods'): the `system:node` role's rules and
/// those of the Service proxy, cluster DNS, NetworkPolicy enforcement and Ingress
/// proxy every berth node runs.
pub fn node_rule_values() -> Vec<Value> {
    let mut rules = node_rules();
    rules.push(rule(
        READ,
        &["networking.k8s.io"],
        &["networkpolicies", "ingresses", "ingressclasses"],
    ));
    rules.push(rule(READ, &[""], &["pods", "nodes", "persistentvolumes"]));
    rules
}

/// A Service proxy's rights (kube-proxy's): Services, their endpoints and nodes.
fn node_proxier_rules() -> Vec<Value> {
    vec![
        rule(READ, &[""], &["services", "endpoints", "nodes"]),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
    ]
}

/// Every default ClusterRole: kube's, then one per controller.
pub fn cluster_roles() -> Vec<Value> {
    let mut roles = kube_cluster_roles();
    for (sa, rules) in super::controller_policy::controller_roles() {
        roles.push(cluster_role(&format!("system:controller:{sa}"), &[], rules));
    }
    roles
}

fn kube_cluster_roles() -> Vec<Value> {
    let admin_all: Vec<Value> = admin_rules()
        .into_iter()
        .chain(edit_rules())
        .chain(view_rules())
        .collect();
    let edit_all: Vec<Value> = edit_rules().into_iter().chain(view_rules()).collect();
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(ALL, ALL, ALL), urls(ALL, &["*"])],
        ),
        aggregated("admin", &[], admin_all),
        aggregated(
            "edit",
            &[("rbac.authorization.k8s.io/aggregate-to-admin", "true")],
            edit_all,
        ),
        aggregated(
            "view",
            &[("rbac.authorization.k8s.io/aggregate-to-edit", "true")],
            view_rules(),
        ),
        cluster_role(
            "system:aggregate-to-admin",
            &[("rbac.authorization.k8s.io/aggregate-to-admin", "true")],
            admin_rules(),
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[("rbac.authorization.k8s.io/aggregate-to-edit", "true")],
            edit_rules(),
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[("rbac.authorization.k8s.io/aggregate-to-view", "true")],
            view_rules(),
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(&["get"], DISCOVERY_URLS)],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(&["get"], PUBLIC_URLS)],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:monitoring",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        cluster_role("system:kube-scheduler", &[], scheduler_rules()),
        cluster_role(
            "system:volume-scheduler",
            &[],
            vec![
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            super::controller_policy::controller_manager_rules(),
        ),
        cluster_role("system:node", &[], node_rules()),
        cluster_role("system:node-proxier", &[], node_proxier_rules()),
        cluster_role(
            "system:kube-dns",
            &[],
            vec![rule(&["list", "watch"], &[""], &["endpoints", "services"])],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        // Another server joining fetches the cluster's keys (berth's own).
        cluster_role(
            "berth:server-bootstrap",
            &[],
            vec![urls(&["get"], &[berth_join::SERVER_BOOTSTRAP_PATH])],
        ),
    ]
}

/// Every default ClusterRoleBinding: kube's, then one per controller.
pub fn cluster_role_bindings() -> Vec<Value> {
    let mut bindings = kube_cluster_role_bindings();
    for (sa, _) in super::controller_policy::controller_roles() {
        let name = format!("system:controller:{sa}");
        let subject = format!("{}/{sa}", berth_pods::identities::NAMESPACE);
        bindings.push(cluster_binding(
            &name,
            &name,
            &[("ServiceAccount", &subject)],
        ));
    }
    bindings
}

fn kube_cluster_role_bindings() -> Vec<Value> {
    vec![
        cluster_binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters")],
        ),
        cluster_binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        cluster_binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        cluster_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        cluster_binding(
            "system:monitoring",
            "system:monitoring",
            &[("Group", "system:monitoring")],
        ),
        cluster_binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        cluster_binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        cluster_binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        cluster_binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        cluster_binding(
            "system:node-proxier",
            "system:node-proxier",
            &[("User", "system:kube-proxy")],
        ),
        cluster_binding(
            "system:kube-dns",
            "system:kube-dns",
            &[("ServiceAccount", "kube-system/kube-dns")],
        ),
        // No subjects: nodes are authorized by the Node authorizer, as kube does
        // since 1.8; the binding is kept for those who add to it.
        cluster_binding("system:node", "system:node", &[]),
        // What kubeadm binds for nodes joining by bootstrap token (berth's names):
        // bootstrap tokens may ask for node client certificates, which are approved
        // for them, and nodes may renew their own.
        cluster_binding(
            "berth:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[("Group", berth_join::secret::GROUP)],
        ),
        cluster_binding(
            "berth:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", berth_join::secret::GROUP)],
        ),
        cluster_binding(
            "berth:server-bootstrap",
            "berth:server-bootstrap",
            &[("Group", berth_join::secret::SERVERS_GROUP)],
        ),
        cluster_binding(
            "berth:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", berth_join::identity::NODES_GROUP)],
        ),
    ]
}

/// Every default namespaced Role and RoleBinding: (namespace, object).
pub fn namespaced() -> Vec<(&'static str, Value)> {
    let role = |name: &str, rules: Vec<Value>| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "labels": labels(&[]),
                            "annotations": {AUTOUPDATE: "true"}},
               "rules": rules})
    };
    let binding = |name: &str, role: &str, subjects: &[(&str, &str)]| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name, "labels": labels(&[]),
                            "annotations": {AUTOUPDATE: "true"}},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
               "subjects": subjects.iter().map(|(k, n)| subject(k, n)).collect::<Vec<_>>()})
    };
    let leader = |lease: &str| {
        vec![
            rule(&["create"], &["coordination.k8s.io"], &["leases"]),
            named(
                &["get", "update", "patch"],
                &["coordination.k8s.io"],
                &["leases"],
                &[lease],
            ),
        ]
    };
    // A controller's role name and its ServiceAccount (NAMESPACE/NAME), as kube
    // names them.
    let controller = |id: &str| {
        (
            format!("system:controller:{id}"),
            format!("{}/{id}", berth_pods::identities::NAMESPACE),
        )
    };
    let (token_cleaner, token_cleaner_sa) = controller(berth_pods::identities::TOKEN_CLEANER);
    let (signer, signer_sa) = controller(berth_pods::identities::BOOTSTRAP_SIGNER);
    let cluster_info = berth_join::discovery::CLUSTER_INFO;
    let public = berth_join::discovery::NAMESPACE;
    let defaults = vec![
        // kube's: the bootstrap signer signs cluster-info, in kube-public only.
        (
            public,
            role(
                &signer,
                vec![
                    rule(READ, &[""], &["configmaps"]),
                    named(&["update"], &[""], &["configmaps"], &[cluster_info]),
                ],
            ),
        ),
        (
            public,
            binding(&signer, &signer, &[("ServiceAccount", &signer_sa)]),
        ),
        // As kubeadm grants it: anyone may read cluster-info, which a node given bare
        // token credentials reads before it trusts the server.
        (
            public,
            role(
                "berth:bootstrap-signer-clusterinfo",
                vec![named(&["get"], &[""], &["configmaps"], &[cluster_info])],
            ),
        ),
        (
            public,
            binding(
                "berth:bootstrap-signer-clusterinfo",
                "berth:bootstrap-signer-clusterinfo",
                &[("User", "system:anonymous")],
            ),
        ),
        // kube's: the token cleaner deletes bootstrap token Secrets, in kube-system only.
        (
            "kube-system",
            role(
                &token_cleaner,
                vec![rule(
                    &["delete", "get", "list", "watch"],
                    &[""],
                    &["secrets"],
                )],
            ),
        ),
        (
            "kube-system",
            binding(
                &token_cleaner,
                &token_cleaner,
                &[("ServiceAccount", &token_cleaner_sa)],
            ),
        ),
        (
            "kube-system",
            role(
                "extension-apiserver-authentication-reader",
                vec![named(
                    READ,
                    &[""],
                    &["configmaps"],
                    &["extension-apiserver-authentication"],
                )],
            ),
        ),
        (
            "kube-system",
            role(
                "system::leader-locking-kube-scheduler",
                leader("kube-scheduler"),
            ),
        ),
        (
            "kube-system",
            role(
                "system::leader-locking-kube-controller-manager",
                leader("kube-controller-manager"),
            ),
        ),
        (
            "kube-system",
            binding(
                "system::leader-locking-kube-scheduler",
                "system::leader-locking-kube-scheduler",
                &[("User", "system:kube-scheduler")],
            ),
        ),
        (
            "kube-system",
            binding(
                "system::leader-locking-kube-controller-manager",
                "system::leader-locking-kube-controller-manager",
                &[("User", "system:kube-controller-manager")],
            ),
        ),
    ];
    // Each in the namespace it is listed for.
    defaults
        .into_iter()
        .map(|(ns, mut o)| {
            o["metadata"]["namespace"] = json!(ns);
            (ns, o)
        })
        .collect()
}
