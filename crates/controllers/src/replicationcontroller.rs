//! The ReplicationController controller: the ReplicaSet's loop for the older kind
//! (a label map for selector), which kubectl's prune list and old manifests still use.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSetStatus;
use k8s_openapi::api::core::v1::ReplicationController;
use kube::runtime::controller::Action;

use crate::replicaset::{keep, Ctx, Replicas};
use crate::{Error, Shared};

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let (ctx, queue) = crate::pod_owner(
        shared,
        &shared.replicationcontrollers,
        "replication-controller",
        berth_pods::identities::REPLICATION,
    );
    crate::drive(
        "replicationcontroller",
        shared.replicationcontrollers.store(),
        queue,
        reconcile,
        Arc::new(ctx),
    )
}

async fn reconcile(rc: Arc<ReplicationController>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let spec = rc.spec.clone().unwrap_or_default();
    // The two kinds' statuses have the same fields.
    let status: ReplicaSetStatus = rc
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let wanted = Replicas {
        want: spec.replicas.unwrap_or(1).max(0) as usize,
        template: spec.template.unwrap_or_default(),
        min_ready: spec.min_ready_seconds.unwrap_or(0),
        status,
    };
    keep(rc.as_ref(), wanted, &ctx).await
}
