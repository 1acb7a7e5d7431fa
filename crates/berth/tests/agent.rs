//! The node agent as users meet it: an all-in-one `berth server` driven with kubectl
//! 1.32 — pods of several containers sharing volumes and localhost, init containers,
//! environment from ConfigMaps, Secrets and the downward API, restart policies,
//! probes, bad input, graceful deletion and adoption after the agent is killed.
//! Needs root (real namespaces, cgroups, mounts, bridges) and kubectl 1.32.

mod common;

use std::time::{Duration, Instant};

use berth_engine::cri::{ContainerFilter, RuntimeService, SandboxFilter};
use common::cluster::{container, phase, ready, tail, Cluster};
use serde_json::Value;

fn ns_inode(pid: i32, kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .ino()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_pod_of_two_containers_shares_a_volume_and_localhost_and_is_deleted_gracefully() {
    let c = Cluster::start();
    // The node as kubectl shows it, and its lease.
    let nodes = c.ok(&["get", "nodes"]);
    assert!(
        nodes.contains(&c.node) && nodes.contains("Ready"),
        "{nodes}"
    );
    let node: Value = serde_json::from_str(&c.ok(&["get", "node", &c.node, "-o", "json"])).unwrap();
    for k in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(
            node["status"]["capacity"][k].is_string(),
            "capacity {k}: {node}"
        );
        assert!(
            node["status"]["allocatable"][k].is_string(),
            "allocatable {k}"
        );
    }
    let kinds: Vec<&str> = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    for k in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    assert_eq!(node["status"]["nodeInfo"]["operatingSystem"], "linux");
    assert!(node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("berth://"));
    let lease = c.ok(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        &c.node,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(lease, c.node);

    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  securityContext: {{fsGroup: 2345}}
  volumes:
  - name: shared
    emptyDir: {{}}
  containers:
  - name: server
    image: localhost/busybox:1
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    volumeMounts:
    - {{name: shared, mountPath: /www}}
    resources:
      limits: {{memory: 64Mi, cpu: 250m}}
  - name: client
    image: localhost/busybox:1
    command: ["sh", "-c", "echo hello from the pod > /data/index.html; trap 'exit 0' TERM; while true; do wget -q -O /data/got http://localhost:8080/index.html; sleep 0.2; done"]
    volumeMounts:
    - {{name: shared, mountPath: /data}}
"#,
        node = c.node
    ));
    let p = c.wait_pod("web", "Ready", 60, ready);
    assert_eq!(phase(&p), "Running");
    let ip = p["status"]["podIP"].as_str().unwrap();
    assert!(ip.starts_with(&format!("10.46.{}.", c.cidr_octet)), "{ip}");
    assert_eq!(p["status"]["hostIP"], "127.0.0.1");
    assert_eq!(p["status"]["qosClass"], "Burstable");
    assert!(p["status"]["startTime"].is_string());
    for name in ["server", "client"] {
        let cs = container(&p, name);
        assert_eq!(cs["ready"], true, "{cs}");
        assert_eq!(cs["restartCount"], 0);
        assert!(cs["containerID"].as_str().unwrap().starts_with("berth://"));
        assert!(cs["state"]["running"]["startedAt"].is_string());
    }
    let kinds: Vec<&str> = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "True")
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    for k in [
        "PodScheduled",
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ] {
        assert!(kinds.contains(&k), "{k} not True: {kinds:?}");
    }
    // fsGroup: the volume is the group's (set-group-ID, so what is written in it is
    // too), and the processes are in the group.
    let deadline = Instant::now() + Duration::from_secs(10);
    let owners = loop {
        let o = c.ok(&[
            "exec",
            "web",
            "-c",
            "client",
            "--",
            "sh",
            "-c",
            "stat -c '%g %a' /data /data/index.html; id -G",
        ]);
        if o.lines().count() == 3 || Instant::now() > deadline {
            break o;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let lines: Vec<&str> = owners.lines().collect();
    assert_eq!(lines[0], "2345 2777", "{owners}");
    assert!(lines[1].starts_with("2345 "), "{owners}");
    assert!(lines[2].split_whitespace().any(|g| g == "2345"), "{owners}");
    // The client fetched over localhost what it wrote into the shared volume.
    let core = c.engine();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let ctrs = core
        .list_containers(&ContainerFilter {
            labels: [("io.kubernetes.pod.uid".to_string(), uid.clone())].into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ctrs.len(), 2);
    let client = ctrs.iter().find(|x| x.metadata.name == "client").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = core
            .exec_sync(
                &client.id,
                &["cat".into(), "/data/got".into()],
                Some(Duration::from_secs(5)),
            )
            .unwrap();
        if String::from_utf8_lossy(&r.stdout) == "hello from the pod\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client never fetched the page"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // One network namespace: the sandbox's.
    let sb = core.pod_sandbox_status(&client.sandbox_id).unwrap();
    let infra = sb.infra_pid.unwrap();
    for x in &ctrs {
        assert_eq!(
            ns_inode(x.state.pid().unwrap(), "net"),
            ns_inode(infra, "net")
        );
    }
    // The pod cgroup in the kubelet's layout, with the limits read back.
    assert!(
        sb.cgroup_parent.contains(&format!("burstable/pod{uid}")),
        "{}",
        sb.cgroup_parent
    );
    // The mechanism, read from the kernel.
    let o = c
        .env
        .cmd(&["explain", "pod", "web"])
        .env("BERTH_NET_ROOT", c.env.path("net"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        format!("infra process: pid {infra}"),
        "shares with the pod: net ipc uts".to_string(),
        format!("pod IP {ip} on eth0"),
        "QoS class Burstable".to_string(),
        "64 MiB".to_string(),
        "/www ← empty-dir".to_string(),
        "/data ← empty-dir".to_string(),
    ] {
        assert!(
            text.contains(&want),
            "{want:?} missing from explain:\n{text}"
        );
    }
    assert!(!text.contains("host side: not found"), "{text}");
    // Events as describe shows them.
    let d = c.ok(&["describe", "pod", "web"]);
    for e in [
        "Pulled",
        "Created",
        "Started",
        "Container image \"localhost/busybox:1\" already present on machine",
    ] {
        assert!(d.contains(e), "{e} missing from describe:\n{d}");
    }
    let wide = c.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.contains("2/2") && wide.contains(ip) && wide.contains(&c.node),
        "{wide}"
    );

    // Graceful deletion: the client exits on TERM, the agent confirms, the pod goes.
    let t0 = Instant::now();
    c.ok(&["delete", "pod", "web", "--timeout=60s"]);
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "delete took {:?}",
        t0.elapsed()
    );
    let left = core
        .list_pod_sandbox(&SandboxFilter {
            labels: [("io.kubernetes.pod.uid".to_string(), uid.clone())].into(),
            ..Default::default()
        })
        .unwrap();
    assert!(left.is_empty(), "sandboxes left: {left:?}");
    assert!(
        c.mounts().iter().all(|m| !m.contains(&uid)),
        "{:?}",
        c.mounts()
    );
    assert!(!c.env.root().join("agent/pods").join(&uid).exists());
    let d = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(d.contains("Killing"), "{d}");
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn restart_policies_exit_codes_and_crash_loop_back_off() {
    let c = Cluster::start();
    let pod = |name: &str, policy: &str, script: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  restartPolicy: {policy}
  volumes: [{{name: scratch, emptyDir: {{}}}}]
  containers:
  - name: main
    image: localhost/busybox:1
    command: ["sh", "-c", "{script}"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
"#,
            node = c.node
        )
    };
    c.apply(&pod(
        "never",
        "Never",
        "echo bye > /dev/termination-log; exit 3",
    ));
    c.apply(&pod(
        "onfailure",
        "OnFailure",
        "if [ -e /scratch/again ]; then exit 0; fi; touch /scratch/again; exit 1",
    ));
    c.apply(&pod("always", "Always", "echo attempt; exit 2"));
    c.apply(&pod("done", "Never", "exit 0"));
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: oom}}
spec:
  nodeName: {node}
  restartPolicy: Never
  containers:
  - name: main
    image: localhost/busybox:1
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
    resources:
      limits: {{memory: 16Mi}}
"#,
        node = c.node
    ));
    let p = c.wait_pod("never", "Failed", 60, |p| phase(p) == "Failed");
    let t = &container(&p, "main")["state"]["terminated"];
    assert_eq!(t["exitCode"], 3, "{p}");
    assert_eq!(t["reason"], "Error");
    assert_eq!(t["message"], "bye\n", "the termination message");
    assert_eq!(container(&p, "main")["restartCount"], 0);
    let p = c.wait_pod("onfailure", "Succeeded", 60, |p| phase(p) == "Succeeded");
    let cs = container(&p, "main");
    assert_eq!(cs["restartCount"], 1, "{cs}");
    assert_eq!(cs["state"]["terminated"]["reason"], "Completed");
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
    let p = c.wait_pod("oom", "Failed", 60, |p| phase(p) == "Failed");
    let t = &container(&p, "main")["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{p}");
    assert_eq!(t["exitCode"], 137);
    let p = c.wait_pod("done", "Succeeded", 60, |p| phase(p) == "Succeeded");
    assert_eq!(container(&p, "main")["state"]["terminated"]["exitCode"], 0);
    // A terminal pod's sandbox is stopped (its address given back).
    let p = c.wait_pod("always", "CrashLoopBackOff", 60, |p| {
        container(p, "main")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let cs = container(&p, "main");
    assert!(cs["restartCount"].as_i64().unwrap() >= 1, "{cs}");
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 2);
    assert!(
        cs["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("back-off 10s restarting failed container=main"),
        "{cs}"
    );
    assert_eq!(phase(&p), "Running");
    assert_eq!(
        c.ok(&["logs", "always", "--previous"]),
        "attempt\n",
        "the previous attempt's log"
    );
    let d = c.ok(&["describe", "pod", "always"]);
    assert!(d.contains("Back-off restarting failed container"), "{d}");
    c.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    assert!(
        c.mounts().iter().all(|m| !m.contains("agent/pods")),
        "{:?}",
        c.mounts()
    );
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn init_containers_environment_and_config_volumes_that_follow_their_sources() {
    let c = Cluster::start();
    c.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, color: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
"#,
    );
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: env
  labels: {{tier: backend}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: conf, configMap: {{name: settings}}}}
  - {{name: sec, secret: {{secretName: creds, defaultMode: 0400}}}}
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
  initContainers:
  - name: first
    image: localhost/busybox:1
    command: ["sh", "-c", "echo one > /work/order"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: second
    image: localhost/busybox:1
    command: ["sh", "-c", "echo two >> /work/order"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: localhost/busybox:1
    command: ["sh", "-c"]
    args: ["echo $(GREETING) $(POD_NAME) '$$(LITERAL)' > /work/args; sleep 1000"]
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: MEM, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    - {{name: COMBINED, value: "$(GREETING)-world"}}
    envFrom:
    - {{configMapRef: {{name: settings}}, prefix: CFG_}}
    workingDir: /work
    resources:
      limits: {{memory: 32Mi}}
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: conf, mountPath: /etc/conf}}
    - {{name: sec, mountPath: /etc/sec}}
    - {{name: info, mountPath: /etc/info}}
    - {{name: conf, mountPath: /etc/color, subPath: color}}
"#,
        node = c.node
    ));
    let p = c.wait_pod("env", "Ready", 60, ready);
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for i in inits {
        assert_eq!(i["state"]["terminated"]["reason"], "Completed", "{i}");
    }
    let core = c.engine();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let main = core
        .list_containers(&ContainerFilter {
            labels: [
                ("io.kubernetes.pod.uid".to_string(), uid.clone()),
                (
                    "io.kubernetes.container.name".to_string(),
                    "main".to_string(),
                ),
            ]
            .into(),
            ..Default::default()
        })
        .unwrap()
        .remove(0);
    let sh = |script: &str| -> String {
        let r = core
            .exec_sync(
                &main.id,
                &["sh".into(), "-c".into(), script.into()],
                Some(Duration::from_secs(10)),
            )
            .unwrap();
        assert_eq!(
            r.exit_code,
            0,
            "{script}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    };
    assert_eq!(
        sh("cat /work/order"),
        "one\ntwo\n",
        "init containers in order"
    );
    assert_eq!(
        sh("cat /work/args"),
        "hello env $(LITERAL)\n",
        "$(VAR) expansion"
    );
    let env = sh("env");
    let ip = p["status"]["podIP"].as_str().unwrap();
    for want in [
        "GREETING=hello".to_string(),
        "PASSWORD=s3cret".into(),
        "POD_NAME=env".into(),
        format!("POD_IP={ip}"),
        "MEM=32".into(),
        "COMBINED=hello-world".into(),
        "CFG_color=blue".into(),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".into(),
        "KUBERNETES_SERVICE_PORT=443".into(),
        "KUBERNETES_PORT=tcp://10.96.0.1:443".into(),
    ] {
        assert!(
            env.lines().any(|l| l == want),
            "{want} missing from:\n{env}"
        );
    }
    assert_eq!(sh("pwd"), "/work\n");
    assert_eq!(sh("cat /etc/conf/greeting"), "hello");
    assert_eq!(
        sh("cat /etc/color"),
        "blue",
        "a subPath of a configMap volume"
    );
    assert_eq!(sh("cat /etc/sec/password"), "s3cret");
    assert_eq!(sh("stat -L -c %a /etc/sec/password"), "400\n");
    assert_eq!(sh("cat /etc/info/labels"), "tier=\"backend\"");
    assert!(
        sh("touch /etc/conf/x 2>&1 || echo refused").contains("refused"),
        "configMap volumes are read-only"
    );
    // The service account's token, the cluster CA and the namespace, where in-cluster
    // clients read them; the token is good at the API server.
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(sh(&format!("cat {sa}/namespace")), "default");
    let ca = std::fs::read_to_string(c.env.root().join("server/pki/ca.crt")).unwrap();
    assert_eq!(sh(&format!("cat {sa}/ca.crt")), ca);
    let token = sh(&format!("cat {sa}/token"));
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let who = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(c.env.root().join("server/pki/ca.crt"))
        .args([
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "-d",
        ])
        .arg(r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#)
        .arg(format!(
            "https://127.0.0.1:{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            c.port
        ))
        .output()
        .unwrap();
    let who = String::from_utf8_lossy(&who.stdout);
    assert!(
        who.contains("system:serviceaccount:default:default"),
        "{who}"
    );
    // A ConfigMap change reaches the mounted file (an atomic swap of ..data).
    c.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"greeting":"bonjour"}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while sh("cat /etc/conf/greeting") != "bonjour" {
        assert!(
            Instant::now() < deadline,
            "the configMap volume was not updated within 15 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Labels changed: the downward API file follows.
    c.ok(&["label", "pod", "env", "tier=frontend", "--overwrite"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while sh("cat /etc/info/labels") != "tier=\"frontend\"" {
        assert!(
            Instant::now() < deadline,
            "the downwardAPI volume was not updated within 15 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok(&["delete", "pod", "env", "--timeout=60s"]);
    assert!(
        c.mounts().iter().all(|m| !m.contains(&uid)),
        "{:?}",
        c.mounts()
    );
}

/// Entries of a directory (0 when it does not exist).
fn count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// Host interfaces whose name starts with `prefix`.
fn links(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn two_hundred_pods_made_and_deleted_leave_nothing_behind() {
    let c = Cluster::start();
    let core = c.engine();
    let mut uids = Vec::new();
    let mut sandboxes = Vec::new();
    for round in 0..10 {
        let mut yaml = String::new();
        for i in 0..20 {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{round}-{i}}}\nspec:\n  nodeName: {}\n  terminationGracePeriodSeconds: 0\n  volumes: [{{name: scratch, emptyDir: {{medium: Memory}}}}]\n  containers:\n  - {{name: main, image: localhost/busybox:1, command: [sleep, '1000'], volumeMounts: [{{name: scratch, mountPath: /scratch}}]}}\n",
                c.node
            ));
        }
        c.apply(&yaml);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = c.ok(&[
                "get",
                "pods",
                "-o",
                "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
            ]);
            if out.lines().filter(|l| *l == "Running").count() == 20 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: not all Running: {out}\n{}",
                tail(&c.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let list: Value = serde_json::from_str(&c.ok(&["get", "pods", "-o", "json"])).unwrap();
        uids.extend(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string()),
        );
        sandboxes.extend(
            core.list_pod_sandbox(&SandboxFilter::default())
                .unwrap()
                .into_iter()
                .map(|s| s.id),
        );
        c.ok(&["delete", "pods", "--all", "--timeout=60s"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !core
            .list_pod_sandbox(&SandboxFilter::default())
            .unwrap()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "round {round}: sandboxes left");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(uids.len(), 200);
    // Nothing of the 200 pods is left in the kernel or on disk.
    assert!(
        c.mounts()
            .iter()
            .all(|m| !m.contains("/agent/pods/") && !m.contains("/netns/")),
        "mounts left: {:?}",
        c.mounts()
    );
    assert_eq!(
        count(&c.env.root().join("agent/pods")),
        0,
        "pod directories left"
    );
    assert_eq!(
        count(&c.env.root().join("agent/logs")),
        0,
        "log directories left"
    );
    for ctrl in ["memory", "cpu", "pids"] {
        for qos in ["", "burstable/", "besteffort/"] {
            let dir = std::path::Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join("kubepods")
                .join(qos);
            for uid in &uids {
                assert!(
                    !dir.join(format!("pod{uid}")).exists(),
                    "cgroup {}pod{uid} left",
                    dir.display()
                );
            }
        }
    }
    let leases = c.env.path("net/networks/leases");
    // One file per leased address (`.last` is the allocation cursor).
    let held: Vec<String> = std::fs::read_dir(&leases)
        .map(|d| {
            d.flatten()
                .flat_map(|n| std::fs::read_dir(n.path()).into_iter().flatten().flatten())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        held.is_empty(),
        "IP leases left under {}: {held:?}",
        leases.display()
    );
    // Each sandbox's host-side veth is named after its ID (other tests make their own).
    // The kernel destroys a veth with its network namespace, after the last reference
    // to it goes: give that a moment.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: Vec<String> = sandboxes
            .iter()
            .map(|id| format!("veth{}", &id[..id.len().min(11)]))
            .filter(|v| links(v).contains(v))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "veths left: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let infra = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("environ"))
                .is_ok_and(|env| env.contains(&c.env.root().to_string_lossy().into_owned()))
                && std::fs::read_to_string(e.path().join("comm")).is_ok_and(|n| n.trim() != "berth")
        })
        .count();
    assert_eq!(infra, 0, "processes of the test's pods left");
}
