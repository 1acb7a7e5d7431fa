//! CRI's protobuf messages to the engine's typed shapes and back. Where CRI's wire
//! form says "unset" with a zero (a 0 CPU quota, an empty string), the engine's
//! shapes say it with `None`: this module is the one place that knows both.

pub mod container;
pub mod image;
pub mod sandbox;

use std::collections::{BTreeMap, HashMap};

/// CRI's label and annotation maps as the engine keeps them.
pub(crate) fn btree(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

/// The engine's label and annotation maps as CRI sends them.
pub(crate) fn hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Whether `labels` holds every pair of `selector` (CRI's label_selector: equality of
/// all pairs).
pub(crate) fn selected(
    labels: &BTreeMap<String, String>,
    selector: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A CRI number that must fit a narrower type, or a clear InvalidArgument.
pub(crate) fn fit<T: TryFrom<i64>>(field: &str, v: i64) -> Result<T, tonic::Status> {
    T::try_from(v)
        .map_err(|_| tonic::Status::invalid_argument(format!("{field} {v} is out of range")))
}

/// Nanoseconds since the epoch, now.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
