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
        // The kubelet sends every containerPort; without a hostPort none is published
        // (an SCTP one included, which the node could not publish).
        port_mappings: vec![
            pb::PortMapping {
                protocol: pb::Protocol::Tcp as i32,
                container_port: 8080,
                ..Default::default()
            },
            pb::PortMapping {
                protocol: pb::Protocol::Sctp as i32,
                container_port: 9999,
                ..Default::default()
            },
        ],
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
    common::runtime().block_on(async {
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

/// Runs a sandbox and one container in it; returns (sandbox, container).
async fn run(
    rt: &mut pb::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    sandbox: pb::PodSandboxConfig,
    container: pb::ContainerConfig,
) -> (String, String) {
    let sb = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let c = start(rt, &sb, sandbox, container).await;
    (sb, c)
}

/// Creates and starts a container in sandbox `sb`.
async fn start(
    rt: &mut pb::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    sb: &str,
    sandbox: pb::PodSandboxConfig,
    container: pb::ContainerConfig,
) -> String {
    let c = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: sb.into(),
            config: Some(container),
            sandbox_config: Some(sandbox),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(pb::StartContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    c
}

fn with_security(
    mut c: pb::ContainerConfig,
    s: pb::LinuxContainerSecurityContext,
) -> pb::ContainerConfig {
    c.linux = Some(pb::LinuxContainerConfig {
        resources: c.linux.and_then(|l| l.resources),
        security_context: Some(s),
    });
    c
}

/// A field of /proc/self/status of a process run in a container (it has the
/// container's credentials, capabilities and seccomp filter; /proc/1 may be the
/// infra process in a shared PID namespace).
async fn init_status(
    rt: &mut pb::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    c: &str,
    field: &str,
) -> String {
    let s = out(&exec_sync(rt, c, &["cat", "/proc/self/status"]).await);
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} in {s}"))
        .trim()
        .to_string()
}

#[test]
fn security_contexts_and_namespaces_are_applied_as_critest_checks_them() {
    let cri = Cri::start();
    let log_dir = cri.env.path("pod-logs");
    common::runtime().block_on(async {
        let (mut rt, _) = cri.clients().await;
        let sleep = ["sleep", "1000"];

        // A pod sharing one PID namespace (shareProcessNamespace: CRI pid POD).
        let mut shared = pod("shared", &log_dir);
        shared
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options
            .as_mut()
            .unwrap()
            .pid = pb::NamespaceMode::Pod as i32;
        // A user, group and supplemental group; read-only root; no_new_privs; every
        // capability dropped; the runtime's default seccomp profile; a path masked.
        let locked = with_security(
            ctr("locked", &sleep),
            pb::LinuxContainerSecurityContext {
                run_as_user: Some(pb::Int64Value { value: 65534 }),
                run_as_group: Some(pb::Int64Value { value: 65534 }),
                supplemental_groups: vec![1234],
                readonly_rootfs: true,
                no_new_privs: true,
                capabilities: Some(pb::Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                seccomp: Some(pb::SecurityProfile {
                    profile_type: pb::security_profile::ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                masked_paths: vec!["/etc/os-release".into()],
                ..Default::default()
            },
        );
        let (sb, locked) = run(&mut rt, shared.clone(), locked).await;
        let id = out(&exec_sync(&mut rt, &locked, &["id"]).await);
        assert!(
            id.contains("uid=65534") && id.contains("gid=65534") && id.contains("1234"),
            "{id}"
        );
        let touch = exec_sync(&mut rt, &locked, &["touch", "/new-file"]).await;
        assert_ne!(touch.exit_code, 0, "the root filesystem is read-only");
        assert!(
            String::from_utf8_lossy(&touch.stderr).contains("Read-only"),
            "{touch:?}"
        );
        assert_eq!(init_status(&mut rt, &locked, "NoNewPrivs").await, "1");
        assert_eq!(
            init_status(&mut rt, &locked, "CapBnd").await,
            "0000000000000000"
        );
        assert_eq!(init_status(&mut rt, &locked, "Seccomp").await, "2");
        assert_eq!(
            out(&exec_sync(&mut rt, &locked, &["cat", "/etc/os-release"]).await),
            "",
            "a masked file reads empty"
        );
        // In the shared PID namespace, the infra process is PID 1 for everyone.
        assert_eq!(
            out(&exec_sync(&mut rt, &locked, &["cat", "/proc/1/comm"]).await),
            "berth-infra\n"
        );
        // Root with one capability added to none, no seccomp filter, and the
        // oom_score_adj the kubelet asks for guaranteed pods, clamped to what berth
        // may set (root here lacks CAP_SYS_RESOURCE) instead of failing.
        let mut open = with_security(
            ctr("open", &sleep),
            pb::LinuxContainerSecurityContext {
                capabilities: Some(pb::Capability {
                    drop_capabilities: vec!["ALL".into()],
                    add_capabilities: vec!["NET_BIND_SERVICE".into()],
                    ..Default::default()
                }),
                seccomp: Some(pb::SecurityProfile {
                    profile_type: pb::security_profile::ProfileType::Unconfined as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        open.linux.as_mut().unwrap().resources = Some(pb::LinuxContainerResources {
            oom_score_adj: -998,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        });
        let open = start(&mut rt, &sb, shared.clone(), open).await;
        let pids = out(&exec_sync(&mut rt, &open, &["pidof", "sleep"]).await);
        assert_eq!(pids.split_whitespace().count(), 2, "both sleeps: {pids}");
        let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let adj: i64 =
            out(&exec_sync(&mut rt, &open, &["sh", "-c", "cat /proc/$$/oom_score_adj"]).await)
                .trim()
                .parse()
                .unwrap();
        assert!(adj >= -998 && adj <= own.max(-998), "{adj}");
        // CapBnd is the set kept: NET_BIND_SERVICE is bit 10.
        assert_eq!(
            init_status(&mut rt, &open, "CapBnd").await,
            "0000000000000400"
        );
        assert_eq!(init_status(&mut rt, &open, "Seccomp").await, "0");
        let st = container_status(&mut rt, &open).await.unwrap();
        assert_eq!(
            st.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
            64 << 20
        );
        // UpdateContainerResources reaches the cgroup.
        rt.update_container_resources(pb::UpdateContainerResourcesRequest {
            container_id: open.clone(),
            linux: Some(pb::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        let st = container_status(&mut rt, &open).await.unwrap();
        assert_eq!(
            st.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
            96 << 20
        );

        // A pod on the host's network, PID and IPC namespaces.
        let mut host = pod("host", &log_dir);
        host.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options = Some(pb::NamespaceOption {
            network: pb::NamespaceMode::Node as i32,
            pid: pb::NamespaceMode::Node as i32,
            ipc: pb::NamespaceMode::Node as i32,
            ..Default::default()
        });
        let (host_sb, h) = run(&mut rt, host, ctr("h", &sleep)).await;
        let ns = |kind: &str| std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
        for kind in ["net", "pid", "ipc", "uts"] {
            let theirs =
                out(&exec_sync(&mut rt, &h, &["readlink", &format!("/proc/self/ns/{kind}")]).await);
            assert_eq!(
                theirs.trim(),
                ns(kind).to_string_lossy(),
                "the host's {kind} namespace"
            );
        }
        let st = rt
            .pod_sandbox_status(pb::PodSandboxStatusRequest {
                pod_sandbox_id: host_sb.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        let o = st.linux.unwrap().namespaces.unwrap().options.unwrap();
        assert_eq!(
            (o.network, o.pid, o.ipc),
            (
                pb::NamespaceMode::Node as i32,
                pb::NamespaceMode::Node as i32,
                pb::NamespaceMode::Node as i32
            )
        );
        for s in [sb, host_sb] {
            rt.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: s })
                .await
                .unwrap();
        }
    });
}

#[test]
fn bad_requests_get_grpc_codes_and_pulls_take_credentials() {
    let cri = Cri::start();
    let log_dir = cri.env.path("pod-logs");
    let reg = common::Registry::start(
        common::Auth::Htpasswd {
            user: "kube".into(),
            password: "cri-pass".into(),
        },
        false,
    );
    cri.env.busybox_image("localhost/bb:1");
    let dest = format!("{}/team/bb:1", reg.host);
    cri.env
        .ok(&["push", "-q", "--creds", "kube:cri-pass", "bb:1", &dest]);
    common::runtime().block_on(async {
        let (mut rt, mut img) = cri.clients().await;
        let code = |r: Result<tonic::Response<_>, tonic::Status>| -> (Code, String) {
            let e = r.map(|_: tonic::Response<()>| ()).expect_err("an error");
            (e.code(), e.message().to_string())
        };
        let unit = |r: Result<tonic::Response<pb::CreateContainerResponse>, tonic::Status>| {
            r.map(|x| x.map(|_| ()))
        };
        // A container in a sandbox that does not exist.
        let (c, m) = code(unit(
            rt.create_container(pb::CreateContainerRequest {
                pod_sandbox_id: "0123456789ab".into(),
                config: Some(ctr("x", &["true"])),
                sandbox_config: None,
            })
            .await,
        ));
        assert_eq!(c, Code::NotFound, "{m}");
        // Missing fields name themselves.
        let e = rt
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: "0123456789ab".into(),
                config: Some(pb::ContainerConfig::default()),
                sandbox_config: None,
            })
            .await
            .expect_err("no metadata");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("config.metadata"), "{e:?}");
        let e = rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(pod("h", &log_dir)),
                runtime_handler: "kata".into(),
            })
            .await
            .expect_err("an unknown handler");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("kata"), "{e:?}");
        let e = rt
            .start_container(pb::StartContainerRequest {
                container_id: String::new(),
            })
            .await
            .expect_err("no id");
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = rt
            .start_container(pb::StartContainerRequest {
                container_id: "0123456789abcdef".into(),
            })
            .await
            .expect_err("no such container");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        // Stopping and removing what is not there is done, as CRI asks (critest's
        // idempotence checks).
        rt.stop_container(pb::StopContainerRequest {
            container_id: "0123456789abcdef".into(),
            timeout: 0,
        })
        .await
        .unwrap();
        rt.remove_container(pb::RemoveContainerRequest {
            container_id: "0123456789abcdef".into(),
        })
        .await
        .unwrap();
        rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
        })
        .await
        .unwrap();
        // The metrics RPCs are not served, and say so as CRI defines it (critest and
        // the kubelet then keep to the stats RPCs).
        let e = rt
            .list_metric_descriptors(pb::ListMetricDescriptorsRequest {})
            .await
            .expect_err("no metrics");
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
        let e = rt
            .list_pod_sandbox_metrics(pb::ListPodSandboxMetricsRequest {})
            .await
            .expect_err("no metrics");
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
        // An image that is not stored.
        let cfg = pod("bad", &log_dir);
        let sb = rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let mut missing = ctr("missing", &["true"]);
        missing.image.as_mut().unwrap().image = "localhost/not-pulled:1".into();
        let e = rt
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: sb.clone(),
                config: Some(missing),
                sandbox_config: Some(cfg.clone()),
            })
            .await
            .expect_err("an image not pulled");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("not-pulled"), "{e:?}");
        // The same name and attempt twice in one sandbox (CRI: names are unique).
        let once = ctr("twice", &["sleep", "100"]);
        let first = start(&mut rt, &sb, cfg.clone(), once.clone()).await;
        let e = rt
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: sb.clone(),
                config: Some(once),
                sandbox_config: Some(cfg.clone()),
            })
            .await
            .expect_err("a name taken");
        assert!(
            matches!(e.code(), Code::AlreadyExists | Code::FailedPrecondition),
            "{e:?}"
        );
        // A start of a removed container; a stop and a removal of one are no errors.
        rt.remove_container(pb::RemoveContainerRequest {
            container_id: first.clone(),
        })
        .await
        .unwrap();
        let e = rt
            .start_container(pb::StartContainerRequest {
                container_id: first.clone(),
            })
            .await
            .expect_err("a removed container");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        rt.remove_container(pb::RemoveContainerRequest {
            container_id: first.clone(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: sb })
            .await
            .unwrap();

        // crictl pull: without credentials the registry's 401 comes back; with them
        // the image is stored, by tag and by digest.
        let puller = img.clone();
        let pull = |auth: Option<pb::AuthConfig>, image: String| {
            let mut img = puller.clone();
            async move {
                img.pull_image(pb::PullImageRequest {
                    image: Some(pb::ImageSpec {
                        image,
                        ..Default::default()
                    }),
                    auth,
                    sandbox_config: None,
                })
                .await
                .map(|r| r.into_inner().image_ref)
            }
        };
        let e = pull(None, dest.clone()).await.expect_err("401");
        assert!(e.message().contains("401"), "{e:?}");
        let creds = pb::AuthConfig {
            username: "kube".into(),
            password: "cri-pass".into(),
            ..Default::default()
        };
        let by_tag = pull(Some(creds.clone()), dest.clone()).await.unwrap();
        assert!(by_tag.starts_with("sha256:"), "{by_tag}");
        let stored = image_status(&mut img, &dest).await.expect("pulled");
        assert_eq!(stored.id, by_tag);
        let digest = stored
            .repo_digests
            .iter()
            .find(|d| d.starts_with(&format!("{}/team/bb@sha256:", reg.host)))
            .cloned()
            .unwrap_or_else(|| panic!("a repo digest: {stored:?}"));
        assert!(digest.contains("@sha256:"), "{digest}");
        // The repo digest of an image pulled by tag finds it (critest's "all kinds
        // of references").
        assert_eq!(
            image_status(&mut img, &digest).await.map(|i| i.id),
            Some(by_tag.clone())
        );
        // A second name: removing the image by one name removes it with all its
        // names, as CRI's RemoveImage does.
        let second = format!("{}/team/bb:second", reg.host);
        cri.env.ok(&["tag", &dest, &second]);
        assert_eq!(
            image_status(&mut img, &second).await.map(|i| i.id),
            Some(by_tag.clone())
        );
        // crictl rmi, then a pull by digest brings it back.
        for _ in 0..2 {
            img.remove_image(pb::RemoveImageRequest {
                image: Some(pb::ImageSpec {
                    image: dest.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        }
        assert!(image_status(&mut img, &dest).await.is_none());
        assert!(image_status(&mut img, &second).await.is_none());
        let encoded =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "kube:cri-pass");
        let by_digest = pull(
            Some(pb::AuthConfig {
                auth: encoded,
                ..Default::default()
            }),
            digest.clone(),
        )
        .await
        .unwrap();
        assert_eq!(by_digest, by_tag);
        assert!(image_status(&mut img, &digest).await.is_some());
    });
}

/// A WebSocket to a streaming URL with `protocol`.
async fn websocket(
    url: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"].to_str().unwrap(),
        protocol
    );
    ws
}

/// Sends `input` on channel 0 (then closes stdin, in v5), and collects what comes
/// back by channel until the server closes.
async fn converse(
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    input: &[&[u8]],
    close_stdin: bool,
) -> HashMap<u8, Vec<u8>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut tx, mut rx) = ws.split();
    for i in input {
        let mut m = vec![0u8];
        m.extend_from_slice(i);
        tx.send(Message::Binary(m.into())).await.unwrap();
    }
    if close_stdin {
        tx.send(Message::Binary(vec![255u8, 0].into()))
            .await
            .unwrap();
    }
    let mut got: HashMap<u8, Vec<u8>> = HashMap::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, rx.next()).await {
        match m {
            Message::Binary(b) if !b.is_empty() => {
                got.entry(b[0]).or_default().extend_from_slice(&b[1..])
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    got
}

/// Sends one binary message of the channel protocol on `ch`.
async fn send_on<S>(tx: &mut S, ch: u8, data: &[u8])
where
    S: futures_util::Sink<tokio_tungstenite::tungstenite::Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    use futures_util::SinkExt;
    let mut m = vec![ch];
    m.extend_from_slice(data);
    tx.send(tokio_tungstenite::tungstenite::Message::Binary(m.into()))
        .await
        .unwrap();
}

#[test]
fn exec_attach_and_port_forward_stream_through_the_urls_cri_hands_out() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let cri = Cri::start();
    let log_dir = cri.env.path("pod-logs");
    common::runtime().block_on(async {
        let (mut rt, _) = cri.clients().await;
        let cfg = pod("streams", &log_dir);
        let (sb, web) = run(
            &mut rt,
            cfg.clone(),
            ctr("web", &["httpd", "-f", "-p", "8080", "-h", "/etc"]),
        )
        .await;
        let mut talk = ctr("talk", &["sh", "-c", "while read l; do echo got $l; done"]);
        talk.stdin = true;
        let talk = start(&mut rt, &sb, cfg.clone(), talk).await;
        let exec = |cmd: &[&str], stdin: bool, tty: bool| {
            let mut rt = rt.clone();
            let req = pb::ExecRequest {
                container_id: web.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            };
            async move { rt.exec(req).await.unwrap().into_inner().url }
        };

        // crictl exec -i: stdin in, stdout and stderr apart, the exit code in the Status.
        let url = exec(&["sh", "-c", "cat; echo to-err >&2; exit 3"], true, false).await;
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let got = converse(
            websocket(&url, "v5.channel.k8s.io").await,
            &[b"typed in\n"],
            true,
        )
        .await;
        assert_eq!(String::from_utf8_lossy(&got[&1]), "typed in\n");
        assert_eq!(String::from_utf8_lossy(&got[&2]), "to-err\n");
        let status: serde_json::Value = serde_json::from_slice(&got[&3]).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
        assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
        // A URL is good once.
        let reused = plain_get(&url).await;
        assert!(reused.starts_with("HTTP/1.1 404"), "{reused}");
        assert!(reused.contains("unknown or expired"), "{reused}");

        // crictl exec -it: a terminal, its size from the resize channel.
        let url = exec(&["sh", "-c", "sleep 1; tty; stty size"], true, true).await;
        let mut ws = websocket(&url, "v4.channel.k8s.io").await;
        send_on(&mut ws, 4, br#"{"Width":88,"Height":22}"#).await;
        let got = converse(ws, &[], false).await;
        let out = String::from_utf8_lossy(&got[&1]);
        assert!(out.contains("/dev/pts/") && out.contains("22 88"), "{out}");
        let status: serde_json::Value = serde_json::from_slice(&got[&3]).unwrap();
        assert_eq!(status["status"], "Success", "{status}");

        // crictl attach: input reaches the container's stdin, its output comes back.
        let url = rt
            .attach(pb::AttachRequest {
                container_id: talk.clone(),
                stdin: true,
                stdout: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let (mut tx, mut rx) = websocket(&url, "v5.channel.k8s.io").await.split();
        send_on(&mut tx, 0, b"hello attach\n").await;
        let mut out = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&out).contains("got hello attach") {
            match tokio::time::timeout_at(end, rx.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) if b.first() == Some(&1) => {
                    out.extend_from_slice(&b[1..])
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("got hello attach"), "{out:?}");
        drop((tx, rx));

        // crictl port-forward: the sandbox's port 8080 from inside its network
        // namespace, over the channel protocol (data on 0, errors on 1).
        let url = rt
            .port_forward(pb::PortForwardRequest {
                pod_sandbox_id: sb.clone(),
                port: vec![8080],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let (mut tx, mut rx) = websocket(&format!("{url}?ports=8080"), "v4.channel.k8s.io")
            .await
            .split();
        let mut data = Vec::new();
        let mut sent = false;
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, rx.next()).await {
            let Message::Binary(b) = m else { continue };
            match b.first() {
                // Each channel first says its port.
                Some(0) if !sent => {
                    assert_eq!(&b[1..], &8080u16.to_le_bytes());
                    send_on(&mut tx, 0, b"GET /os-release HTTP/1.0\r\nHost: pod\r\n\r\n").await;
                    sent = true;
                }
                Some(0) => data.extend_from_slice(&b[1..]),
                _ => {}
            }
            if String::from_utf8_lossy(&data).contains("busybox-test") {
                break;
            }
        }
        let got = String::from_utf8_lossy(&data);
        assert!(
            got.starts_with("HTTP/1.") && got.contains("NAME=busybox-test"),
            "{got:?}"
        );
        drop((tx, rx));

        // Streams of a stopped container are refused with the reason.
        rt.stop_container(pb::StopContainerRequest {
            container_id: talk.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
        let e = rt
            .attach(pb::AttachRequest {
                container_id: talk.clone(),
                stdout: true,
                ..Default::default()
            })
            .await
            .expect_err("a stopped container");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("not running"), "{e:?}");
        let e = rt
            .exec(pb::ExecRequest {
                container_id: web.clone(),
                cmd: vec!["true".into()],
                ..Default::default()
            })
            .await
            .expect_err("no stdio asked for");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = rt
            .exec(pb::ExecRequest {
                container_id: web.clone(),
                cmd: vec!["true".into()],
                tty: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .expect_err("a terminal has one output");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("tty and stderr"), "{e:?}");
        rt.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: sb })
            .await
            .unwrap();
    });
}

/// A plain HTTP/1.1 GET of `url` (no upgrade): the whole answer as text.
async fn plain_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_node_agents_pods_are_seen_and_driven_through_its_cri_socket() {
    let socket = std::env::temp_dir().join(format!("berth-test-cri-{}.sock", std::process::id()));
    let socket_flag = socket.display().to_string();
    let c = common::cluster::Cluster::start_with(&["--cri-socket", &socket_flag]);
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: seen\nspec:\n  containers:\n  - name: main\n    image: localhost/busybox:1\n    command: [sleep, '1000']\n",
    );
    c.wait_pod("seen", "Ready", 60, common::cluster::ready);
    common::runtime().block_on(async {
        let mut rt =
            pb::runtime_service_client::RuntimeServiceClient::new(endpoint::connect(&socket).await);
        // crictl pods --name seen: the kubelet's labels on the agent's sandbox.
        let pods = rt
            .list_pod_sandbox(pb::ListPodSandboxRequest {
                filter: Some(pb::PodSandboxFilter {
                    label_selector: labels(&[
                        ("io.kubernetes.pod.name", "seen"),
                        ("io.kubernetes.pod.namespace", "default"),
                    ]),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_eq!(pods[0].metadata.as_ref().unwrap().name, "seen");
        // crictl ps --pod ID, crictl exec: the pod's container, running.
        let ctrs = rt
            .list_containers(pb::ListContainersRequest {
                filter: Some(pb::ContainerFilter {
                    pod_sandbox_id: pods[0].id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(ctrs.len(), 1, "{ctrs:?}");
        assert_eq!(ctrs[0].metadata.as_ref().unwrap().name, "main");
        assert_eq!(ctrs[0].state, pb::ContainerState::ContainerRunning as i32);
        assert_eq!(
            out(&exec_sync(&mut rt, &ctrs[0].id, &["hostname"]).await),
            "seen\n"
        );
    });
    drop(c);
    assert!(!socket.exists(), "the socket goes with the server");
}

#[test]
fn cdi_devices_reach_the_container_from_the_spec_directories() {
    let cri = Cri::start_with(|env| {
        let dir = env.path("cdi");
        let data = env.path("cdi-data");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("file"), "from the spec's mount\n").unwrap();
        std::fs::write(
            dir.join("test.yaml"),
            format!(
                "cdiVersion: 0.6.0\nkind: example.com/test\ncontainerEdits:\n  env: [CDI_SPEC=yes]\ndevices:\n- name: null\n  containerEdits:\n    env: [CDI_DEVICE=null]\n    deviceNodes:\n    - path: /dev/cdi-null\n      hostPath: /dev/null\n      permissions: rw\n    mounts:\n    - hostPath: {}\n      containerPath: /cdi-data\n      options: [ro, bind]\n",
                data.display()
            ),
        )
        .unwrap();
        vec!["--cdi-spec-dir".into(), dir.display().to_string()]
    });
    let log_dir = cri.env.path("pod-logs");
    common::runtime().block_on(async {
        let (mut rt, _) = cri.clients().await;
        let cfg = pod("cdi", &log_dir);
        let mut listed = ctr("listed", &["sleep", "1000"]);
        listed.cdi_devices = vec![pb::CdiDevice {
            name: "example.com/test=null".into(),
        }];
        let (sb, c) = run(&mut rt, cfg.clone(), listed).await;
        let seen = out(
            &exec_sync(
                &mut rt,
                &c,
                &[
                    "sh",
                    "-c",
                    "test -c /dev/cdi-null && echo written > /dev/cdi-null && echo $CDI_SPEC $CDI_DEVICE && cat /cdi-data/file && (touch /cdi-data/x 2>/dev/null && echo writable || echo read-only)",
                ],
            )
            .await,
        );
        assert_eq!(seen, "yes null\nfrom the spec's mount\nread-only\n");
        // The older kubelets' annotation works too.
        let mut annotated = ctr("annotated", &["sleep", "1000"]);
        annotated.annotations = labels(&[("cdi.k8s.io/test", "example.com/test=null")]);
        let a = start(&mut rt, &sb, cfg.clone(), annotated).await;
        assert_eq!(
            out(&exec_sync(&mut rt, &a, &["sh", "-c", "test -c /dev/cdi-null && echo $CDI_DEVICE"]).await),
            "null\n"
        );
        // A device no spec defines is refused by name.
        let mut unknown = ctr("unknown", &["true"]);
        unknown.cdi_devices = vec![pb::CdiDevice {
            name: "example.com/test=gpu9".into(),
        }];
        let e = rt
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: sb.clone(),
                config: Some(unknown),
                sandbox_config: Some(cfg),
            })
            .await
            .expect_err("an unknown CDI device");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("example.com/test=gpu9"), "{e:?}");
        rt.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: sb })
            .await
            .unwrap();
    });
}

/// Runs `mount ARGS` on the host.
fn host_mount(args: &[&str]) {
    let st = std::process::Command::new("mount")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "mount {args:?}");
}

#[test]
fn mount_propagation_flows_as_critest_checks_it() {
    let cri = Cri::start();
    let log_dir = cri.env.path("pod-logs");
    common::runtime().block_on(async {
        let (mut rt, _) = cri.clients().await;
        for (mode, name) in [
            (pb::MountPropagation::PropagationPrivate, "private"),
            (
                pb::MountPropagation::PropagationHostToContainer,
                "hosttocontainer",
            ),
            (
                pb::MountPropagation::PropagationBidirectional,
                "bidirectional",
            ),
        ] {
            // A volume (shared on the host unless private) holding the host's mount
            // point, and a directory the host mounts there.
            let base = cri.env.path(&format!("prop-{name}"));
            let src = base.join("mnt");
            let host_point = src.join("propagationMnt");
            let flags = base.join("flags");
            std::fs::create_dir_all(&host_point).unwrap();
            std::fs::create_dir_all(&flags).unwrap();
            std::fs::write(flags.join("flagFile"), "").unwrap();
            let s = src.to_str().unwrap();
            host_mount(&["--bind", s, s]);
            let private = mode == pb::MountPropagation::PropagationPrivate;
            host_mount(&[
                if private {
                    "--make-rprivate"
                } else {
                    "--make-rshared"
                },
                s,
            ]);
            let mut sandbox = pod(&format!("prop-{name}"), &log_dir);
            let sc = sandbox
                .linux
                .as_mut()
                .unwrap()
                .security_context
                .as_mut()
                .unwrap();
            sc.privileged = true;
            let mut c = with_security(
                ctr("prop", &["sleep", "1000"]),
                pb::LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                },
            );
            c.mounts = vec![pb::Mount {
                container_path: s.into(),
                host_path: s.into(),
                propagation: mode as i32,
                ..Default::default()
            }];
            let (sb, c) = run(&mut rt, sandbox, c).await;
            // Host to container: the host's new mount shows inside unless private.
            host_mount(&[
                "--bind",
                flags.to_str().unwrap(),
                host_point.to_str().unwrap(),
            ]);
            let seen =
                out(&exec_sync(&mut rt, &c, &["ls", "-A", host_point.to_str().unwrap()]).await);
            assert_eq!(seen.trim().is_empty(), private, "{name}: {seen:?}");
            // Container to host: only a bidirectional volume carries it back.
            let inner = src.join("containerMnt");
            let i = inner.to_str().unwrap();
            exec_sync(
                &mut rt,
                &c,
                &[
                    "sh",
                    "-c",
                    &format!("mkdir -p {i} && mount --bind /etc {i}"),
                ],
            )
            .await;
            let back = std::fs::read_dir(&inner).map(|d| d.count()).unwrap_or(0);
            assert_eq!(
                back > 0,
                mode == pb::MountPropagation::PropagationBidirectional,
                "{name}: the host sees {back} entries in {i}"
            );
            rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await
            .unwrap();
            rt.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: sb })
                .await
                .unwrap();
            for m in [&inner, &host_point, &src] {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(m)
                    .status();
            }
        }
    });
}
