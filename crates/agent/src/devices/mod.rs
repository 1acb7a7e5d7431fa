//! The device manager, as the kubelet's: device plugins register their extended
//! resource on `DIR/kubelet.sock`; each plugin's ListAndWatch stream becomes the
//! node's capacity (every device) and allocatable (healthy devices) for its resource;
//! a pod asking for devices gets them chosen at admission (reusing its init
//! containers' devices, asking the plugin's preference when it has one) and
//! allocated by the plugin, all or none; each container then starts with the
//! plugin's answer applied (device nodes, mounts, environment, annotations, CDI
//! devices), after PreStartContainer when the plugin asks for it. Assignments are
//! checkpointed, and served to monitoring agents by the Pod Resources API.

mod apply;
pub mod checkpoint;
mod podresources;
mod registration;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use berth_deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use berth_deviceplugin::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse,
    ContainerPreferredAllocationRequest, DevicePluginOptions, PreStartContainerRequest,
    PreferredAllocationRequest,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use tonic::transport::Channel;

pub use apply::apply;
use state::{Assigned, State};

use crate::admit::Rejection;

/// How long a plugin has to answer Allocate, GetPreferredAllocation or
/// PreStartContainer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A registered plugin.
struct Plugin {
    /// Its registration's number (a plugin registering again gets a new one).
    serving: u64,
    client: DevicePluginClient<Channel>,
    options: DevicePluginOptions,
    /// Its ListAndWatch reader.
    watch: tokio::task::AbortHandle,
}

/// A pod the agent runs, for the Pod Resources API.
#[derive(Clone, Debug)]
struct ActivePod {
    namespace: String,
    name: String,
    /// Its app containers and sidecars.
    containers: Vec<String>,
}

/// Where the device manager serves.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// The device plugin directory: the Registration socket, plugins' sockets, the
    /// checkpoint.
    pub plugins: PathBuf,
    /// The Pod Resources API's directory (None: not served).
    pub pod_resources: Option<PathBuf>,
    /// Where CDI specs for plugins' CDI devices are.
    pub cdi_specs: Vec<PathBuf>,
}

/// The device manager's servers, stopped (and their sockets removed) when dropped.
#[derive(Default)]
pub struct Running {
    _sockets: Vec<registration::Served>,
    expiry: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = &self.expiry {
            t.abort();
        }
    }
}

/// The device manager.
pub struct Manager {
    /// None: no device plugins (every pod's devices are its own business).
    dirs: Option<Dirs>,
    state: Mutex<State>,
    plugins: Mutex<HashMap<String, Plugin>>,
    next_registration: AtomicU64,
    /// Set when capacity or allocatable changed: the node's status is posted.
    changed: tokio::sync::Notify,
    active: Mutex<BTreeMap<String, ActivePod>>,
    /// Choosing and allocating is one at a time (admission and a late allocation at
    /// container start must not choose the same free device).
    allocating: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A plugin's resource and how many of its devices.
type DeviceRequest = (String, usize);

/// What a container asks of resources a plugin serves.
fn device_requests(c: &Container, known: &BTreeSet<String>) -> Vec<DeviceRequest> {
    let r = c.resources.as_ref();
    let limits = r.and_then(|r| r.limits.as_ref());
    let requests = r.and_then(|r| r.requests.as_ref());
    known
        .iter()
        .filter_map(|name| {
            let q = limits
                .and_then(|l| l.get(name))
                .or_else(|| requests.and_then(|l| l.get(name)))?;
            let n = berth_pods::value(q).ok()?;
            (n > 0).then(|| (name.clone(), n as usize))
        })
        .collect()
}

fn unexpected(why: impl std::fmt::Display) -> Rejection {
    Rejection {
        reason: "UnexpectedAdmissionError".into(),
        message: format!("Allocate failed due to {why}, which is unexpected"),
    }
}

impl Manager {
    /// A manager over `dirs` (None: disabled), its book read back from the
    /// checkpoint.
    pub fn new(dirs: Option<Dirs>) -> crate::Result<Manager> {
        let state = match &dirs {
            Some(d) => {
                checkpoint::load(&d.plugins, Instant::now()).map_err(crate::Error::Config)?
            }
            None => State::default(),
        };
        Ok(Manager {
            dirs,
            state: Mutex::new(state),
            plugins: Mutex::new(HashMap::new()),
            next_registration: AtomicU64::new(1),
            changed: tokio::sync::Notify::new(),
            active: Mutex::new(BTreeMap::new()),
            allocating: tokio::sync::Mutex::new(()),
        })
    }

    /// Waits until capacity or allocatable changed since the last call.
    pub async fn changed(&self) {
        if self.dirs.is_some() {
            self.changed.notified().await
        } else {
            std::future::pending().await
        }
    }

    /// Each resource's (capacity, allocatable).
    pub fn counts(&self) -> BTreeMap<String, (usize, usize)> {
        lock(&self.state).counts()
    }

    /// Records the pods the agent runs now (those not ended): the Pod Resources API
    /// lists them, and devices of pods not among them are freed at the next
    /// allocation.
    pub fn set_active<'a>(&self, pods: impl Iterator<Item = &'a Pod>) {
        if self.dirs.is_none() {
            return;
        }
        let active = pods
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .map(|p| {
                let spec = p.spec.as_ref();
                let containers = spec
                    .into_iter()
                    .flat_map(|s| s.init_containers.iter().flatten())
                    .filter(|c| berth_pods::is_sidecar(c))
                    .chain(spec.into_iter().flat_map(|s| s.containers.iter()))
                    .map(|c| c.name.clone())
                    .collect();
                (
                    p.metadata.uid.clone().unwrap_or_default(),
                    ActivePod {
                        namespace: p.metadata.namespace.clone().unwrap_or_default(),
                        name: p.metadata.name.clone().unwrap_or_default(),
                        containers,
                    },
                )
            })
            .collect();
        *lock(&self.active) = active;
    }

    fn notify(&self) {
        self.changed.notify_one();
    }

    fn save(&self) {
        let Some(d) = &self.dirs else { return };
        let s = lock(&self.state).clone();
        if let Err(e) = checkpoint::save(&d.plugins, &s) {
            tracing::warn!(dir = %d.plugins.display(), error = %e, "writing the device checkpoint failed");
        }
    }

    fn known_resources(&self) -> BTreeSet<String> {
        lock(&self.state).resources.keys().cloned().collect()
    }

    fn plugin(&self, resource: &str) -> Option<(DevicePluginClient<Channel>, DevicePluginOptions)> {
        lock(&self.plugins)
            .get(resource)
            .map(|p| (p.client.clone(), p.options.clone()))
    }

    /// Chooses and allocates the devices of every container of a pod being
    /// admitted: all or none. A pod asking for no plugin's resource passes untouched.
    pub async fn admit(&self, pod: &Pod) -> Result<(), Rejection> {
        if self.dirs.is_none() {
            return Ok(());
        }
        let known = self.known_resources();
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let inits = spec.init_containers.iter().flatten().map(|c| (c, true));
        let apps = spec.containers.iter().map(|c| (c, false));
        let wanted: Vec<(&Container, bool, Vec<DeviceRequest>)> = inits
            .chain(apps)
            .map(|(c, init)| (c, init, device_requests(c, &known)))
            .filter(|(_, _, r)| !r.is_empty())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let _one = self.allocating.lock().await;
        let pruned = {
            let active = lock(&self.active);
            lock(&self.state).prune(|u| u == uid || active.contains_key(u))
        };
        if pruned {
            self.notify();
        }
        // An init container's devices pass to the pod's next containers.
        let mut reusable: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (c, init, requests) in wanted {
            for (resource, n) in requests {
                let reuse = reusable.get(&resource).cloned().unwrap_or_default();
                let ids = match self.allocate(pod, &c.name, &resource, n, &reuse).await {
                    Ok(ids) => ids,
                    Err(r) => {
                        lock(&self.state).pods.remove(&uid);
                        self.save();
                        return Err(r);
                    }
                };
                let set = reusable.entry(resource).or_default();
                if init && !berth_pods::is_sidecar(c) {
                    *set = ids.into_iter().collect();
                } else {
                    for id in &ids {
                        set.remove(id);
                    }
                }
            }
        }
        self.save();
        Ok(())
    }

    /// Chooses `n` devices of `resource` for a container and has the plugin allocate
    /// them; the choice is recorded, with the plugin's answer.
    async fn allocate(
        &self,
        pod: &Pod,
        container: &str,
        resource: &str,
        n: usize,
        reuse: &BTreeSet<String>,
    ) -> Result<Vec<String>, Rejection> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let candidates = lock(&self.state)
            .candidates(resource, n, reuse)
            .map_err(|u| {
                unexpected(format!(
                    "requested number of devices unavailable for {resource}. Requested: {}, Available: {}",
                    u.requested, u.available
                ))
            })?;
        let Some((mut client, options)) = self.plugin(resource) else {
            return Err(unexpected(format!(
                "no device plugin serves {resource} now"
            )));
        };
        let mut chosen = candidates.must_include.clone();
        if options.get_preferred_allocation_available {
            let available: Vec<String> = candidates
                .must_include
                .iter()
                .chain(&candidates.free)
                .cloned()
                .collect();
            let req = PreferredAllocationRequest {
                container_requests: vec![ContainerPreferredAllocationRequest {
                    available_device_ids: available.clone(),
                    must_include_device_ids: candidates.must_include.clone(),
                    allocation_size: n as i32,
                }],
            };
            match tokio::time::timeout(CALL_TIMEOUT, client.get_preferred_allocation(req)).await {
                Ok(Ok(resp)) => {
                    let preferred = resp
                        .into_inner()
                        .container_responses
                        .into_iter()
                        .next()
                        .map(|r| r.device_ids)
                        .unwrap_or_default();
                    let unique: BTreeSet<&String> = preferred.iter().collect();
                    let fits = preferred.len() == n
                        && unique.len() == n
                        && preferred.iter().all(|id| available.contains(id))
                        && candidates
                            .must_include
                            .iter()
                            .all(|id| preferred.contains(id));
                    if fits {
                        chosen = preferred;
                    } else {
                        tracing::warn!(%resource, ?preferred, ?available, "the device plugin preferred devices outside what was offered; choosing without it");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(%resource, error = %e.message(), "GetPreferredAllocation failed; choosing without it")
                }
                Err(_) => {
                    tracing::warn!(%resource, "GetPreferredAllocation timed out; choosing without it")
                }
            }
        }
        for id in &candidates.free {
            if chosen.len() >= n {
                break;
            }
            if !chosen.contains(id) {
                chosen.push(id.clone());
            }
        }
        {
            let mut s = lock(&self.state);
            let p = s.pods.entry(uid.clone()).or_default();
            p.namespace = pod.metadata.namespace.clone().unwrap_or_default();
            p.name = pod.metadata.name.clone().unwrap_or_default();
            p.containers
                .entry(container.to_string())
                .or_default()
                .insert(
                    resource.to_string(),
                    Assigned {
                        ids: chosen.clone(),
                        response: None,
                    },
                );
        }
        let req = AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: chosen.clone(),
            }],
        };
        let answer = match tokio::time::timeout(CALL_TIMEOUT, client.allocate(req)).await {
            Err(_) => Err(format!(
                "the device plugin of {resource} did not answer Allocate within {}s",
                CALL_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Err(format!(
                "rpc error: code = {:?} desc = {}",
                e.code(),
                e.message()
            )),
            Ok(Ok(r)) => {
                let mut r = r.into_inner().container_responses;
                if r.len() == 1 {
                    Ok(r.remove(0))
                } else {
                    Err(format!(
                        "the device plugin of {resource} answered Allocate for 1 container with {} responses",
                        r.len()
                    ))
                }
            }
        };
        let mut s = lock(&self.state);
        let slot = s
            .pods
            .get_mut(&uid)
            .and_then(|p| p.containers.get_mut(container))
            .and_then(|c| c.get_mut(resource));
        match (answer, slot) {
            (Ok(resp), Some(slot)) => {
                slot.response = Some(resp);
                Ok(chosen)
            }
            (Ok(_), None) => Err(unexpected("the pod's devices were freed meanwhile")),
            (Err(why), _) => {
                if let Some(c) = s
                    .pods
                    .get_mut(&uid)
                    .and_then(|p| p.containers.get_mut(container))
                {
                    c.remove(resource);
                }
                Err(unexpected(why))
            }
        }
    }

    /// The plugins' answers for a container about to be created: allocated at
    /// admission (or now, when the book lost them), after PreStartContainer for
    /// plugins that ask for it. The error says which plugin failed and why.
    pub async fn container_options(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<Vec<ContainerAllocateResponse>, String> {
        if self.dirs.is_none() {
            return Ok(Vec::new());
        }
        let requests = device_requests(c, &self.known_resources());
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut out = Vec::new();
        for (resource, n) in requests {
            let held = lock(&self.state)
                .pods
                .get(&uid)
                .and_then(|p| p.containers.get(&c.name))
                .and_then(|by| by.get(&resource))
                .and_then(|a| Some((a.ids.clone(), a.response.clone()?)));
            let (ids, resp) = match held {
                Some(h) => h,
                None => {
                    let _one = self.allocating.lock().await;
                    self.allocate(pod, &c.name, &resource, n, &BTreeSet::new())
                        .await
                        .map_err(|r| r.message)?;
                    self.save();
                    lock(&self.state)
                        .pods
                        .get(&uid)
                        .and_then(|p| p.containers.get(&c.name))
                        .and_then(|by| by.get(&resource))
                        .and_then(|a| Some((a.ids.clone(), a.response.clone()?)))
                        .ok_or_else(|| format!("the devices of {resource} were freed meanwhile"))?
                }
            };
            if let Some((mut client, options)) = self.plugin(&resource) {
                if options.pre_start_required {
                    let req = PreStartContainerRequest { devices_ids: ids };
                    match tokio::time::timeout(CALL_TIMEOUT, client.pre_start_container(req)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            return Err(format!(
                                "PreStartContainer of the device plugin of {resource} failed: {}",
                                e.message()
                            ))
                        }
                        Err(_) => {
                            return Err(format!(
                                "the device plugin of {resource} did not answer PreStartContainer within {}s",
                                CALL_TIMEOUT.as_secs()
                            ))
                        }
                    }
                }
            }
            out.push(resp);
        }
        Ok(out)
    }

    /// Where CDI specs are looked up.
    pub fn cdi_spec_dirs(&self) -> Vec<PathBuf> {
        self.dirs
            .as_ref()
            .map(|d| d.cdi_specs.clone())
            .unwrap_or_default()
    }

    /// Serves Registration (and the Pod Resources API), and forgets the devices of
    /// plugins gone past their grace, until the returned guard is dropped (the
    /// sockets are removed then). A socket that cannot be listened on is an error.
    pub async fn start(self: Arc<Self>) -> crate::Result<Running> {
        let Some(dirs) = self.dirs.clone() else {
            return Ok(Running::default());
        };
        let registration = registration::serve(self.clone(), &dirs.plugins).await?;
        let pod_resources = match &dirs.pod_resources {
            Some(d) => Some(podresources::serve(self.clone(), d).await?),
            None => None,
        };
        let m = self.clone();
        let expiry = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                if lock(&m.state).expire(Instant::now()) {
                    m.save();
                    m.notify();
                }
            }
        });
        Ok(Running {
            _sockets: vec![registration]
                .into_iter()
                .chain(pod_resources)
                .collect(),
            expiry: Some(expiry),
        })
    }

    /// Takes registration `serving` of a plugin for `resource`, replacing the one
    /// before (whose ListAndWatch is dropped).
    fn registered(
        &self,
        resource: &str,
        client: DevicePluginClient<Channel>,
        options: DevicePluginOptions,
        watch: tokio::task::AbortHandle,
        serving: u64,
    ) {
        {
            let mut s = lock(&self.state);
            let r = s.resources.entry(resource.to_string()).or_default();
            r.serving = Some(serving);
            r.gone_since = None;
        }
        let old = lock(&self.plugins).insert(
            resource.to_string(),
            Plugin {
                serving,
                client,
                options,
                watch,
            },
        );
        if let Some(old) = old {
            tracing::info!(%resource, "device plugin registered again; the earlier registration is dropped");
            old.watch.abort();
        }
        self.notify();
    }

    /// A plugin's device list, when `serving` is still its registration.
    fn listed(
        &self,
        resource: &str,
        serving: u64,
        devices: &[berth_deviceplugin::v1beta1::Device],
    ) {
        let repeated = {
            let mut s = lock(&self.state);
            if s.resources.get(resource).and_then(|r| r.serving) != Some(serving) {
                return;
            }
            s.set_devices(resource, devices)
        };
        if !repeated.is_empty() {
            tracing::warn!(%resource, ?repeated, "the device plugin listed devices more than once; each counts once");
        }
        tracing::info!(%resource, devices = devices.len(), "device plugin listed its devices");
        self.save();
        self.notify();
    }

    /// A plugin's ListAndWatch ended: its devices turn unhealthy.
    fn gone(&self, resource: &str, serving: u64) {
        let changed = lock(&self.state).plugin_gone(resource, serving, Instant::now());
        {
            let mut plugins = lock(&self.plugins);
            if plugins.get(resource).is_some_and(|p| p.serving == serving) {
                plugins.remove(resource);
            }
        }
        if changed {
            tracing::warn!(%resource, "device plugin went away; its devices are unhealthy until it registers again");
            self.notify();
        }
    }

    fn next_serving(&self) -> u64 {
        self.next_registration.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_ask_for_known_resources_by_limit_or_request() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "a",
            "resources": {
                "limits": {"example.com/loop": "2", "cpu": "1"},
                "requests": {"example.com/other": "1", "example.com/none": "0"}
            }
        }))
        .unwrap();
        let known: BTreeSet<String> = [
            "example.com/loop",
            "example.com/other",
            "example.com/none",
            "example.com/unasked",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(
            device_requests(&c, &known),
            [
                ("example.com/loop".to_string(), 2),
                ("example.com/other".to_string(), 1)
            ]
        );
    }
}
