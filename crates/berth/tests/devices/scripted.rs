//! A device plugin whose answers the test sets, for the faults the example plugin
//! never commits: listing a device twice, preferring devices it was not offered,
//! failing Allocate, answering with a device node that does not exist. It is a real
//! gRPC server on a socket in the agent's plugin directory, speaking the same API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_deviceplugin::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use berth_deviceplugin::v1beta1::registration_client::RegistrationClient;
use berth_deviceplugin::v1beta1::*;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// What the plugin answers.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// Allocate fails with this message.
    pub allocate_error: Option<String>,
    /// GetPreferredAllocation answers these, whatever was offered.
    pub preferred: Option<Vec<String>>,
    /// Allocate gives each device this host node instead of a real one.
    pub host_path: Option<String>,
    /// Allocate names these CDI devices.
    pub cdi_devices: Vec<String>,
}

#[derive(Clone)]
struct Service {
    script: Arc<Mutex<Script>>,
    devices: watch::Receiver<Vec<Device>>,
}

#[tonic::async_trait]
impl DevicePlugin for Service {
    type ListAndWatchStream = berth_deviceplugin::plugin::DeviceStream;

    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }))
    }

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        Ok(Response::new(berth_deviceplugin::plugin::list_and_watch(
            self.devices.clone(),
        )))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let preferred = self.script.lock().unwrap().preferred.clone();
        let container_responses = req
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| ContainerPreferredAllocationResponse {
                device_ids: preferred.clone().unwrap_or(c.available_device_ids),
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        req: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let script = self.script.lock().unwrap().clone();
        if let Some(e) = script.allocate_error {
            return Err(Status::internal(e));
        }
        let container_responses = req
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| ContainerAllocateResponse {
                envs: [("SCRIPTED_DEVICES".to_string(), c.devices_ids.join(","))].into(),
                devices: match &script.host_path {
                    Some(p) => vec![DeviceSpec {
                        container_path: "/dev/scripted".into(),
                        host_path: p.clone(),
                        permissions: "rw".into(),
                    }],
                    None => Vec::new(),
                },
                cdi_devices: script
                    .cdi_devices
                    .iter()
                    .map(|name| CdiDevice { name: name.clone() })
                    .collect(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// A running scripted plugin.
pub struct Scripted {
    /// Its socket's name in the plugin directory.
    pub endpoint: String,
    socket: PathBuf,
    /// Its answers, changeable while it runs.
    pub script: Arc<Mutex<Script>>,
    devices: Option<watch::Sender<Vec<Device>>>,
    server: tokio::task::JoinHandle<()>,
}

/// A device for [`Scripted::list`].
pub fn device(id: &str, healthy: bool) -> Device {
    Device {
        id: id.into(),
        health: if healthy { "Healthy" } else { "Unhealthy" }.into(),
        topology: None,
    }
}

impl Scripted {
    /// Serves on `dir/endpoint`, listing `devices`.
    pub async fn start(dir: &Path, endpoint: &str, devices: Vec<Device>) -> Scripted {
        let socket = dir.join(endpoint);
        let listener = berth_grpc_unix::bind(&socket, 0o600).await.unwrap();
        let (tx, rx) = watch::channel(devices);
        let script = Arc::new(Mutex::new(Script::default()));
        let svc = Service {
            script: script.clone(),
            devices: rx,
        };
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(svc))
                .serve_with_incoming(berth_grpc_unix::incoming(listener))
                .await;
        });
        Scripted {
            endpoint: endpoint.into(),
            socket,
            script,
            devices: Some(tx),
            server,
        }
    }

    /// Registers it for `resource` on `dir/kubelet.sock`.
    pub async fn register(&self, dir: &Path, resource: &str) -> Result<(), Status> {
        register(dir, "v1beta1", &self.endpoint, resource).await
    }

    /// Lists `devices` now.
    pub fn list(&self, devices: Vec<Device>) {
        self.devices.as_ref().unwrap().send_replace(devices);
    }

    /// Ends its ListAndWatch streams and stops serving, as a plugin that exits does.
    pub fn stop(&mut self) {
        self.devices = None;
        self.server.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a Register request to the agent.
pub async fn register(
    dir: &Path,
    version: &str,
    endpoint: &str,
    resource: &str,
) -> Result<(), Status> {
    let channel = berth_grpc_unix::connect(&dir.join("kubelet.sock"))
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    RegistrationClient::new(channel)
        .register(RegisterRequest {
            version: version.into(),
            endpoint: endpoint.into(),
            resource_name: resource.into(),
            options: Some(DevicePluginOptions {
                pre_start_required: false,
                get_preferred_allocation_available: true,
            }),
        })
        .await
        .map(|_| ())
}
