//! What the Deployment controller computes from specs and ReplicaSets, without
//! talking to the API server: the pod-template-hash, template equality, revisions,
//! the surge and unavailability a rolling update allows.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label that tells a ReplicaSet's pods from its siblings'.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and the Deployment's current one).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had before a rollback made it current again.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus surge then.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations of the Deployment not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// The hash naming a template's ReplicaSet: FNV-32a of the template (and the
/// collision count, when there was a collision), its decimal digits spelled in kube's
/// alphabet without vowels, so names never spell words.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(t).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// Whether two templates are the same but for the pod-template-hash label, as kube's
/// semantic equality sees them: a field that is false, empty or null equals one that
/// is absent (Go's zero values; a rollback's template comes back with them spelled
/// out).
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    fn zeroless(v: serde_json::Value) -> Option<serde_json::Value> {
        use serde_json::Value;
        match v {
            Value::Null | Value::Bool(false) => None,
            Value::String(s) if s.is_empty() => None,
            Value::Array(a) if a.is_empty() => None,
            Value::Array(a) => Some(Value::Array(
                a.into_iter()
                    .map(|x| zeroless(x).unwrap_or(Value::Null))
                    .collect(),
            )),
            Value::Object(o) => {
                let o: serde_json::Map<String, Value> = o
                    .into_iter()
                    .filter_map(|(k, v)| zeroless(v).map(|v| (k, v)))
                    .collect();
                (!o.is_empty()).then_some(Value::Object(o))
            }
            v => Some(v),
        }
    }
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.remove(HASH_LABEL);
        }
        zeroless(serde_json::to_value(t).unwrap_or_default())
    };
    strip(a) == strip(b)
}

/// A ReplicaSet's revision (0 without one).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `spec.replicas` of a ReplicaSet.
pub fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// `status.availableReplicas` of a ReplicaSet.
pub fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// `spec.replicas` of a Deployment (1 unset, as defaulted).
pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Whether the Deployment updates by rolling (the default) rather than recreating.
pub fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        != Some("Recreate")
}

/// An int or a percentage of `total`, rounded up or down (kube's
/// GetScaledValueFromIntOrPercent). A malformed percentage counts as 0.
pub fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let n = p * i64::from(total);
            (if round_up { (n + 99) / 100 } else { n / 100 }) as i32
        }
    }
}

/// The surge and unavailability a rolling update of `d` allows (never both 0: then
/// one pod may be unavailable, as kube resolves the fenceposts).
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let want = desired(d);
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), want, true);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), want, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// How many pods may be unavailable for the Deployment to count as Available.
pub fn max_unavailable(d: &Deployment) -> i32 {
    let want = desired(d);
    if !is_rolling(d) || want == 0 {
        return 0;
    }
    fenceposts(d).1.min(want)
}

/// The surge allowed (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) {
        fenceposts(d).0
    } else {
        0
    }
}

/// The Deployment's annotations a ReplicaSet carries (change-cause and the like).
pub fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// ReplicaSets oldest first (by creation, then name), the order old ones scale down.
pub fn oldest_first(rss: &mut [Arc<ReplicaSet>]) {
    rss.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(json: serde_json::Value) -> Deployment {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        let d = deployment(serde_json::json!({"metadata": {}, "spec": {"replicas": 10,
            "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}}));
        assert_eq!(fenceposts(&d), (3, 2));
        let d = deployment(serde_json::json!({"metadata": {}, "spec": {"replicas": 3,
            "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}}}}));
        assert_eq!(fenceposts(&d), (0, 1));
        assert_eq!(max_unavailable(&d), 1);
        assert_eq!(scaled(Some(&IntOrString::String("x%".into())), 10, true), 0);
    }

    #[test]
    fn the_hash_ignores_nothing_but_follows_the_collision_count() {
        let t: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "a"}]}}))
        .unwrap();
        let h = template_hash(&t, None);
        assert!(h
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        assert_eq!(h, template_hash(&t.clone(), None));
        assert_ne!(h, template_hash(&t, Some(1)));
        let mut t2 = t.clone();
        t2.spec.as_mut().unwrap().containers[0].image = Some("b".into());
        assert_ne!(h, template_hash(&t2, None));
        let mut t3 = t.clone();
        t3.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), h.clone());
        assert!(equal_ignoring_hash(&t, &t3));
        assert!(!equal_ignoring_hash(&t, &t2));
        let mut t4 = t.clone();
        t4.spec.as_mut().unwrap().host_network = Some(false);
        t4.spec.as_mut().unwrap().containers[0].stdin = Some(false);
        assert!(equal_ignoring_hash(&t, &t4));
    }
}
