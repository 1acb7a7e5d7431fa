//! Resources: a pod's QoS class and the cgroup settings its requests and limits become,
//! as the kubelet computes them (CPU shares from requests, CFS quota from limits,
//! memory limits, oom_score_adj by class; the pod's own cgroup holds the sums).

use berth_cgroups::naming::QosClass;
use berth_engine::cri::Resources;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::error::Result;

/// The CFS period the kubelet uses (100 ms).
const CPU_PERIOD: u64 = 100_000;

pub use berth_pods::{limit, milli_value, request, value};

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// The pod's QoS class (Kubernetes' rules: Guaranteed when every container has CPU and
/// memory limits equal to its requests, BestEffort when none has any, else Burstable).
pub fn class(pod: &Pod) -> QosClass {
    let mut any = false;
    let mut guaranteed = true;
    for c in all_containers(pod) {
        for r in ["cpu", "memory"] {
            let (req, lim) = (request(c, r), limit(c, r));
            if req.is_some() || lim.is_some() {
                any = true;
            }
            let same = match (&req, &lim) {
                (Some(a), Some(b)) => milli_value(a).ok() == milli_value(b).ok(),
                _ => false,
            };
            if !same {
                guaranteed = false;
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// CPU shares for a request in millicores (the kubelet's: 2 without a request).
fn shares(milli: Option<i128>) -> u64 {
    match milli {
        Some(m) if m > 0 => ((m * 1024 / 1000) as u64).clamp(2, 262_144),
        _ => 2,
    }
}

fn quota(milli: i128) -> i64 {
    ((milli * CPU_PERIOD as i128 / 1000) as i64).max(1000)
}

/// A container's cgroup settings. `node_memory` sizes Burstable containers'
/// oom_score_adj, as the kubelet does.
pub fn container_resources(c: &Container, qos: QosClass, node_memory: u64) -> Result<Resources> {
    let cpu_req = request(c, "cpu").map(|q| milli_value(&q)).transpose()?;
    let cpu_lim = limit(c, "cpu").map(|q| milli_value(&q)).transpose()?;
    let mem_lim = limit(c, "memory").map(|q| value(&q)).transpose()?;
    let mem_req = request(c, "memory").map(|q| value(&q)).transpose()?;
    let oom = match qos {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let req = mem_req.unwrap_or(0).max(0) as u64;
            let adj = 1000 - (1000 * req / node_memory.max(1)) as i64;
            adj.clamp(2, 999)
        }
    };
    Ok(Resources {
        cpu_shares: Some(shares(cpu_req)),
        cpu_period: cpu_lim.map(|_| CPU_PERIOD),
        cpu_quota: cpu_lim.map(quota),
        memory_limit_in_bytes: mem_lim,
        oom_score_adj: Some(oom),
        ..Default::default()
    })
}

/// The pod cgroup's settings: the sum of its app containers' requests as shares, and
/// limits when every container has one (else none).
pub fn pod_resources(pod: &Pod) -> Result<Resources> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Resources::default());
    };
    let mut cpu_req: i128 = 0;
    let mut cpu_lim: Option<i128> = Some(0);
    let mut mem_lim: Option<i64> = Some(0);
    for c in &spec.containers {
        cpu_req += request(c, "cpu")
            .map(|q| milli_value(&q))
            .transpose()?
            .unwrap_or(0);
        let cl = limit(c, "cpu").map(|q| milli_value(&q)).transpose()?;
        cpu_lim = cpu_lim.zip(cl).map(|(a, b)| a + b);
        let ml = limit(c, "memory").map(|q| value(&q)).transpose()?;
        mem_lim = mem_lim.zip(ml).map(|(a, b)| a + b);
    }
    // An init container runs alone: the pod needs at least its largest limit.
    for c in spec.init_containers.iter().flatten() {
        if let (Some(m), Some(l)) = (
            mem_lim.as_mut(),
            limit(c, "memory").map(|q| value(&q)).transpose()?,
        ) {
            *m = (*m).max(l);
        }
        if let (Some(m), Some(l)) = (
            cpu_lim.as_mut(),
            limit(c, "cpu").map(|q| milli_value(&q)).transpose()?,
        ) {
            *m = (*m).max(l);
        }
    }
    Ok(Resources {
        cpu_shares: Some(shares(Some(cpu_req))),
        cpu_period: cpu_lim.map(|_| CPU_PERIOD),
        cpu_quota: cpu_lim.map(quota),
        memory_limit_in_bytes: mem_lim,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_quota_follow_the_kubelet() {
        assert_eq!(shares(Some(500)), 512);
        assert_eq!(shares(None), 2);
        assert_eq!(shares(Some(1)), 2);
        assert_eq!(quota(250), 25_000);
        assert_eq!(quota(1), 1000, "the kernel's minimum quota");
    }
}
