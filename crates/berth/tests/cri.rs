//! The CRI endpoint (`berth cri`) driven as crictl and critest drive a runtime: a gRPC
//! client generated from the CRI protos on the unix socket, doing what `crictl runp,
//! create, start, ps, pods, exec, logs, stats, stop, rm, rmp, images, pull, inspecti,
//! rmi` do, and what critest checks of lifecycles, filters, security contexts,
//! namespaces, DNS, logs and errors. Needs root (real namespaces, cgroups, bridges).

mod common;
#[path = "cri/endpoint.rs"]
mod endpoint;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use k8s_cri::v1 as pb;
use tonic::Code;

use endpoint::Cri;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A sandbox config as the kubelet sends it for pod `name`.
fn pod(name: &str, log_dir: &Path) -> pb::PodSandboxConfig {
    let uid = format!("{name}-{}", std::process::id());
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(pb::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: labels(&[("app", name), ("tier", "cri-test")]),
        annotations: labels(&[("note", "from the test")]),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: berth_cgroups::naming::pod_parent(
                berth_cgroups::naming::QosClass::Burstable,
                &uid,
            ),
            // What the kubelet sends for a pod without shareProcessNamespace (CRI's
            // zero value, POD, would share one PID namespace).
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A busybox container running `cmd`.
fn ctr(name: &str, cmd: &[&str]) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(pb::ImageSpec {
            image: "localhost/busybox:1".into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: labels(&[("container", name)]),
        ..Default::default()
    }
}

async fn exec_sync(
    rt: &mut pb::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
    cmd: &[&str],
) -> pb::ExecSyncResponse {
    rt.exec_sync(pb::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 20,
    })
    .await
    .unwrap()
    .into_inner()
}

fn out(r: &pb::ExecSyncResponse) -> String {
    assert_eq!(
        r.exit_code,
        0,
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// crictl inspect: the container's status.
async fn container_status(
    rt: &mut pb::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Result<pb::ContainerStatus, tonic::Status> {
    Ok(rt
        .container_status(pb::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .expect("a status"))
}

/// crictl inspecti: the image, or None.
async fn image_status(
    img: &mut pb::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    name: &str,
) -> Option<pb::Image> {
    img.image_status(pb::ImageStatusRequest {
        image: Some(pb::ImageSpec {
            image: name.into(),
            ..Default::default()
        }),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .image
}

/// Waits until `path` holds `needle`.
async fn wait_log(path: &Path, needle: &str) -> String {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if t.contains(needle) {
            return t;
        }
        assert!(
            std::time::Instant::now() < end,
            "{} never held {needle:?}: {t:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_pod_goes_through_its_whole_life_as_crictl_drives_it() {
    let mut cri = Cri::start();
    let log_dir = cri.env.path("pod-logs");
    let octet = cri.cidr_octet;
    runtime().block_on(async {
        let (mut rt, mut img) = cri.clients().await;
        // crictl version / info / runtime config.
        let v = rt
            .version(pb::VersionRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                v.version.as_str(),
                v.runtime_name.as_str(),
                v.runtime_api_version.as_str()
            ),
            ("0.1.0", "berth", "v1")
        );
        let st = rt
            .status(pb::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
        let conds = st.status.unwrap().conditions;
        for kind in ["RuntimeReady", "NetworkReady"] {
            assert!(
                conds.iter().any(|c| c.r#type == kind && c.status),
                "{kind} in {conds:?}"
            );
        }
        assert!(st.info["config"].contains("cgroupfs"), "{:?}", st.info);
        let rc = rt
            .runtime_config(pb::RuntimeConfigRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            rc.linux.unwrap().cgroup_driver,
            pb::CgroupDriver::Cgroupfs as i32
        );
        // Events from the start, as the kubelet's evented PLEG reads them.
        let mut events = rt
            .get_container_events(pb::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();

        // crictl runp.
        let sb = rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(pod("web", &log_dir)),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let s = rt
            .pod_sandbox_status(pb::PodSandboxStatusRequest {
                pod_sandbox_id: sb.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        let status = s.status.unwrap();
        assert_eq!(status.state, pb::PodSandboxState::SandboxReady as i32);
        let ip = status.network.unwrap().ip;
        assert!(ip.starts_with(&format!("10.46.{octet}.")), "{ip}");
        assert_eq!(status.labels["app"], "web");
        assert_eq!(status.annotations["note"], "from the test");
        let ns = status.linux.unwrap().namespaces.unwrap().options.unwrap();
        assert_eq!(ns.network, pb::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, pb::NamespaceMode::Container as i32);
        assert!(s.info["info"].contains(&sb), "{:?}", s.info);

        // crictl pods, with each filter.
        let lister = rt.clone();
        let pods = |f: pb::PodSandboxFilter| {
            let mut rt = lister.clone();
            async move {
                rt.list_pod_sandbox(pb::ListPodSandboxRequest { filter: Some(f) })
                    .await
                    .unwrap()
                    .into_inner()
                    .items
                    .into_iter()
                    .map(|p| p.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(pods(Default::default()).await, vec![sb.clone()]);
        assert_eq!(
            pods(pb::PodSandboxFilter {
                id: sb[..8].into(),
                ..Default::default()
            })
            .await,
            vec![sb.clone()]
        );
        assert_eq!(
            pods(pb::PodSandboxFilter {
                label_selector: labels(&[("app", "web"), ("tier", "cri-test")]),
                ..Default::default()
            })
            .await,
            vec![sb.clone()]
        );
        assert!(pods(pb::PodSandboxFilter {
            label_selector: labels(&[("app", "db")]),
            ..Default::default()
        })
        .await
        .is_empty());
        assert!(pods(pb::PodSandboxFilter {
            state: Some(pb::PodSandboxStateValue {
                state: pb::PodSandboxState::SandboxNotready as i32
            }),
            ..Default::default()
        })
        .await
        .is_empty());

        // crictl create + start.
        let c = rt
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: sb.clone(),
                config: Some(ctr(
                    "web",
                    &[
                        "sh",
                        "-c",
                        "echo hello-cri; echo to-err >&2; exec sleep 1000",
                    ],
                )),
                sandbox_config: Some(pod("web", &log_dir)),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        let ps = |state: pb::ContainerState| {
            let mut rt = lister.clone();
            let sb = sb.clone();
            async move {
                rt.list_containers(pb::ListContainersRequest {
                    filter: Some(pb::ContainerFilter {
                        pod_sandbox_id: sb,
                        state: Some(pb::ContainerStateValue {
                            state: state as i32,
                        }),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            ps(pb::ContainerState::ContainerCreated).await,
            vec![c.clone()]
        );
        assert!(ps(pb::ContainerState::ContainerRunning).await.is_empty());
        rt.start_container(pb::StartContainerRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap();
        assert_eq!(
            ps(pb::ContainerState::ContainerRunning).await,
            vec![c.clone()]
        );
        assert!(ps(pb::ContainerState::ContainerCreated).await.is_empty());
        let cs = container_status(&mut rt, &c).await.unwrap();
        assert_eq!(cs.state, pb::ContainerState::ContainerRunning as i32);
        assert!(cs.started_at > 0 && cs.created_at > 0);
        assert_eq!(cs.metadata.unwrap().name, "web");
        assert_eq!(cs.image.unwrap().image, "localhost/busybox:1");
        assert!(cs.image_ref.starts_with("sha256:"), "{}", cs.image_ref);
        let log_path = log_dir.join("web/0.log");
        assert_eq!(Path::new(&cs.log_path), log_path);

        // crictl exec (ExecSync): output, exit codes, the timeout.
        assert_eq!(out(&exec_sync(&mut rt, &c, &["hostname"]).await), "web\n");
        let resolv = out(&exec_sync(&mut rt, &c, &["cat", "/etc/resolv.conf"]).await);
        assert!(
            resolv.contains("nameserver 10.96.0.10")
                && resolv.contains("search default.svc.cluster.local")
                && resolv.contains("options ndots:5"),
            "{resolv}"
        );
        assert_eq!(
            exec_sync(&mut rt, &c, &["sh", "-c", "echo out; echo err >&2; exit 3"]).await,
            pb::ExecSyncResponse {
                stdout: b"out\n".to_vec(),
                stderr: b"err\n".to_vec(),
                exit_code: 3
            }
        );
        let timed_out = rt
            .exec_sync(pb::ExecSyncRequest {
                container_id: c.clone(),
                cmd: vec!["sleep".into(), "30".into()],
                timeout: 1,
            })
            .await
            .expect_err("a command past its timeout");
        assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out:?}");

        // crictl logs: CRI's log format at the path given, reopened after rotation.
        let t = wait_log(&log_path, "stdout F hello-cri").await;
        assert!(t.contains(" stderr F to-err"), "{t}");
        let first = t.lines().next().unwrap();
        assert!(
            jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.fZ", first.split(' ').next().unwrap())
                .is_ok()
                || first
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse::<jiff::Timestamp>()
                    .is_ok(),
            "{first}"
        );
        std::fs::rename(&log_path, log_dir.join("web/0.log.1")).unwrap();
        rt.reopen_container_log(pb::ReopenContainerLogRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap();
        out(&exec_sync(
            &mut rt,
            &c,
            &["sh", "-c", "echo after-rotation > /proc/1/fd/1"],
        )
        .await);
        wait_log(&log_path, "stdout F after-rotation").await;

        // crictl stats / statsp.
        let stats = rt
            .container_stats(pb::ContainerStatsRequest {
                container_id: c.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        assert_eq!(stats.attributes.as_ref().unwrap().id, c);
        assert_eq!(
            stats.attributes.as_ref().unwrap().labels["container"],
            "web"
        );
        assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
        assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
        let listed = rt
            .list_container_stats(pb::ListContainerStatsRequest {
                filter: Some(pb::ContainerStatsFilter {
                    pod_sandbox_id: sb.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert_eq!(listed.len(), 1);
        let ps_stats = rt
            .pod_sandbox_stats(pb::PodSandboxStatsRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let linux = ps_stats.linux.unwrap();
        assert!(linux.process.unwrap().process_count.unwrap().value >= 1);
        assert_eq!(
            linux.network.unwrap().default_interface.unwrap().name,
            "eth0"
        );
        assert_eq!(linux.containers.len(), 1);
        let all = rt
            .list_pod_sandbox_stats(pb::ListPodSandboxStatsRequest {
                filter: Some(pb::PodSandboxStatsFilter {
                    label_selector: labels(&[("app", "web")]),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert_eq!(all.len(), 1);

        // crictl stop: sleep as PID 1 ignores SIGTERM, so the timeout's SIGKILL ends it.
        rt.stop_container(pb::StopContainerRequest {
            container_id: c.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
        let cs = container_status(&mut rt, &c).await.unwrap();
        assert_eq!(cs.state, pb::ContainerState::ContainerExited as i32);
        assert_eq!(cs.exit_code, 137, "{cs:?}");
        assert!(cs.finished_at >= cs.started_at);
        assert_eq!(
            ps(pb::ContainerState::ContainerExited).await,
            vec![c.clone()]
        );

        // crictl rm, rmp.
        rt.remove_container(pb::RemoveContainerRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap();
        let gone = container_status(&mut rt, &c)
            .await
            .expect_err("a removed container");
        assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
        // The events of the container's life, in order.
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.message())
                .await
                .unwrap_or_else(|_| panic!("events so far: {seen:?}"))
                .unwrap()
                .unwrap();
            if ev.container_id == c {
                seen.push(ev.container_event_type);
            }
        }
        assert_eq!(
            seen,
            [
                pb::ContainerEventType::ContainerCreatedEvent as i32,
                pb::ContainerEventType::ContainerStartedEvent as i32,
                pb::ContainerEventType::ContainerStoppedEvent as i32,
                pb::ContainerEventType::ContainerDeletedEvent as i32,
            ]
        );
        rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await
        .unwrap();
        assert_eq!(
            pods(pb::PodSandboxFilter {
                state: Some(pb::PodSandboxStateValue {
                    state: pb::PodSandboxState::SandboxNotready as i32
                }),
                ..Default::default()
            })
            .await,
            vec![sb.clone()]
        );
        for _ in 0..2 {
            // Removing twice is not an error (CRI: idempotent).
            rt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await
            .unwrap();
        }
        assert!(pods(Default::default()).await.is_empty());

        // crictl images / inspecti / imagefsinfo.
        let images = img
            .list_images(pb::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert!(
            images
                .iter()
                .any(|i| i.repo_tags.contains(&"localhost/busybox:1".to_string())),
            "{images:?}"
        );
        let found = image_status(&mut img, "localhost/busybox:1")
            .await
            .expect("the stored image");
        assert!(
            found.id.starts_with("sha256:") && found.size > 0,
            "{found:?}"
        );
        let missing = image_status(&mut img, "localhost/nothing:1").await;
        assert!(missing.is_none(), "CRI: a missing image is no error");
        let fs = img
            .image_fs_info(pb::ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .image_filesystems;
        assert!(fs[0].used_bytes.unwrap().value > 0, "{fs:?}");
    });
    let st = cri.stop().expect("berth cri ran");
    assert!(st.success(), "berth cri ended with {st}:\n{}", cri.log());
    assert!(!cri.socket.exists(), "the socket is removed on exit");
}
