//! How a Deployment's replicas move between its ReplicaSets: rolling (new up within
//! the surge, old down within the unavailability, unhealthy old pods first),
//! recreating (old to zero, wait for their pods to go, new up), proportional scaling
//! of a Deployment resized mid-rollout, and the clean-up of old revisions.

use std::sync::Arc;

use berth_events::EventType;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::{new_replica_set, recheck, status, util, write_status, Ctx, Family};
use crate::Error;

/// The replicas a new ReplicaSet should have now (kube's NewRSNewReplicas).
pub(super) fn new_rs_replicas(
    d: &Deployment,
    all: &[Arc<ReplicaSet>],
    new: Option<&ReplicaSet>,
) -> i32 {
    let want = util::desired(d);
    let cur_new = new.map(util::replicas).unwrap_or(0);
    if !util::is_rolling(d) {
        return want;
    }
    let current: i32 = all.iter().map(|r| util::replicas(r)).sum();
    let max_total = want + util::max_surge(d);
    if current >= max_total {
        return cur_new;
    }
    let up = (max_total - current).min(want - cur_new);
    cur_new + up.max(0)
}

/// Sets a ReplicaSet's replicas (and the Deployment size it was set for); whether it
/// changed. The write carries the resourceVersion read, so a decision made on a stale
/// copy fails with a conflict and is made again.
async fn scale_rs(ctx: &Ctx, d: &Deployment, rs: &ReplicaSet, to: i32) -> Result<bool, Error> {
    let from = util::replicas(rs);
    let desired = util::desired(d).to_string();
    let max = (util::desired(d) + util::max_surge(d)).to_string();
    let ann = rs.metadata.annotations.clone().unwrap_or_default();
    let sized = ann.get(util::DESIRED_REPLICAS) == Some(&desired)
        && ann.get(util::MAX_REPLICAS) == Some(&max);
    if from == to && sized {
        return Ok(false);
    }
    let name = rs.metadata.name.clone().unwrap_or_default();
    // Guarded by the replicas read, not the resourceVersion: the ReplicaSet's status
    // changes with every pod, and a write conditional on it would conflict again and
    // again during a rollout while the decision it carries is still right.
    let mut ops = vec![serde_json::json!({"op": "test", "path": "/spec/replicas", "value": from})];
    if rs.metadata.annotations.is_none() {
        ops.push(serde_json::json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    let key = |k: &str| {
        format!(
            "/metadata/annotations/{}",
            k.replace('~', "~0").replace('/', "~1")
        )
    };
    ops.push(
        serde_json::json!({"op": "add", "path": key(util::DESIRED_REPLICAS), "value": desired}),
    );
    ops.push(serde_json::json!({"op": "add", "path": key(util::MAX_REPLICAS), "value": max}));
    ops.push(serde_json::json!({"op": "replace", "path": "/spec/replicas", "value": to}));
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
        .map_err(|e| Error::Failed(format!("building a patch: {e}")))?;
    let r = Api::<ReplicaSet>::namespaced(
        ctx.client.clone(),
        rs.metadata.namespace.as_deref().unwrap_or("default"),
    )
    .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
    .await;
    match r {
        Ok(_) => {}
        // The replicas changed since they were read: decide again on a fresher copy.
        Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("test") => {
            return Err(Error::Stale(format!("replica set {name}: {}", e.message)));
        }
        Err(e) => return Err(e.into()),
    }
    if from != to {
        let dir = if to > from { "up" } else { "down" };
        ctx.recorder.about(
            d,
            EventType::Normal,
            "ScalingReplicaSet",
            &format!("Scaled {dir} replica set {name} from {from} to {to}"),
        );
    }
    Ok(from != to)
}

/// One step of a rolling update; writes the status after any scaling.
pub(super) async fn rollout_rolling(
    ctx: &Ctx,
    d: &Deployment,
    mut fam: Family,
) -> Result<Action, Error> {
    let had_new = fam.new.is_some();
    fam.new = new_replica_set(ctx, d, &fam, true).await?;
    if !had_new {
        // Made just now: the watch brings it, and the next pass moves replicas.
        return Ok(Action::await_change());
    }
    let Some(new) = fam.new.clone() else {
        return Ok(Action::await_change());
    };
    let all = fam.all();
    let want = util::desired(d);
    // The new ReplicaSet up (or down, if the Deployment shrank).
    let scaled = if util::replicas(&new) > want {
        scale_rs(ctx, d, &new, want).await?
    } else if util::replicas(&new) < want {
        let to = new_rs_replicas(d, &all, Some(&new));
        scale_rs(ctx, d, &new, to).await?
    } else {
        false
    };
    if scaled {
        return sync_rollout_status(ctx, d, &fam).await;
    }
    if scale_down_old(ctx, d, &fam, &new).await? {
        return sync_rollout_status(ctx, d, &fam).await;
    }
    let s = status::calculate(d, &all, Some(&new));
    if status::complete(d, &s) {
        clean_up(ctx, d, &fam).await?;
    }
    sync_rollout_status(ctx, d, &fam).await
}

/// Scales old ReplicaSets down as far as availability allows: first the replicas that
/// are not available anyway, then available ones down to the minimum.
async fn scale_down_old(
    ctx: &Ctx,
    d: &Deployment,
    fam: &Family,
    new: &ReplicaSet,
) -> Result<bool, Error> {
    let mut old: Vec<Arc<ReplicaSet>> = fam
        .old
        .iter()
        .filter(|r| util::replicas(r) > 0)
        .cloned()
        .collect();
    if old.is_empty() {
        return Ok(false);
    }
    util::oldest_first(&mut old);
    let all = fam.all();
    let total: i32 = all.iter().map(|r| util::replicas(r)).sum();
    let min_available = util::desired(d) - util::max_unavailable(d);
    let new_unavailable = util::replicas(new) - util::available(new);
    let max_down = total - min_available - new_unavailable;
    if max_down <= 0 {
        return Ok(false);
    }
    // Unhealthy old replicas first: removing them costs no availability.
    let mut sizes: Vec<i32> = old.iter().map(|r| util::replicas(r)).collect();
    let mut cleaned = 0;
    for (i, rs) in old.iter().enumerate() {
        if cleaned >= max_down {
            break;
        }
        let unhealthy = sizes[i] - util::available(rs);
        if unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_down - cleaned);
        sizes[i] -= down;
        cleaned += down;
    }
    // Then available ones, as far as the minimum allows.
    let available: i32 = all.iter().map(|r| util::available(r)).sum();
    let mut allowed = (available - min_available).max(0);
    let mut changed = false;
    for (i, rs) in old.iter().enumerate() {
        let down = sizes[i].min(allowed);
        sizes[i] -= down;
        allowed -= down;
        if sizes[i] != util::replicas(rs) {
            changed |= scale_rs(ctx, d, rs, sizes[i]).await?;
        }
    }
    Ok(changed)
}

/// One step of a Recreate update.
pub(super) async fn rollout_recreate(
    ctx: &Ctx,
    d: &Deployment,
    mut fam: Family,
) -> Result<Action, Error> {
    fam.new = new_replica_set(ctx, d, &fam, false).await?;
    let mut scaled = false;
    for rs in fam.old.iter().filter(|r| util::replicas(r) > 0) {
        scaled |= scale_rs(ctx, d, rs, 0).await?;
    }
    if scaled {
        return sync_rollout_status(ctx, d, &fam).await;
    }
    // The old pods must be gone (or finished) before new ones start.
    let running = fam.old.iter().any(|rs| {
        ctx.pods
            .owned(rs.metadata.uid.as_deref().unwrap_or_default())
            .iter()
            .any(|p| !super::is_finished(p))
    });
    if running {
        return sync_rollout_status(ctx, d, &fam).await;
    }
    if fam.new.is_none() {
        fam.new = new_replica_set(ctx, d, &fam, true).await?;
        return Ok(Action::await_change());
    }
    if let Some(new) = fam.new.clone() {
        if scale_rs(ctx, d, &new, util::desired(d)).await? {
            return sync_rollout_status(ctx, d, &fam).await;
        }
        let s = status::calculate(d, &fam.all(), Some(&new));
        if status::complete(d, &s) {
            clean_up(ctx, d, &fam).await?;
        }
    }
    sync_rollout_status(ctx, d, &fam).await
}

/// Writes the rollout's status and conditions.
async fn sync_rollout_status(ctx: &Ctx, d: &Deployment, fam: &Family) -> Result<Action, Error> {
    let all = fam.all();
    let mut s = status::calculate(d, &all, fam.new.as_deref());
    let after = status::rollout_conditions(d, &mut s, &all, fam.new.as_deref());
    write_status(ctx, d, s).await?;
    Ok(recheck(after))
}

/// Scales the ReplicaSets for a new replica count (no rollout): the only active one,
/// or all active ones in proportion to their sizes.
pub(super) async fn scale(ctx: &Ctx, d: &Deployment, fam: &Family) -> Result<(), Error> {
    let want = util::desired(d);
    let all = fam.all();
    let mut active: Vec<Arc<ReplicaSet>> = all
        .iter()
        .filter(|r| util::replicas(r) > 0)
        .cloned()
        .collect();
    let only = match active.len() {
        1 => active.first().cloned(),
        0 => fam.new.clone().or_else(|| {
            let mut old = fam.old.clone();
            util::oldest_first(&mut old);
            old.last().cloned()
        }),
        _ => None,
    };
    if let Some(rs) = only {
        scale_rs(ctx, d, &rs, want).await?;
        return Ok(());
    }
    // Saturated: the new one has everything; the old ones go.
    if let Some(new) = &fam.new {
        if util::replicas(new) == want && util::available(new) == want {
            for rs in fam.old.iter().filter(|r| util::replicas(r) > 0) {
                scale_rs(ctx, d, rs, 0).await?;
            }
            return Ok(());
        }
    }
    if !util::is_rolling(d) {
        return Ok(());
    }
    let allowed = if want > 0 {
        want + util::max_surge(d)
    } else {
        0
    };
    let current: i32 = active.iter().map(|r| util::replicas(r)).sum();
    let to_add = allowed - current;
    if to_add == 0 || current == 0 {
        return Ok(());
    }
    // Larger first; newer first when adding, older first when removing.
    active.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        util::replicas(b).cmp(&util::replicas(a)).then_with(|| {
            if to_add > 0 {
                t(b).cmp(&t(a))
            } else {
                t(a).cmp(&t(b))
            }
        })
    });
    let mut sizes: Vec<i32> = active.iter().map(|r| util::replicas(r)).collect();
    let mut added = 0;
    for (i, size) in sizes.iter_mut().enumerate() {
        let share = (f64::from(util::replicas(&active[i])) * f64::from(to_add) / f64::from(current))
            .round() as i32;
        let share = if to_add > 0 {
            share.min(to_add - added)
        } else {
            share.max(to_add - added)
        };
        *size = (*size + share).max(0);
        added += share;
    }
    if let Some(first) = sizes.first_mut() {
        *first = (*first + to_add - added).max(0);
    }
    for (rs, size) in active.iter().zip(sizes) {
        scale_rs(ctx, d, rs, size).await?;
    }
    Ok(())
}

/// Deletes the oldest old ReplicaSets beyond revisionHistoryLimit (only empty ones
/// whose controller has caught up).
pub(super) async fn clean_up(ctx: &Ctx, d: &Deployment, fam: &Family) -> Result<(), Error> {
    let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
        return Ok(());
    };
    let mut old: Vec<Arc<ReplicaSet>> = fam
        .old
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    let mut extra = old.len() as i64 - i64::from(limit.max(0));
    if extra <= 0 {
        return Ok(());
    }
    old.sort_by_key(|r| util::revision(r));
    for rs in old {
        if extra <= 0 {
            break;
        }
        let st = rs.status.clone().unwrap_or_default();
        let caught_up = rs.metadata.generation <= st.observed_generation;
        if st.replicas != 0 || util::replicas(&rs) != 0 || !caught_up {
            continue;
        }
        let name = rs.metadata.name.clone().unwrap_or_default();
        let dp = berth_watch::delete_exactly(rs.metadata.uid.clone(), None, false);
        match Api::<ReplicaSet>::namespaced(
            ctx.client.clone(),
            rs.metadata.namespace.as_deref().unwrap_or("default"),
        )
        .delete(&name, &dp)
        .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        extra -= 1;
    }
    Ok(())
}
