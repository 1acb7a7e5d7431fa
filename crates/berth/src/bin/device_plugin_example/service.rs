//! The plugin's DevicePlugin service, its health checks, and its registration with
//! the agent (again whenever the agent's socket is made anew).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use berth_deviceplugin::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use berth_deviceplugin::v1beta1::registration_client::RegistrationClient;
use berth_deviceplugin::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, DevicePluginOptions, DeviceSpec, Empty,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse, RegisterRequest,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::devices;
use crate::Args;

/// The variable a container's device names are given in.
const DEVICES_ENV: &str = "EXAMPLE_LOOP_DEVICES";

struct Plugin {
    dev_dir: PathBuf,
    /// The devices as last checked.
    devices: watch::Receiver<Vec<Device>>,
}

impl Plugin {
    /// `ids` unless one is not a healthy device of this plugin.
    fn check(&self, ids: &[String]) -> Result<(), Status> {
        let now = self.devices.borrow().clone();
        for id in ids {
            let ok = now
                .iter()
                .any(|d| &d.id == id && d.health == berth_deviceplugin::HEALTHY);
            if !ok || !devices::healthy(&self.dev_dir, id) {
                return Err(Status::failed_precondition(format!(
                    "device {id} is not a healthy device of this plugin (its node {} is missing or not a block device)",
                    self.dev_dir.join(id).display()
                )));
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    type ListAndWatchStream = berth_deviceplugin::plugin::DeviceStream;

    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
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
        let container_responses = req
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| {
                // The devices asked to be kept first, then the lowest-numbered.
                let mut rest = c.available_device_ids.clone();
                rest.retain(|d| !c.must_include_device_ids.contains(d));
                rest.sort_by_key(|d| devices::number(d));
                let mut ids = c.must_include_device_ids.clone();
                ids.extend(rest);
                ids.truncate(c.allocation_size.max(0) as usize);
                ContainerPreferredAllocationResponse { device_ids: ids }
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
        let mut container_responses = Vec::new();
        for c in req.into_inner().container_requests {
            self.check(&c.devices_ids)?;
            container_responses.push(ContainerAllocateResponse {
                envs: [(DEVICES_ENV.to_string(), c.devices_ids.join(","))].into(),
                devices: c
                    .devices_ids
                    .iter()
                    .map(|id| DeviceSpec {
                        container_path: format!("/dev/{id}"),
                        host_path: self.dev_dir.join(id).to_string_lossy().into_owned(),
                        permissions: "rw".into(),
                    })
                    .collect(),
                ..Default::default()
            });
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        req: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        // A device that broke since Allocate must not reach the container.
        self.check(&req.into_inner().devices_ids)?;
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

fn options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: true,
        get_preferred_allocation_available: true,
    }
}

/// The agent's socket's identity, to notice it being made anew (a new file may get
/// the old one's inode number: its change time tells them apart).
fn socket_id(path: &std::path::Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

async fn register(args: &Args) -> Result<(), String> {
    let kubelet = args.plugin_dir.join(berth_deviceplugin::KUBELET_SOCKET);
    let channel = berth_grpc_unix::connect(&kubelet)
        .await
        .map_err(|e| format!("connecting to {}: {e}", kubelet.display()))?;
    RegistrationClient::new(channel)
        .register(RegisterRequest {
            version: berth_deviceplugin::VERSION.into(),
            endpoint: args.socket_name.clone(),
            resource_name: args.resource.clone(),
            options: Some(options()),
        })
        .await
        .map_err(|e| format!("registering on {}: {}", kubelet.display(), e.message()))?;
    Ok(())
}

/// Serves until SIGINT or SIGTERM; the socket is removed then.
pub async fn run(args: Args) -> Result<(), String> {
    let socket = args.plugin_dir.join(&args.socket_name);
    let listener = berth_grpc_unix::bind(&socket, 0o600)
        .await
        .map_err(|e| e.to_string())?;
    // Devices found once stay listed (unhealthy while their node is gone); named
    // ones are all there is.
    let mut names = args.devices.clone();
    let discovering = names.is_empty();
    if discovering {
        names = devices::discover(&args.dev_dir);
    }
    let (tx, rx) = watch::channel(devices::list(&args.dev_dir, &names));
    if rx.borrow().is_empty() {
        tracing::warn!(dir = %args.dev_dir.display(), "no loop devices found: offering none");
    }
    let plugin = Plugin {
        dev_dir: args.dev_dir.clone(),
        devices: rx,
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(plugin))
            .serve_with_incoming(berth_grpc_unix::incoming(listener)),
    );
    let (dir, every) = (args.dev_dir.clone(), args.health_interval);
    let health = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if discovering {
                for n in devices::discover(&dir) {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
            let now = devices::list(&dir, &names);
            tx.send_if_modified(|old| {
                let changed = *old != now;
                if changed {
                    tracing::info!(devices = ?now.iter().map(|d| (&d.id, &d.health)).collect::<Vec<_>>(), "devices changed");
                    *old = now;
                }
                changed
            });
        }
    });
    let kubelet = args.plugin_dir.join(berth_deviceplugin::KUBELET_SOCKET);
    let registrar = async {
        let mut registered_on = None;
        loop {
            let now = socket_id(&kubelet);
            if now.is_some() && now != registered_on {
                match register(&args).await {
                    Ok(()) => {
                        tracing::info!(resource = %args.resource, socket = %socket.display(), "registered");
                        registered_on = now;
                    }
                    Err(e) => tracing::warn!("{e}; trying again"),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("handling SIGTERM: {e}"))?;
    tokio::select! {
        _ = registrar => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    health.abort();
    server.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
