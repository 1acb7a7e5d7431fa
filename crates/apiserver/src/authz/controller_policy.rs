//! The controller manager's default roles: its own (the shared informers' reads, its
//! Lease) and one per controller, by the ServiceAccount each acts as (kube's
//! controller policy, for `--use-service-account-credentials`). [`super::policy`]
//! writes them with the rest of the defaults.

use serde_json::Value;

use super::policy::{named, rule, READ};

/// The controller manager's own rights: its shared informers read every kind, it
/// holds its Lease, makes its controllers' ServiceAccounts (and their tokens, out of
/// process) and installs the classes
/// berth ships. Each controller writes as its own ServiceAccount
/// ([`controller_roles`]).
pub(super) fn controller_manager_rules() -> Vec<Value> {
    vec![
        rule(READ, &["*"], &["*"]),
        rule(&["create"], &["coordination.k8s.io"], &["leases"]),
        named(
            &["get", "update", "patch"],
            &["coordination.k8s.io"],
            &["leases"],
            &["kube-controller-manager"],
        ),
        rule(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        rule(&["create"], &[""], &["serviceaccounts"]),
        // Its controllers' tokens, out of process (--use-service-account-credentials).
        rule(&["create"], &[""], &["serviceaccounts/token"]),
        rule(&["create"], &["storage.k8s.io"], &["storageclasses"]),
        rule(&["create"], &["networking.k8s.io"], &["ingressclasses"]),
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
        ),
    ]
}

/// Each controller's rights, by the ServiceAccount it acts as: what it reads beyond
/// the shared informers, what it writes, and its events.
pub fn controller_roles() -> Vec<(&'static str, Vec<Value>)> {
    use berth_pods::identities as id;
    const EVENTS: (&[&str], &[&str], &[&str]) = (
        &["create", "patch", "update"],
        &["", "events.k8s.io"],
        &["events"],
    );
    let events = || rule(EVENTS.0, EVENTS.1, EVENTS.2);
    let owner_of_pods = |group: &str, kind: &str| {
        vec![
            rule(
                &["get", "list", "watch", "update", "patch"],
                &[group],
                &[kind],
            ),
            rule(
                &["update", "patch"],
                &[group],
                &[&format!("{kind}/status"), &format!("{kind}/finalizers")],
            ),
            rule(
                &[
                    "create", "delete", "get", "list", "watch", "patch", "update",
                ],
                &[""],
                &["pods"],
            ),
            events(),
        ]
    };
    let revisions = || {
        rule(
            &[
                "create", "delete", "get", "list", "watch", "patch", "update",
            ],
            &["apps"],
            &["controllerrevisions"],
        )
    };
    let mut daemonset = owner_of_pods("apps", "daemonsets");
    daemonset.push(revisions());
    daemonset.push(rule(&["create"], &[""], &["pods/binding"]));
    daemonset.push(rule(READ, &[""], &["nodes"]));
    let mut statefulset = owner_of_pods("apps", "statefulsets");
    statefulset.push(revisions());
    statefulset.push(rule(
        &[
            "create", "delete", "get", "list", "watch", "patch", "update",
        ],
        &[""],
        &["persistentvolumeclaims"],
    ));
    let mut job = owner_of_pods("batch", "jobs");
    job.push(rule(&["update", "patch"], &[""], &["pods/status"]));
    // Finished Jobs past their ttlSecondsAfterFinished (kube's ttl-after-finished
    // controller's part).
    job.push(rule(&["delete"], &["batch"], &["jobs"]));
    vec![
        (id::REPLICASET, owner_of_pods("apps", "replicasets")),
        (id::REPLICATION, owner_of_pods("", "replicationcontrollers")),
        (
            id::DEPLOYMENT,
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &["apps"],
                    &["deployments"],
                ),
                rule(
                    &["update", "patch"],
                    &["apps"],
                    &["deployments/status", "deployments/finalizers"],
                ),
                rule(
                    &[
                        "create", "delete", "get", "list", "watch", "patch", "update",
                    ],
                    &["apps"],
                    &["replicasets"],
                ),
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &[""],
                    &["pods"],
                ),
                events(),
            ],
        ),
        (id::JOB, job),
        (
            id::CRONJOB,
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &["batch"],
                    &["cronjobs"],
                ),
                rule(
                    &["update", "patch"],
                    &["batch"],
                    &["cronjobs/status", "cronjobs/finalizers"],
                ),
                rule(
                    &[
                        "create", "delete", "get", "list", "watch", "patch", "update",
                    ],
                    &["batch"],
                    &["jobs"],
                ),
                rule(&["delete", "list"], &[""], &["pods"]),
                events(),
            ],
        ),
        (id::DAEMONSET, daemonset),
        (id::STATEFULSET, statefulset),
        (
            id::NODE,
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch", "delete"],
                    &[""],
                    &["nodes"],
                ),
                rule(&["update", "patch"], &[""], &["nodes/status"]),
                rule(&["get", "list", "watch", "delete"], &[""], &["pods"]),
                rule(&["update", "patch"], &[""], &["pods/status"]),
                rule(&["create"], &[""], &["pods/eviction"]),
                rule(READ, &["coordination.k8s.io"], &["leases"]),
                events(),
            ],
        ),
        (
            id::ENDPOINTSLICE,
            vec![
                rule(READ, &[""], &["services", "pods", "nodes"]),
                rule(&["update"], &[""], &["services/finalizers"]),
                rule(
                    &[
                        "create", "delete", "get", "list", "watch", "patch", "update",
                    ],
                    &[""],
                    &["endpoints"],
                ),
                rule(
                    &[
                        "create", "delete", "get", "list", "watch", "patch", "update",
                    ],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        (
            id::DISRUPTION,
            vec![
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    &["update", "patch"],
                    &["policy"],
                    &["poddisruptionbudgets/status"],
                ),
                rule(READ, &[""], &["pods", "replicationcontrollers"]),
                rule(
                    READ,
                    &["apps"],
                    &["deployments", "replicasets", "statefulsets"],
                ),
                rule(&["get"], &["*"], &["*/scale"]),
                events(),
            ],
        ),
        (
            id::PV_BINDER,
            vec![
                rule(
                    &[
                        "create", "delete", "get", "list", "watch", "patch", "update",
                    ],
                    &[""],
                    &["persistentvolumes", "persistentvolumeclaims"],
                ),
                rule(
                    &["update", "patch"],
                    &[""],
                    &["persistentvolumes/status", "persistentvolumeclaims/status"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(READ, &[""], &["pods", "nodes"]),
                events(),
            ],
        ),
        (
            id::HPA,
            vec![
                rule(
                    &["get", "list", "watch", "update", "patch"],
                    &["autoscaling"],
                    &["horizontalpodautoscalers"],
                ),
                rule(
                    &["update", "patch"],
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                ),
                rule(&["get", "update", "patch"], &["*"], &["*/scale"]),
                rule(&["list"], &[""], &["pods"]),
                rule(&["get", "list"], &["metrics.k8s.io"], &["pods", "nodes"]),
                events(),
            ],
        ),
        (
            id::NAMESPACE_CONTROLLER,
            vec![
                rule(&["get", "list", "watch", "delete"], &[""], &["namespaces"]),
                rule(
                    &["update", "patch"],
                    &[""],
                    &["namespaces/finalize", "namespaces/status"],
                ),
                rule(
                    &["get", "list", "delete", "deletecollection"],
                    &["*"],
                    &["*"],
                ),
                events(),
            ],
        ),
        (
            id::SERVICE,
            vec![
                rule(READ, &[""], &["services", "nodes", "pods"]),
                rule(&["update", "patch"], &[""], &["services/status"]),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingressclasses"],
                ),
                rule(
                    &["update", "patch"],
                    &["networking.k8s.io"],
                    &["ingresses/status"],
                ),
                events(),
            ],
        ),
        (
            id::LOCAL_PATH,
            vec![
                rule(
                    &[
                        "create", "delete", "get", "list", "watch", "patch", "update",
                    ],
                    &[""],
                    &["persistentvolumes"],
                ),
                rule(
                    &["get", "list", "watch", "patch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(READ, &[""], &["nodes", "pods"]),
                events(),
            ],
        ),
        (
            id::CLUSTERROLE_AGGREGATION,
            vec![rule(
                &["escalate", "get", "list", "watch", "update", "patch"],
                &["rbac.authorization.k8s.io"],
                &["clusterroles"],
            )],
        ),
        (id::CERTIFICATE, {
            use berth_join::identity as ni;
            let csrs = "certificatesigningrequests";
            vec![
                rule(
                    &["get", "list", "watch", "delete"],
                    &["certificates.k8s.io"],
                    &[csrs],
                ),
                rule(
                    &["update"],
                    &["certificates.k8s.io"],
                    &[
                        "certificatesigningrequests/approval",
                        "certificatesigningrequests/status",
                    ],
                ),
                named(
                    &["approve"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[ni::SIGNER_KUBELET_CLIENT, ni::SIGNER_KUBELET_SERVING],
                ),
                named(
                    &["sign"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[
                        ni::SIGNER_KUBELET_CLIENT,
                        ni::SIGNER_KUBELET_SERVING,
                        ni::SIGNER_CLIENT,
                    ],
                ),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                rule(READ, &[""], &["nodes"]),
                events(),
            ]
        }),
        (
            id::GARBAGE_COLLECTOR,
            vec![rule(
                &["get", "list", "watch", "patch", "update", "delete"],
                &["*"],
                &["*"],
            )],
        ),
    ]
}
