//! The device manager's books, as the kubelet keeps them: each resource's devices
//! with their health, and which pod's container holds which devices. Plain data and
//! the choices made from it; the gRPC sides live in the sibling modules.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use berth_deviceplugin::v1beta1::{ContainerAllocateResponse, Device};

/// How long a resource whose plugin went away keeps its devices (as unhealthy) before
/// they leave the node's capacity: the kubelet's grace for a plugin's restart.
pub const GONE_GRACE: Duration = Duration::from_secs(300);

/// One device as its plugin last reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Whether it may be handed out.
    pub healthy: bool,
    /// Its NUMA nodes.
    pub numa: Vec<i64>,
}

/// A resource some plugin serves (or served).
#[derive(Clone, Debug, Default)]
pub struct Resource {
    /// Its devices by ID.
    pub devices: BTreeMap<String, DeviceInfo>,
    /// The registration serving it now; None: its plugin is gone (or not back since
    /// the agent restarted).
    pub serving: Option<u64>,
    /// Since when it has had no plugin.
    pub gone_since: Option<Instant>,
}

/// The devices one container holds of one resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Assigned {
    /// Their IDs.
    pub ids: Vec<String>,
    /// The plugin's answer to Allocate; None while the call runs.
    pub response: Option<ContainerAllocateResponse>,
}

/// What one pod's containers hold: container → resource → devices.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodDevices {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// By container, then resource.
    pub containers: BTreeMap<String, BTreeMap<String, Assigned>>,
}

/// The whole book.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Resources by name.
    pub resources: BTreeMap<String, Resource>,
    /// Pods' devices by pod UID.
    pub pods: BTreeMap<String, PodDevices>,
}

/// Why devices could not be chosen.
#[derive(Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// How many were asked for.
    pub requested: usize,
    /// How many could be had.
    pub available: usize,
}

/// The devices a container may get: those it must take (reused from the pod's init
/// containers) and those free to choose the rest from.
#[derive(Debug, PartialEq, Eq)]
pub struct Candidates {
    /// Reused devices, taken first.
    pub must_include: Vec<String>,
    /// Healthy devices nobody holds.
    pub free: Vec<String>,
}

impl State {
    /// Every device of `resource` some container holds.
    pub fn in_use(&self, resource: &str) -> BTreeSet<&str> {
        self.pods
            .values()
            .flat_map(|p| p.containers.values())
            .filter_map(|c| c.get(resource))
            .flat_map(|a| a.ids.iter().map(String::as_str))
            .collect()
    }

    /// What a container asking for `needed` devices of `resource` may get, taking the
    /// `reusable` ones first.
    pub fn candidates(
        &self,
        resource: &str,
        needed: usize,
        reusable: &BTreeSet<String>,
    ) -> Result<Candidates, Unavailable> {
        let healthy = |id: &str| {
            self.resources
                .get(resource)
                .and_then(|r| r.devices.get(id))
                .is_some_and(|d| d.healthy)
        };
        let must_include: Vec<String> = reusable
            .iter()
            .filter(|id| healthy(id))
            .take(needed)
            .cloned()
            .collect();
        let in_use = self.in_use(resource);
        let free: Vec<String> = self
            .resources
            .get(resource)
            .map(|r| {
                r.devices
                    .iter()
                    .filter(|(id, d)| d.healthy && !in_use.contains(id.as_str()))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let wanted = needed - must_include.len();
        if free.len() < wanted {
            return Err(Unavailable {
                requested: needed,
                available: free.len() + must_include.len(),
            });
        }
        Ok(Candidates { must_include, free })
    }

    /// Each resource's capacity (every device) and allocatable (healthy devices).
    pub fn counts(&self) -> BTreeMap<String, (usize, usize)> {
        self.resources
            .iter()
            .map(|(name, r)| {
                let healthy = r.devices.values().filter(|d| d.healthy).count();
                (name.clone(), (r.devices.len(), healthy))
            })
            .collect()
    }

    /// Takes a plugin's device list as the whole truth for `resource`. A device listed
    /// twice counts once; the repeats are returned to be reported.
    pub fn set_devices(&mut self, resource: &str, list: &[Device]) -> Vec<String> {
        let mut devices = BTreeMap::new();
        let mut repeated = Vec::new();
        for d in list {
            let info = DeviceInfo {
                healthy: d.health == berth_deviceplugin::HEALTHY,
                numa: d
                    .topology
                    .iter()
                    .flat_map(|t| t.nodes.iter().map(|n| n.id))
                    .collect(),
            };
            if devices.insert(d.id.clone(), info).is_some() {
                repeated.push(d.id.clone());
            }
        }
        self.resources
            .entry(resource.to_string())
            .or_default()
            .devices = devices;
        repeated
    }

    /// Marks `resource`'s devices unhealthy when registration `serving` is still the
    /// one serving it (a plugin that re-registered is not the one that went away).
    pub fn plugin_gone(&mut self, resource: &str, serving: u64, now: Instant) -> bool {
        let Some(r) = self.resources.get_mut(resource) else {
            return false;
        };
        if r.serving != Some(serving) {
            return false;
        }
        r.serving = None;
        r.gone_since = Some(now);
        for d in r.devices.values_mut() {
            d.healthy = false;
        }
        true
    }

    /// Forgets the devices of resources gone for longer than [`GONE_GRACE`] (their
    /// capacity falls to 0); whether any did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for r in self.resources.values_mut() {
            if r.serving.is_none()
                && !r.devices.is_empty()
                && r.gone_since
                    .is_some_and(|t| now.duration_since(t) >= GONE_GRACE)
            {
                r.devices.clear();
                changed = true;
            }
        }
        changed
    }

    /// Frees the devices of pods that are no longer running; whether any were.
    pub fn prune(&mut self, active: impl Fn(&str) -> bool) -> bool {
        let before = self.pods.len();
        self.pods.retain(|uid, _| active(uid));
        before != self.pods.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, healthy: bool) -> Device {
        Device {
            id: id.into(),
            health: if healthy { "Healthy" } else { "Unhealthy" }.into(),
            topology: None,
        }
    }

    fn hold(s: &mut State, uid: &str, container: &str, ids: &[&str]) {
        s.pods
            .entry(uid.into())
            .or_default()
            .containers
            .entry(container.into())
            .or_default()
            .insert(
                "example.com/loop".into(),
                Assigned {
                    ids: ids.iter().map(|s| s.to_string()).collect(),
                    response: None,
                },
            );
    }

    const R: &str = "example.com/loop";

    #[test]
    fn held_and_unhealthy_devices_are_not_handed_out() {
        let mut s = State::default();
        let repeated = s.set_devices(
            R,
            &[
                dev("a", true),
                dev("b", true),
                dev("c", false),
                dev("d", true),
                dev("a", true),
            ],
        );
        assert_eq!(repeated, ["a"]);
        assert_eq!(s.counts()[R], (4, 3));
        hold(&mut s, "pod1", "c1", &["a"]);
        let c = s.candidates(R, 2, &BTreeSet::new()).unwrap();
        assert_eq!(c.free, ["b", "d"]);
        assert!(c.must_include.is_empty());
        assert_eq!(
            s.candidates(R, 3, &BTreeSet::new()),
            Err(Unavailable {
                requested: 3,
                available: 2
            })
        );
        // An init container's devices are reused first by the pod's next container.
        let reuse = BTreeSet::from(["a".to_string()]);
        let c = s.candidates(R, 3, &reuse).unwrap();
        assert_eq!(c.must_include, ["a"]);
        assert_eq!(c.free, ["b", "d"]);
        assert!(s.prune(|uid| uid != "pod1"));
        assert_eq!(s.candidates(R, 3, &BTreeSet::new()).unwrap().free.len(), 3);
    }

    #[test]
    fn a_gone_plugins_devices_turn_unhealthy_then_leave_after_the_grace() {
        let mut s = State::default();
        s.set_devices(R, &[dev("a", true), dev("b", true)]);
        s.resources.get_mut(R).unwrap().serving = Some(2);
        let t0 = Instant::now();
        // A registration that was replaced going away changes nothing.
        assert!(!s.plugin_gone(R, 1, t0));
        assert_eq!(s.counts()[R], (2, 2));
        assert!(s.plugin_gone(R, 2, t0));
        assert_eq!(s.counts()[R], (2, 0));
        assert!(!s.expire(t0 + Duration::from_secs(10)));
        assert!(s.expire(t0 + GONE_GRACE));
        assert_eq!(s.counts()[R], (0, 0));
    }
}
