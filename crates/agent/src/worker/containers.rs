//! Starting containers: the image by its pull policy, the next attempt made and
//! started with its postStart hook, restart back-off (CrashLoopBackOff) and the
//! waiting reasons a container that can't start shows; its probes.

use std::time::{Duration, Instant, SystemTime};

use berth_engine::cri::{ContainerStatus, ImageService, RuntimeService};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::{
    field_path, grace_of, humanize, Pass, Worker, BACKOFF_MAX, BACKOFF_RESET, BACKOFF_START,
};
use crate::envvars::Sources;
use crate::error::{Error, Result};
use crate::probes::{self, Kind, Target};
use crate::recorder::EventType::{Normal, Warning};
use crate::status::Observed;
use crate::{images, podspec};

impl Worker {
    /// Whether the ended container may start again now; else how long until it may
    /// (CrashLoopBackOff: 10 s doubling to 5 min, reset after 10 min of running).
    pub(super) fn may_restart(
        &mut self,
        name: &str,
        last: &ContainerStatus,
    ) -> Result<(), Duration> {
        let ran = Duration::from_nanos((last.finished_at - last.started_at).max(0) as u64);
        if ran >= BACKOFF_RESET {
            self.backoff.remove(name);
        }
        let Some(delay) = self.backoff.get(name).copied() else {
            self.backoff.insert(name.to_string(), BACKOFF_START);
            return Ok(());
        };
        let finished =
            SystemTime::UNIX_EPOCH + Duration::from_nanos(last.finished_at.max(0) as u64);
        let since = SystemTime::now()
            .duration_since(finished)
            .unwrap_or_default();
        if since < delay {
            return Err(delay - since);
        }
        self.backoff
            .insert(name.to_string(), (delay * 2).min(BACKOFF_MAX));
        Ok(())
    }

    pub(super) fn back_off(&mut self, pod: &Pod, c: &Container, init: bool) {
        let delay = self.backoff.get(&c.name).copied().unwrap_or(BACKOFF_START);
        let message = format!(
            "back-off {} restarting failed container={} pod={}_{}({})",
            humanize(delay),
            c.name,
            self.key.name,
            self.key.namespace,
            self.key.uid
        );
        let fresh = self
            .waiting
            .get(&c.name)
            .is_none_or(|(r, m)| r != "CrashLoopBackOff" || *m != message);
        if fresh {
            self.ctx.recorder.pod(
                pod,
                &field_path(c, init),
                Warning,
                "BackOff",
                "Back-off restarting failed container",
            );
        }
        self.waiting
            .insert(c.name.clone(), ("CrashLoopBackOff".into(), message));
    }

    /// A container that could not be made: a Failed event and the waiting reason.
    pub(super) fn cannot_create(
        &mut self,
        pod: &Pod,
        c: &Container,
        fp: &str,
        reason: &str,
        message: &str,
    ) {
        self.ctx
            .recorder
            .pod(pod, fp, Warning, "Failed", &format!("Error: {message}"));
        self.waiting
            .insert(c.name.clone(), (reason.into(), message.into()));
    }

    pub(super) fn run_failed(&mut self, pod: &Pod, c: &Container, message: &str) {
        self.ctx.recorder.pod(
            pod,
            &field_path(c, false),
            Warning,
            "Failed",
            &format!("Error: {message}"),
        );
        self.waiting
            .insert(c.name.clone(), ("RunContainerError".into(), message.into()));
    }

    /// Pulls the image if its policy says so; false (with the waiting reason set) when
    /// the container can't start for want of it.
    pub(super) async fn ensure_image(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
    ) -> Result<bool> {
        let image = c.image.clone().unwrap_or_default();
        let fp = field_path(c, init);
        if image.is_empty() {
            self.waiting.insert(
                c.name.clone(),
                (
                    "InvalidImageName".into(),
                    "the container has no image".into(),
                ),
            );
            return Ok(false);
        }
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| images::default_pull_policy(&image).into());
        let img = image.clone();
        let present = self
            .ctx
            .engine(move |core| core.image_status(&img))
            .await
            .ok()
            .flatten()
            .is_some();
        let pull = match policy.as_str() {
            "Never" => {
                if !present {
                    let m = format!(
                        "Container image \"{image}\" is not present with pull policy of Never"
                    );
                    self.ctx
                        .recorder
                        .pod(pod, &fp, Warning, "ErrImageNeverPull", &m);
                    self.waiting
                        .insert(c.name.clone(), ("ErrImageNeverPull".into(), m));
                    return Ok(false);
                }
                false
            }
            "IfNotPresent" => !present,
            _ => true,
        };
        if !pull {
            self.ctx.recorder.pod(
                pod,
                &fp,
                Normal,
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(true);
        }
        if let Some((delay, since)) = self.pull_backoff.get(&image) {
            if since.elapsed() < *delay {
                let m = format!("Back-off pulling image \"{image}\"");
                self.ctx.recorder.pod(pod, &fp, Normal, "BackOff", &m);
                self.waiting
                    .insert(c.name.clone(), ("ImagePullBackOff".into(), m));
                return Ok(false);
            }
        }
        self.ctx.recorder.pod(
            pod,
            &fp,
            Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        let auth = images::auth_for(&self.ctx.client, pod, &image).await?;
        let t0 = Instant::now();
        let img = image.clone();
        match self
            .ctx
            .engine(move |core| core.pull_image(&img, auth.as_ref()))
            .await
        {
            Ok(_) => {
                self.pull_backoff.remove(&image);
                self.ctx.recorder.pod(
                    pod,
                    &fp,
                    Normal,
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        t0.elapsed().as_secs_f64()
                    ),
                );
                Ok(true)
            }
            Err(e) => {
                let delay = self
                    .pull_backoff
                    .get(&image)
                    .map_or(BACKOFF_START, |(d, _)| (*d * 2).min(BACKOFF_MAX));
                self.pull_backoff
                    .insert(image.clone(), (delay, Instant::now()));
                let m = format!("Failed to pull image \"{image}\": {e}");
                self.ctx.recorder.pod(pod, &fp, Warning, "Failed", &m);
                self.ctx
                    .recorder
                    .pod(pod, &fp, Warning, "Failed", "Error: ErrImagePull");
                self.waiting
                    .insert(c.name.clone(), ("ErrImagePull".into(), m));
                Ok(false)
            }
        }
    }

    /// Starts an ended container again, or (in back-off) says how long until it may.
    pub(super) async fn restart(
        &mut self,
        p: &Pass<'_>,
        sources: &mut Sources,
        c: &Container,
        init: bool,
        last: &ContainerStatus,
    ) -> Result<Option<Duration>> {
        match self.may_restart(&c.name, last) {
            Ok(()) => self.start(p, sources, c, init).await,
            Err(d) => {
                self.back_off(p.pod, c, init);
                Ok(Some(d))
            }
        }
    }

    /// Creates and starts the next attempt of a container; returns when to look again
    /// if it could not start.
    pub(super) async fn start(
        &mut self,
        p: &Pass<'_>,
        sources: &mut Sources,
        c: &Container,
        init: bool,
    ) -> Result<Option<Duration>> {
        let (pod, obs, vols, facts, ip) = (p.pod, p.obs, p.vols, p.facts, p.ip);
        let sandbox_id = p.sandbox_id;
        let fp = field_path(c, init);
        if !self.ensure_image(pod, c, init).await? {
            return Ok(Some(Duration::from_secs(2)));
        }
        let env = match crate::envvars::resolve(facts, c, sources).await {
            Ok(env) => env,
            Err(e @ (Error::Missing(_) | Error::Spec(_))) => {
                self.cannot_create(pod, c, &fp, "CreateContainerConfigError", &e.to_string());
                return Ok(Some(Duration::from_secs(5)));
            }
            Err(e) => return Err(e),
        };
        let attempt = obs
            .attempts(&c.name, init)
            .first()
            .map_or(0, |a| a.summary.metadata.attempt + 1);
        let pod_dir = self.key.pod_dir(&self.ctx.cfg.pods_dir);
        let seccomp_root = podspec::seccomp_root(&self.ctx.cfg.pods_dir);
        let inputs = podspec::ContainerInputs {
            container: c,
            init,
            attempt,
            env,
            volumes: vols,
            pod_dir: &pod_dir,
            node_memory: crate::hostinfo::meminfo("MemTotal").unwrap_or(1 << 30),
            node: &self.ctx.cfg.node_name,
            seccomp_root: &seccomp_root,
        };
        let mut cfg = match podspec::container_config(pod, &inputs) {
            Ok(cfg) => cfg,
            Err(e) => {
                self.cannot_create(pod, c, &fp, "CreateContainerConfigError", &e.to_string());
                return Ok(Some(Duration::from_secs(5)));
            }
        };
        let devices = &self.ctx.devices;
        let with_devices = match devices.container_options(pod, c).await {
            Ok(answers) => crate::devices::apply(&answers, &mut cfg, &devices.cdi_spec_dirs()),
            Err(e) => Err(e),
        };
        if let Err(e) = with_devices {
            self.cannot_create(pod, c, &fp, "CreateContainerConfigError", &e);
            return Ok(Some(Duration::from_secs(5)));
        }
        let sb = sandbox_id.to_string();
        let id = match self
            .ctx
            .engine(move |core| core.create_container(&sb, &cfg))
            .await
        {
            Ok(id) => id,
            Err(e) => {
                self.cannot_create(pod, c, &fp, "CreateContainerError", &e.to_string());
                return Ok(Some(Duration::from_secs(5)));
            }
        };
        self.ctx.recorder.pod(
            pod,
            &fp,
            Normal,
            "Created",
            &format!("Created container {}", c.name),
        );
        // Attempts before the one before are no longer shown: removed.
        let old: Vec<String> = obs
            .attempts(&c.name, init)
            .iter()
            .skip(1)
            .map(|a| a.summary.id.clone())
            .collect();
        let sid = id.clone();
        let started = self
            .ctx
            .engine(move |core| {
                for o in &old {
                    let _ = core.remove_container(o);
                }
                core.start_container(&sid)
            })
            .await;
        self.waiting.remove(&c.name);
        if let Err(e) = started {
            self.run_failed(pod, c, &e.to_string());
            return Ok(Some(Duration::from_secs(1)));
        }
        self.ctx.recorder.pod(
            pod,
            &fp,
            Normal,
            "Started",
            &format!("Started container {}", c.name),
        );
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let t = Target {
                core: self.ctx.core.clone(),
                container_id: id.clone(),
                ip,
                container: c.clone(),
            };
            if let Err(m) = probes::run_hook(&t, h, Duration::from_secs(30)).await {
                self.ctx.recorder.pod(
                    pod,
                    &fp,
                    Warning,
                    "FailedPostStartHook",
                    &format!("PostStartHook failed: {m}"),
                );
                let kid = id.clone();
                self.ctx
                    .engine(move |core| core.stop_container(&kid, Duration::from_secs(2)))
                    .await?;
            }
        }
        Ok(None)
    }

    /// Starts the probe tasks a running container needs (liveness and readiness only
    /// once its startup probe passed).
    pub(super) fn ensure_probes(&mut self, c: &Container, id: &str, ip: std::net::IpAddr) {
        let started =
            c.startup_probe.is_none() || self.results.get(id, Kind::Startup).ok == Some(true);
        let wanted = [
            (Kind::Startup, c.startup_probe.as_ref(), true),
            (Kind::Liveness, c.liveness_probe.as_ref(), started),
            (Kind::Readiness, c.readiness_probe.as_ref(), started),
        ];
        for (kind, probe, now) in wanted {
            let (Some(p), true) = (probe, now) else {
                continue;
            };
            let key = (id.to_string(), kind);
            if self.probe_tasks.contains_key(&key) {
                continue;
            }
            let t = Target {
                core: self.ctx.core.clone(),
                container_id: id.to_string(),
                ip,
                container: c.clone(),
            };
            let task = tokio::spawn(probes::probe_loop(
                t,
                kind,
                p.clone(),
                self.results.clone(),
                self.wake.clone(),
            ));
            self.probe_tasks.insert(key, task);
        }
    }

    pub(super) fn forget_probes(&mut self, obs: &Observed) {
        let live: Vec<String> = obs
            .containers
            .iter()
            .filter(|c| c.summary.state.is_running())
            .map(|c| c.summary.id.clone())
            .collect();
        self.probe_tasks.retain(|(id, _), t| {
            let keep = live.contains(id);
            if !keep {
                t.abort();
            }
            keep
        });
        self.reported_failures
            .retain(|(id, _), _| live.contains(id));
        self.results.retain(&live);
    }

    /// Reports probe failures and restarts a container whose liveness or startup probe
    /// failed.
    pub(super) async fn check_health(
        &mut self,
        pod: &Pod,
        c: &Container,
        cs: &ContainerStatus,
    ) -> Result<Option<Duration>> {
        let id = &cs.summary.id;
        let fp = field_path(c, false);
        for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
            let v = self.results.get(id, kind);
            let key = (id.clone(), kind);
            let reported = self.reported_failures.get(&key).copied().unwrap_or(0);
            if v.failures > reported {
                self.reported_failures.insert(key, v.failures);
                self.ctx.recorder.pod(
                    pod,
                    &fp,
                    Warning,
                    "Unhealthy",
                    &format!("{} probe failed: {}", kind.name(), v.message),
                );
            }
            if (kind == Kind::Liveness || kind == Kind::Startup) && v.ok == Some(false) {
                self.ctx.recorder.pod(
                    pod,
                    &fp,
                    Normal,
                    "Killing",
                    &format!(
                        "Container {} failed {} probe, will be restarted",
                        c.name,
                        kind.name().to_lowercase()
                    ),
                );
                let grace = grace_of(pod);
                let kid = id.clone();
                self.ctx
                    .engine(move |core| core.stop_container(&kid, grace))
                    .await?;
                self.wake.notify_one();
                return Ok(Some(Duration::from_millis(100)));
            }
        }
        Ok(None)
    }
}
