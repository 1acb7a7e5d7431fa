//! `berth sim nodes` against an API server without any real node, driven with
//! kubectl: simulated nodes register Ready with their Leases renewed, pods bound to
//! them run (or end as their annotations say), deletions are confirmed, and the
//! nodes go when the simulation stops. Needs kubectl 1.32.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, SimNodes};
use serde_json::Value;

fn json(c: &Cluster, args: &[&str]) -> Value {
    serde_json::from_str(&c.ok(args)).unwrap()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            None => return,
            Some(state) if Instant::now() > deadline => {
                panic!("{what}: not within {secs} s: {state}")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn simulated_nodes_register_run_their_pods_and_leave() {
    let c = Cluster::api_only();
    let prefix = format!("sim{}", std::process::id());
    let sim = SimNodes::start(&c, &prefix, 3, &["--label", "zone=z1", "--cpu", "8"], false);
    let selector = "sim.berth.dev/node=true,zone=z1";
    wait_for("three Ready nodes", 30, || {
        let nodes = json(&c, &["get", "nodes", "-l", selector, "-o", "json"]);
        let ready = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .count();
        (ready != 3).then(|| nodes.to_string())
    });
    let n1 = format!("{prefix}-1");
    let node = json(&c, &["get", "node", &n1, "-o", "json"]);
    assert_eq!(node["status"]["allocatable"]["cpu"], "8", "{node}");
    assert_eq!(node["spec"]["podCIDR"], "10.128.1.0/24", "{node}");
    // kubectl's table shows them as any node.
    let table = c.ok(&["get", "nodes", "-l", selector]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&n1) && l.contains("Ready")),
        "{table}"
    );
    // Leases renewed every 10 s, as the kubelet renews its own.
    let renew_time = || {
        json(
            &c,
            &["get", "lease", "-n", "kube-node-lease", &n1, "-o", "json"],
        )["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = renew_time();
    wait_for("the lease renewed", 20, || {
        let now = renew_time();
        (now == first).then_some(now)
    });
    // Pods bound to a simulated node run there at once, with an address of its CIDR.
    let pod = |name: &str, restart: &str, annotations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec:\n  nodeName: {n1}\n  restartPolicy: {restart}\n  initContainers:\n  - {{name: init, image: example.invalid/init}}\n  containers:\n  - {{name: main, image: example.invalid/app}}\n"
        )
    };
    c.apply(&format!(
        "{}---\n{}---\n{}",
        pod("web", "Always", ""),
        pod("done", "Never", ""),
        pod(
            "broken",
            "Never",
            "sim.berth.dev/exit-code: '3', sim.berth.dev/run-seconds: '0.5'"
        )
    ));
    let web = c.wait_pod("web", "Ready", 30, common::cluster::ready);
    assert_eq!(web["status"]["phase"], "Running");
    assert!(
        web["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.128.1.")),
        "{web}"
    );
    assert_eq!(web["status"]["hostIP"], "100.64.0.2");
    assert_eq!(
        web["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    let done = c.wait_pod("done", "Succeeded", 30, |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    let broken = c.wait_pod("broken", "Failed", 30, |p| p["status"]["phase"] == "Failed");
    let term = &broken["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 3, "{broken}");
    assert_eq!(term["reason"], "Error", "{broken}");
    // A deletion is confirmed as the kubelet confirms it: no 30 s grace to wait out.
    let t = Instant::now();
    c.ok(&["delete", "pod", "web", "--timeout=20s"]);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // Stopped, it removes its nodes and their Leases.
    let (status, err) = sim.stop();
    assert!(status.success(), "{status}: {err}");
    let left = c.ok(&["get", "nodes", "-l", selector, "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
    let o = c.kubectl(&["get", "lease", "-n", "kube-node-lease", &n1]);
    assert!(!o.status.success());
    c.ok(&["delete", "pod", "--all", "--timeout=20s"]);
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_real_node_of_the_same_name_is_never_taken_over() {
    let c = Cluster::api_only();
    c.apply("apiVersion: v1\nkind: Node\nmetadata: {name: plain-0}\n");
    let mut sim = SimNodes::start(&c, "plain", 1, &[], false);
    let (status, err) = sim.wait_exit(30);
    assert!(!status.success());
    assert!(
        err.contains("node plain-0 exists and is not a simulated node") && err.contains("--prefix"),
        "{err}"
    );
    // The node is as it was.
    let n = json(&c, &["get", "node", "plain-0", "-o", "json"]);
    assert!(
        n["metadata"]["labels"]["sim.berth.dev/node"].is_null(),
        "{n}"
    );
    let o = c.env.run(&[
        "sim",
        "nodes",
        "--kubeconfig",
        "/nonexistent",
        "--count",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/nonexistent"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
