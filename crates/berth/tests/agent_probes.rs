//! Probes as the kubelet runs them — exec, httpGet by port name, tcpSocket on a closed
//! port, grpc against a real gRPC health server — and bad input that ends in a clear
//! status or event; and kube-rs inside a pod with its in-cluster configuration. The
//! programs run in pods are this test binary itself (helpers marked ignored), mounted
//! from the host with the C library it links. Needs root (real namespaces, cgroups,
//! mounts, bridges) and kubectl 1.32.

mod common;

use std::time::{Duration, Instant};

use berth_engine::cri::{RuntimeService, SandboxFilter};
use common::cluster::{container, phase, ready, tail, Cluster};
use serde_json::Value;

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn probes_and_bad_input_end_in_clear_statuses_and_events() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/busybox:1
    command: ["sh", "-c", "mkdir -p /www; echo ok > /www/healthz; (sleep 2; touch /tmp/ready) & exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      exec: {{command: ["test", "-e", "/tmp/ready"]}}
      periodSeconds: 1
    livenessProbe:
      httpGet: {{path: /healthz, port: http}}
      periodSeconds: 1
      failureThreshold: 2
  - name: tcp
    image: localhost/busybox:1
    command: ["sleep", "1000"]
    livenessProbe:
      tcpSocket: {{port: 9999}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: noimage}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: "127.0.0.1:1/nothing/here:1"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nocommand}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: localhost/busybox:1, command: ["/no/such/program"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nomap}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: conf, configMap: {{name: later}}}}]
  containers:
  - name: main
    image: localhost/busybox:1
    command: ["sleep", "1000"]
    volumeMounts: [{{name: conf, mountPath: /conf}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: badhostpath}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: h, hostPath: {{path: /etc/hostname, type: Directory}}}}]
  containers:
  - {{name: main, image: localhost/busybox:1, command: ["sleep", "1000"], volumeMounts: [{{name: h, mountPath: /h}}]}}
"#,
        node = c.node
    ));
    // Readiness comes after the file appears; the web container stays up.
    let p = c.wait_pod("probed", "web ready", 60, |p| {
        container(p, "web")["ready"] == true
    });
    assert_eq!(container(&p, "web")["restartCount"], 0);
    // Nothing listens on 9999: the liveness probe restarts the tcp container.
    let p = c.wait_pod("probed", "tcp restarted", 60, |p| {
        container(p, "tcp")["restartCount"].as_i64().unwrap_or(0) >= 1
    });
    assert!(!ready(&p), "a pod with a restarting container is not Ready");
    let ev = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed",
    ]);
    assert!(
        ev.contains("Unhealthy") && ev.contains("Liveness probe failed"),
        "{ev}"
    );
    assert!(
        ev.contains("failed liveness probe, will be restarted"),
        "{ev}"
    );
    // Bad input: each a clear waiting reason and an event.
    let p = c.wait_pod("noimage", "ErrImagePull", 60, |p| {
        let r = &container(p, "main")["state"]["waiting"]["reason"];
        *r == "ErrImagePull" || *r == "ImagePullBackOff"
    });
    assert!(
        container(&p, "main")["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.1:1"),
        "{p}"
    );
    assert_eq!(phase(&p), "Pending");
    let p = c.wait_pod("nocommand", "RunContainerError", 60, |p| {
        let cs = container(p, "main");
        cs["state"]["waiting"]["reason"] == "RunContainerError"
            || cs["lastState"]["terminated"]["exitCode"]
                .as_i64()
                .is_some_and(|x| x != 0)
            || cs["state"]["terminated"]["exitCode"]
                .as_i64()
                .is_some_and(|x| x != 0)
    });
    let text = p["status"].to_string();
    assert!(
        text.contains("/no/such/program"),
        "the missing program is named: {text}"
    );
    let p = c.wait_pod("nomap", "FailedMount", 30, |p| phase(p) == "Pending");
    assert!(
        container(&p, "main")["state"]["waiting"]["reason"] == "ContainerCreating",
        "{p}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ev = c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=nomap",
        ]);
        if ev.contains("FailedMount") && ev.contains("configmap \"later\" not found") {
            break;
        }
        assert!(Instant::now() < deadline, "no FailedMount event: {ev}");
        std::thread::sleep(Duration::from_millis(200));
    }
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {x: \"y\"}\n");
    c.wait_pod("nomap", "Running once the ConfigMap exists", 30, ready);
    c.wait_pod("badhostpath", "Pending", 30, |p| phase(p) == "Pending");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ev = c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=badhostpath",
        ]);
        if ev.contains("is not a directory") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no event for the wrong hostPath type: {ev}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    assert!(
        c.mounts().iter().all(|m| !m.contains("agent/pods")),
        "{:?}",
        c.mounts()
    );
    let left = c
        .engine()
        .list_pod_sandbox(&SandboxFilter::default())
        .unwrap();
    assert!(left.is_empty(), "{left:?}\n{}", tail(&c.log(), 40));
}

/// Not a test: the gRPC health server the grpc probe test runs inside its pod (this
/// very test binary, mounted from the host with the C library it links). It serves on
/// $GRPC_HEALTH_PORT and answers NOT_SERVING while /tmp/unhealthy exists.
#[test]
#[ignore = "a helper that the grpc probe test runs inside a pod, not a test of its own"]
fn grpc_health_server() {
    use tonic_health::ServingStatus;
    let port: u16 = std::env::var("GRPC_HEALTH_PORT")
        .expect("GRPC_HEALTH_PORT")
        .parse()
        .unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let (reporter, service) = tonic_health::server::health_reporter();
            tokio::spawn(async move {
                loop {
                    let status = if std::path::Path::new("/tmp/unhealthy").exists() {
                        ServingStatus::NotServing
                    } else {
                        ServingStatus::Serving
                    };
                    reporter.set_service_status("", status).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            println!("serving gRPC health on port {port}");
            tonic::transport::Server::builder()
                .add_service(service)
                .serve(([0, 0, 0, 0], port).into())
                .await
                .unwrap();
        });
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn grpc_probes_ask_the_health_service() {
    let c = Cluster::start();
    let exe = std::env::current_exe().unwrap();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: grpc}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: health
    image: localhost/busybox:1
    command: ["/probe-server", "--ignored", "--exact", "grpc_health_server", "--nocapture"]
    env: [{{name: GRPC_HEALTH_PORT, value: "9090"}}]
    readinessProbe:
      grpc: {{port: 9090}}
      periodSeconds: 1
      failureThreshold: 1
    volumeMounts:
    - {{name: exe, mountPath: /probe-server, readOnly: true}}
    - {{name: libs, mountPath: /lib/x86_64-linux-gnu, readOnly: true}}
    - {{name: lib64, mountPath: /lib64, readOnly: true}}
  - name: nothing
    image: localhost/busybox:1
    command: ["sleep", "1000"]
    livenessProbe:
      grpc: {{port: 9091, service: liveness}}
      periodSeconds: 1
      failureThreshold: 2
  volumes:
  - {{name: exe, hostPath: {{path: "{exe}", type: File}}}}
  - {{name: libs, hostPath: {{path: /lib/x86_64-linux-gnu, type: Directory}}}}
  - {{name: lib64, hostPath: {{path: /lib64, type: Directory}}}}
"#,
        node = c.node,
        exe = exe.display()
    ));
    let health_ready = |p: &Value| container(p, "health")["ready"] == true;
    c.wait_pod("grpc", "health ready", 60, health_ready);
    // NOT_SERVING takes readiness away, with the reason in an event.
    c.ok(&[
        "exec",
        "grpc",
        "-c",
        "health",
        "--",
        "touch",
        "/tmp/unhealthy",
    ]);
    c.wait_pod("grpc", "health not ready", 30, |p| !health_ready(p));
    let events = |want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ev = c.ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=grpc",
            ]);
            if want.iter().all(|w| ev.contains(w)) {
                return;
            }
            assert!(Instant::now() < deadline, "{want:?}: {ev}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    events(&[
        "Readiness probe failed",
        "service unhealthy (responded with \"NOT_SERVING\")",
    ]);
    c.ok(&["exec", "grpc", "-c", "health", "--", "rm", "/tmp/unhealthy"]);
    c.wait_pod("grpc", "health ready again", 30, health_ready);
    // A port nothing serves: liveness fails and the container is restarted.
    events(&["Liveness probe failed", "failed to connect service"]);
    let p = c.wait_pod("grpc", "nothing restarted", 60, |p| {
        container(p, "nothing")["restartCount"].as_u64() >= Some(1)
    });
    assert_eq!(phase(&p), "Running", "{}", tail(&c.log(), 20));
    c.ok(&["delete", "pod", "grpc", "--timeout=60s"]);
}

/// Not a test: the in-cluster client the kube-rs test runs inside its pod. It reads
/// its configuration as every in-cluster client does (the service host and port from
/// the environment, the token, CA and namespace from the service account volume) and
/// prints the names of its namespace's pods.
#[test]
#[ignore = "a helper that the in-cluster test runs inside a pod, not a test of its own"]
fn in_cluster_list_pods() {
    use kube::api::{Api, ApiResource, DynamicObject, ListParams};
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let config = kube::Config::incluster().expect("in-cluster configuration");
        let ns = config.default_namespace.clone();
        let client = kube::Client::try_from(config).unwrap();
        let pods = ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Pod".into(),
            plural: "pods".into(),
        };
        let list = Api::<DynamicObject>::namespaced_with(client, &ns, &pods)
            .list(&ListParams::default())
            .await
            .unwrap();
        for p in list.items {
            println!("pod {}", p.metadata.name.unwrap_or_default());
        }
    });
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn kube_rs_in_a_pod_lists_pods_with_its_in_cluster_configuration() {
    let c = Cluster::start();
    let exe = std::env::current_exe().unwrap();
    // Services are not routed until cluster networking lands: the pod shares the
    // node's network and is pointed at the API server's loopback address instead of
    // the kubernetes Service's; token, CA and namespace are the injected volume's.
    let port = c.port;
    // A ServiceAccount may do nothing until bound to a role, as on Kubernetes.
    c.ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    c.apply(&c.pod_yaml(
        "incluster",
        &format!(
            r#"  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: client
    image: localhost/busybox:1
    command: ["/client", "--ignored", "--exact", "in_cluster_list_pods", "--nocapture"]
    env:
    - {{name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}}
    - {{name: KUBERNETES_SERVICE_PORT, value: "{port}"}}
    volumeMounts:
    - {{name: exe, mountPath: /client, readOnly: true}}
    - {{name: libs, mountPath: /lib/x86_64-linux-gnu, readOnly: true}}
    - {{name: lib64, mountPath: /lib64, readOnly: true}}
  volumes:
  - {{name: exe, hostPath: {{path: "{exe}", type: File}}}}
  - {{name: libs, hostPath: {{path: /lib/x86_64-linux-gnu, type: Directory}}}}
  - {{name: lib64, hostPath: {{path: /lib64, type: Directory}}}}
"#,
            exe = exe.display()
        ),
    ));
    let p = c.wait_pod("incluster", "ended", 60, |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    let log = c.ok(&["logs", "incluster"]);
    assert_eq!(phase(&p), "Succeeded", "{log}");
    assert!(log.contains("pod incluster\n"), "{log}");
    c.ok(&["delete", "pod", "incluster", "--timeout=60s"]);
}
