//! The Job controller, as kube's: runs pods to completion — `completions` successes
//! (or, without it, one success and the rest finished), at most `parallelism` at once,
//! each Indexed pod with its own completion index; replaces failed pods after an
//! exponential back-off (10 s doubling to 6 min) until backoffLimit; fails the Job
//! past activeDeadlineSeconds or by its podFailurePolicy; suspends and resumes; and
//! deletes a finished Job after ttlSecondsAfterFinished.
//!
//! Finished pods are counted with the tracking finalizer, as kube does: a pod keeps
//! the finalizer until its UID is recorded in status.uncountedTerminatedPods; only
//! then does the finalizer go and the pod move into the counts — so a pod deleted (or
//! a controller restarted) at any moment is counted once, never zero or two times.

mod indexes;
mod policy;
mod status;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_events::EventType;
use berth_pods::readiness;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use crate::{owner, podcontrol, Error, Shared};

/// The finalizer that keeps a finished pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// The longest wait before replacing a failed pod (kube's MaxJobPodFailureBackOff).
const MAX_BACKOFF: Duration = Duration::from_secs(360);
/// The first wait (kube's DefaultJobPodFailureBackOff).
const FIRST_BACKOFF: Duration = Duration::from_secs(10);

struct Ctx {
    base: crate::PodOwner,
    written: crate::Written,
    /// Per Job UID: pods whose finalizer this controller removed (and counted) while
    /// the watch may still show it; they must not be counted again.
    released: Mutex<HashMap<String, std::collections::HashSet<String>>>,
    /// Per Job UID: failures since the last success and when the last was seen.
    backoff: Mutex<HashMap<String, (u32, std::time::Instant)>>,
}

impl std::ops::Deref for Ctx {
    type Target = crate::PodOwner;
    fn deref(&self) -> &crate::PodOwner {
        &self.base
    }
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let (base, queue) = crate::pod_owner(
        shared,
        &shared.jobs,
        "job-controller",
        berth_pods::identities::JOB,
    );
    let ctx = Arc::new(Ctx {
        base,
        written: Default::default(),
        released: Mutex::new(HashMap::new()),
        backoff: Mutex::new(HashMap::new()),
    });
    crate::drive("job", shared.jobs.store(), queue, reconcile, ctx)
}

fn has_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Removes the tracking finalizer from pods (a pod gone meanwhile is fine).
async fn release(ctx: &Ctx, pods: &[&Arc<Pod>]) -> Result<(), Error> {
    let results = futures_util::future::join_all(pods.iter().map(|p| async move {
        let keep: Vec<String> = p
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != TRACKING_FINALIZER)
            .cloned()
            .collect();
        let patch = serde_json::json!({"metadata": {
            "finalizers": keep, "resourceVersion": p.metadata.resource_version}});
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let name = p.metadata.name.as_deref().unwrap_or_default();
        match Api::<Pod>::namespaced(ctx.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }))
    .await;
    for r in results {
        r?;
    }
    Ok(())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // Counts accumulate: a decision on a copy older than our last write would count
    // or create twice.
    if ctx.written.stale(&job.metadata) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let mut job = (*job).clone();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    // Expectations before the pods: a creation seen in between must not satisfy them
    // while an older list is used.
    let satisfied = ctx.expectations.satisfied(&uid);
    let pods = ctx.pods.owned(&uid);
    let st = job.status.clone().unwrap_or_default();
    if status::finished(&st).is_some() || job.metadata.deletion_timestamp.is_some() {
        let tracked: Vec<&Arc<Pod>> = pods.iter().filter(|p| has_finalizer(p)).collect();
        release(&ctx, &tracked).await?;
        ctx.expectations.forget(&uid);
        ctx.written.forget(&uid);
        ctx.released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        return ttl(&ctx, &job).await;
    }
    let spec = job.spec.clone().unwrap_or_default();
    let mut st = st;
    let now = Timestamp::now();

    // Finished pods still tracked: recorded as uncounted first, then released, then
    // counted.
    let mut uncounted = st.uncounted_terminated_pods.clone().unwrap_or_default();
    let known = |u: &str, l: &Option<Vec<String>>| l.iter().flatten().any(|x| x == u);
    let mut newly_succeeded = Vec::new();
    let mut newly_failed = Vec::new();
    let mut ignored = Vec::new();
    let mut fail_by_policy = None;
    // Pods released earlier whose finalizer the watch still shows are done with;
    // those the watch shows released (or gone) leave the set.
    let released: std::collections::HashSet<String> = {
        let mut all = ctx.released.lock().unwrap_or_else(|e| e.into_inner());
        let set = all.entry(uid.clone()).or_default();
        let still: std::collections::HashSet<String> = pods
            .iter()
            .filter(|p| has_finalizer(p))
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        set.retain(|u| still.contains(u));
        set.clone()
    };
    let tracked = |p: &Pod| {
        has_finalizer(p) && !released.contains(p.metadata.uid.as_deref().unwrap_or_default())
    };
    for p in pods.iter().filter(|p| tracked(p)) {
        let pu = p.metadata.uid.clone().unwrap_or_default();
        if known(&pu, &uncounted.succeeded) || known(&pu, &uncounted.failed) {
            continue;
        }
        match phase(p) {
            "Succeeded" => newly_succeeded.push(pu),
            "Failed" => match spec
                .pod_failure_policy
                .as_ref()
                .map(|pol| policy::judge(pol, p))
            {
                Some(policy::Verdict::Ignore) => ignored.push(p),
                Some(policy::Verdict::FailJob(msg)) => {
                    fail_by_policy.get_or_insert(msg);
                    newly_failed.push(pu);
                }
                _ => newly_failed.push(pu),
            },
            // Deleted before it finished: a failure (its replacement is due now).
            _ if p.metadata.deletion_timestamp.is_some() => newly_failed.push(pu),
            _ => {}
        }
    }
    if !newly_succeeded.is_empty() || !newly_failed.is_empty() {
        uncounted
            .succeeded
            .get_or_insert_with(Vec::new)
            .extend(newly_succeeded.iter().cloned());
        uncounted
            .failed
            .get_or_insert_with(Vec::new)
            .extend(newly_failed.iter().cloned());
        st.uncounted_terminated_pods = Some(uncounted.clone());
        write_status(&ctx, &mut job, &st).await?;
        let mut b = ctx.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let e = b
            .entry(uid.clone())
            .or_insert((0, std::time::Instant::now()));
        if !newly_succeeded.is_empty() {
            e.0 = 0;
        }
        if !newly_failed.is_empty() {
            e.0 += newly_failed.len() as u32;
            e.1 = std::time::Instant::now();
        }
    }
    let mut to_release: Vec<&Arc<Pod>> = ignored;
    let in_uncounted = |p: &Pod| {
        let pu = p.metadata.uid.clone().unwrap_or_default();
        known(&pu, &uncounted.succeeded) || known(&pu, &uncounted.failed)
    };
    to_release.extend(pods.iter().filter(|p| tracked(p) && in_uncounted(p)));
    release(&ctx, &to_release).await?;
    ctx.released
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(uid.clone())
        .or_default()
        .extend(to_release.iter().filter_map(|p| p.metadata.uid.clone()));
    // Now counted: every uncounted UID (its pod released, or gone).
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let mut completed: BTreeSet<i32> = indexes::parse(
        st.completed_indexes.as_deref().unwrap_or(""),
        completions.unwrap_or(0),
    );
    let by_uid: HashMap<String, &Arc<Pod>> = pods
        .iter()
        .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p))
        .collect();
    for u in uncounted.succeeded.iter().flatten() {
        st.succeeded = Some(st.succeeded.unwrap_or(0) + 1);
        if let Some(i) = by_uid.get(u).and_then(|p| indexes::of_pod(p)) {
            completed.insert(i);
        }
    }
    st.failed =
        Some(st.failed.unwrap_or(0) + uncounted.failed.as_ref().map_or(0, |f| f.len() as i32));
    // Written as empty lists: a merge patch keeps lists it is not given.
    st.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(Vec::new()),
        failed: Some(Vec::new()),
    });
    if indexed {
        st.completed_indexes = Some(indexes::format(&completed));
    }

    let active: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| readiness::is_active(p))
        .cloned()
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .count() as i32;
    let succeeded = st.succeeded.unwrap_or(0);
    let failed = st.failed.unwrap_or(0);

    // Failure: by policy, past backoffLimit, past the deadline (or already decided).
    let deadline = spec
        .active_deadline_seconds
        .zip(st.start_time.as_ref())
        .map(|(secs, t)| crate::later(t.0, secs));
    let failure = status::condition(&st, "FailureTarget")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
        .or_else(|| fail_by_policy.map(|m| ("PodFailurePolicy".to_string(), m)))
        .or_else(|| {
            (failed > spec.backoff_limit.unwrap_or(6)).then(|| {
                (
                    "BackoffLimitExceeded".into(),
                    "Job has reached the specified backoff limit".into(),
                )
            })
        })
        .or_else(|| {
            deadline.filter(|d| *d <= now).map(|_| {
                (
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                )
            })
        });
    if let Some((reason, message)) = failure {
        if status::condition(&st, "FailureTarget").is_none() {
            status::set(&mut st, "FailureTarget", "True", &reason, &message);
            ctx.recorder
                .about(&job, EventType::Warning, &reason, &message);
        }
        delete_pods(&ctx, &job, &active).await?;
        st.active = Some(0);
        st.ready = Some(0);
        st.terminating = Some(terminating + active.len() as i32);
        if active.is_empty() && terminating == 0 {
            status::set(&mut st, "Failed", "True", &reason, &message);
        }
        write_status(&ctx, &mut job, &st).await?;
        return Ok(Action::await_change());
    }

    // Success.
    let done = match (indexed, completions) {
        (true, Some(c)) => completed.len() as i32 >= c,
        (_, Some(c)) => succeeded >= c,
        (_, None) => succeeded > 0,
    };
    if done {
        if status::condition(&st, "SuccessCriteriaMet").is_none() {
            status::set(
                &mut st,
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            );
        }
        if completions.is_some() {
            delete_pods(&ctx, &job, &active).await?;
        }
        let still = if completions.is_some() {
            0
        } else {
            active.len() as i32
        };
        st.active = Some(still);
        st.ready = Some(
            active.iter().filter(|p| readiness::is_ready(p)).count() as i32 * i32::from(still > 0),
        );
        st.terminating = Some(terminating);
        if still == 0 && terminating == 0 && (completions.is_none() || active.is_empty()) {
            status::set(
                &mut st,
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            );
            st.completion_time = Some(Time(now));
            ctx.recorder
                .about(&job, EventType::Normal, "Completed", "Job completed");
        }
        write_status(&ctx, &mut job, &st).await?;
        return Ok(Action::await_change());
    }

    // Suspended: no pods; resumed: the clock starts again.
    if spec.suspend == Some(true) {
        delete_pods(&ctx, &job, &active).await?;
        if status::condition(&st, "Suspended").is_none_or(|c| c.status != "True") {
            status::set(
                &mut st,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
            );
            ctx.recorder
                .about(&job, EventType::Normal, "Suspended", "Job suspended");
        }
        st.start_time = None;
        st.active = Some(0);
        st.ready = Some(0);
        st.terminating = Some(terminating + active.len() as i32);
        write_status(&ctx, &mut job, &st).await?;
        return Ok(Action::await_change());
    }
    if status::condition(&st, "Suspended").is_some_and(|c| c.status == "True") {
        status::set(&mut st, "Suspended", "False", "JobResumed", "Job resumed");
        ctx.recorder
            .about(&job, EventType::Normal, "Resumed", "Job resumed");
        st.start_time = Some(Time(now));
    }
    if st.start_time.is_none() {
        st.start_time = Some(Time(now));
    }

    // The pods to have now.
    let mut wait = None;
    let mut active_now = active.clone();
    if satisfied {
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let backoff_left = {
            let b = ctx.backoff.lock().unwrap_or_else(|e| e.into_inner());
            b.get(&uid).and_then(|(n, at)| {
                if *n == 0 {
                    return None;
                }
                let d = FIRST_BACKOFF
                    .saturating_mul(1 << (n - 1).min(10))
                    .min(MAX_BACKOFF);
                d.checked_sub(at.elapsed())
            })
        };
        let (make, remove) = if indexed {
            plan_indexed(&active, &completed, completions.unwrap_or(0), parallelism)
        } else {
            let want = match completions {
                Some(c) => parallelism.min(c - succeeded).max(0),
                None if succeeded > 0 => active.len() as i32,
                None => parallelism,
            } as usize;
            let mut surplus = active.clone();
            let remove = if surplus.len() > want {
                podcontrol::rank_for_deletion(&mut surplus);
                surplus.drain(..surplus.len() - want).collect()
            } else {
                Vec::new()
            };
            let make: Vec<Option<i32>> = (active.len()..want).map(|_| None).collect();
            (make, remove)
        };
        delete_pods(&ctx, &job, &remove).await?;
        active_now.retain(|p| !remove.iter().any(|r| r.metadata.uid == p.metadata.uid));
        match backoff_left {
            Some(left) if !make.is_empty() => wait = Some(left),
            _ => {
                if create_pods(&ctx, &job, &make).await.is_some() {
                    wait = Some(Duration::from_secs(5));
                }
            }
        }
    }
    st.active = Some(active_now.len() as i32);
    st.ready = Some(active_now.iter().filter(|p| readiness::is_ready(p)).count() as i32);
    st.terminating = Some(terminating);
    write_status(&ctx, &mut job, &st).await?;
    let until_deadline =
        deadline.map(|d| Duration::from_secs(d.duration_since(now).as_secs().max(0) as u64 + 1));
    Ok(match [wait, until_deadline].into_iter().flatten().min() {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// For an Indexed Job: the indexes to start pods for, and the pods to remove
/// (duplicates of an index, indexes already done or out of range).
fn plan_indexed(
    active: &[Arc<Pod>],
    completed: &BTreeSet<i32>,
    completions: i32,
    parallelism: i32,
) -> (Vec<Option<i32>>, Vec<Arc<Pod>>) {
    let mut remove = Vec::new();
    let mut running: BTreeSet<i32> = BTreeSet::new();
    for p in active {
        match indexes::of_pod(p) {
            Some(i) if i < completions && !completed.contains(&i) && running.insert(i) => {}
            _ => remove.push(p.clone()),
        }
    }
    let room = (parallelism - running.len() as i32).max(0) as usize;
    let make = (0..completions)
        .filter(|i| !completed.contains(i) && !running.contains(i))
        .take(room)
        .map(Some)
        .collect();
    (make, remove)
}

/// Creates the Job's pods (one per entry: its completion index, if Indexed).
async fn create_pods(ctx: &Ctx, job: &Job, make: &[Option<i32>]) -> Option<String> {
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let reference = owner::reference_to(job);
    ctx.create_pods(job, make.len(), |k| {
        let index = make[k];
        let prefix = match index {
            Some(i) => crate::generate_prefix(&format!("{name}-{i}")),
            None => crate::generate_prefix(&name),
        };
        let mut pod =
            podcontrol::from_template(&template, reference.clone(), &ns, None, Some(prefix));
        pod.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(TRACKING_FINALIZER.into());
        if let Some(i) = index {
            with_index(&mut pod, &name, i);
        }
        pod
    })
    .await
}

/// Gives an Indexed Job's pod its index: annotation, label, hostname, and the
/// JOB_COMPLETION_INDEX variable in every container.
fn with_index(pod: &mut Pod, job_name: &str, i: i32) {
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(indexes::INDEX_KEY.into(), i.to_string());
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(indexes::INDEX_KEY.into(), i.to_string());
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    if spec.hostname.is_none() {
        spec.hostname = Some(format!("{job_name}-{i}"));
    }
    let var = EnvVar {
        name: "JOB_COMPLETION_INDEX".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.annotations['{}']", indexes::INDEX_KEY),
            }),
            ..Default::default()
        }),
    };
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        let env = c.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == var.name) {
            env.push(var.clone());
        }
    }
}

/// Deletes pods of the Job (its expectations hold until the watch shows them going).
async fn delete_pods(ctx: &Ctx, job: &Job, pods: &[Arc<Pod>]) -> Result<(), Error> {
    match ctx.delete_pods(job, pods).await {
        None => Ok(()),
        Some(msg) => Err(Error::Failed(format!("deleting pods: {msg}"))),
    }
}

/// Writes the Job's status if it changed, on the copy read (a conflict means someone
/// else wrote meanwhile: the reconcile starts again); `job` becomes what was written.
async fn write_status(
    ctx: &Ctx,
    job: &mut Job,
    st: &k8s_openapi::api::batch::v1::JobStatus,
) -> Result<(), Error> {
    let old = job.status.clone().unwrap_or_default();
    if !crate::status_differs(&old, st) {
        return Ok(());
    }
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let mut patch = crate::status_patch(st, &["conditions", "startTime", "completedIndexes"]);
    patch["metadata"] = serde_json::json!({"resourceVersion": job.metadata.resource_version});
    let written = Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    ctx.written.record(&written.metadata);
    *job = written;
    Ok(())
}

/// Deletes a finished Job once its ttlSecondsAfterFinished has passed (the TTL
/// controller's work); until then, looks again when it will have.
async fn ttl(ctx: &Ctx, job: &Job) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let st = job.status.clone().unwrap_or_default();
    let Some(done_at) = status::finished(&st) else {
        return Ok(Action::await_change());
    };
    let expires = crate::later(done_at, i64::from(ttl));
    let now = Timestamp::now();
    if expires > now {
        let left = expires.duration_since(now).as_secs().max(0) as u64 + 1;
        return Ok(Action::requeue(Duration::from_secs(left)));
    }
    let ns = job.metadata.namespace.as_deref().unwrap_or("default");
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let dp = berth_watch::delete_exactly(job.metadata.uid.clone(), None, true);
    match Api::<Job>::namespaced(ctx.client.clone(), ns)
        .delete(name, &dp)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(job.metadata.uid.as_deref().unwrap_or_default());
    Ok(Action::await_change())
}
