//! [`RuntimeService`] for the core: each CRI verb, on the core's operations.

use std::time::Duration;

use crate::cri::*;
use crate::error::{Error, Result};
use crate::events::EventStream;
use crate::exec::{AttachSession, ExecSession};

use super::start::StartMode;
use super::Core;

impl RuntimeService for Core {
    fn version(&self) -> VersionInfo {
        VersionInfo {
            runtime_name: "berth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }
    }

    fn status(&self) -> Vec<RuntimeCondition> {
        let runtime_ok = self.runtime_path().is_file() && self.monitor_path().is_file();
        let cond = |kind: &str, ok: bool, reason: &str, message: String| RuntimeCondition {
            kind: kind.into(),
            status: ok,
            reason: if ok { String::new() } else { reason.into() },
            message: if ok { String::new() } else { message },
        };
        let cni = berth_net::cni::default_network(&self.dirs().pod_cni());
        let pn = self.pod_network();
        let net_ok = cni.is_some() || berth_net::network::parse_cidr("pod CIDR", &pn.cidr).is_ok();
        vec![
            cond(
                "RuntimeReady",
                runtime_ok,
                "RuntimeBinariesMissing",
                format!(
                    "{} or {} is missing",
                    self.runtime_path().display(),
                    self.monitor_path().display()
                ),
            ),
            cond(
                "NetworkReady",
                net_ok,
                "NetworkPluginNotReady",
                format!(
                    "the pod CIDR {:?} is not a CIDR and no CNI configuration is present",
                    pn.cidr
                ),
            ),
        ]
    }

    fn update_runtime_config(&self, pod_cidr: &str) -> Result<()> {
        if pod_cidr.is_empty() {
            return Ok(());
        }
        self.set_pod_cidr(pod_cidr)
    }

    fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<String> {
        let mut c = config.clone();
        c.infra = true;
        self.make_sandbox(&c, true)
    }

    fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.stop_sandbox(id)
    }

    fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.remove_sandbox(id)
    }

    fn pod_sandbox_status(&self, id: &str) -> Result<SandboxStatus> {
        self.sandbox_status(id)
    }

    fn list_pod_sandbox(&self, filter: &SandboxFilter) -> Result<Vec<SandboxSummary>> {
        self.list_sandboxes(filter)
    }

    fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String> {
        Ok(self
            .create_container_in(sandbox_id, config, serde_json::Value::Null)?
            .id)
    }

    fn start_container(&self, id: &str) -> Result<()> {
        self.start_container_with(id, StartMode::Detached).map(drop)
    }

    fn stop_container(&self, id: &str, timeout: Duration) -> Result<()> {
        self.find(id)?;
        self.stop_container_id(id, timeout)
    }

    fn remove_container(&self, id: &str) -> Result<()> {
        self.remove_container_id(id)
    }

    fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerSummary>> {
        self.list_container_summaries(filter)
    }

    fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        Ok(self.status_of(&self.find(id)?))
    }

    fn update_container_resources(&self, id: &str, resources: &Resources) -> Result<()> {
        let rec = self.find(id)?;
        if !self.container_state(&rec).is_running() {
            return Err(Error::Conflict(format!(
                "container {} is not running: its limits are set when it starts",
                rec.name
            )));
        }
        let (res, _) = super::ocispec::resources(resources, Vec::new(), 0)?;
        let mut cmd = self.runtime(&["update", "--resources", "-", &rec.id]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io("run berth-runtime update", e))?;
        if let Some(mut i) = child.stdin.take() {
            let _ = std::io::Write::write_all(
                &mut i,
                &serde_json::to_vec(&res).expect("resources serialize"),
            );
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io("run berth-runtime update", e))?;
        if !out.status.success() {
            return Err(Error::Invalid(format!(
                "update container {}: {}",
                rec.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut updated = rec.clone();
        updated.config.resources = resources.clone();
        updated.save(&self.dirs().container(&rec.id).dir)
    }

    fn reopen_container_log(&self, id: &str) -> Result<()> {
        let rec = self.find(id)?;
        let paths = self.dirs().container(&rec.id);
        let monitor = super::status::monitor_of(&paths)
            .filter(|(p, s)| super::status::alive(*p, *s))
            .filter(|_| self.container_state(&rec).is_running());
        let Some((pid, _)) = monitor else {
            return Err(Error::Conflict(format!(
                "container {} is not running: there is no log writer to reopen",
                rec.name
            )));
        };
        berth_cgroups::sys::kill(pid, berth_monitor::sys::REOPEN_LOG).map_err(|e| {
            Error::io(
                format!("ask the monitor of {} to reopen its log", rec.name),
                e,
            )
        })?;
        // The monitor makes the new file as it reopens (the caller renamed the old one
        // away; if not, it goes on appending to the same file).
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !rec.log_path.exists() {
            if std::time::Instant::now() > end {
                return Err(Error::Runtime(format!(
                    "the monitor of {} did not reopen {}",
                    rec.name,
                    rec.log_path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecSyncResponse> {
        self.exec_sync_in(id, cmd, timeout)
    }

    fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecSession> {
        self.exec_in(id, request)
    }

    fn attach(&self, id: &str, terminal_size: Option<(u16, u16)>) -> Result<AttachSession> {
        self.attach_to(id, terminal_size)
    }

    fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<std::net::TcpStream> {
        self.port_forward_to(sandbox_id, port)
    }

    fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        Ok(self.stats_of(&self.find(id)?))
    }

    fn list_container_stats(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStats>> {
        let ids: Vec<String> = self
            .list_container_summaries(filter)?
            .into_iter()
            .map(|s| s.id)
            .collect();
        Ok(self
            .container_records()?
            .iter()
            .filter(|r| ids.contains(&r.id))
            .map(|r| self.stats_of(r))
            .collect())
    }

    fn container_events(&self) -> Result<EventStream> {
        EventStream::open(&self.dirs().events())
    }
}
