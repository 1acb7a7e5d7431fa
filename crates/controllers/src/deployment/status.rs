//! A Deployment's status as kube writes it: the counts summed over its ReplicaSets,
//! the Available condition, and the Progressing condition that `kubectl rollout
//! status` reads (ReplicaSetUpdated while pods move, NewReplicaSetAvailable when
//! done, ProgressDeadlineExceeded when stuck past progressDeadlineSeconds).

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::util;

/// The Progressing condition's reasons.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// Pods are moving.
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
/// Stuck past the deadline.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
/// The Deployment is paused.
pub const PAUSED: &str = "DeploymentPaused";
/// The Deployment was resumed.
pub const RESUMED: &str = "DeploymentResumed";

/// The condition of a type, if present.
pub fn condition<'a>(s: &'a DeploymentStatus, kind: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

/// Sets a condition; its transition time stays when its status does not change.
pub fn set_condition(
    s: &mut DeploymentStatus,
    kind: &str,
    status: &str,
    reason: &str,
    message: String,
) {
    let now = Some(Time(Timestamp::now()));
    let conds = s.conditions.get_or_insert_with(Vec::new);
    let transition = conds
        .iter()
        .find(|c| c.type_ == kind)
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| now.clone());
    let unchanged = conds.iter().any(|c| {
        c.type_ == kind
            && c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message.as_str())
    });
    if unchanged {
        return;
    }
    conds.retain(|c| c.type_ != kind);
    conds.push(DeploymentCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: now,
        last_transition_time: transition,
    });
}

/// Removes a condition.
pub fn remove_condition(s: &mut DeploymentStatus, kind: &str) {
    if let Some(c) = s.conditions.as_mut() {
        c.retain(|c| c.type_ != kind);
    }
}

/// The counts of `d` over its ReplicaSets, and its Available condition.
pub fn calculate(
    d: &Deployment,
    all: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
) -> DeploymentStatus {
    let st = |r: &ReplicaSet| r.status.clone().unwrap_or_default();
    let available: i32 = all.iter().map(|r| util::available(r)).sum();
    let total: i32 = all.iter().map(|r| util::replicas(r)).sum();
    let old = d.status.clone().unwrap_or_default();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|r| st(r).replicas).sum()),
        updated_replicas: Some(new_rs.map(|r| st(r).replicas).unwrap_or(0)),
        ready_replicas: Some(all.iter().map(|r| st(r).ready_replicas.unwrap_or(0)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
    };
    if available >= util::desired(d) - util::max_unavailable(d) {
        set_condition(
            &mut s,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        );
    } else {
        set_condition(
            &mut s,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        );
    }
    s
}

/// The deadline in seconds, None when there is none (unset or MaxInt32).
pub fn deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// Whether the rollout is done: every replica updated and available, the latest spec
/// seen.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = util::desired(d);
    s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.observed_generation >= d.metadata.generation
}

/// Whether pods moved since the status the Deployment has.
fn progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    n(s.updated_replicas) > n(old.updated_replicas)
        || n(s.replicas) - n(s.updated_replicas) < n(old.replicas) - n(old.updated_replicas)
        || n(s.ready_replicas) > n(old.ready_replicas)
        || n(s.available_replicas) > n(old.available_replicas)
}

/// Sets the Progressing (and ReplicaFailure) conditions of a rollout's status; returns
/// when the deadline would pass if nothing moves, to look again then.
pub fn rollout_conditions(
    d: &Deployment,
    s: &mut DeploymentStatus,
    all: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
) -> Option<std::time::Duration> {
    let rs_name = new_rs
        .and_then(|r| r.metadata.name.clone())
        .unwrap_or_default();
    let mut recheck = None;
    match deadline(d) {
        None => remove_condition(s, "Progressing"),
        Some(secs) => {
            let cur = condition(s, "Progressing").cloned();
            let done = s.replicas == s.updated_replicas
                && cur.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
            if !done {
                if complete(d, s) {
                    set_condition(
                        s,
                        "Progressing",
                        "True",
                        NEW_RS_AVAILABLE,
                        format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                    );
                } else if progressing(d, s) {
                    set_condition(
                        s,
                        "Progressing",
                        "True",
                        RS_UPDATED,
                        format!("ReplicaSet \"{rs_name}\" is progressing."),
                    );
                    // Progress made now: the deadline counts from here.
                    if let Some(c) = s
                        .conditions
                        .iter_mut()
                        .flatten()
                        .find(|c| c.type_ == "Progressing")
                    {
                        c.last_update_time = Some(Time(Timestamp::now()));
                    }
                    recheck = Some(std::time::Duration::from_secs(secs as u64));
                } else if let Some(c) = cur.filter(|c| c.reason.as_deref() != Some(TIMED_OUT)) {
                    let since = c
                        .last_update_time
                        .map(|t| t.0)
                        .unwrap_or_else(Timestamp::now);
                    let elapsed = Timestamp::now().duration_since(since).as_secs();
                    if elapsed >= i64::from(secs) {
                        set_condition(
                            s,
                            "Progressing",
                            "False",
                            TIMED_OUT,
                            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                        );
                    } else {
                        recheck = Some(std::time::Duration::from_secs(
                            (i64::from(secs) - elapsed) as u64 + 1,
                        ));
                    }
                }
            }
        }
    }
    let failure = all.iter().find_map(|r| {
        r.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
            .cloned()
    });
    match failure {
        Some(f) => set_condition(
            s,
            "ReplicaFailure",
            "True",
            f.reason.as_deref().unwrap_or("FailedCreate"),
            f.message.unwrap_or_default(),
        ),
        None => remove_condition(s, "ReplicaFailure"),
    }
    recheck
}
