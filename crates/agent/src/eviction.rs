//! Eviction, as the kubelet's eviction manager does it: every 10 s the node's free
//! memory and disk are compared with the hard thresholds (`--eviction-hard`, the
//! kubelet's flag; the defaults are the kubelet's for memory and inodes,
//! memory.available<100Mi and nodefs.inodesFree<5%, and k3s's for disk,
//! nodefs.available<5% and imagefs.available<5%, since a small node's disk is often
//! more than 90% full); under pressure one pod at a time is
//! evicted — those using more than they requested first, then the lowest priority,
//! then the largest use above the request; static pods and system-critical ones are
//! never evicted. Independently of pressure, a pod whose
//! emptyDir outgrows its sizeLimit, or whose container outgrows its
//! ephemeral-storage limit, is evicted. The pod's worker does the eviction (see
//! [`crate::worker`]): its containers are stopped and it ends Failed, reason Evicted,
//! with a DisruptionTarget condition and an Evicted event.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use crate::{hostinfo, labels::PodKey, qos, Ctx};

/// Priorities from here up (system-cluster-critical, system-node-critical) are never
/// evicted.
const SYSTEM_CRITICAL: i32 = 2_000_000_000;
/// How often the thresholds are checked (the kubelet's housekeeping interval).
const INTERVAL: Duration = Duration::from_secs(10);

/// A threshold: an amount, or a share of the capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    /// Bytes (or inodes).
    Absolute(u64),
    /// Percent of the capacity.
    Percent(f64),
}

impl Amount {
    /// The threshold for a capacity.
    pub fn of(self, capacity: u64) -> u64 {
        match self {
            Amount::Absolute(n) => n,
            Amount::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }

    fn show(self) -> String {
        match self {
            Amount::Absolute(n) if n % (1 << 20) == 0 => format!("{}Mi", n >> 20),
            Amount::Absolute(n) => n.to_string(),
            Amount::Percent(p) => format!("{p}%"),
        }
    }
}

/// The hard eviction thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// memory.available.
    pub memory_available: Option<Amount>,
    /// nodefs.available: the filesystem of pods' volumes and logs.
    pub nodefs_available: Option<Amount>,
    /// imagefs.available: the filesystem of images and writable layers.
    pub imagefs_available: Option<Amount>,
    /// nodefs.inodesFree.
    pub nodefs_inodes_free: Option<Amount>,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            memory_available: Some(Amount::Absolute(100 << 20)),
            nodefs_available: Some(Amount::Percent(5.0)),
            imagefs_available: Some(Amount::Percent(5.0)),
            nodefs_inodes_free: Some(Amount::Percent(5.0)),
        }
    }
}

impl FromStr for Thresholds {
    type Err = String;

    /// `memory.available<500Mi,nodefs.available<10%` (signals not named get no
    /// threshold, as with the kubelet's flag).
    fn from_str(s: &str) -> Result<Thresholds, String> {
        let mut t = Thresholds {
            memory_available: None,
            nodefs_available: None,
            imagefs_available: None,
            nodefs_inodes_free: None,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (signal, value) = part.split_once('<').ok_or_else(|| {
                format!("{part:?}: a threshold is SIGNAL<QUANTITY or SIGNAL<PERCENT% (memory.available<100Mi)")
            })?;
            let amount = if let Some(p) = value.strip_suffix('%') {
                let p: f64 = p
                    .parse()
                    .map_err(|_| format!("{part:?}: {value:?} is not a percentage"))?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!("{part:?}: a percentage from 0 to 100"));
                }
                Amount::Percent(p)
            } else {
                let n = qos::value(&Quantity(value.to_string()))
                    .map_err(|e| format!("{part:?}: {e}"))?;
                Amount::Absolute(u64::try_from(n).map_err(|_| format!("{part:?}: negative"))?)
            };
            let slot = match signal.trim() {
                "memory.available" => &mut t.memory_available,
                "nodefs.available" => &mut t.nodefs_available,
                "imagefs.available" => &mut t.imagefs_available,
                "nodefs.inodesFree" => &mut t.nodefs_inodes_free,
                other => {
                    return Err(format!(
                        "{other:?}: not an eviction signal (memory.available, nodefs.available, imagefs.available, nodefs.inodesFree)"
                    ))
                }
            };
            *slot = Some(amount);
        }
        Ok(t)
    }
}

impl Thresholds {
    /// The memory kept back from pods (allocatable is the capacity less this).
    pub fn reserved_memory(&self, capacity: u64) -> u64 {
        self.memory_available.map_or(0, |a| a.of(capacity))
    }

    /// The disk kept back from pods.
    pub fn reserved_disk(&self, capacity: u64) -> u64 {
        self.nodefs_available.map_or(0, |a| a.of(capacity))
    }
}

/// The node's memory: (capacity, available as the kubelet counts it — the capacity
/// less the working set, where page cache not recently used counts as free).
pub fn memory() -> (u64, u64) {
    let total = hostinfo::meminfo("MemTotal").unwrap_or(0);
    let used = total.saturating_sub(hostinfo::meminfo("MemFree").unwrap_or(0));
    let ws = used.saturating_sub(hostinfo::meminfo("Inactive(file)").unwrap_or(0));
    (total, total.saturating_sub(ws))
}

/// What the node is short of, if anything: (resource, threshold, available) for
/// memory and each filesystem.
pub(crate) fn pressure(ctx: &Ctx) -> Vec<(&'static str, Amount, u64)> {
    let t = &ctx.cfg.eviction_hard;
    let mut out = Vec::new();
    let (mem, mem_avail) = memory();
    if let Some(a) = t.memory_available {
        if mem_avail < a.of(mem) {
            out.push(("memory", a, mem_avail));
        }
    }
    // imagefs counts only where images live on a filesystem of their own (as the
    // kubelet has it); else nodefs speaks for both.
    let dedicated_imagefs = {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        dev(&ctx.cfg.engine_root) != dev(&ctx.cfg.pods_dir)
    };
    let imagefs = t.imagefs_available.filter(|_| dedicated_imagefs);
    for (name, amount, path) in [
        ("ephemeral-storage", t.nodefs_available, &ctx.cfg.pods_dir),
        ("ephemeral-storage", imagefs, &ctx.cfg.engine_root),
    ] {
        if let (Some(a), Some((cap, free))) = (amount, hostinfo::disk(path)) {
            if free < a.of(cap) {
                out.push((name, a, free));
            }
        }
    }
    if let (Some(a), Some((n, free))) = (t.nodefs_inodes_free, hostinfo::inodes(&ctx.cfg.pods_dir))
    {
        if n > 0 && free < a.of(n) {
            out.push(("inodes", a, free));
        }
    }
    out
}

/// Whether the node is short of memory (its MemoryPressure condition).
pub(crate) fn memory_pressure(ctx: &Ctx) -> bool {
    pressure(ctx).iter().any(|(r, _, _)| *r == "memory")
}

/// Whether the node is short of disk or inodes (its DiskPressure condition).
pub(crate) fn disk_pressure(ctx: &Ctx) -> bool {
    pressure(ctx).iter().any(|(r, _, _)| *r != "memory")
}

/// Checks the thresholds until the task is aborted.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        if let Err(e) = check(&ctx).await {
            tracing::warn!(error = %e, "eviction check failed");
        }
    }
}

/// One pod's use as the summary and its files show it.
struct Use<'a> {
    pod: &'a Pod,
    key: PodKey,
    memory: u64,
    storage: u64,
}

fn bytes_of(q: &Quantity) -> u64 {
    qos::value(q)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0)
}

/// What a container has written: its writable layer (from the summary) and its logs.
fn container_storage(ctx: &Ctx, key: &PodKey, summary_pod: Option<&Value>, name: &str) -> u64 {
    let rootfs = summary_pod
        .and_then(|p| p["containers"].as_array())
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .and_then(|c| c.pointer("/rootfs/usedBytes"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    rootfs + berth_image::gc::dir_size(&key.log_dir(&ctx.cfg.log_dir).join(name))
}

/// Why a pod must go for what it stored, whatever the node's state.
fn storage_violation(
    ctx: &Ctx,
    pod: &Pod,
    key: &PodKey,
    summary_pod: Option<&Value>,
) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let pod_dir = key.pod_dir(&ctx.cfg.pods_dir);
    for v in spec.volumes.iter().flatten() {
        let Some(e) = &v.empty_dir else { continue };
        let Some(limit) = e.size_limit.as_ref() else {
            continue;
        };
        if e.medium.as_deref() == Some("Memory") {
            continue; // a tmpfs of that size: it cannot grow past it
        }
        let used = berth_image::gc::dir_size(&pod_dir.join("volumes/empty-dir").join(&v.name));
        if used > bytes_of(limit) {
            return Some(format!(
                "Usage of EmptyDir volume \"{}\" exceeds the limit \"{}\". ",
                v.name, limit.0
            ));
        }
    }
    let mut total_limit = 0u64;
    let mut total_used = 0u64;
    let mut all_limited = true;
    for c in &spec.containers {
        let used = container_storage(ctx, key, summary_pod, &c.name);
        total_used += used;
        match qos::limit(c, "ephemeral-storage") {
            Some(l) => {
                total_limit += bytes_of(&l);
                if used > bytes_of(&l) {
                    return Some(format!(
                        "Container {} exceeded its local ephemeral storage limit \"{}\". ",
                        c.name, l.0
                    ));
                }
            }
            None => all_limited = false,
        }
    }
    if all_limited && total_limit > 0 && total_used > total_limit {
        return Some(format!(
            "Pod ephemeral local storage usage exceeds the total limit of containers {total_limit}. "
        ));
    }
    None
}

async fn check(ctx: &Arc<Ctx>) -> crate::Result<()> {
    let pods = ctx.hub.active_pods();
    if pods.is_empty() {
        return Ok(());
    }
    let (before, now) = ctx.stats.pair(ctx).await?;
    let summary = crate::stats::summary(ctx, &before, &now);
    let by_uid: BTreeMap<&str, &Value> = summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p.pointer("/podRef/uid")?.as_str()?, p)))
        .collect();
    let mut uses = Vec::new();
    for pod in &pods {
        // Critical pods stay, as with the kubelet: static pods and the system
        // priority classes.
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        if crate::static_pods::is_static(pod) || priority >= SYSTEM_CRITICAL {
            continue;
        }
        let key = PodKey::of(pod);
        let sp = by_uid.get(key.uid.as_str()).copied();
        if let Some(why) = storage_violation(ctx, pod, &key, sp) {
            ctx.hub.evict(&key.uid, why);
            continue;
        }
        let storage = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| container_storage(ctx, &key, sp, &c.name))
            .sum::<u64>()
            + berth_image::gc::dir_size(&key.pod_dir(&ctx.cfg.pods_dir).join("volumes/empty-dir"));
        uses.push(Use {
            pod,
            memory: sp
                .and_then(|p| p.pointer("/memory/workingSetBytes")?.as_u64())
                .unwrap_or(0),
            storage,
            key,
        });
    }
    // One at a time: the next waits until the last evicted pod has ended.
    if ctx.hub.evicting() {
        return Ok(());
    }
    let Some((resource, threshold, available)) = pressure(ctx).into_iter().next() else {
        return Ok(());
    };
    let memory = resource == "memory";
    let request = |u: &Use| -> u64 {
        if memory {
            u64::try_from(berth_pods::pod_request(u.pod, "memory")).unwrap_or(0)
        } else {
            u64::try_from(berth_pods::pod_request(u.pod, "ephemeral-storage")).unwrap_or(0)
        }
    };
    let used = |u: &Use| if memory { u.memory } else { u.storage };
    let priority = |u: &Use| u.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    // Over its request first, then lower priority, then the largest use above it.
    let victim = uses.iter().max_by_key(|u| {
        let over = used(u) > request(u);
        (
            over,
            std::cmp::Reverse(priority(u)),
            used(u).saturating_sub(request(u)),
        )
    });
    let Some(v) = victim else { return Ok(()) };
    let unit = |n: u64| format!("{}Ki", n / 1024);
    let message = format!(
        "The node was low on resource: {resource}. Threshold quantity: {}, available: {}. {}",
        threshold.show(),
        unit(available),
        v.pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| {
                let r = qos::request(c, if memory { "memory" } else { "ephemeral-storage" })
                    .map_or("0".to_string(), |q| q.0);
                format!("Container {} was using {}, request is {r}, has larger consumption of {resource}. ", c.name, unit(used(v)))
            })
            .next()
            .unwrap_or_default()
    );
    tracing::info!(pod = %v.key, "evicting: {message}");
    ctx.hub.evict(&v.key.uid, message);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_as_the_kubelets_flag() {
        let t: Thresholds = "memory.available<500Mi, nodefs.available<10%"
            .parse()
            .unwrap();
        assert_eq!(t.memory_available, Some(Amount::Absolute(500 << 20)));
        assert_eq!(t.nodefs_available, Some(Amount::Percent(10.0)));
        assert_eq!(t.imagefs_available, None);
        assert_eq!(Amount::Percent(10.0).of(1000), 100);
        for bad in [
            "memory.available=1Gi",
            "memory.free<1Gi",
            "nodefs.available<120%",
            "memory.available<lots",
        ] {
            let e = bad.parse::<Thresholds>().unwrap_err();
            assert!(
                e.contains(bad.split(['<', '=']).next().unwrap()),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            Thresholds::default().memory_available,
            Some(Amount::Absolute(100 << 20))
        );
    }

    #[test]
    fn memory_available_is_below_the_total() {
        let (total, avail) = memory();
        assert!(total > 0 && avail <= total);
    }
}
