//! Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does
//! it for kube-scheduler and kube-controller-manager: a candidate takes the Lease
//! when its holder has not renewed it for the lease duration (15 s, timed by this
//! candidate's own clock since it last saw the record change, so clocks need not
//! agree), renews it every retry period (2 s), and stops acting at once when it could
//! not renew within the renew deadline (10 s) — before anyone else may take it. On a
//! clean stop it gives the Lease up, so a successor need not wait.
//!
//! Written here because kube-rs has no leader election, and the crates that add one
//! are built for older kube versions.

use std::future::Future;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct Election {
    /// The Lease's namespace (kube-system for the scheduler and controllers).
    pub namespace: String,
    /// The Lease's name ("kube-scheduler", "kube-controller-manager").
    pub name: String,
    /// Who this candidate is (host name and a random suffix, as kube's).
    pub identity: String,
    /// How long a Lease not renewed stays its holder's.
    pub lease_duration: Duration,
    /// How long a leader may fail to renew before it stops acting.
    pub renew_deadline: Duration,
    /// How often a candidate tries to take or renew the Lease.
    pub retry_period: Duration,
}

impl Election {
    /// kube's defaults (15 s, 10 s, 2 s) for the Lease `kube-system/NAME`.
    pub fn new(name: &str) -> Election {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .to_lowercase();
        Election {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: format!("{host}_{}", uuid::Uuid::new_v4()),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate last saw of the Lease: its record and when it changed.
struct Observed {
    holder: String,
    renewed: Option<Timestamp>,
    at: Instant,
}

/// Runs `work` whenever this candidate leads, until `stop` completes: `work()` is
/// started on taking the Lease and dropped the moment leadership is lost (then the
/// candidate tries again). On `stop` (or if `work` ends) the Lease is given up.
pub async fn run<F, Fut>(client: kube::Client, e: Election, work: F, stop: impl Future<Output = ()>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    tokio::select! {
        () = lead(&api, &e, work) => {}
        () = stop => {}
    }
    release(&api, &e).await;
}

async fn lead<F, Fut>(api: &Api<Lease>, e: &Election, work: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut seen: Option<Observed> = None;
    loop {
        // Candidate: until the Lease is ours. An attempt that hangs is given up after
        // the retry period.
        loop {
            let attempt =
                tokio::time::timeout(e.retry_period, try_acquire_or_renew(api, e, &mut seen));
            match attempt.await {
                Ok(Ok(true)) => break,
                Ok(Ok(false)) => {}
                Ok(Err(err)) => {
                    tracing::debug!(lease = %e.name, error = %err, "could not take the lease")
                }
                Err(_) => tracing::debug!(lease = %e.name, "taking the lease timed out"),
            }
            tokio::time::sleep(e.retry_period).await;
        }
        tracing::info!(lease = %e.name, identity = %e.identity, "became leader");
        // Leading: renewals every retry period, none allowed to run past the renew
        // deadline (a hung request must not keep a leader acting after its Lease
        // could have passed to another).
        let lost = async {
            let mut last_renew = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(e.retry_period).await;
                let deadline = last_renew + e.renew_deadline;
                match tokio::time::timeout_at(deadline, try_acquire_or_renew(api, e, &mut seen))
                    .await
                {
                    Ok(Ok(true)) => last_renew = tokio::time::Instant::now(),
                    Ok(Ok(false)) => return "another holder took the lease",
                    Ok(Err(err)) => {
                        tracing::debug!(lease = %e.name, error = %err, "renewing the lease failed")
                    }
                    Err(_) => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    return "the lease could not be renewed within the renew deadline";
                }
            }
        };
        tokio::select! {
            why = lost => tracing::warn!(lease = %e.name, identity = %e.identity, "stopped leading: {why}"),
            () = work() => return,
        }
    }
}

/// One attempt: true if the Lease is (now) ours.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    e: &Election,
    seen: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let ours = |prev: Option<&LeaseSpec>| {
        let transitions = prev.and_then(|s| s.lease_transitions).unwrap_or(0);
        let was_ours = prev.and_then(|s| s.holder_identity.as_deref()) == Some(e.identity.as_str());
        LeaseSpec {
            holder_identity: Some(e.identity.clone()),
            lease_duration_seconds: Some(e.lease_duration.as_secs() as i32),
            acquire_time: if was_ours {
                prev.and_then(|s| s.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if was_ours || prev.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..Default::default()
        }
    };
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        let l = Lease {
            metadata: ObjectMeta {
                name: Some(e.name.clone()),
                namespace: Some(e.namespace.clone()),
                ..Default::default()
            },
            spec: Some(ours(None)),
        };
        return match api.create(&PostParams::default(), &l).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renewed = spec.renew_time.as_ref().map(|t| t.0);
    // The record's age by our clock: since we first saw it as it is now.
    let changed = seen
        .as_ref()
        .is_none_or(|s| s.holder != holder || s.renewed != renewed);
    if changed {
        *seen = Some(Observed {
            holder: holder.clone(),
            renewed,
            at: Instant::now(),
        });
    }
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
    let held_by_other = !holder.is_empty()
        && holder != e.identity
        && seen.as_ref().is_some_and(|s| s.at.elapsed() < duration);
    if held_by_other {
        return Ok(false);
    }
    lease.spec = Some(ours(Some(&spec)));
    // Replace with the resourceVersion read: of two candidates, one wins.
    match api.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(l) => {
            let s = l.spec.unwrap_or_default();
            *seen = Some(Observed {
                holder: s.holder_identity.unwrap_or_default(),
                renewed: s.renew_time.map(|t| t.0),
                at: Instant::now(),
            });
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Gives the Lease up (holder cleared, one-second duration), so a successor need not
/// wait out the lease duration.
async fn release(api: &Api<Lease>, e: &Election) {
    let Ok(Some(mut lease)) = api.get_opt(&e.name).await else {
        return;
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    lease.spec = Some(spec);
    let _ = api.replace(&e.name, &PostParams::default(), &lease).await;
}
