//! How berth's components work against the API server. One place for the back-off
//! between attempts to watch again, so the node agent, the scheduler, the
//! controllers and simulated nodes all come back quickly when the server restarts;
//! and for leader election ([`leader`]), so one scheduler and one controller manager
//! act among several servers.

pub mod leader;

use kube::api::{DeleteParams, Preconditions, PropagationPolicy};

use std::time::Duration;

use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::ExponentialBackoff;

/// The back-off between attempts to watch again after the API server went away (or
/// answered 410 Gone, as every server does to a watch from before its restart): 0.2 s
/// doubling to 5 s (with jitter), reset after two minutes without failures. kube's
/// default (client-go's reflector: 0.8 s to 30 s, with jitter up to twice that) suits
/// a controller sparing a struggling server; but after a few restarts it left the
/// simulated nodes (and before that, a node) blind for 40 s and more.
pub fn backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let b = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(ExponentialBackoff::from(b), Duration::from_secs(120))
}

/// A cluster-wide watch of every `K`, kept in `writer`'s store, watched again after
/// failures with [`backoff`]. Each item is one event: true when it ends a full list
/// (the store then holds everything), false otherwise (including a failed attempt).
pub fn reflect_all<K>(
    client: kube::Client,
    writer: kube::runtime::reflector::store::Writer<K>,
) -> impl futures_util::Stream<Item = bool> + Send
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use futures_util::StreamExt;
    use kube::runtime::WatchStreamExt;
    kube::runtime::reflector(
        writer,
        kube::runtime::watcher(
            kube::Api::<K>::all(client),
            kube::runtime::watcher::Config::default(),
        ),
    )
    .backoff(backoff())
    .map(|e| matches!(e, Ok(kube::runtime::watcher::Event::InitDone)))
}

/// Delete options for exactly the object with this UID (a newer object of the same
/// name is left alone): `grace` seconds (None: the object's own), dependents
/// collected in the background when `background`.
pub fn delete_exactly(uid: Option<String>, grace: Option<u32>, background: bool) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: grace,
        propagation_policy: background.then_some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    }
}
