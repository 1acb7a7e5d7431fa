//! Probes and lifecycle hooks as the kubelet runs them: exec (in the container),
//! httpGet, tcpSocket and grpc (to the pod's address), with every timing field. Each probe
//! of a running container is a task of its own; it tells the pod worker when its
//! result changes, and the worker acts (restart on liveness failure, readiness into
//! status).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_engine::cri::RuntimeService;
use berth_engine::Core;
use k8s_openapi::api::core::v1::{
    Container, ExecAction, GRPCAction, HTTPGetAction, LifecycleHandler, Probe,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// livenessProbe.
    Liveness,
    /// readinessProbe.
    Readiness,
    /// startupProbe.
    Startup,
}

impl Kind {
    /// The name events use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// One probe's verdict so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// None until the threshold is reached either way.
    pub ok: Option<bool>,
    /// The last failure's message.
    pub message: String,
    /// Failures so far (reported once per new failure, for events).
    pub failures: u64,
}

/// Results of all probes of one pod, keyed by container ID and kind.
#[derive(Clone, Default)]
pub struct Results {
    inner: Arc<Mutex<HashMap<(String, Kind), Verdict>>>,
}

impl Results {
    /// The verdict of a container's probe.
    pub fn get(&self, id: &str, kind: Kind) -> Verdict {
        self.inner
            .lock()
            .map(|m| m.get(&(id.to_string(), kind)).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn set(&self, id: &str, kind: Kind, v: Verdict) -> bool {
        let Ok(mut m) = self.inner.lock() else {
            return false;
        };
        let key = (id.to_string(), kind);
        if m.get(&key) == Some(&v) {
            return false;
        }
        m.insert(key, v);
        true
    }

    /// Forgets containers not in `live`.
    pub fn retain(&self, live: &[String]) {
        if let Ok(mut m) = self.inner.lock() {
            m.retain(|(id, _), _| live.contains(id));
        }
    }
}

/// What a probe or hook reaches: the container and the pod's address.
#[derive(Clone)]
pub struct Target {
    /// The engine.
    pub core: Core,
    /// The container.
    pub container_id: String,
    /// The pod's (or, with hostNetwork, the node's) address.
    pub ip: IpAddr,
    /// The container spec (named ports).
    pub container: Container,
}

/// A port by number or by the name of one of the container's ports.
fn port(t: &Target, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(s) => {
            if let Ok(n) = s.parse::<u16>() {
                return Ok(n);
            }
            t.container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s))
                .map(|p| p.container_port as u16)
                .ok_or_else(|| format!("container {} has no port named {s:?}", t.container.name))
        }
    }
}

async fn exec(t: &Target, e: &ExecAction, timeout: Duration) -> Result<String, String> {
    let cmd = e.command.clone().unwrap_or_default();
    let core = t.core.clone();
    let id = t.container_id.clone();
    let r = tokio::task::spawn_blocking(move || core.exec_sync(&id, &cmd, Some(timeout)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&[r.stdout, r.stderr].concat()).into_owned();
    if r.timed_out {
        Err(format!("command timed out after {}s", timeout.as_secs()))
    } else if r.exit_code != 0 {
        Err(format!(
            "command exited with {}: {}",
            r.exit_code,
            out.trim()
        ))
    } else {
        Ok(out)
    }
}

async fn http_get(t: &Target, h: &HTTPGetAction, timeout: Duration) -> Result<String, String> {
    let p = port(t, &h.port)?;
    let host = h.host.clone().unwrap_or_else(|| t.ip.to_string());
    let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let url = format!("{scheme}://{host}:{p}{path}");
    // The kubelet does not verify a probe's certificate, nor follow redirects to other
    // hosts.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::limited(10))
        .user_agent("kube-probe/1.32")
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client.get(&url);
    for hd in h.http_headers.iter().flatten() {
        req = req.header(&hd.name, &hd.value);
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("Get \"{url}\": context deadline exceeded")
        } else {
            format!("Get \"{url}\": {}", root_cause(&e))
        }
    })?;
    let code = resp.status().as_u16();
    if (200..400).contains(&code) {
        Ok(format!("HTTP probe succeeded with statuscode: {code}"))
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

async fn tcp(
    t: &Target,
    p: &IntOrString,
    host: Option<&str>,
    timeout: Duration,
) -> Result<String, String> {
    let p = port(t, p)?;
    let host = host.map(str::to_string).unwrap_or_else(|| t.ip.to_string());
    let addr = if host.contains(':') {
        format!("[{host}]:{p}")
    } else {
        format!("{host}:{p}")
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(String::new()),
        Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {e}")),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// The gRPC health checking protocol (grpc.health.v1.Health/Check) to the pod's
/// address, in plain text as the kubelet speaks it; SERVING is healthy.
async fn grpc(t: &Target, g: &GRPCAction, timeout: Duration) -> Result<String, String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let port = u16::try_from(g.port).map_err(|_| format!("port {} is out of range", g.port))?;
    let addr = match t.ip {
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        IpAddr::V4(ip) => format!("{ip}:{port}"),
    };
    let service = g.service.clone().unwrap_or_default();
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent("kube-probe/1.32")
        .map_err(|e| e.to_string())?;
    let channel = ep.connect().await.map_err(|e| {
        format!(
            "timeout: failed to connect service {addr:?} within {}s: {}",
            timeout.as_secs(),
            root_cause(&e)
        )
    })?;
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            ),
            tonic::Code::Unimplemented => format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                s.message()
            ),
            _ => format!("error: health rpc probe failed: {}", s.message()),
        })?;
    let status = r.into_inner().status();
    if status == ServingStatus::Serving {
        Ok(String::new())
    } else {
        Err(format!(
            "service unhealthy (responded with {:?})",
            status.as_str_name()
        ))
    }
}

/// Runs a probe once.
pub async fn run_once(t: &Target, p: &Probe) -> Result<String, String> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &p.exec {
        exec(t, e, timeout).await
    } else if let Some(h) = &p.http_get {
        http_get(t, h, timeout).await
    } else if let Some(s) = &p.tcp_socket {
        tcp(t, &s.port, s.host.as_deref(), timeout).await
    } else if let Some(g) = &p.grpc {
        grpc(t, g, timeout).await
    } else {
        Err("the probe has no handler (exec, httpGet, tcpSocket, grpc)".into())
    }
}

/// Runs a lifecycle hook (postStart or preStop): exec, httpGet or sleep.
pub async fn run_hook(t: &Target, h: &LifecycleHandler, timeout: Duration) -> Result<(), String> {
    if let Some(e) = &h.exec {
        exec(t, e, timeout).await.map(drop)
    } else if let Some(g) = &h.http_get {
        http_get(t, g, timeout).await.map(drop)
    } else if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        Ok(())
    } else if let Some(s) = &h.tcp_socket {
        tcp(t, &s.port, s.host.as_deref(), timeout).await.map(drop)
    } else {
        Err("the hook has no handler (exec, httpGet, sleep)".into())
    }
}

/// Probes one container with `p` until the task is aborted: after the initial delay,
/// every period; the verdict flips after `failureThreshold` failures or
/// `successThreshold` successes in a row. A startup probe stops once it succeeded.
pub async fn probe_loop(t: Target, kind: Kind, p: Probe, results: Results, wake: Arc<Notify>) {
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    let success_threshold = p.success_threshold.unwrap_or(1).max(1) as u32;
    let failure_threshold = p.failure_threshold.unwrap_or(3).max(1) as u32;
    tokio::time::sleep(Duration::from_secs(
        p.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let (mut ok_run, mut fail_run, mut failures) = (0u32, 0u32, 0u64);
    let mut verdict = Verdict::default();
    loop {
        match run_once(&t, &p).await {
            Ok(_) => {
                ok_run += 1;
                fail_run = 0;
                if ok_run >= success_threshold {
                    verdict.ok = Some(true);
                }
            }
            Err(msg) => {
                fail_run += 1;
                ok_run = 0;
                failures += 1;
                verdict.failures = failures;
                verdict.message = msg;
                if fail_run >= failure_threshold {
                    verdict.ok = Some(false);
                    if kind == Kind::Liveness || kind == Kind::Startup {
                        // The worker restarts the container; count afresh after.
                        fail_run = 0;
                    }
                }
            }
        }
        if results.set(&t.container_id, kind, verdict.clone()) {
            wake.notify_one();
        }
        if kind == Kind::Startup && verdict.ok == Some(true) {
            return;
        }
        tokio::time::sleep(period).await;
    }
}
