//! PodDisruptionBudgets in `berth server`, on simulated nodes, driven with kubectl:
//! the disruption controller's status, evictions granted and refused (429) by the
//! budget, and `kubectl cordon` + `kubectl drain` moving a Deployment's pods off a
//! node without ever going below the budget. Needs kubectl 1.32.

mod common;

use common::cluster::{Cluster, SimNodes};
use serde_json::Value;

fn pdb_status(c: &Cluster, name: &str) -> Value {
    c.json("pdb", name)["status"].clone()
}

/// Waits for the budget's status to have these (expected, desired, healthy, allowed).
fn wait_budget(c: &Cluster, name: &str, want: (i64, i64, i64, i64)) -> Value {
    c.until(&format!("pdb {name} at {want:?}"), 30, || {
        let s = pdb_status(c, name);
        let have = (
            s["expectedPods"].as_i64().unwrap_or(-1),
            s["desiredHealthy"].as_i64().unwrap_or(-1),
            s["currentHealthy"].as_i64().unwrap_or(-1),
            s["disruptionsAllowed"].as_i64().unwrap_or(-1),
        );
        (have == want).then_some(s)
    })
}

/// POSTs an Eviction of `pod`; kubectl's exit status and stderr.
fn evict(c: &Cluster, pod: &str) -> (bool, String) {
    let body = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"default"}}}}"#
    );
    let path = format!("/api/v1/namespaces/default/pods/{pod}/eviction");
    let o = c.kubectl_in(&["create", "--raw", &path, "-f", "-"], Some(&body));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The names of the running, not deleting, pods of `app`, with their nodes.
fn pods(c: &Cluster, app: &str) -> Vec<(String, String)> {
    let v: Value =
        serde_json::from_str(&c.ok(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]))
            .unwrap();
    let mut out: Vec<(String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn evictions_and_drains_honour_pod_disruption_budgets() {
    let c = Cluster::api_only();
    let p = format!("pdb{}", std::process::id());
    let _nodes = SimNodes::start(&c, &p, 2, &[], true);
    let (n0, n1) = (format!("{p}-0"), format!("{p}-1"));
    // Every replica on n0: n1 is cordoned while they are placed.
    c.ok(&["cordon", &n1]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=example.invalid/web:1",
        "--replicas=4",
    ]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(pods(&c, "web").iter().all(|(_, n)| *n == n0));

    // The controller's status: 4 expected, 4 must stay healthy, none may go.
    c.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=4",
    ]);
    let s = wait_budget(&c, "web", (4, 4, 4, 0));
    let cond = &s["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["reason"]),
        (
            &Value::from("DisruptionAllowed"),
            &Value::from("False"),
            &Value::from("InsufficientPods")
        ),
        "{s}"
    );
    let table = c.ok(&["get", "pdb", "web"]);
    assert!(table.contains("MIN AVAILABLE") && table.contains("ALLOWED DISRUPTIONS"));
    // An eviction the budget cannot afford: kube's 429, and the pod stays.
    let victim = pods(&c, "web")[0].0.clone();
    let (ok, err) = evict(&c, &victim);
    assert!(!ok, "evicted despite the budget");
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    assert!(pods(&c, "web").iter().any(|(n, _)| *n == victim));

    // A budget of 3 allows one: the eviction spends it at once, so a second fails.
    // (Every node cordoned: the replacement stays Pending, not healthy.)
    c.ok(&["cordon", &n0]);
    c.ok(&[
        "patch",
        "pdb",
        "web",
        "-p",
        r#"{"spec":{"minAvailable":3}}"#,
    ]);
    wait_budget(&c, "web", (4, 3, 4, 1));
    let (first, second) = (pods(&c, "web")[0].0.clone(), pods(&c, "web")[1].0.clone());
    let (ok, err) = evict(&c, &first);
    assert!(ok, "{err}");
    let (ok, err) = evict(&c, &second);
    assert!(!ok && err.contains("disruption budget"), "{err}");
    c.until("the evicted pod gone and replaced", 30, || {
        let now = pods(&c, "web");
        (now.len() == 4 && !now.iter().any(|(n, _)| *n == first)).then_some(())
    });
    wait_budget(&c, "web", (4, 3, 3, 0));

    // Drain: n1 takes pods again; n0's go one at a time, each eviction waiting (kubectl
    // retries the 429s) until the replacement of the last one is Ready on n1.
    c.ok(&["uncordon", &n1]);
    wait_budget(&c, "web", (4, 3, 4, 1));
    let out = c.kubectl(&[
        "drain",
        &n0,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=120s",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("node/{n0} drained")), "{stdout}");
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "the drain never had to wait for the budget:\n{stderr}"
    );
    let after = pods(&c, "web");
    assert_eq!(after.len(), 4, "{after:?}");
    assert!(after.iter().all(|(_, n)| *n == n1), "{after:?}");
    let node = c.json("node", &n0);
    assert_eq!(node["spec"]["unschedulable"], true);
    wait_budget(&c, "web", (4, 3, 4, 1));

    // Two budgets over one pod: the eviction cannot choose, as kube says.
    c.ok(&[
        "create",
        "pdb",
        "web2",
        "--selector=app=web",
        "--max-unavailable=1",
    ]);
    wait_budget(&c, "web2", (4, 3, 4, 1));
    let (ok, err) = evict(&c, &after[0].0);
    assert!(
        !ok && err.contains("more than one PodDisruptionBudget"),
        "{err}"
    );
    c.ok(&["delete", "pdb", "web2"]);

    // A percentage of pods without a controller cannot be worked out: fail safe.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lone, labels: {app: lone}}\nspec:\n  containers: [{name: c, image: example.invalid/lone}]\n",
    );
    c.ok(&[
        "create",
        "pdb",
        "lone",
        "--selector=app=lone",
        "--min-available=50%",
    ]);
    let s = c.until("a SyncFailed budget", 30, || {
        let s = pdb_status(&c, "lone");
        (s["conditions"][0]["reason"] == "SyncFailed").then_some(s)
    });
    assert_eq!(s["disruptionsAllowed"], 0);
    assert_eq!(
        s["conditions"][0]["message"], "found no controller ref for pod \"lone\"",
        "{s}"
    );
    // Both limits at once is refused, naming the field.
    let o = c.kubectl_in(
        &["apply", "-f", "-"],
        Some("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: both}\nspec: {minAvailable: 1, maxUnavailable: 1, selector: {matchLabels: {app: web}}}\n"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("minAvailable and maxUnavailable cannot be both set"),
        "{err}"
    );
}
