//! The node as kubectl and monitoring see it: `kubectl top node|pod` through the
//! built-in metrics.k8s.io, and the agent's Summary API, /metrics/resource and
//! /metrics through the API server's node proxy.
//! Needs root (real namespaces, cgroups, mounts, bridges) and kubectl 1.32.

mod common;

use std::time::{Duration, Instant};

use berth_engine::cri::RuntimeService;
use common::cluster::{ready, tail, Cluster};
use serde_json::Value;

/// Millicores from a kubectl quantity ("250m", "1", "1500000n").
fn millicores(q: &str) -> f64 {
    if let Some(n) = q.strip_suffix('n') {
        n.parse::<f64>().unwrap() / 1e6
    } else if let Some(u) = q.strip_suffix('u') {
        u.parse::<f64>().unwrap() / 1e3
    } else if let Some(m) = q.strip_suffix('m') {
        m.parse().unwrap()
    } else {
        q.parse::<f64>().unwrap() * 1000.0
    }
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn kubectl_top_and_the_agents_stats_show_what_pods_use() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: busy, labels: {{app: busy}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: localhost/busybox:1
    command: ["sh", "-c", "while :; do :; done"]
  - name: hold
    image: localhost/busybox:1
    command: ["sh", "-c", "mkdir /m && mount -t tmpfs -o size=64m tmpfs /m 2>/dev/null || mkdir -p /m; dd if=/dev/zero of=/m/fill bs=1M count=48 2>/dev/null; exec sleep 1000"]
    securityContext: {{privileged: true}}
"#,
        node = c.node
    ));
    c.wait_pod("busy", "Ready", 60, ready);
    // The group is discovered as kubectl discovers it.
    let groups = c.ok(&["api-versions"]);
    assert!(groups.contains("metrics.k8s.io/v1beta1"), "{groups}");
    let top = c.ok(&["top", "node"]);
    let line = top
        .lines()
        .find(|l| l.starts_with(&c.node))
        .unwrap_or_else(|| panic!("{top}"));
    // NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.len(), 5, "{top}");
    assert!(millicores(cols[1]) > 0.0, "{top}");
    assert!(cols[3].ends_with("Mi"), "{top}");
    // The spinning container shows its CPU; the other its 48 MiB of tmpfs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let raw = c.ok(&[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy",
        ]);
        let m: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(m["kind"], "PodMetrics", "{raw}");
        assert_eq!(m["metadata"]["labels"]["app"], "busy", "{raw}");
        // Usage is averaged since the previous read, at least a second before.
        let window = m["window"].as_str().unwrap_or_else(|| panic!("{raw}"));
        assert!(
            window.ends_with('s') && !window.ends_with("ms") && window != "0s",
            "{raw}"
        );
        let usage = |name: &str, what: &str| {
            m["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .and_then(|c| c["usage"][what].as_str())
                .unwrap_or_else(|| panic!("{name} {what}: {raw}"))
                .to_string()
        };
        let spin = millicores(&usage("spin", "cpu"));
        let hold_ki: u64 = usage("hold", "memory")
            .trim_end_matches("Ki")
            .parse()
            .unwrap();
        if spin > 200.0 && hold_ki > 40 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spin {spin}m, hold {hold_ki} KiB: {raw}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let top = c.ok(&["top", "pod", "--containers", "-l", "app=busy"]);
    assert!(
        top.contains("busy") && top.contains("spin") && top.contains("hold"),
        "{top}"
    );
    let o = c.kubectl(&["top", "pod", "nothere"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothere"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The agent's own endpoints, through the node proxy.
    let base = format!("/api/v1/nodes/{}/proxy", c.node);
    let summary: Value =
        serde_json::from_str(&c.ok(&["get", "--raw", &format!("{base}/stats/summary")])).unwrap();
    assert_eq!(summary["node"]["nodeName"], c.node.as_str());
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(summary["node"]["fs"]["capacityBytes"].as_u64().unwrap() > 0);
    let pod = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "busy")
        .expect("the pod in the summary");
    assert_eq!(pod["containers"].as_array().unwrap().len(), 2);
    assert!(pod["process_stats"]["process_count"].as_u64().unwrap() >= 2);
    let res = c.ok(&["get", "--raw", &format!("{base}/metrics/resource")]);
    for want in [
        "node_cpu_usage_seconds_total ",
        "container_cpu_usage_seconds_total{container=\"spin\",namespace=\"default\",pod=\"busy\"}",
        "pod_memory_working_set_bytes{namespace=\"default\",pod=\"busy\"}",
    ] {
        assert!(res.contains(want), "{want}\n{res}");
    }
    let m = c.ok(&["get", "--raw", &format!("{base}/metrics")]);
    assert!(m.contains("kubelet_running_pods 1"), "{m}");
    assert!(
        m.contains("kubelet_running_containers{container_state=\"running\"} 2"),
        "{m}"
    );
    // A node that does not exist.
    let o = c.kubectl(&["get", "--raw", "/api/v1/nodes/nowhere/proxy/metrics"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nowhere"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    c.ok(&["delete", "pod", "busy", "--timeout=60s"]);
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_node_turns_away_pods_that_do_not_fit_as_the_kubelet_does() {
    let mut c = Cluster::start_with(&["--max-pods", "2"]);
    let pod = |name: &str, extra: &str| {
        c.pod_yaml(
            name,
            &format!(
                r#"  containers:
  - name: main
    image: localhost/busybox:1
    command: ["sh", "-c", "mkdir -p /www; echo {name} > /www/index.html; exec httpd -f -p 80 -h /www"]
{extra}"#
            ),
        )
    };
    let host_port = "    ports: [{containerPort: 80, hostPort: 18480}]\n";
    c.apply(&pod("web", host_port));
    c.wait_pod("web", "Ready", 60, ready);
    // The host port reaches the pod.
    let body = common::http_get("127.0.0.1:18480", "/index.html");
    assert_eq!(String::from_utf8_lossy(&body).trim(), "web");
    let rejected = |name: &str, reason: &str, message: &str| {
        let p = c.wait_pod(name, "rejected", 30, |p| p["status"]["phase"] == "Failed");
        assert_eq!(p["status"]["reason"], reason, "{p}");
        let m = p["status"]["message"].as_str().unwrap_or("");
        assert!(
            m.starts_with("Pod was rejected: ") && m.contains(message),
            "{m}"
        );
        assert!(
            p["status"]["containerStatuses"].is_null(),
            "nothing ran: {p}"
        );
        let ev = c.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ]);
        assert!(ev.contains(reason), "{ev}");
    };
    c.apply(&pod("greedy", "    resources: {requests: {cpu: \"64\"}}\n"));
    rejected(
        "greedy",
        "OutOfcpu",
        "Node didn't have enough resource: cpu, requested: 64000",
    );
    c.apply(&pod("clash", host_port));
    rejected("clash", "NodePorts", "didn't have free ports");
    c.apply(&pod("second", ""));
    c.wait_pod("second", "Ready", 60, ready);
    c.apply(&pod("third", ""));
    rejected(
        "third",
        "OutOfpods",
        "pods, requested: 1, used: 2, capacity: 2",
    );
    // Rejected pods hold nothing: room comes back when a running pod goes.
    c.ok(&["delete", "pod", "second", "--timeout=60s"]);
    c.apply(&pod("fourth", ""));
    c.wait_pod("fourth", "Ready", 60, ready);
    // A restarted agent keeps what it runs and does not admit anew what it rejected.
    c.kill();
    c.spawn();
    c.wait_api();
    std::thread::sleep(Duration::from_secs(2));
    for name in ["web", "fourth"] {
        assert!(ready(&c.pod(name)), "{name}: {}", c.pod(name));
    }
    assert_eq!(c.pod("third")["status"]["phase"], "Failed");
    c.ok(&["delete", "pod", "--all", "--timeout=60s"]);
}

/// Waits for a pod to be evicted; its status message.
fn evicted(c: &Cluster, name: &str) -> String {
    let p = c.wait_pod(name, "evicted", 60, |p| p["status"]["reason"] == "Evicted");
    assert_eq!(p["status"]["phase"], "Failed", "{p}");
    let cond = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .unwrap_or_else(|| panic!("no DisruptionTarget: {p}"));
    assert_eq!(cond["reason"], "TerminationByKubelet");
    let ev = c.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name},reason=Evicted"),
    ]);
    assert!(ev.contains("Evicted"), "{ev}");
    p["status"]["message"].as_str().unwrap().to_string()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn pods_past_their_storage_limits_are_evicted() {
    let c = Cluster::start();
    let scratch = "  volumes:\n  - {name: scratch, emptyDir: {sizeLimit: 1Mi}}\n";
    let busybox = |command: &str, extra: &str| {
        format!(
            "  containers:\n  - name: main\n    image: localhost/busybox:1\n    command: [\"sh\", \"-c\", \"{command}; exec sleep 1000\"]\n{extra}"
        )
    };
    let mount = "    volumeMounts: [{name: scratch, mountPath: /scratch}]\n";
    let limit = "    resources: {limits: {ephemeral-storage: 2Mi}}\n";
    c.apply(
        &[
            c.pod_yaml(
                "scratchy",
                &(busybox("dd if=/dev/zero of=/scratch/big bs=1M count=4", mount) + scratch),
            ),
            c.pod_yaml(
                "writer",
                &busybox("dd if=/dev/zero of=/big bs=1M count=8", limit),
            ),
            c.pod_yaml(
                "calm",
                &(busybox("echo 1 > /small", &format!("{limit}{mount}")) + scratch),
            ),
        ]
        .join("---\n"),
    );
    let m = evicted(&c, "scratchy");
    assert_eq!(
        m,
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
    let m = evicted(&c, "writer");
    assert_eq!(
        m,
        "Container main exceeded its local ephemeral storage limit \"2Mi\". "
    );
    // Nothing of theirs runs; the pod within its limits is untouched.
    for name in ["scratchy", "writer"] {
        let p = c.pod(name);
        let st = &p["status"]["containerStatuses"][0]["state"];
        assert!(st["terminated"].is_object(), "{name}: {p}");
    }
    assert!(ready(&c.pod("calm")));
    assert_eq!(c.pod("calm")["status"]["phase"], "Running");
    c.ok(&["delete", "pod", "--all", "--timeout=60s"]);
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn under_memory_pressure_the_pod_most_over_its_request_is_evicted() {
    // A threshold 2 GiB under what is free now: a pod that takes 2.5 GiB crosses it,
    // and tests running beside this one (a VM takes 1 GiB) stay clear of it.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb = |f: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(f)?.strip_prefix(':'))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .parse()
            .unwrap()
    };
    let available_mi =
        (kb("MemTotal") - (kb("MemTotal") - kb("MemFree") - kb("Inactive(file)"))) / 1024;
    let threshold = format!("memory.available<{}Mi", available_mi.saturating_sub(2048));
    let c = Cluster::start_with(&["--eviction-hard", &threshold]);
    c.apply(&c.pod_yaml(
        "calm",
        "  containers:\n  - name: main\n    image: localhost/busybox:1\n    command: [sleep, \"1000\"]\n    resources: {requests: {memory: 64Mi}}\n",
    ));
    c.wait_pod("calm", "Ready", 60, ready);
    c.apply(&c.pod_yaml(
        "hog",
        r#"  containers:
  - name: main
    image: localhost/busybox:1
    command: ["sh", "-c", "dd if=/dev/zero of=/m/fill bs=1M count=2560; exec sleep 1000"]
    volumeMounts: [{name: m, mountPath: /m}]
  volumes:
  - {name: m, emptyDir: {medium: Memory, sizeLimit: 3Gi}}
"#,
    ));
    let m = evicted(&c, "hog");
    assert!(
        m.starts_with("The node was low on resource: memory. Threshold quantity: ")
            && m.contains("Container main was using")
            && m.contains("request is 0, has larger consumption of memory."),
        "{m}"
    );
    // Its memory came back when the hog's tmpfs went: a check later, nothing else
    // is evicted.
    assert!(c.log().contains("evicting"), "{}", tail(&c.log(), 20));
    std::thread::sleep(Duration::from_secs(11));
    let p = c.pod("calm");
    assert!(ready(&p) && p["status"]["reason"].is_null(), "{p}");
    c.ok(&["delete", "pod", "--all", "--timeout=60s"]);
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn static_pods_run_from_files_and_show_as_mirror_pods() {
    let c = Cluster::start();
    let dir = c.env.root().join("agent/pod-manifests");
    let manifest = |text: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: kube-system, labels: {{tier: static}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: localhost/busybox:1\n    command: [\"sh\", \"-c\", \"mkdir -p /www; echo {text} > /www/index.html; exec httpd -f -p 8080 -h /www\"]\n"
        )
    };
    std::fs::write(dir.join("web.yaml"), manifest("one")).unwrap();
    std::fs::write(dir.join("broken.yaml"), "{this is not a pod").unwrap();
    let name = format!("web-{}", c.node);
    let get = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = c.kubectl(&["get", "pod", "-n", "kube-system", &name, "-o", "json"]);
            if o.status.success() {
                let p: Value = serde_json::from_slice(&o.stdout).unwrap();
                if ready(&p) {
                    return p;
                }
            }
            assert!(Instant::now() < deadline, "{what}: {}", tail(&c.log(), 30));
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let p = get("the mirror pod");
    let a = &p["metadata"]["annotations"];
    assert!(a["kubernetes.io/config.mirror"].is_string(), "{p}");
    assert_eq!(a["kubernetes.io/config.source"], "file");
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(p["metadata"]["labels"]["tier"], "static");
    assert!(
        p["spec"]["volumes"].is_null(),
        "no token volume on a mirror: {p}"
    );
    // The kubelet's events name the static pod (its UID is the file's hash, which the
    // mirror carries in kubernetes.io/config.mirror); kubectl describe of the mirror
    // looks them up by that UID.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = c.ok(&["describe", "pod", "-n", "kube-system", &name]);
        if d.contains("Started") && d.contains("Started container main") {
            break;
        }
        assert!(Instant::now() < deadline, "no events in describe:\n{d}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let page = |ip: &str| {
        String::from_utf8(common::http_get(&format!("{ip}:8080"), "/index.html")).unwrap()
    };
    assert_eq!(page(&ip), "one\n");
    let id = p["status"]["containerStatuses"][0]["containerID"].clone();
    assert!(
        c.log().contains("static pod manifest ignored"),
        "{}",
        tail(&c.log(), 30)
    );
    // Deleting the mirror changes nothing: it comes back, the pod ran on.
    c.ok(&["delete", "pod", "-n", "kube-system", &name, "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        let p = get("the mirror back");
        if p["metadata"]["uid"] != p["metadata"]["annotations"]["kubernetes.io/config.mirror"]
            && p["metadata"]["creationTimestamp"].is_string()
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["containerStatuses"][0]["containerID"] == id
        {
            break p;
        }
        assert!(Instant::now() < deadline, "{p}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(back["status"]["containerStatuses"][0]["restartCount"], 0);
    // An edited file is a new pod.
    std::fs::write(dir.join("web.yaml"), manifest("two")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = get("the edited pod");
        if p["status"]["containerStatuses"][0]["containerID"] != id {
            if let Some(ip) = p["status"]["podIP"].as_str() {
                if page(ip) == "two\n" {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "{p}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // A removed file: the pod stops, the mirror goes.
    std::fs::remove_file(dir.join("web.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .kubectl(&["get", "pod", "-n", "kube-system", &name])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the mirror stayed");
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = c
            .engine()
            .list_containers(&Default::default())
            .unwrap()
            .into_iter()
            .filter(|x| x.state.is_running())
            .count();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} containers still run");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn under_disk_pressure_the_pod_that_wrote_most_is_evicted_first() {
    // A threshold above what is free now: the node is short of disk at once.
    let st = rustix::fs::statvfs("/tmp").unwrap();
    let free_percent = st.f_bavail * 100 / st.f_blocks;
    let threshold = format!(
        "memory.available<100Mi,nodefs.available<{}%",
        (free_percent + 5).min(100)
    );
    let c = Cluster::start_with(&["--eviction-hard", &threshold]);
    let writer = |name: &str, mb: u32| {
        c.pod_yaml(
            name,
            &format!("  containers:\n  - {{name: main, image: localhost/busybox:1, command: [sh, -c, 'dd if=/dev/zero of=/fill bs=1M count={mb}; exec sleep 1000']}}\n"),
        )
    };
    c.apply(&format!(
        "{}---\n{}",
        writer("heavy", 32),
        writer("light", 1)
    ));
    let m = evicted(&c, "heavy");
    assert!(
        m.starts_with("The node was low on resource: ephemeral-storage. Threshold quantity: ")
            && m.contains("has larger consumption of ephemeral-storage"),
        "{m}"
    );
    let ev = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=light,reason=Evicted",
    ]);
    assert!(!ev.contains("Evicted"), "the lighter pod went first: {ev}");
    // The node says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c.ok(&[
            "get",
            "node",
            &c.node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"DiskPressure\")].status}",
        ]);
        if s == "True" {
            break;
        }
        assert!(Instant::now() < deadline, "DiskPressure {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    c.ok(&["delete", "pod", "--all", "--timeout=60s"]);
}
