//! The Pod Resources API (podresources/v1) on `DIR/kubelet.sock`: which running pod's
//! containers hold which devices, and which devices the node can hand out.
//! CPU and memory assignments are empty: the agent pins no CPUs nor NUMA memory
//! (the kubelet's `none` policies).

use std::path::Path;
use std::sync::Arc;

use berth_deviceplugin::podresources::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use berth_deviceplugin::podresources::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, NumaNode, PodResources, TopologyInfo,
};
use tonic::{Request, Response, Status};

use super::registration::{listen, Served};
use super::{lock, ActivePod, Manager};

struct Lister(Arc<Manager>);

/// Serves the Pod Resources API on `dir/kubelet.sock`.
pub(super) async fn serve(m: Arc<Manager>, dir: &Path) -> crate::Result<Served> {
    let socket = dir.join(berth_deviceplugin::KUBELET_SOCKET);
    let router =
        tonic::transport::Server::builder().add_service(PodResourcesListerServer::new(Lister(m)));
    listen(socket, router).await
}

fn topology(numa: impl Iterator<Item = i64>) -> Option<TopologyInfo> {
    let mut nodes: Vec<i64> = numa.collect();
    nodes.sort_unstable();
    nodes.dedup();
    (!nodes.is_empty()).then(|| TopologyInfo {
        nodes: nodes.into_iter().map(|id| NumaNode { id }).collect(),
    })
}

impl Lister {
    fn pod(&self, uid: &str, p: &ActivePod) -> PodResources {
        let s = lock(&self.0.state);
        let held = s.pods.get(uid);
        let containers = p
            .containers
            .iter()
            .map(|name| {
                let devices = held
                    .and_then(|h| h.containers.get(name))
                    .into_iter()
                    .flatten()
                    .map(|(resource, a)| {
                        let numa = a.ids.iter().flat_map(|id| {
                            s.resources
                                .get(resource)
                                .and_then(|r| r.devices.get(id))
                                .map(|d| d.numa.clone())
                                .unwrap_or_default()
                        });
                        ContainerDevices {
                            resource_name: resource.clone(),
                            device_ids: a.ids.clone(),
                            topology: topology(numa),
                        }
                    })
                    .collect();
                ContainerResources {
                    name: name.clone(),
                    devices,
                    ..Default::default()
                }
            })
            .collect();
        PodResources {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            containers,
        }
    }
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        let active = lock(&self.0.active).clone();
        let pod_resources = active.iter().map(|(uid, p)| self.pod(uid, p)).collect();
        Ok(Response::new(ListPodResourcesResponse { pod_resources }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        let s = lock(&self.0.state);
        let devices = s
            .resources
            .iter()
            .flat_map(|(resource, r)| {
                r.devices
                    .iter()
                    .filter(|(_, d)| d.healthy)
                    .map(move |(id, d)| ContainerDevices {
                        resource_name: resource.clone(),
                        device_ids: vec![id.clone()],
                        topology: topology(d.numa.iter().copied()),
                    })
            })
            .collect();
        Ok(Response::new(AllocatableResourcesResponse {
            devices,
            ..Default::default()
        }))
    }

    async fn get(
        &self,
        req: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        let r = req.into_inner();
        let active = lock(&self.0.active).clone();
        let found = active
            .iter()
            .find(|(_, p)| p.name == r.pod_name && p.namespace == r.pod_namespace);
        match found {
            Some((uid, p)) => Ok(Response::new(GetPodResourcesResponse {
                pod_resources: Some(self.pod(uid, p)),
            })),
            None => Err(Status::not_found(format!(
                "pod {} in namespace {} not found on this node",
                r.pod_name, r.pod_namespace
            ))),
        }
    }
}
