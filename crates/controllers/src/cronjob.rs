//! The CronJob controller, as kube's: at each time the schedule names (in the
//! CronJob's time zone) it makes a Job named after the CronJob and the minute
//! (`NAME-<unix minutes>`, so a repeat attempt finds the Job already made), unless
//! suspended, past startingDeadlineSeconds, or — with concurrencyPolicy Forbid — while
//! an earlier Job still runs (Replace deletes that one instead); it lists the running
//! Jobs in status.active, records the last schedule and success times, and keeps only
//! the newest successfulJobsHistoryLimit and failedJobsHistoryLimit finished Jobs.

use std::sync::Arc;
use std::time::Duration;

use berth_events::EventType;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;

use crate::index::OwnerIndex;
use crate::informer::{controller_owner, itself};
use crate::{owner, Error, Shared};

/// The annotation on a Job saying which scheduled time it is for.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The most missed times counted before giving up counting (kube warns past 100).
const TOO_MANY_MISSED: usize = 100;

struct Ctx {
    client: kube::Client,
    jobs: Arc<OwnerIndex<Job>>,
    recorder: berth_events::Recorder,
    written: crate::Written,
}

/// The controller, ready to run once the shared informers run.
pub fn controller(shared: &Shared) -> impl std::future::Future<Output = ()> + Send {
    let queue = futures_util::stream::select(
        shared.cronjobs.trigger(itself),
        shared.jobs.trigger(controller_owner::<Job, CronJob>),
    );
    let ctx = Arc::new(Ctx {
        client: shared.client_as(berth_pods::identities::CRONJOB),
        jobs: shared.jobs_by_owner.clone(),
        recorder: shared.recorder("cronjob-controller", berth_pods::identities::CRONJOB),
        written: Default::default(),
    });
    crate::drive("cronjob", shared.cronjobs.store(), queue, reconcile, ctx)
}

/// How a Job ended ("Complete" or "Failed"), if it has.
fn finished(j: &Job) -> Option<&str> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find_map(|c| {
            (matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
                .then_some(c.type_.as_str())
        })
}

fn reference(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        // Not the resourceVersion: it changes with every status write of the Job, and
        // the CronJob's status would be rewritten each time.
        resource_version: None,
        field_path: None,
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if ctx.written.stale(&cj.metadata) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let spec = cj.spec.clone().unwrap_or_default();
    let schedule = match berth_cron::Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let reason = match e {
                berth_cron::Error::TimeZone(_) => "UnknownTimeZone",
                berth_cron::Error::Schedule(_) => "UnparseableSchedule",
            };
            ctx.recorder
                .about(cj.as_ref(), EventType::Warning, reason, &e.to_string());
            return Ok(Action::await_change());
        }
    };
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let mut jobs = ctx.jobs.owned(&uid);
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let old = cj.status.clone().unwrap_or_default();
    let mut st = CronJobStatus {
        active: None,
        last_schedule_time: old.last_schedule_time.clone(),
        last_successful_time: old.last_successful_time.clone(),
    };
    let was_active = |j: &Job| old.active.iter().flatten().any(|r| r.uid == j.metadata.uid);
    let mut active: Vec<Arc<Job>> = Vec::new();
    for j in &jobs {
        match finished(j) {
            None if j.metadata.deletion_timestamp.is_none() => active.push(j.clone()),
            None => {}
            Some(how) => {
                if was_active(j) {
                    let name = j.metadata.name.as_deref().unwrap_or_default();
                    let msg = format!("Saw completed job: {name}, status: {how}");
                    ctx.recorder
                        .about(cj.as_ref(), EventType::Normal, "SawCompletedJob", &msg);
                }
                if how == "Complete" {
                    let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                    if done.as_ref().map(|t| t.0) > st.last_successful_time.as_ref().map(|t| t.0) {
                        st.last_successful_time = done;
                    }
                }
            }
        }
    }
    clean_up_history(&ctx, &cj, &jobs).await?;

    let now = Timestamp::now();
    let next = schedule.next_after(now);
    let requeue = |next: Option<Timestamp>| match next {
        Some(t) => Action::requeue(Duration::from_millis(
            t.duration_since(Timestamp::now()).as_millis().max(0) as u64 + 100,
        )),
        None => Action::await_change(),
    };
    // The most recent time the schedule named since the last run (or the creation).
    let since = st
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let mut due = None;
    let mut missed = 0;
    let mut t = since;
    while let Some(n) = schedule.next_after(t).filter(|n| *n <= now) {
        due = Some(n);
        missed += 1;
        t = n;
        if missed > 10_000 {
            // Far behind: only the latest time matters.
            t = now - jiff::SignedDuration::from_secs(3600);
        }
    }
    if missed > TOO_MANY_MISSED {
        ctx.recorder.about(cj.as_ref(), EventType::Warning, "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew");
    }
    let due = match due {
        Some(d) if spec.suspend != Some(true) => d,
        _ => {
            st.active = active_refs(&active);
            write_status(&ctx, &cj, &st).await?;
            return Ok(requeue(next));
        }
    };
    if let Some(deadline) = spec.starting_deadline_seconds {
        if crate::later(due, deadline) < now {
            let msg = format!("Missed scheduled time to start a job: {due}");
            ctx.recorder
                .about(cj.as_ref(), EventType::Warning, "MissSchedule", &msg);
            st.active = active_refs(&active);
            write_status(&ctx, &cj, &st).await?;
            return Ok(requeue(next));
        }
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            ctx.recorder.about(cj.as_ref(), EventType::Normal, "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid");
            st.active = active_refs(&active);
            write_status(&ctx, &cj, &st).await?;
            // Looked at again when that Job ends.
            return Ok(requeue(next));
        }
        Some("Replace") => {
            for j in active.drain(..) {
                delete_job(&ctx, &j).await?;
                let name = j.metadata.name.as_deref().unwrap_or_default();
                ctx.recorder.about(
                    cj.as_ref(),
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted job {name}"),
                );
            }
        }
        _ => {}
    }
    let made = create_job(&ctx, &cj, &schedule, due).await?;
    if !active.iter().any(|j| j.metadata.uid == made.metadata.uid) {
        active.push(Arc::new(made));
    }
    st.active = active_refs(&active);
    st.last_schedule_time = Some(Time(due));
    write_status(&ctx, &cj, &st).await?;
    Ok(requeue(next))
}

fn active_refs(active: &[Arc<Job>]) -> Option<Vec<ObjectReference>> {
    (!active.is_empty()).then(|| active.iter().map(|j| reference(j)).collect())
}

/// Makes the Job for the time `due` (finding it if an earlier attempt made it).
async fn create_job(
    ctx: &Ctx,
    cj: &CronJob,
    schedule: &berth_cron::Schedule,
    due: Timestamp,
) -> Result<Job, Error> {
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let name = format!(
        "{}-{}",
        cj.metadata.name.as_deref().unwrap_or_default(),
        due.as_second() / 60
    );
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let t = template.metadata.unwrap_or_default();
    let mut annotations = t.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_AT.into(),
        due.to_zoned(schedule.time_zone().clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
    );
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: t.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner::reference_to(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &job).await {
        Ok(j) => {
            ctx.recorder.about(
                cj,
                EventType::Normal,
                "SuccessfulCreate",
                &format!("Created job {name}"),
            );
            Ok(j)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get(&name).await?),
        Err(e) => {
            ctx.recorder.about(
                cj,
                EventType::Warning,
                "FailedCreate",
                &format!("Error creating job: {}", crate::api_message(&e)),
            );
            Err(e.into())
        }
    }
}

async fn delete_job(ctx: &Ctx, j: &Job) -> Result<(), Error> {
    let dp = berth_watch::delete_exactly(j.metadata.uid.clone(), None, true);
    let ns = j.metadata.namespace.as_deref().unwrap_or("default");
    match Api::<Job>::namespaced(ctx.client.clone(), ns)
        .delete(j.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the oldest finished Jobs beyond the history limits.
async fn clean_up_history(ctx: &Ctx, cj: &CronJob, jobs: &[Arc<Job>]) -> Result<(), Error> {
    let spec = cj.spec.clone().unwrap_or_default();
    for (how, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j) == Some(how) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        for j in done.into_iter().take(extra) {
            delete_job(ctx, j).await?;
            let name = j.metadata.name.as_deref().unwrap_or_default();
            ctx.recorder.about(
                cj,
                EventType::Normal,
                "SuccessfulDelete",
                &format!("Deleted job {name}"),
            );
        }
    }
    Ok(())
}

async fn write_status(ctx: &Ctx, cj: &CronJob, st: &CronJobStatus) -> Result<(), Error> {
    let old = cj.status.clone().unwrap_or_default();
    if !crate::status_differs(&old, st) {
        return Ok(());
    }
    let ns = cj.metadata.namespace.as_deref().unwrap_or("default");
    let name = cj.metadata.name.as_deref().unwrap_or_default();
    let mut patch = crate::status_patch(st, &["active"]);
    patch["metadata"] = serde_json::json!({"resourceVersion": cj.metadata.resource_version});
    let written = Api::<CronJob>::namespaced(ctx.client.clone(), ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    ctx.written.record(&written.metadata);
    Ok(())
}
