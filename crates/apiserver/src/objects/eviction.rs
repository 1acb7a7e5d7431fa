//! The pods/eviction subresource, as kube-apiserver answers it: a pod is deleted only
//! if the PodDisruptionBudget covering it allows one more disruption, which the
//! eviction takes from the budget's status (disruptionsAllowed down by one, the pod
//! recorded under disruptedPods until the disruption controller sees it go) in the
//! same optimistic-concurrency write, so two evictions never spend one disruption.
//! Refusals are kube's: 429 TooManyRequests with a DisruptionBudget cause, which
//! `kubectl drain` retries.

use std::sync::Arc;

use berth_pods::disruption;
use berth_store::{Error as StoreError, Store};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::{json, Value};

use super::actions::created_status;
use super::delete::delete as delete_object;
use super::delete_opts::DeleteOpts;
use super::meta::encode;
use super::read::read;
use crate::request::{Request, Response};
use crate::resources;
use crate::state::Api;
use crate::status::{ApiError, Cause};

/// How many times a budget write that lost a race is tried again.
const ATTEMPTS: usize = 5;

/// Answers POST pods/NAME/eviction.
pub async fn evict(
    api: &Arc<Api>,
    req: &Request,
    ns: Option<&str>,
    name: &str,
) -> Result<Response, ApiError> {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("the Eviction in the body: {e}")))?
    };
    let dry_run = req.q("dryRun") == Some("All");
    let opts = DeleteOpts {
        grace: body
            .pointer("/deleteOptions/gracePeriodSeconds")
            .and_then(Value::as_i64),
        propagation: "Background".into(),
        uid: body
            .pointer("/deleteOptions/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        rv: None,
        dry_run,
    };
    let pods = resources::find("", "v1", "pods").expect("served");
    for _ in 0..ATTEMPTS {
        let (pv, _) = read(api, pods, ns, name).await?;
        let pod: Pod = serde_json::from_value(pv)
            .map_err(|e| ApiError::internal(format!("pod {name} as stored: {e}")))?;
        if disruption::budget_ignored(&pod) {
            return delete(api, ns, name, &opts).await;
        }
        let mut budgets = covering(api, &pod).await?;
        let (pdb, rev) = match budgets.len() {
            0 => return delete(api, ns, name, &opts).await,
            1 => budgets.remove(0),
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ))
            }
        };
        let status = pdb.status.clone().unwrap_or_default();
        let policy = pdb
            .spec
            .as_ref()
            .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref())
            .unwrap_or("IfHealthyBudget");
        // An unhealthy pod costs the budget nothing when the budget is met anyway (or
        // when the budget says so): evicting it cannot lower what is healthy.
        if !disruption::is_healthy(&pod)
            && (policy == "AlwaysAllow"
                || (status.desired_healthy > 0 && status.current_healthy >= status.desired_healthy))
        {
            return delete(api, ns, name, &opts).await;
        }
        let pdb_name = pdb.metadata.name.clone().unwrap_or_default();
        check(&pdb, &pdb_name)?;
        if dry_run {
            return delete(api, ns, name, &opts).await;
        }
        match spend(api, ns, pdb, rev, name).await {
            Ok(()) => return delete(api, ns, name, &opts).await,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict("policy", "poddisruptionbudgets", name))
}

async fn delete(
    api: &Arc<Api>,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Response, ApiError> {
    let pods = resources::find("", "v1", "pods").expect("served");
    delete_object(api, pods, ns, name, opts).await?;
    Ok(created_status())
}

/// The budgets covering `pod`, with the store revision each was read at.
async fn covering(api: &Api, pod: &Pod) -> Result<Vec<(PodDisruptionBudget, i64)>, ApiError> {
    let res = resources::find("policy", "v1", "poddisruptionbudgets").expect("served");
    let page = api
        .store
        .list(
            &res.ns_prefix(pod.metadata.namespace.as_deref()),
            0,
            0,
            None,
        )
        .await?;
    let mut out = Vec::new();
    for kv in page.items {
        let v = crate::hub::decode(&kv.value, kv.mod_revision);
        // A budget that does not decode protects nothing; it cannot block evictions.
        let Ok(pdb) = serde_json::from_value::<PodDisruptionBudget>(v) else {
            continue;
        };
        if disruption::covers(&pdb, pod) {
            out.push((pdb, kv.mod_revision));
        }
    }
    Ok(out)
}

/// Whether the budget has a disruption to give (kube's checks and messages).
fn check(pdb: &PodDisruptionBudget, name: &str) -> Result<(), ApiError> {
    let status = pdb.status.clone().unwrap_or_default();
    let too_many = |cause: String| {
        let mut e = ApiError::new(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        );
        e.causes = vec![Cause {
            reason: "DisruptionBudget",
            field: String::new(),
            message: cause,
        }];
        e
    };
    if status.observed_generation.unwrap_or(0) < pdb.metadata.generation.unwrap_or(0) {
        return Err(too_many(format!(
            "The disruption budget {name} is still being processed by the server."
        )));
    }
    if status.disruptions_allowed < 0 {
        return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
    }
    if status.disrupted_pods.as_ref().map_or(0, |d| d.len()) > disruption::MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if status.disruptions_allowed == 0 {
        return Err(too_many(format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            status.desired_healthy, status.current_healthy
        )));
    }
    Ok(())
}

/// Takes one disruption from the budget for `pod`, if the budget is still as read.
async fn spend(
    api: &Api,
    ns: Option<&str>,
    mut pdb: PodDisruptionBudget,
    rev: i64,
    pod: &str,
) -> Result<(), StoreError> {
    let res = resources::find("policy", "v1", "poddisruptionbudgets").expect("served");
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let status = pdb.status.get_or_insert_with(Default::default);
    status.disruptions_allowed -= 1;
    status
        .disrupted_pods
        .get_or_insert_with(Default::default)
        .insert(
            pod.to_string(),
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
    pdb.metadata.resource_version = None;
    let v = serde_json::to_value(&pdb).unwrap_or_default();
    api.store
        .update(&res.key(ns, &name), &encode(&v), rev)
        .await
        .map(|_| ())
}
