//! A Job's conditions as kube writes them: SuccessCriteriaMet then Complete,
//! FailureTarget then Failed (the terminal ones only once no pod runs), Suspended.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The condition of a type, if present.
pub fn condition<'a>(s: &'a JobStatus, kind: &str) -> Option<&'a JobCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

/// Sets a condition (its times change only when its status does).
pub fn set(s: &mut JobStatus, kind: &str, status: &str, reason: &str, message: &str) {
    let now = Some(Time(Timestamp::now()));
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == kind) {
        if c.status != status {
            c.last_transition_time = now.clone();
            c.last_probe_time = now;
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        return;
    }
    conds.push(JobCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: now.clone(),
        last_transition_time: now,
    });
}

/// When the Job finished (Complete or Failed), if it has.
pub fn finished(s: &JobStatus) -> Option<Timestamp> {
    s.conditions.iter().flatten().find_map(|c| {
        (matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True").then(|| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .or(s.completion_time.as_ref().map(|t| t.0))
                .unwrap_or_else(Timestamp::now)
        })
    })
}
