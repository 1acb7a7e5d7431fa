//! Resources: a pod's QoS class and the cgroup settings its requests and limits become,
//! as the kubelet computes them (CPU shares from requests, CFS quota from limits,
//! memory limits, oom_score_adj by class; the pod's own cgroup holds the sums).

use berth_cgroups::naming::QosClass;
use berth_engine::cri::Resources;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::error::{Error, Result};

/// The CFS period the kubelet uses (100 ms).
const CPU_PERIOD: u64 = 100_000;

/// A quantity's value in thousandths (`500m` → 500, `1` → 1000, `64Mi` → 64·2²⁰·1000).
///
/// Written here because k8s-openapi keeps quantities as strings and no maintained
/// crate parses them for this k8s-openapi version; the grammar is small (a decimal
/// number with an optional binary or decimal SI suffix or exponent).
pub fn milli_value(q: &Quantity) -> Result<i128> {
    let s = q.0.trim();
    let bad = || {
        Error::Spec(format!(
            "quantity {s:?} is not a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, m, k, M, G, T, P, E)"
        ))
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let (negative, int) = match int.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, int.strip_prefix('+').unwrap_or(int)),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let digits: String = format!("{int}{frac}");
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad())?
    };
    // value = mantissa · 10^-frac.len() · multiplier; return value·1000.
    let (num_mul, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        e if e.starts_with(['e', 'E']) => (1, e[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let exp = exp10 + 3 - frac.len() as i32;
    let mut v = mantissa * num_mul;
    if exp >= 0 {
        v *= 10i128.pow(exp as u32);
    } else {
        // Round up, as Kubernetes does for fractions of the smallest unit.
        let d = 10i128.pow((-exp) as u32);
        v = (v + d - 1) / d;
    }
    Ok(if negative { -v } else { v })
}

/// A quantity in whole units, rounded up (`64Mi` → 67108864, `500m` → 1).
pub fn value(q: &Quantity) -> Result<i64> {
    let m = milli_value(q)?;
    Ok(((m + 999) / 1000) as i64)
}

fn get<'a>(
    r: Option<&'a ResourceRequirements>,
    which: fn(&ResourceRequirements) -> Option<&std::collections::BTreeMap<String, Quantity>>,
    name: &str,
) -> Option<&'a Quantity> {
    r.and_then(|r| which(r)).and_then(|m| m.get(name))
}

fn requests(r: &ResourceRequirements) -> Option<&std::collections::BTreeMap<String, Quantity>> {
    r.requests.as_ref()
}

fn limits(r: &ResourceRequirements) -> Option<&std::collections::BTreeMap<String, Quantity>> {
    r.limits.as_ref()
}

/// A container's request for `name`, which defaults to its limit.
pub fn request(c: &Container, name: &str) -> Option<Quantity> {
    get(c.resources.as_ref(), requests, name)
        .or_else(|| get(c.resources.as_ref(), limits, name))
        .cloned()
}

/// A container's limit for `name`.
pub fn limit(c: &Container, name: &str) -> Option<Quantity> {
    get(c.resources.as_ref(), limits, name).cloned()
}

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

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn quantities_parse_as_kubernetes_reads_them() {
        assert_eq!(milli_value(&q("500m")).unwrap(), 500);
        assert_eq!(milli_value(&q("1")).unwrap(), 1000);
        assert_eq!(milli_value(&q("0.5")).unwrap(), 500);
        assert_eq!(milli_value(&q("2.5")).unwrap(), 2500);
        assert_eq!(value(&q("64Mi")).unwrap(), 64 << 20);
        assert_eq!(value(&q("1G")).unwrap(), 1_000_000_000);
        assert_eq!(value(&q("1e3")).unwrap(), 1000);
        assert_eq!(value(&q("1.5Gi")).unwrap(), 3 << 29);
        assert_eq!(value(&q("128974848")).unwrap(), 128_974_848);
        assert_eq!(value(&q("100m")).unwrap(), 1, "fractions round up");
        for bad in ["", "abc", "1Qi", "--1", "1e"] {
            assert!(milli_value(&q(bad)).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn shares_and_quota_follow_the_kubelet() {
        assert_eq!(shares(Some(500)), 512);
        assert_eq!(shares(None), 2);
        assert_eq!(shares(Some(1)), 2);
        assert_eq!(quota(250), 25_000);
        assert_eq!(quota(1), 1000, "the kernel's minimum quota");
    }
}
