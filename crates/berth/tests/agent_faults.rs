//! Faults around the agent: killed with SIGKILL (pods adopted, nothing restarted),
//! killed in the middle of starting or deleting a pod (the job finished when it is
//! back, nothing left over), and the API server away while pods run (they run on;
//! their status catches up). Needs root and kubectl 1.32.

mod common;

use std::time::{Duration, Instant};

use berth_engine::cri::{ContainerFilter, RuntimeService, SandboxFilter};
use common::cluster::{container, ready, tail, Cluster};
use serde_json::Value;

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_killed_agent_adopts_its_pods_and_cleans_up_what_was_deleted_meanwhile() {
    let mut c = Cluster::start();
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: main, image: localhost/busybox:1, command: [sleep, '1000']}}\n",
            c.node
        )
    };
    c.apply(&pod("keep"));
    c.apply(&pod("gone"));
    let before = c.wait_pod("keep", "Ready", 60, ready);
    c.wait_pod("gone", "Ready", 60, ready);
    let id = container(&before, "main")["containerID"].clone();
    let gone_uid = c.pod("gone")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    c.kill();
    // The server is down; its containers run on.
    let core = c.engine();
    let running = core
        .list_containers(&ContainerFilter {
            running: Some(true),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(running.len(), 2, "{running:?}");
    // "gone" is deleted while no agent runs (the API server alone), then the
    // all-in-one server comes back.
    c.spawn_with(&["--disable-agent"]);
    c.wait_api();
    c.ok(&["delete", "pod", "gone", "--grace-period=0", "--force"]);
    c.kill();
    c.spawn();
    c.wait_ready();
    let after = c.wait_pod("keep", "Ready", 30, ready);
    assert_eq!(
        container(&after, "main")["containerID"],
        id,
        "the same container, adopted"
    );
    assert_eq!(container(&after, "main")["restartCount"], 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = core
            .list_pod_sandbox(&SandboxFilter {
                labels: [("io.kubernetes.pod.uid".to_string(), gone_uid.clone())].into(),
                ..Default::default()
            })
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted pod's sandbox is still there"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok(&["delete", "pod", "keep", "--timeout=60s"]);
}

/// The engine's sandboxes of a pod (by UID).
fn sandboxes(c: &Cluster, uid: &str) -> usize {
    c.engine()
        .list_pod_sandbox(&SandboxFilter {
            labels: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(),
            ..Default::default()
        })
        .unwrap()
        .len()
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().unwrap().to_string()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn with_the_api_server_away_pods_run_on_and_their_status_catches_up() {
    let mut c = Cluster::start_with(&["--disable-agent"]);
    let main = |cmd: &str| {
        format!("  containers:\n  - {{name: main, image: localhost/busybox:1, command: {cmd}}}\n")
    };
    c.apply(&format!(
        "{}---\n{}",
        c.pod_yaml("steady", &main("[sleep, '1000']")),
        c.pod_yaml("flappy", &main("[sh, -c, 'sleep 2; exit 1']"))
    ));
    let before = c.wait_pod("steady", "Ready", 60, ready);
    let id = container(&before, "main")["containerID"].clone();
    let flappy = c.wait_pod("flappy", "started", 60, |p| {
        container(p, "main")["containerID"].is_string()
    });
    let restarts = container(&flappy, "main")["restartCount"].as_u64().unwrap();
    c.kill();
    // The agent carries on alone: the crashing container is restarted after its
    // back-off (10 s), the steady one runs on.
    std::thread::sleep(Duration::from_secs(15));
    let running = c
        .engine()
        .list_containers(&ContainerFilter {
            running: Some(true),
            ..Default::default()
        })
        .unwrap();
    assert!(
        running
            .iter()
            .any(|r| id.as_str().is_some_and(|i| i.ends_with(&r.id))),
        "{running:?}"
    );
    c.spawn();
    c.wait_api();
    c.wait_pod("flappy", "its restarts counted", 30, |p| {
        container(p, "main")["restartCount"].as_u64() > Some(restarts)
    });
    let after = c.pod("steady");
    assert!(ready(&after), "{after}");
    assert_eq!(container(&after, "main")["containerID"], id);
    assert_eq!(container(&after, "main")["restartCount"], 0);
    let o = c.kubectl(&["delete", "pod", "--all", "--timeout=60s"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        tail(&c.agent_log(), 60)
    );
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn an_agent_killed_mid_start_or_mid_delete_finishes_the_job_when_back() {
    let mut c = Cluster::start_with(&["--disable-agent"]);
    // Mid-start: killed once the sandbox exists, before its containers all do.
    c.apply(&c.pod_yaml(
        "late",
        r#"  initContainers:
  - {name: init, image: localhost/busybox:1, command: [sh, -c, 'sleep 1']}
  containers:
  - {name: a, image: localhost/busybox:1, command: [sleep, '1000']}
  - {name: b, image: localhost/busybox:1, command: [sleep, '1000']}
"#,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let late_uid = loop {
        let o = c.kubectl(&["get", "pod", "late", "-o", "jsonpath={.metadata.uid}"]);
        let u = String::from_utf8_lossy(&o.stdout).to_string();
        if !u.is_empty() && sandboxes(&c, &u) > 0 {
            break u;
        }
        assert!(Instant::now() < deadline, "no sandbox");
        std::thread::sleep(Duration::from_millis(20));
    };
    c.kill_agent();
    c.spawn_agent();
    let p = c.wait_pod("late", "Ready", 60, ready);
    assert_eq!(sandboxes(&c, &late_uid), 1, "one sandbox, adopted");
    for name in ["a", "b"] {
        assert_eq!(container(&p, name)["restartCount"], 0, "{p}");
    }
    let live = c
        .engine()
        .list_containers(&ContainerFilter {
            labels: [("io.kubernetes.pod.uid".to_string(), late_uid.clone())].into(),
            running: Some(true),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(live.len(), 2, "no container twice: {live:?}");
    // Mid-delete: killed while the container takes its time to stop.
    c.apply(&c.pod_yaml(
        "slow",
        r#"  containers:
  - name: main
    image: localhost/busybox:1
    command: [sh, -c, "trap 'sleep 3; exit 0' TERM; while :; do sleep 1; done"]
"#,
    ));
    let slow_uid = uid(&c.wait_pod("slow", "Ready", 60, ready));
    c.ok(&["delete", "pod", "slow", "--grace-period=20", "--wait=false"]);
    std::thread::sleep(Duration::from_millis(800));
    c.kill_agent();
    c.spawn_agent();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.kubectl(&["get", "pod", "slow"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the pod was never removed: {}",
            c.agent_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sandboxes(&c, &slow_uid), 0);
    assert!(
        c.mounts().iter().all(|m| !m.contains(&slow_uid)),
        "{:?}",
        c.mounts()
    );
    c.ok(&["delete", "pod", "--all", "--timeout=60s"]);
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_container_that_logs_without_end_fills_only_its_share_of_the_disk() {
    let c = Cluster::start_with(&[
        "--container-log-max-size",
        "256Ki",
        "--container-log-max-files",
        "3",
    ]);
    // About 200 KB a second.
    c.apply(&c.pod_yaml(
        "chatty",
        "  containers:\n  - {name: main, image: localhost/busybox:1, command: [sh, -c, 'while :; do i=0; while [ $i -lt 20 ]; do echo 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789; i=$((i+1)); done; usleep 10000; done']}\n",
    ));
    let p = c.wait_pod("chatty", "Ready", 60, ready);
    let dir = c
        .env
        .root()
        .join(format!("agent/logs/default_chatty_{}/main", uid(&p)));
    let files = || -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            e.metadata().map_or(0, |m| m.len()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    // Rotated at least twice: the older rotated file is gzipped.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !files().iter().any(|(n, _)| n.ends_with(".gz")) {
        assert!(
            Instant::now() < deadline,
            "never rotated twice: {:?}",
            files()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Then it stays within its files, however long it writes.
    std::thread::sleep(Duration::from_secs(12));
    let f = files();
    assert!(f.len() <= 3, "{f:?}");
    assert!(f.iter().any(|(n, _)| n == "0.log"), "{f:?}");
    let total: u64 = f.iter().map(|(_, s)| s).sum();
    assert!(total < 8 << 20, "{total} bytes: {f:?}");
    // kubectl logs reads the live file.
    let last = c.ok(&["logs", "chatty", "--tail=1"]);
    assert!(last.starts_with("0123456789"), "{last}");
    c.ok(&["delete", "pod", "--all", "--timeout=60s"]);
}

/// A pod CIDR this host already uses (here: another network of the node's records;
/// elsewhere a VPN's route, another berth's bridge) stops `berth server` at once with
/// the reason and the flag that fixes it — not every pod later with "network not found".
#[test]
fn a_pod_cidr_the_host_already_uses_stops_the_start_with_the_reason() {
    let env = common::Env::new();
    let (octet, _lock) = common::cluster::lease_cidr_octet();
    let net_root = env.path("net");
    let subnet = format!("10.46.{octet}.0/24");
    let mut create = env.cmd(&["network", "create", "--subnet", &subnet, "taken"]);
    let out = create.env("BERTH_NET_ROOT", &net_root).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let port = common::free_port();
    let mut server = env
        .cmd(&[
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--node-name",
            "overlap",
            "--node-ip",
            "127.0.0.1",
            "--kubelet-port",
            "0",
            "--pod-cidr",
            &format!("10.46.{octet}.128/25"),
            "--disable-kube-proxy",
            "--disable-network-policy",
            "--disable-ingress",
        ])
        .env("BERTH_NET_ROOT", &net_root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            server.kill().unwrap();
            let out = server.wait_with_output().unwrap();
            panic!(
                "the server still runs after 30 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = server.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the pod CIDR 10.46.{octet}.128/25 overlaps network taken"
        )) && err.contains("--pod-cidr"),
        "{err}"
    );
    // Nothing of the pod network was made.
    let out = env
        .cmd(&["network", "ls"])
        .env("BERTH_NET_ROOT", &net_root)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&out.stdout);
    assert!(ls.contains("taken") && !ls.contains("pods"), "{ls}");
}
