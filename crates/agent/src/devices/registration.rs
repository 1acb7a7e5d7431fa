//! The Registration service on `DIR/kubelet.sock`: a plugin names its resource and
//! socket; the agent dials it, reads its ListAndWatch stream for as long as it lasts,
//! and a plugin registering again replaces its earlier registration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use berth_deviceplugin::v1beta1::registration_server::{Registration, RegistrationServer};
use berth_deviceplugin::v1beta1::{Empty, RegisterRequest};
use tonic::{Request, Response, Status};

use super::Manager;

/// How long the plugin's socket has to answer when it registers.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

struct Registrar(Arc<Manager>, PathBuf);

/// A served socket, removed when dropped.
pub(super) struct Served {
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Listens on `socket` (mode 0600: plugins run as root) and serves `router` there.
pub(super) async fn listen(
    socket: PathBuf,
    router: tonic::transport::server::Router,
) -> crate::Result<Served> {
    let listener = berth_grpc_unix::bind(&socket, 0o600).await.map_err(|e| {
        crate::Error::Config(format!(
            "{e} (choose another --device-plugin-dir or --pod-resources-dir, or --disable-device-plugins)"
        ))
    })?;
    let at = socket.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming(berth_grpc_unix::incoming(listener))
            .await
        {
            tracing::warn!(socket = %at.display(), error = %e, "a device manager socket stopped serving");
        }
    });
    Ok(Served { socket, task })
}

/// Serves Registration on `dir/kubelet.sock`.
pub(super) async fn serve(m: Arc<Manager>, dir: &Path) -> crate::Result<Served> {
    let socket = dir.join(berth_deviceplugin::KUBELET_SOCKET);
    let router = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(Registrar(m, dir.to_path_buf())));
    let served = listen(socket, router).await?;
    tracing::info!(socket = %served.socket.display(), "device plugin registration serving");
    Ok(served)
}

/// What is wrong with a registration, if anything.
fn check(r: &RegisterRequest) -> Result<(), Status> {
    if r.version != berth_deviceplugin::VERSION {
        return Err(Status::invalid_argument(format!(
            "device plugin API version {:?} is not supported: berth's agent speaks {}",
            r.version,
            berth_deviceplugin::VERSION
        )));
    }
    berth_deviceplugin::check_resource_name(&r.resource_name).map_err(Status::invalid_argument)?;
    let plain = !r.endpoint.is_empty()
        && !r.endpoint.contains('/')
        && r.endpoint != "."
        && r.endpoint != ".."
        && r.endpoint != berth_deviceplugin::KUBELET_SOCKET;
    if !plain {
        return Err(Status::invalid_argument(format!(
            "endpoint {:?} must name the plugin's own socket file in the device plugin directory",
            r.endpoint
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        check(&r)?;
        let socket = self.1.join(&r.endpoint);
        let channel =
            match tokio::time::timeout(DIAL_TIMEOUT, berth_grpc_unix::connect(&socket)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Err(Status::unavailable(format!(
                        "cannot reach the plugin's socket {}: {e}",
                        socket.display()
                    )))
                }
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "the plugin's socket {} did not answer within {}s",
                        socket.display(),
                        DIAL_TIMEOUT.as_secs()
                    )))
                }
            };
        let client = DevicePluginClient::new(channel);
        let options = r.options.clone().unwrap_or_default();
        let m = self.0.clone();
        let serving = m.next_serving();
        let resource = r.resource_name.clone();
        let mut reader = client.clone();
        let watcher = m.clone();
        let res = resource.clone();
        // Registered before the reader runs, so that its first list is taken.
        let (go, ready) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = ready.await;
            match reader.list_and_watch(Empty {}).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(list)) => watcher.listed(&res, serving, &list.devices),
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(resource = %res, error = %e.message(), "ListAndWatch failed");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(resource = %res, error = %e.message(), "ListAndWatch could not start")
                }
            }
            watcher.gone(&res, serving);
        });
        m.registered(&resource, client, options, task.abort_handle(), serving);
        let _ = go.send(());
        tracing::info!(%resource, endpoint = %socket.display(), "device plugin registered");
        Ok(Response::new(Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked_for_version_name_and_socket() {
        let ok = RegisterRequest {
            version: "v1beta1".into(),
            endpoint: "loop.sock".into(),
            resource_name: "example.com/loop".into(),
            options: None,
        };
        assert!(check(&ok).is_ok());
        let bad = |f: fn(&mut RegisterRequest), why: &str| {
            let mut r = ok.clone();
            f(&mut r);
            let e = check(&r).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(why), "{}", e.message());
        };
        bad(|r| r.version = "v1alpha".into(), "is not supported");
        bad(|r| r.resource_name = "loop".into(), "no domain");
        bad(|r| r.endpoint = "../x.sock".into(), "own socket file");
        bad(|r| r.endpoint = "kubelet.sock".into(), "own socket file");
    }
}
