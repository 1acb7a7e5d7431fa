//! The ServiceAccounts the controllers act as, one each, in kube-system — named as
//! kube-controller-manager names them with `--use-service-account-credentials`. The
//! controllers pick their identity here; the API server's default policy gives each
//! its role here too, so the two cannot drift apart.

/// Where the controllers' ServiceAccounts live.
pub const NAMESPACE: &str = "kube-system";

/// ReplicaSets.
pub const REPLICASET: &str = "replicaset-controller";
/// ReplicationControllers.
pub const REPLICATION: &str = "replication-controller";
/// Deployments.
pub const DEPLOYMENT: &str = "deployment-controller";
/// Jobs.
pub const JOB: &str = "job-controller";
/// CronJobs.
pub const CRONJOB: &str = "cronjob-controller";
/// DaemonSets.
pub const DAEMONSET: &str = "daemon-set-controller";
/// StatefulSets.
pub const STATEFULSET: &str = "statefulset-controller";
/// Node lifecycle (Unknown, taints, evictions) and node IPAM.
pub const NODE: &str = "node-controller";
/// Endpoints and EndpointSlices of Services.
pub const ENDPOINTSLICE: &str = "endpointslice-controller";
/// PodDisruptionBudget status.
pub const DISRUPTION: &str = "disruption-controller";
/// PersistentVolume and claim binding.
pub const PV_BINDER: &str = "persistent-volume-binder";
/// HorizontalPodAutoscalers.
pub const HPA: &str = "horizontal-pod-autoscaler";
/// Namespace deletion.
pub const NAMESPACE_CONTROLLER: &str = "namespace-controller";
/// LoadBalancer Services and Ingress status (k3s's servicelb's part).
pub const SERVICE: &str = "service-controller";
/// The local-path provisioner.
pub const LOCAL_PATH: &str = "local-path-provisioner";
/// ClusterRole aggregation.
pub const CLUSTERROLE_AGGREGATION: &str = "clusterrole-aggregation-controller";
/// The garbage collector.
pub const GARBAGE_COLLECTOR: &str = "generic-garbage-collector";
/// Certificate signing requests: approval, signing and cleaning.
pub const CERTIFICATE: &str = "certificate-controller";
/// Expired bootstrap tokens' removal.
pub const TOKEN_CLEANER: &str = "token-cleaner";
/// cluster-info's signatures by bootstrap tokens.
pub const BOOTSTRAP_SIGNER: &str = "bootstrap-signer";

/// Every controller identity.
pub const ALL: &[&str] = &[
    REPLICASET,
    REPLICATION,
    DEPLOYMENT,
    JOB,
    CRONJOB,
    DAEMONSET,
    STATEFULSET,
    NODE,
    ENDPOINTSLICE,
    DISRUPTION,
    PV_BINDER,
    HPA,
    NAMESPACE_CONTROLLER,
    SERVICE,
    LOCAL_PATH,
    CLUSTERROLE_AGGREGATION,
    GARBAGE_COLLECTOR,
    CERTIFICATE,
    TOKEN_CLEANER,
    BOOTSTRAP_SIGNER,
];

/// The user name a ServiceAccount authenticates as.
pub fn user_name(service_account: &str) -> String {
    format!("system:serviceaccount:{NAMESPACE}:{service_account}")
}

/// The groups a ServiceAccount of the controllers' namespace is in.
pub fn groups() -> [String; 2] {
    [
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{NAMESPACE}"),
    ]
}
