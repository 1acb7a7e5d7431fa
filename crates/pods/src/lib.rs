//! What Kubernetes defines about a Pod that the node agent (admitting and running it)
//! and the scheduler (placing it) must compute alike: resource quantities, container
//! and pod requests, the host ports a pod takes, sidecars; and what controllers read
//! of pods: label selectors, readiness; and the identities the controllers act as,
//! which the API server's default roles name. One place, so that a pod the
//! scheduler places is one the node admits.

pub mod disruption;
pub mod identities;
pub mod labels;
pub mod readiness;
pub mod services;
pub mod storage;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity that is not one (the message says what was wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuantityError(pub String);

/// A quantity's value in thousandths (`500m` → 500, `1` → 1000, `64Mi` → 64·2²⁰·1000).
///
/// Written here because k8s-openapi keeps quantities as strings and no maintained
/// crate parses them for this k8s-openapi version; the grammar is small (a decimal
/// number with an optional binary or decimal SI suffix or exponent).
pub fn milli_value(q: &Quantity) -> Result<i128, QuantityError> {
    let s = q.0.trim();
    let bad = || {
        QuantityError(format!(
            "quantity {s:?} is not a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E)"
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
        "n" => (1, -9),
        "u" => (1, -6),
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
pub fn value(q: &Quantity) -> Result<i64, QuantityError> {
    let m = milli_value(q)?;
    Ok(((m + 999) / 1000) as i64)
}

fn get<'a>(
    r: Option<&'a ResourceRequirements>,
    which: fn(&ResourceRequirements) -> Option<&std::collections::BTreeMap<String, Quantity>>,
    name: &str,
) -> Option<&'a Quantity> {
    r.and_then(which).and_then(|m| m.get(name))
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

/// Whether an init container is a sidecar (restartPolicy Always: it starts in order
/// and runs beside the app containers).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// How a resource is counted: CPU in millicores, the others in whole units.
fn request_of(c: &Container, name: &str) -> i128 {
    request(c, name)
        .and_then(|q| {
            if name == "cpu" {
                milli_value(&q).ok()
            } else {
                value(&q).ok().map(i128::from)
            }
        })
        .unwrap_or(0)
}

/// A pod's effective request for resource `name` (CPU in millicores, anything else in
/// whole units): its app containers and sidecars together, or its largest init
/// container, whichever is more (init containers run one at a time); plus its
/// overhead.
pub fn pod_request(pod: &Pod, name: &str) -> i128 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let inits = spec.init_containers.iter().flatten();
    let sidecars: i128 = inits
        .clone()
        .filter(|c| is_sidecar(c))
        .map(|c| request_of(c, name))
        .sum();
    let apps: i128 = spec.containers.iter().map(|c| request_of(c, name)).sum();
    let largest_init = inits
        .filter(|c| !is_sidecar(c))
        .map(|c| request_of(c, name))
        .max()
        .unwrap_or(0);
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get(name))
        .and_then(|q| {
            if name == "cpu" {
                milli_value(q).ok()
            } else {
                value(q).ok().map(i128::from)
            }
        })
        .unwrap_or(0);
    (apps + sidecars).max(largest_init) + overhead
}

/// A port a pod takes on its node's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The address (0.0.0.0 for all).
    pub ip: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two pods asking for these could not both have them.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let any = |ip: &str| ip == "0.0.0.0" || ip == "::";
        self.protocol == other.protocol
            && self.port == other.port
            && (any(&self.ip) || any(&other.ip) || self.ip == other.ip)
    }
}

/// Each port the pod takes on its node (containers' hostPort).
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some(HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ip: p
                    .host_ip
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                port,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    fn pod(json: &str) -> Pod {
        serde_json::from_str(json).unwrap()
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
        // Usage as metrics write it: nano- and microcores.
        assert_eq!(milli_value(&q("250000000n")).unwrap(), 250);
        assert_eq!(milli_value(&q("1500u")).unwrap(), 2, "fractions round up");
        for bad in ["", "abc", "1Qi", "--1", "1e"] {
            assert!(milli_value(&q(bad)).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_pods_request_counts_sidecars_the_largest_init_and_overhead() {
        let p = pod(r#"{"spec": {
                "overhead": {"cpu": "10m"},
                "initContainers": [
                    {"name": "big", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
                    {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}
                ],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "250m"}}}
                ]}}"#);
        assert_eq!(pod_request(&p, "cpu"), 2000 + 10);
        assert_eq!(pod_request(&p, "memory"), 1 << 30);
        assert_eq!(pod_request(&p, "nvidia.com/gpu"), 0);
        let small = pod(
            r#"{"spec": {"initContainers": [{"name": "i", "resources": {"requests": {"cpu": "100m"}}}],
                         "containers": [{"name": "a", "resources": {"requests": {"cpu": "300m"}}}]}}"#,
        );
        assert_eq!(pod_request(&small, "cpu"), 300);
    }

    #[test]
    fn host_ports_conflict_by_protocol_port_and_address() {
        let hp = |port: i32, ip: &str, protocol: &str| HostPort {
            protocol: protocol.into(),
            ip: ip.into(),
            port,
        };
        let any = hp(8080, "0.0.0.0", "TCP");
        assert!(any.conflicts(&hp(8080, "127.0.0.1", "TCP")));
        assert!(!any.conflicts(&hp(8080, "0.0.0.0", "UDP")));
        assert!(!any.conflicts(&hp(8081, "0.0.0.0", "TCP")));
        assert!(!hp(9090, "127.0.0.1", "TCP").conflicts(&hp(9090, "127.0.0.2", "TCP")));
        let p = pod(
            r#"{"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]}]}}"#,
        );
        assert_eq!(host_ports(&p), vec![any]);
    }
}
