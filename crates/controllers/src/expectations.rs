//! What a controller has asked for and not yet seen in its watch (kube's
//! ControllerExpectations): a ReplicaSet that created three pods must not count its
//! pods again until the watch has shown it those three, or it would create more.
//! Creations are counted (the watch may show a pod before its create call returns,
//! and generated names are known only then); deletions are tracked by UID.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an expectation is trusted: one never met (a watch event lost) stops
/// blocking its owner after this, as kube's ExpectationsTimeout.
const TRUSTED_FOR: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    creates: usize,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Pending creations and deletions per owner UID.
#[derive(Default)]
pub struct Expectations {
    owners: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> T) -> T {
        f(&mut self.owners.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records `n` creations about to be made for `owner`.
    pub fn expect_creates(&self, owner: &str, n: usize) {
        self.with(|m| {
            let p = m.entry(owner.to_string()).or_default();
            p.creates += n;
            p.since = Some(Instant::now());
        });
    }

    /// Records a deletion about to be made.
    pub fn expect_delete(&self, owner: &str, uid: &str) {
        self.with(|m| {
            let p = m.entry(owner.to_string()).or_default();
            p.deletes.insert(uid.to_string());
            p.since = Some(Instant::now());
        });
    }

    /// One creation seen in the watch, or one that failed and will not be.
    pub fn created(&self, owner: &str) {
        self.with(|m| {
            if let Some(p) = m.get_mut(owner) {
                p.creates = p.creates.saturating_sub(1);
            }
        });
    }

    /// A deletion seen (the object is being deleted or gone), or one that failed.
    pub fn deleted(&self, owner: &str, uid: &str) {
        self.with(|m| {
            if let Some(p) = m.get_mut(owner) {
                p.deletes.remove(uid);
            }
        });
    }

    /// Whether everything asked for `owner` has been seen (or was asked too long ago).
    pub fn satisfied(&self, owner: &str) -> bool {
        self.with(|m| match m.get(owner) {
            None => true,
            Some(p) if p.creates == 0 && p.deletes.is_empty() => {
                m.remove(owner);
                true
            }
            Some(p) => p.since.is_some_and(|t| t.elapsed() > TRUSTED_FOR),
        })
    }

    /// Forgets an owner that is gone.
    pub fn forget(&self, owner: &str) {
        self.with(|m| {
            m.remove(owner);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_every_creation_and_deletion_is_seen() {
        let e = Expectations::default();
        assert!(e.satisfied("rs"));
        e.expect_creates("rs", 2);
        e.expect_delete("rs", "p1");
        assert!(!e.satisfied("rs"));
        e.created("rs");
        e.created("rs");
        assert!(!e.satisfied("rs"));
        e.deleted("rs", "other");
        assert!(!e.satisfied("rs"));
        e.deleted("rs", "p1");
        assert!(e.satisfied("rs"));
        // A creation seen before it was expected does not go negative.
        e.created("rs");
        e.expect_creates("rs", 1);
        assert!(!e.satisfied("rs"));
    }
}
