//! CRI's RuntimeService on the engine's: each RPC converts its request, runs the
//! engine's (blocking) call on a blocking thread, and converts the answer.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use berth_engine::cri as engine;
use k8s_cri::v1 as pb;
use pb::runtime_service_server::RuntimeService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::convert::{container, sandbox};
use crate::status;
use crate::{Cri, Engine};

/// Why the CRI metrics RPCs answer Unimplemented.
const METRICS_UNSERVED: &str = "berth does not serve the CRI metrics RPCs (the kubelet's PodAndContainerStatsFromCRI); container and pod sandbox figures come from ContainerStats, ListContainerStats and PodSandboxStats";

type Reply<T> = Result<Response<T>, Status>;

/// A sandbox's or container's ID from a request, or InvalidArgument naming the field.
fn id(field: &str, v: String) -> Result<String, Status> {
    if v.is_empty() {
        return Err(status::missing(field));
    }
    Ok(v)
}

/// CRI timeouts are whole seconds; 0 means none.
fn seconds(v: i64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_secs(v as u64))
}

/// Checks the stdio a streaming request asks for, as the kubelet's streaming server
/// does: at least one stream, and no stderr apart from a terminal.
fn stdio_asked(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout and stderr must be asked for",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true (a terminal has one output)",
        ));
    }
    Ok(())
}

/// The engine's status of a container as JSON, for verbose answers' `info`.
fn info(v: &impl serde::Serialize) -> HashMap<String, String> {
    HashMap::from([(
        "info".to_string(),
        serde_json::to_string(v).unwrap_or_default(),
    )])
}

#[tonic::async_trait]
impl<E: Engine> RuntimeService for Cri<E> {
    async fn version(&self, _: Request<pb::VersionRequest>) -> Reply<pb::VersionResponse> {
        let v = self.engine.version();
        Ok(Response::new(pb::VersionResponse {
            // The kubelet's runtime API version, fixed by CRI.
            version: "0.1.0".into(),
            runtime_name: v.runtime_name,
            runtime_version: v.runtime_version,
            runtime_api_version: v.runtime_api_version,
        }))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<pb::RunPodSandboxRequest>,
    ) -> Reply<pb::RunPodSandboxResponse> {
        let r = r.into_inner();
        if !r.runtime_handler.is_empty() && r.runtime_handler != crate::RUNTIME_HANDLER {
            return Err(Status::invalid_argument(format!(
                "unknown runtime handler {:?}: berth has one, {:?}",
                r.runtime_handler,
                crate::RUNTIME_HANDLER
            )));
        }
        let cfg = sandbox::config(r.config.ok_or_else(|| status::missing("config"))?)?;
        let id = self.call(move |e| e.run_pod_sandbox(&cfg)).await?;
        Ok(Response::new(pb::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<pb::StopPodSandboxRequest>,
    ) -> Reply<pb::StopPodSandboxResponse> {
        let id = id("pod_sandbox_id", r.into_inner().pod_sandbox_id)?;
        self.call(move |e| e.stop_pod_sandbox(&id)).await?;
        Ok(Response::new(pb::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<pb::RemovePodSandboxRequest>,
    ) -> Reply<pb::RemovePodSandboxResponse> {
        let id = id("pod_sandbox_id", r.into_inner().pod_sandbox_id)?;
        self.call(move |e| e.remove_pod_sandbox(&id)).await?;
        Ok(Response::new(pb::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<pb::PodSandboxStatusRequest>,
    ) -> Reply<pb::PodSandboxStatusResponse> {
        let r = r.into_inner();
        let id = id("pod_sandbox_id", r.pod_sandbox_id)?;
        let verbose = r.verbose;
        let (st, containers) = self
            .call(move |e| {
                let st = e.pod_sandbox_status(&id)?;
                let list = e.list_containers(&engine::ContainerFilter {
                    sandbox_id: Some(st.summary.id.clone()),
                    ..Default::default()
                })?;
                let containers = list
                    .iter()
                    .filter_map(|c| e.container_status(&c.id).ok())
                    .collect::<Vec<_>>();
                Ok((st, containers))
            })
            .await?;
        Ok(Response::new(pb::PodSandboxStatusResponse {
            status: Some(sandbox::status(&st)),
            info: if verbose { info(&st) } else { HashMap::new() },
            containers_statuses: containers.iter().map(container::status).collect(),
            timestamp: crate::convert::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<pb::ListPodSandboxRequest>,
    ) -> Reply<pb::ListPodSandboxResponse> {
        let f = r.into_inner().filter;
        let ef = sandbox::filter(&f);
        let list = self.call(move |e| e.list_pod_sandbox(&ef)).await?;
        Ok(Response::new(pb::ListPodSandboxResponse {
            items: list
                .iter()
                .map(sandbox::summary)
                .filter(|s| sandbox::keep(s, &f))
                .collect(),
        }))
    }

    async fn create_container(
        &self,
        r: Request<pb::CreateContainerRequest>,
    ) -> Reply<pb::CreateContainerResponse> {
        let r = r.into_inner();
        let sb = id("pod_sandbox_id", r.pod_sandbox_id)?;
        let (mut cfg, cdi) = container::config(r.config.ok_or_else(|| status::missing("config"))?)?;
        let dirs = self.cdi_dirs.clone();
        let id = self
            .call(move |e| {
                if !cdi.is_empty() {
                    berth_engine::cdi::Registry::load(&dirs)?.apply(&cdi, &mut cfg)?;
                }
                e.create_container(&sb, &cfg)
            })
            .await?;
        Ok(Response::new(pb::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        r: Request<pb::StartContainerRequest>,
    ) -> Reply<pb::StartContainerResponse> {
        let id = id("container_id", r.into_inner().container_id)?;
        self.call(move |e| e.start_container(&id)).await?;
        Ok(Response::new(pb::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<pb::StopContainerRequest>,
    ) -> Reply<pb::StopContainerResponse> {
        let r = r.into_inner();
        let id = id("container_id", r.container_id)?;
        // CRI: a timeout of 0 stops at once (SIGKILL after the stop signal).
        let timeout = Duration::from_secs(r.timeout.max(0) as u64);
        match self.call(move |e| e.stop_container(&id, timeout)).await {
            // CRI: stopping a container that is not there is not an error.
            Err(s) if s.code() == tonic::Code::NotFound => {}
            r => {
                r?;
            }
        }
        Ok(Response::new(pb::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<pb::RemoveContainerRequest>,
    ) -> Reply<pb::RemoveContainerResponse> {
        let id = id("container_id", r.into_inner().container_id)?;
        self.call(move |e| e.remove_container(&id)).await?;
        Ok(Response::new(pb::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        r: Request<pb::ListContainersRequest>,
    ) -> Reply<pb::ListContainersResponse> {
        let f = r.into_inner().filter;
        let ef = container::filter(&f);
        let list = self.call(move |e| e.list_containers(&ef)).await?;
        Ok(Response::new(pb::ListContainersResponse {
            containers: list
                .iter()
                .map(container::summary)
                .filter(|c| container::keep(c, &f))
                .collect(),
        }))
    }

    async fn container_status(
        &self,
        r: Request<pb::ContainerStatusRequest>,
    ) -> Reply<pb::ContainerStatusResponse> {
        let r = r.into_inner();
        let id = id("container_id", r.container_id)?;
        let st = self.call(move |e| e.container_status(&id)).await?;
        Ok(Response::new(pb::ContainerStatusResponse {
            status: Some(container::status(&st)),
            info: if r.verbose { info(&st) } else { HashMap::new() },
        }))
    }

    async fn update_container_resources(
        &self,
        r: Request<pb::UpdateContainerResourcesRequest>,
    ) -> Reply<pb::UpdateContainerResourcesResponse> {
        let r = r.into_inner();
        let id = id("container_id", r.container_id)?;
        let res = container::resources(r.linux.ok_or_else(|| status::missing("linux"))?)?;
        self.call(move |e| e.update_container_resources(&id, &res))
            .await?;
        Ok(Response::new(pb::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<pb::ReopenContainerLogRequest>,
    ) -> Reply<pb::ReopenContainerLogResponse> {
        let id = id("container_id", r.into_inner().container_id)?;
        self.call(move |e| e.reopen_container_log(&id)).await?;
        Ok(Response::new(pb::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, r: Request<pb::ExecSyncRequest>) -> Reply<pb::ExecSyncResponse> {
        let r = r.into_inner();
        let id = id("container_id", r.container_id)?;
        if r.cmd.is_empty() {
            return Err(status::missing("cmd"));
        }
        let timeout = seconds(r.timeout);
        let out = self
            .call(move |e| e.exec_sync(&id, &r.cmd, timeout))
            .await?;
        if out.timed_out {
            // As containerd answers: the kubelet reads this code as a probe timeout.
            return Err(Status::deadline_exceeded(format!(
                "command timed out after {} s",
                r.timeout
            )));
        }
        Ok(Response::new(pb::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(&self, r: Request<pb::ExecRequest>) -> Reply<pb::ExecResponse> {
        let r = r.into_inner();
        let id = id("container_id", r.container_id.clone())?;
        if r.cmd.is_empty() {
            return Err(status::missing("cmd"));
        }
        stdio_asked(r.stdin, r.stdout, r.stderr, r.tty)?;
        self.running(id).await?;
        Ok(Response::new(pb::ExecResponse {
            url: self.streams.exec(r),
        }))
    }

    async fn attach(&self, r: Request<pb::AttachRequest>) -> Reply<pb::AttachResponse> {
        let r = r.into_inner();
        let id = id("container_id", r.container_id.clone())?;
        stdio_asked(r.stdin, r.stdout, r.stderr, r.tty)?;
        self.running(id).await?;
        Ok(Response::new(pb::AttachResponse {
            url: self.streams.attach(r),
        }))
    }

    async fn port_forward(
        &self,
        r: Request<pb::PortForwardRequest>,
    ) -> Reply<pb::PortForwardResponse> {
        let r = r.into_inner();
        let id = id("pod_sandbox_id", r.pod_sandbox_id.clone())?;
        let st = self.call(move |e| e.pod_sandbox_status(&id)).await?;
        if st.summary.state != engine::SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "sandbox {} is not ready",
                st.summary.id
            )));
        }
        Ok(Response::new(pb::PortForwardResponse {
            url: self.streams.port_forward(pb::PortForwardRequest {
                pod_sandbox_id: st.summary.id,
                port: r.port,
            }),
        }))
    }

    async fn container_stats(
        &self,
        r: Request<pb::ContainerStatsRequest>,
    ) -> Reply<pb::ContainerStatsResponse> {
        let id = id("container_id", r.into_inner().container_id)?;
        let (stats, summary) = self
            .call(move |e| {
                let stats = e.container_stats(&id)?;
                let summary = e.container_status(&stats.id)?.summary;
                Ok((stats, summary))
            })
            .await?;
        Ok(Response::new(pb::ContainerStatsResponse {
            stats: Some(container::stats(&stats, Some(&summary))),
        }))
    }

    async fn list_container_stats(
        &self,
        r: Request<pb::ListContainerStatsRequest>,
    ) -> Reply<pb::ListContainerStatsResponse> {
        let f = r.into_inner().filter.unwrap_or_default();
        let ef = engine::ContainerFilter {
            id: (!f.id.is_empty()).then(|| f.id.clone()),
            sandbox_id: (!f.pod_sandbox_id.is_empty()).then(|| f.pod_sandbox_id.clone()),
            running: None,
            labels: crate::convert::btree(f.label_selector.clone()),
        };
        let stats = self
            .call(move |e| {
                let list = e.list_containers(&ef)?;
                Ok(list
                    .iter()
                    .filter_map(|c| e.container_stats(&c.id).ok().map(|s| (s, c.clone())))
                    .collect::<Vec<_>>())
            })
            .await?;
        Ok(Response::new(pb::ListContainerStatsResponse {
            stats: stats
                .iter()
                .map(|(s, c)| container::stats(s, Some(c)))
                .collect(),
        }))
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<pb::PodSandboxStatsRequest>,
    ) -> Reply<pb::PodSandboxStatsResponse> {
        let id = id("pod_sandbox_id", r.into_inner().pod_sandbox_id)?;
        let stats = self.call(move |e| crate::podstats::of(e, &id)).await?;
        Ok(Response::new(pb::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<pb::ListPodSandboxStatsRequest>,
    ) -> Reply<pb::ListPodSandboxStatsResponse> {
        let f = r.into_inner().filter.unwrap_or_default();
        let ef = engine::SandboxFilter {
            id: (!f.id.is_empty()).then(|| f.id.clone()),
            labels: crate::convert::btree(f.label_selector.clone()),
            ..Default::default()
        };
        let stats = self
            .call(move |e| {
                let list = e.list_pod_sandbox(&ef)?;
                Ok(list
                    .iter()
                    .filter_map(|s| crate::podstats::of(e, &s.id).ok())
                    .collect::<Vec<_>>())
            })
            .await?;
        Ok(Response::new(pb::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        r: Request<pb::UpdateRuntimeConfigRequest>,
    ) -> Reply<pb::UpdateRuntimeConfigResponse> {
        let cidr = r
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        self.call(move |e| e.update_runtime_config(&cidr)).await?;
        Ok(Response::new(pb::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, r: Request<pb::StatusRequest>) -> Reply<pb::StatusResponse> {
        let verbose = r.into_inner().verbose;
        let conditions = self.call(|e| Ok(e.status())).await?;
        let info = if verbose {
            HashMap::from([(
                "config".to_string(),
                serde_json::json!({
                    "runtimeHandler": crate::RUNTIME_HANDLER,
                    "cgroupDriver": "cgroupfs",
                    "streamingServer": self.streams.base(),
                })
                .to_string(),
            )])
        } else {
            HashMap::new()
        };
        Ok(Response::new(pb::StatusResponse {
            status: Some(pb::RuntimeStatus {
                conditions: conditions
                    .into_iter()
                    .map(|c| pb::RuntimeCondition {
                        r#type: c.kind,
                        status: c.status,
                        reason: c.reason,
                        message: c.message,
                    })
                    .collect(),
            }),
            info,
            runtime_handlers: vec![pb::RuntimeHandler {
                name: String::new(),
                features: Some(pb::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(pb::RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<pb::CheckpointContainerRequest>,
    ) -> Reply<pb::CheckpointContainerResponse> {
        Err(Status::unimplemented(
            "berth does not checkpoint containers (CRIU is not supported)",
        ))
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<pb::ContainerEventResponse, Status>> + Send>>;

    async fn get_container_events(
        &self,
        _: Request<pb::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        let events = self.call(|e| e.container_events()).await?;
        let rx = crate::events::forward(self.engine.clone(), events);
        let mut stopping = self.stopping.clone();
        let stream = futures_util::StreamExt::take_until(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            async move {
                let _ = stopping.wait_for(|s| *s).await;
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<pb::ListMetricDescriptorsRequest>,
    ) -> Reply<pb::ListMetricDescriptorsResponse> {
        // An empty list would claim cAdvisor's metric set is served and empty;
        // Unimplemented is how CRI says a runtime does not serve it (the kubelet and
        // critest then keep to the stats RPCs).
        Err(Status::unimplemented(METRICS_UNSERVED))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<pb::ListPodSandboxMetricsRequest>,
    ) -> Reply<pb::ListPodSandboxMetricsResponse> {
        Err(Status::unimplemented(METRICS_UNSERVED))
    }

    async fn runtime_config(
        &self,
        _: Request<pb::RuntimeConfigRequest>,
    ) -> Reply<pb::RuntimeConfigResponse> {
        Ok(Response::new(pb::RuntimeConfigResponse {
            linux: Some(pb::LinuxRuntimeConfiguration {
                // berth's cgroup parents are cgroupfs paths (/kubepods/burstable/pod...).
                cgroup_driver: pb::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

impl<E: Engine> Cri<E> {
    /// Checks that container `id` runs (exec and attach need a running process);
    /// FailedPrecondition says when not.
    async fn running(&self, id: String) -> Result<(), Status> {
        let st = self.call(move |e| e.container_status(&id)).await?;
        if !st.summary.state.is_running() {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                st.summary.id
            )));
        }
        Ok(())
    }

    /// Runs `f` on the engine on a blocking thread; engine errors become statuses.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&E) -> berth_engine::error::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let e = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&e))
            .await
            .map_err(status::join)?
            .map_err(status::of)
    }
}
