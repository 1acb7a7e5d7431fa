//! berth's controller manager: the loops that turn workloads into pods. Each
//! controller is level-triggered, in kube-runtime's shape (a queue of keys fed by
//! watches, one key never reconciled twice at once, requeue on failure), and reads
//! shared informers: one watch per kind for all controllers, as kube-controller-manager
//! shares its informers.

pub mod bootstrapsigner;
pub mod certificates;
pub mod clusterroles;
pub mod credentials;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod gc;
pub mod hpa;
pub mod index;
pub mod informer;
pub mod job;
pub mod loadbalancer;
pub mod localpath;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod owner;
pub mod podcontrol;
pub mod replicaset;
pub mod replicationcontroller;
pub mod revisions;
pub mod statefulset;
pub mod taintrate;
pub mod tokencleaner;
pub mod volumebinding;
pub mod zonehealth;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, ReplicationController, Service};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::CancelableJoinHandle;
use kube::Resource;

use berth_events::EventType;

use crate::expectations::Expectations;
use crate::index::OwnerIndex;
use crate::informer::{Change, Informer};

/// Why one reconcile did not finish; the key is tried again.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// Some of the work failed (the message says what).
    #[error("{0}")]
    Failed(String),
    /// A write found the object changed since it was read: decide again soon.
    #[error("{0}")]
    Stale(String),
}

/// The controllers' settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a node may go without a heartbeat before it is Unknown (kube's
    /// --node-monitor-grace-period, 40 s).
    pub node_monitor_grace_period: std::time::Duration,
    /// How fast nodes that are down get NoExecute taints (kube's
    /// --node-eviction-rate and related flags).
    pub eviction_rates: taintrate::EvictionRates,
    /// Where the local-path provisioner makes volumes on the nodes; None runs no
    /// provisioner (k3s's --disable local-storage).
    pub local_path: Option<String>,
    /// The pod address range node IPAM hands out (`--cluster-cidr`); None gives
    /// Nodes no pod CIDR (each agent brings its own).
    pub pod_range: Option<nodeipam::Range>,
    /// A client for each controller's own ServiceAccount (kube-controller-manager's
    /// `--use-service-account-credentials`); None: every controller writes as the
    /// client `run` is given.
    pub identities: Option<Identities>,
    /// The CA that signs approved certificate requests (kube's
    /// --cluster-signing-cert-file and key); None signs nothing (requests are still
    /// approved).
    pub signer: Option<certificates::Signer>,
}

/// Makes the client a controller acts with, from its ServiceAccount's name (one of
/// [`berth_pods::identities`]).
#[derive(Clone)]
pub struct Identities(pub Arc<dyn Fn(&str) -> kube::Client + Send + Sync>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identities(one ServiceAccount per controller)")
    }
}

/// k3s's default cluster CIDR, a /24 per node.
pub fn default_pod_range() -> nodeipam::Range {
    let cluster = nodeipam::parse_cidr("10.42.0.0/16").expect("a valid CIDR");
    nodeipam::Range::new(cluster, 24).expect("a valid range")
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_monitor_grace_period: std::time::Duration::from_secs(40),
            eviction_rates: Default::default(),
            local_path: Some(berth_pods::storage::DEFAULT_LOCAL_STORAGE_PATH.into()),
            pod_range: Some(default_pod_range()),
            identities: None,
            signer: None,
        }
    }
}

/// The informers every controller shares, and the clients they write with.
pub struct Shared {
    /// The informers' client (and, without identities, every controller's).
    client: kube::Client,
    identities: Option<Identities>,
    pods: Arc<Informer<Pod>>,
    pods_by_owner: Arc<OwnerIndex<Pod>>,
    pods_by_node: Arc<index::Index<Pod>>,
    pods_by_namespace: Arc<index::Index<Pod>>,
    services: Arc<Informer<Service>>,
    endpoints: Arc<Informer<Endpoints>>,
    endpointslices: Arc<Informer<EndpointSlice>>,
    endpointslices_by_owner: Arc<OwnerIndex<EndpointSlice>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    replicasets_by_owner: Arc<OwnerIndex<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    replicationcontrollers: Arc<Informer<ReplicationController>>,
    jobs: Arc<Informer<Job>>,
    jobs_by_owner: Arc<OwnerIndex<Job>>,
    cronjobs: Arc<Informer<CronJob>>,
    daemonsets: Arc<Informer<DaemonSet>>,
    statefulsets: Arc<Informer<StatefulSet>>,
    nodes: Arc<Informer<Node>>,
    namespaces: Arc<Informer<Namespace>>,
    leases: Arc<Informer<Lease>>,
    revisions: Arc<Informer<ControllerRevision>>,
    revisions_by_owner: Arc<OwnerIndex<ControllerRevision>>,
    budgets: Arc<Informer<PodDisruptionBudget>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    classes: Arc<Informer<StorageClass>>,
    autoscalers: Arc<Informer<HorizontalPodAutoscaler>>,
    ingresses: Arc<Informer<Ingress>>,
    cluster_roles: Arc<Informer<ClusterRole>>,
    csrs: Arc<Informer<k8s_openapi::api::certificates::v1::CertificateSigningRequest>>,
    token_secrets: Arc<Informer<k8s_openapi::api::core::v1::Secret>>,
    cluster_info: Arc<Informer<k8s_openapi::api::core::v1::ConfigMap>>,
}

impl Shared {
    fn new(client: kube::Client, identities: Option<Identities>) -> Shared {
        let pods = Informer::new(Api::all(client.clone()), Default::default());
        let replicasets = Informer::new(Api::all(client.clone()), Default::default());
        let jobs = Informer::new(Api::all(client.clone()), Default::default());
        let revisions = Informer::new(Api::all(client.clone()), Default::default());
        let endpointslices = Informer::new(Api::all(client.clone()), Default::default());
        Shared {
            pods_by_owner: OwnerIndex::of(&pods),
            pods_by_node: index::Index::by(&pods, |p| {
                p.spec.as_ref().and_then(|s| s.node_name.clone())
            }),
            pods_by_namespace: index::Index::by(&pods, |p| p.metadata.namespace.clone()),
            services: Informer::new(Api::all(client.clone()), Default::default()),
            endpoints: Informer::new(Api::all(client.clone()), Default::default()),
            endpointslices_by_owner: OwnerIndex::of(&endpointslices),
            endpointslices,
            replicasets_by_owner: OwnerIndex::of(&replicasets),
            deployments: Informer::new(Api::all(client.clone()), Default::default()),
            replicationcontrollers: Informer::new(Api::all(client.clone()), Default::default()),
            jobs_by_owner: OwnerIndex::of(&jobs),
            jobs,
            cronjobs: Informer::new(Api::all(client.clone()), Default::default()),
            daemonsets: Informer::new(Api::all(client.clone()), Default::default()),
            statefulsets: Informer::new(Api::all(client.clone()), Default::default()),
            nodes: Informer::new(Api::all(client.clone()), Default::default()),
            namespaces: Informer::new(Api::all(client.clone()), Default::default()),
            leases: Informer::new(
                Api::namespaced(client.clone(), nodelifecycle::LEASE_NAMESPACE),
                Default::default(),
            ),
            revisions_by_owner: OwnerIndex::of(&revisions),
            revisions,
            budgets: Informer::new(Api::all(client.clone()), Default::default()),
            claims: Informer::new(Api::all(client.clone()), Default::default()),
            volumes: Informer::new(Api::all(client.clone()), Default::default()),
            classes: Informer::new(Api::all(client.clone()), Default::default()),
            autoscalers: Informer::new(Api::all(client.clone()), Default::default()),
            ingresses: Informer::new(Api::all(client.clone()), Default::default()),
            cluster_roles: Informer::new(Api::all(client.clone()), Default::default()),
            csrs: Informer::new(Api::all(client.clone()), Default::default()),
            token_secrets: Informer::new(
                Api::namespaced(client.clone(), berth_join::secret::NAMESPACE),
                tokencleaner::watched(),
            ),
            cluster_info: Informer::new(
                Api::namespaced(client.clone(), berth_join::discovery::NAMESPACE),
                bootstrapsigner::watched(),
            ),
            pods,
            replicasets,
            client,
            identities,
        }
    }

    /// The client of the controller acting as `service_account`.
    fn client_as(&self, service_account: &str) -> kube::Client {
        match &self.identities {
            Some(Identities(make)) => make(service_account),
            None => self.client.clone(),
        }
    }

    /// An event recorder for `component`, writing as `service_account`.
    fn recorder(&self, component: &str, service_account: &str) -> berth_events::Recorder {
        berth_events::Recorder::new(self.client_as(service_account), component, component, None)
    }
}

/// Makes a cluster-scoped object berth ships when absent, as k3s applies its
/// manifests at start: one that exists (the user's edits included) is left as it is.
async fn install<K>(client: &kube::Client, obj: K, what: &str)
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    match Api::<K>::all(client.clone())
        .create(&Default::default(), &obj)
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => tracing::warn!(error = %e, "installing the {what}"),
        Ok(_) => tracing::info!("installed the {what}"),
    }
}

/// Makes the controllers' ServiceAccounts in kube-system when absent, as
/// kube-controller-manager does before acting as them.
pub(crate) async fn install_service_accounts(client: &kube::Client) {
    use berth_pods::identities;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), identities::NAMESPACE);
    for name in identities::ALL {
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&Default::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => tracing::warn!(error = %e, "making the ServiceAccount kube-system/{name}"),
        }
    }
}

/// Runs every controller until the task is dropped.
pub async fn run(client: kube::Client, cfg: Config) {
    use informer::Task;
    let shared = Shared::new(client, cfg.identities.clone());
    if shared.identities.is_some() {
        install_service_accounts(&shared.client).await;
    }
    // Controllers register their handlers before the informers start.
    let controllers: Vec<Task> = vec![
        Box::pin(replicaset::controller(&shared)),
        Box::pin(deployment::controller(&shared)),
        Box::pin(job::controller(&shared)),
        Box::pin(cronjob::controller(&shared)),
        Box::pin(daemonset::controller(&shared)),
        Box::pin(statefulset::controller(&shared)),
        Box::pin(nodelifecycle::controller(
            &shared,
            cfg.node_monitor_grace_period,
            cfg.eviction_rates,
        )),
        Box::pin(endpoints::controller(&shared)),
        Box::pin(replicationcontroller::controller(&shared)),
        Box::pin(disruption::controller(&shared)),
        Box::pin(volumebinding::controllers(&shared)),
        Box::pin(hpa::controller(&shared)),
        Box::pin(namespace::controller(&shared)),
        Box::pin(loadbalancer::controllers(&shared)),
        Box::pin(clusterroles::controller(&shared)),
        Box::pin(certificates::controller(&shared, cfg.signer.clone())),
        Box::pin(tokencleaner::controller(&shared)),
        Box::pin(bootstrapsigner::controller(&shared)),
    ];
    let mut controllers = controllers;
    if let Some(range) = cfg.pod_range {
        controllers.push(Box::pin(nodeipam::controller(&shared, range)));
    }
    if let Some(root) = cfg.local_path.clone() {
        controllers.push(Box::pin(localpath::controller(&shared, root)));
        install::<StorageClass>(
            &shared.client,
            localpath::default_class(),
            "local-path StorageClass",
        )
        .await;
    }
    install::<IngressClass>(
        &shared.client,
        loadbalancer::default_class(),
        "berth IngressClass",
    )
    .await;
    let s = &shared;
    let (informers, ready): (Vec<Task>, Vec<Task>) = [
        s.pods.clone().parts(),
        s.replicasets.clone().parts(),
        s.deployments.clone().parts(),
        s.jobs.clone().parts(),
        s.cronjobs.clone().parts(),
        s.daemonsets.clone().parts(),
        s.statefulsets.clone().parts(),
        s.nodes.clone().parts(),
        s.namespaces.clone().parts(),
        s.leases.clone().parts(),
        s.services.clone().parts(),
        s.endpoints.clone().parts(),
        s.endpointslices.clone().parts(),
        s.replicationcontrollers.clone().parts(),
        s.revisions.clone().parts(),
        s.budgets.clone().parts(),
        s.claims.clone().parts(),
        s.volumes.clone().parts(),
        s.classes.clone().parts(),
        s.autoscalers.clone().parts(),
        s.token_secrets.clone().parts(),
        s.cluster_info.clone().parts(),
        s.csrs.clone().parts(),
        s.ingresses.clone().parts(),
        s.cluster_roles.clone().parts(),
    ]
    .into_iter()
    .unzip();
    // Each in a task of its own (in one task every watch would wait on every other);
    // the set aborts them all when dropped, as when leadership is lost.
    let mut tasks = tokio::task::JoinSet::new();
    for i in informers {
        tasks.spawn(i);
    }
    // Acting before every informer has listed would take what is not yet seen for
    // gone: pods made twice, daemon pods deleted, Services emptied, nodes marked Unknown.
    futures_util::future::join_all(ready).await;
    tracing::info!("controllers' caches filled; acting");
    for c in controllers {
        tasks.spawn(c);
    }
    // Over every served kind, with watches of its own (metadata only).
    tasks.spawn(gc::run(
        s.client_as(berth_pods::identities::GARBAGE_COLLECTOR),
    ));
    while tasks.join_next().await.is_some() {}
}

/// Runs `reconcile` over the keys `queue` brings, for the objects of `store`, with
/// kube's applier: a key is never reconciled twice at once, and its requeue
/// requests are honoured.
fn drive<K, C, F, Fut>(
    name: &'static str,
    store: Store<K>,
    queue: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    reconcile: F,
    ctx: Arc<C>,
) -> impl std::future::Future<Output = ()> + Send
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    // Keys waiting for their reconcile (the applier takes a key once however often
    // it comes): kube's workqueue_depth.
    let waiting: Arc<std::sync::Mutex<std::collections::HashSet<ObjectRef<K>>>> =
        Default::default();
    let depth = |w: &std::collections::HashSet<ObjectRef<K>>| {
        berth_metrics::global().set(
            "workqueue_depth",
            "Current depth of a controller's queue.",
            &[("name", name)],
            w.len() as f64,
        );
    };
    let arrived = waiting.clone();
    let queue = queue.map(move |key| {
        let mut w = arrived.lock().unwrap_or_else(|e| e.into_inner());
        w.insert(key.clone());
        depth(&w);
        berth_metrics::global().inc(
            "workqueue_adds_total",
            "Total number of keys a controller's queue was given.",
            &[("name", name)],
        );
        key
    });
    let reconcile = Arc::new(reconcile);
    let timed = move |obj: Arc<K>, ctx: Arc<C>| {
        {
            let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
            w.remove(&ObjectRef::from_obj(obj.as_ref()));
            depth(&w);
        }
        let fut = reconcile(obj, ctx);
        async move {
            let started = std::time::Instant::now();
            let r = fut.await;
            let m = berth_metrics::global();
            let result = if r.is_ok() { "success" } else { "error" };
            m.inc(
                "controller_reconcile_total",
                "Total number of reconciliations per controller, by the result.",
                &[("controller", name), ("result", result)],
            );
            m.observe(
                "controller_reconcile_time_seconds",
                "Length of time per reconciliation per controller.",
                &[("controller", name)],
                started.elapsed().as_secs_f64(),
            );
            r
        }
    };
    kube::runtime::applier(
        move |obj, ctx| CancelableJoinHandle::spawn(timed(obj, ctx), &runtime),
        move |obj: Arc<K>, err: &Error, _| {
            let key = ObjectRef::from_obj(obj.as_ref());
            match err {
                // Someone wrote the object meanwhile: the watch brings the new one.
                Error::Kube(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::debug!(controller = name, object = %key, "conflict; trying again");
                    Action::requeue(Duration::from_millis(50))
                }
                Error::Stale(why) => {
                    tracing::debug!(controller = name, object = %key, why, "stale; trying again");
                    Action::requeue(Duration::from_millis(50))
                }
                e => {
                    tracing::warn!(controller = name, object = %key, error = %e, "reconcile failed; trying again in 5 s");
                    Action::requeue(Duration::from_secs(5))
                }
            }
        },
        ctx,
        store,
        queue.map(Ok::<_, Infallible>),
        kube::runtime::controller::Config::default().concurrency(32),
    )
    .for_each(|_| async {})
}

/// The resourceVersion a controller last wrote for each object (by UID), so that a
/// reconcile that reads an older copy from the informer (our own write not yet
/// watched) waits for the watch instead of acting on what it already changed.
#[derive(Default)]
pub(crate) struct Written(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl Written {
    fn rv(m: &kube::api::ObjectMeta) -> Option<u64> {
        m.resource_version.as_deref()?.parse().ok()
    }

    /// Records what a write returned.
    pub(crate) fn record(&self, m: &kube::api::ObjectMeta) {
        if let (Some(uid), Some(rv)) = (m.uid.clone(), Self::rv(m)) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid, rv);
        }
    }

    /// Whether `m` is older than what this controller last wrote of it.
    pub(crate) fn stale(&self, m: &kube::api::ObjectMeta) -> bool {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let uid = m.uid.clone().unwrap_or_default();
        match (w.get(&uid), Self::rv(m)) {
            (Some(wrote), Some(have)) if have < *wrote => true,
            (Some(_), _) => {
                w.remove(&uid);
                false
            }
            _ => false,
        }
    }

    /// Forgets an object that is gone.
    pub(crate) fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

/// What a controller of pods (ReplicaSets, Jobs...) works with.
pub(crate) struct PodOwner {
    client: kube::Client,
    /// The pods each owner controls.
    pods: Arc<OwnerIndex<Pod>>,
    /// Creations and deletions asked for and not yet seen.
    expectations: Arc<Expectations>,
    recorder: berth_events::Recorder,
}

impl PodOwner {
    /// Creates pods for `owner` (`make(i)` is the i-th of `n`) in slow-start batches,
    /// with an event per pod; the message of the first failure, if any.
    async fn create_pods<O: Resource<DynamicType = ()>>(
        &self,
        owner: &O,
        n: usize,
        make: impl Fn(usize) -> Pod,
    ) -> Option<String> {
        if n == 0 {
            return None;
        }
        let uid = owner.meta().uid.clone().unwrap_or_default();
        self.expectations.expect_creates(&uid, n);
        let (made, err) = podcontrol::slow_start(n, |i| {
            let pod = make(i);
            let client = self.client.clone();
            async move { podcontrol::create(&client, &pod).await }
        })
        .await;
        for p in &made {
            let pn = p.metadata.name.as_deref().unwrap_or_default();
            let msg = format!("Created pod: {pn}");
            self.recorder
                .about(owner, EventType::Normal, "SuccessfulCreate", &msg);
        }
        // What failed or never started will not be seen in the watch.
        for _ in made.len()..n {
            self.expectations.created(&uid);
        }
        err.map(|e| {
            let msg = api_message(&e);
            let text = format!("Error creating: {msg}");
            self.recorder
                .about(owner, EventType::Warning, "FailedCreate", &text);
            msg
        })
    }

    /// Deletes pods of `owner`, with an event per pod; the message of the first
    /// failure, if any.
    async fn delete_pods<O: Resource<DynamicType = ()>>(
        &self,
        owner: &O,
        pods: &[Arc<Pod>],
    ) -> Option<String> {
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let pod_uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        for p in pods {
            self.expectations.expect_delete(&uid, &pod_uid(p));
        }
        let results = futures_util::future::join_all(
            pods.iter().map(|p| podcontrol::delete(&self.client, p)),
        )
        .await;
        let mut failure = None;
        for (p, r) in pods.iter().zip(results) {
            let pn = p.metadata.name.as_deref().unwrap_or_default();
            match r {
                // Gone before this call: its deletion was seen before it was expected.
                Ok(false) => self.expectations.deleted(&uid, &pod_uid(p)),
                Ok(true) => {
                    let msg = format!("Deleted pod: {pn}");
                    self.recorder
                        .about(owner, EventType::Normal, "SuccessfulDelete", &msg);
                }
                Err(e) => {
                    self.expectations.deleted(&uid, &pod_uid(p));
                    let msg = api_message(&e);
                    let text = format!("Error deleting: {msg}");
                    self.recorder
                        .about(owner, EventType::Warning, "FailedDelete", &text);
                    failure.get_or_insert(msg);
                }
            }
        }
        failure
    }
}

/// What a controller of pods with a revision history (DaemonSets, StatefulSets)
/// works with.
pub(crate) struct RevisionedOwner {
    base: PodOwner,
    /// The ControllerRevisions each owner has.
    revisions: Arc<OwnerIndex<ControllerRevision>>,
}

impl std::ops::Deref for RevisionedOwner {
    type Target = PodOwner;
    fn deref(&self) -> &PodOwner {
        &self.base
    }
}

impl RevisionedOwner {
    /// The revisions `owner` has, and the current one for `template` (found or made).
    async fn revisions<O: Resource<DynamicType = ()>>(
        &self,
        owner: &O,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
        collisions: Option<i32>,
    ) -> Result<(Vec<Arc<ControllerRevision>>, ControllerRevision), Error> {
        let m = owner.meta();
        let existing = self.revisions.owned(m.uid.as_deref().unwrap_or_default());
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let cur = revisions::current(
            &self.client,
            owner::reference_to(owner),
            m.namespace.as_deref().unwrap_or_default(),
            template,
            labels,
            collisions,
            &existing,
        )
        .await?;
        Ok((existing, cur))
    }
}

/// The parts of a controller of pods of kind `O`, and its queue: `O`s that changed and
/// the owners of pods that changed.
fn pod_owner<O>(
    shared: &Shared,
    owners: &Informer<O>,
    component: &str,
    service_account: &str,
) -> (PodOwner, impl Stream<Item = ObjectRef<O>> + Send + 'static)
where
    O: informer::Object,
{
    let expectations = Arc::new(Expectations::default());
    observe_pods::<O>(&shared.pods, expectations.clone());
    let queue = futures_util::stream::select(
        owners.trigger(informer::itself),
        shared.pods.trigger(informer::controller_owner::<Pod, O>),
    );
    let parts = PodOwner {
        client: shared.client_as(service_account),
        pods: shared.pods_by_owner.clone(),
        expectations,
        recorder: shared.recorder(component, service_account),
    };
    (parts, queue)
}

/// Keeps `expectations` of controllers of kind `O` from the pod watch: a pod of
/// theirs appearing is a creation seen; one being deleted or gone, a deletion seen.
fn observe_pods<O: Resource<DynamicType = ()>>(
    pods: &Informer<Pod>,
    expectations: Arc<Expectations>,
) {
    pods.on(move |c| {
        let mine = |p: &Pod| {
            owner::controller_ref(&p.metadata)
                .filter(|r| r.kind == O::kind(&()) && r.api_version == O::api_version(&()))
                .map(|r| r.uid.clone())
        };
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        match c {
            Change::Applied { old: None, new } => {
                if let Some(o) = mine(new) {
                    expectations.created(&o);
                    if new.metadata.deletion_timestamp.is_some() {
                        expectations.deleted(&o, &uid(new));
                    }
                }
            }
            Change::Applied { old: Some(_), new } => {
                if new.metadata.deletion_timestamp.is_some() {
                    if let Some(o) = mine(new) {
                        expectations.deleted(&o, &uid(new));
                    }
                }
            }
            Change::Deleted(p) => {
                if let Some(o) = mine(p) {
                    expectations.deleted(&o, &uid(p));
                }
            }
        }
    });
}

/// The generateName of pods an owner named `name` makes (kube keeps the result,
/// with the API server's five random characters, within 63 characters).
fn generate_prefix(name: &str) -> String {
    let mut p: String = name.chars().take(57).collect();
    p.push('-');
    p
}

/// The message of an API error, as events and conditions quote it.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

/// Whether a status to write differs from the one the object has, ignoring when
/// conditions last changed (rewriting only a time would wake every watcher).
fn status_differs<T: serde::Serialize>(old: &T, new: &T) -> bool {
    fn strip(mut v: serde_json::Value) -> serde_json::Value {
        if let Some(cs) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in cs {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastTransitionTime");
                    o.remove("lastUpdateTime");
                    o.remove("lastProbeTime");
                }
            }
        }
        v
    }
    let a = strip(serde_json::to_value(old).unwrap_or_default());
    let b = strip(serde_json::to_value(new).unwrap_or_default());
    a != b
}

/// A merge patch writing `status` whole: the `clearable` fields it lacks are
/// written as null, so that they go (a merge patch keeps what it does not name).
fn status_patch<T: serde::Serialize>(status: &T, clearable: &[&str]) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        for f in clearable {
            o.entry(f.to_string()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": v })
}

/// `t` plus `secs` seconds, saturating (a user's huge deadline or toleration must not
/// overflow and panic a controller: jiff's `+` panics past its range).
fn later(t: jiff::Timestamp, secs: i64) -> jiff::Timestamp {
    t.checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(if secs < 0 {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        })
}
