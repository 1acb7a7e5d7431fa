//! Ending a pod: containers stopped within the grace period (preStop hooks first),
//! sandboxes stopped and removed, volumes and logs removed, and the kubelet's last
//! word on a deleted pod; eviction.

use std::time::{Duration, Instant};

use berth_engine::cri::{ContainerStatus, RuntimeService, SandboxState};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;

use super::{field_path, remove_pod_files, Next, Worker};
use crate::error::{is_not_found, Error, Result};
use crate::labels;
use crate::probes::{self, Target};
use crate::recorder::EventType::{Normal, Warning};
use crate::status::Observed;

impl Worker {
    /// Stops every container (preStop hooks first, within `grace`) and the sandbox.
    pub(super) async fn stop_everything(
        &mut self,
        pod: &Pod,
        obs: &Observed,
        grace: Duration,
    ) -> Result<()> {
        let spec = pod.spec.clone().unwrap_or_default();
        let running: Vec<&ContainerStatus> = obs
            .containers
            .iter()
            .filter(|c| c.summary.state.is_running())
            .collect();
        let deadline = Instant::now() + grace;
        let mut tasks = Vec::new();
        for cs in running {
            let name = cs
                .summary
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let init = cs.summary.labels.contains_key(labels::INIT_CONTAINER);
            let spec_c = if init {
                spec.init_containers
                    .iter()
                    .flatten()
                    .find(|c| c.name == name)
            } else {
                spec.containers.iter().find(|c| c.name == name)
            }
            .cloned();
            if let Some(c) = &spec_c {
                self.ctx.recorder.pod(
                    pod,
                    &field_path(c, init),
                    Normal,
                    "Killing",
                    &format!("Stopping container {name}"),
                );
            }
            let core = self.ctx.core.clone();
            let id = cs.summary.id.clone();
            let ip = obs
                .sandbox()
                .and_then(|s| s.ip)
                .unwrap_or(self.ctx.cfg.node_ip);
            tasks.push(tokio::spawn(async move {
                if let Some(c) = spec_c {
                    if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
                        let t = Target {
                            core: core.clone(),
                            container_id: id.clone(),
                            ip,
                            container: c.clone(),
                        };
                        let left = deadline.saturating_duration_since(Instant::now());
                        let _ = tokio::time::timeout(left, probes::run_hook(&t, h, left)).await;
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::task::spawn_blocking(move || core.stop_container(&id, left)).await
            }));
        }
        for t in tasks {
            match t.await {
                Ok(Ok(Ok(()))) | Ok(Ok(Err(berth_engine::Error::NotFound(_)))) => {}
                Ok(Ok(Err(e))) => return Err(Error::Engine(e)),
                Ok(Err(e)) | Err(e) => return Err(Error::Internal(format!("stop task: {e}"))),
            }
        }
        for s in &obs.sandboxes {
            if s.summary.state == SandboxState::Ready {
                let id = s.summary.id.clone();
                self.ctx
                    .engine(move |core| core.stop_pod_sandbox(&id))
                    .await?;
            }
        }
        Ok(())
    }

    /// Graceful termination: containers stopped within the grace period, then the
    /// sandboxes, volumes and logs removed.
    pub(super) async fn terminate(&mut self, pod: &Pod, grace: Duration) -> Result<()> {
        let obs = self.observe().await?;
        self.stop_everything(pod, &obs, grace).await?;
        self.remove_all(Duration::ZERO).await
    }

    /// Removes every sandbox and container of the pod, its volumes and its logs.
    pub(super) async fn remove_all(&mut self, grace: Duration) -> Result<()> {
        for (_, t) in self.probe_tasks.drain() {
            t.abort();
        }
        let obs = self.observe().await?;
        let ids: Vec<String> = obs.sandboxes.iter().map(|s| s.summary.id.clone()).collect();
        let running: Vec<String> = obs
            .containers
            .iter()
            .filter(|c| c.summary.state.is_running())
            .map(|c| c.summary.id.clone())
            .collect();
        self.ctx
            .engine(move |core| {
                for c in &running {
                    match core.stop_container(c, grace) {
                        Ok(()) | Err(berth_engine::Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                for id in &ids {
                    core.remove_pod_sandbox(id)?;
                }
                Ok(())
            })
            .await?;
        for s in &obs.sandboxes {
            self.ctx.hub.unregister_sandbox(&s.summary.id);
        }
        remove_pod_files(&self.key, &self.ctx.cfg.pods_dir, &self.ctx.cfg.log_dir)
    }

    /// The kubelet's last word on a deleted pod: delete it with no grace, for this UID
    /// only.
    pub(super) async fn confirm_deletion(&self, pod: &Pod) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.key.namespace);
        let dp = berth_watch::delete_exactly(pod.metadata.uid.clone(), Some(0), false);
        match api.delete(&self.key.name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) || crate::error::is_conflict(&e) => Ok(()),
            Err(e) => Err(Error::Api(format!("delete pod {}", self.key), Box::new(e))),
        }
    }
}

impl Worker {
    /// Evicts the pod, as the eviction manager asked: its containers stop (a second
    /// to go, as for the kubelet's hard thresholds) and it ends Failed.
    pub(super) async fn evict(&mut self, pod: &Pod, message: String) -> Result<Next> {
        if self.evicted.is_none() {
            self.ctx.recorder.pod(pod, "", Warning, "Evicted", &message);
            self.evicted = Some(message);
        }
        let obs = self.observe().await?;
        self.stop_everything(pod, &obs, Duration::from_secs(1))
            .await?;
        let obs = self.observe().await?;
        self.write_status(pod, &obs).await?;
        Ok(Next::Idle)
    }
}

/// An evicted pod's status, as the kubelet writes it: Failed, reason Evicted, and the
/// DisruptionTarget condition.
pub(super) fn evicted_status(st: &mut PodStatus, message: &str) {
    st.phase = Some("Failed".into());
    st.reason = Some("Evicted".into());
    st.message = Some(message.to_string());
    let conditions = st.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("TerminationByKubelet".into()),
        message: Some(message.to_string()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        ..Default::default()
    });
}
