//! The controllers with real pods: an all-in-one `berth server` (scheduler,
//! controllers and node agent in one process) running busybox containers for a
//! Deployment's rollout, Jobs to completion and failure (the agent's exit codes and
//! JOB_COMPLETION_INDEX from the downward API), a DaemonSet and a StatefulSet whose
//! pods answer to their own hostname and keep their data in local-path volumes
//! across replacement. Needs root and kubectl 1.32.

mod common;

use berth_engine::cri::{RuntimeService, SandboxFilter};
use common::cluster::Cluster;
use serde_json::Value;

const BUSYBOX: &str = "localhost/busybox:1";

fn sandboxes(c: &Cluster) -> usize {
    c.engine()
        .list_pod_sandbox(&SandboxFilter::default())
        .unwrap()
        .len()
}

fn job(name: &str, spec: &str, script: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: main, image: {BUSYBOX}, command: [sh, -c, '{script}']}}]\n"
    )
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn workloads_run_real_containers_on_the_node_agent() {
    let c = Cluster::start();
    // A Deployment rolls real pods.
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: web, image: {BUSYBOX}, command: [sleep, '3600'], env: [{{name: V, value: '1'}}]}}]\n"
    ));
    let status = c.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    c.ok(&["set", "env", "deploy/web", "V=2"]);
    let status = c.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let pods: Value =
        serde_json::from_str(&c.ok(&["get", "pods", "-l", "app=web", "-o", "json"])).unwrap();
    let running: Vec<&Value> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert_eq!(running.len(), 2, "{pods}");
    for p in &running {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            c.ok(&["exec", name, "--", "sh", "-c", "echo $V"]).trim(),
            "2"
        );
    }

    // Jobs: real exit codes decide.
    c.apply(&job(
        "ok",
        "  completions: 2\n  parallelism: 2\n",
        "echo done",
    ));
    c.apply(&job("bad", "  backoffLimit: 0\n", "exit 3"));
    c.apply(&job(
        "idx",
        "  completions: 2\n  parallelism: 2\n  completionMode: Indexed\n",
        "echo index=$JOB_COMPLETION_INDEX",
    ));
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/ok",
        "job/idx",
        "--timeout=120s",
    ]);
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/bad",
        "--timeout=120s",
    ]);
    assert!(c.ok(&["logs", "job/ok"]).contains("done"));
    let bad = c.json("job", "bad");
    let failed = bad["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{bad}");
    let mut indexes: Vec<String> = (0..2).map(|_| String::new()).collect();
    let idx_pods: Value = serde_json::from_str(&c.ok(&[
        "get",
        "pods",
        "-l",
        "batch.kubernetes.io/job-name=idx",
        "-o",
        "json",
    ]))
    .unwrap();
    for (i, p) in idx_pods["items"].as_array().unwrap().iter().enumerate() {
        indexes[i] = c
            .ok(&["logs", p["metadata"]["name"].as_str().unwrap()])
            .trim()
            .to_string();
    }
    indexes.sort();
    assert_eq!(indexes, ["index=0", "index=1"]);

    // A DaemonSet on the one node, and a StatefulSet whose pods know their names.
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: a, image: {BUSYBOX}, command: [sleep, '3600']}}]\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  serviceName: db\n  replicas: 2\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: db, image: {BUSYBOX}, command: [sh, -c, '[ -f /data/id ] || hostname > /data/id; exec sleep 3600'], volumeMounts: [{{name: data, mountPath: /data}}]}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    ));
    let out = c.ok(&["rollout", "status", "ds/agent", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = c.ok(&["rollout", "status", "sts/db", "--timeout=120s"]);
    assert!(out.contains("roll out complete"), "{out}");
    assert_eq!(c.ok(&["exec", "db-1", "--", "hostname"]).trim(), "db-1");
    // Each pod's claim, provisioned on the node by the local-path provisioner, keeps
    // its data when the pod is replaced.
    assert_eq!(
        c.ok(&["exec", "db-0", "--", "cat", "/data/id"]).trim(),
        "db-0"
    );
    c.ok(&["exec", "db-0", "--", "sh", "-c", "echo kept > /data/mark"]);
    let first = c.pod("db-0")["metadata"]["uid"].clone();
    c.ok(&["delete", "pod", "db-0"]);
    c.until("db-0 back, a new pod", 120, || {
        let p = c.kubectl(&["get", "pod", "db-0", "-o", "json"]);
        let p: Value = serde_json::from_slice(&p.stdout).ok()?;
        (p["metadata"]["uid"] != first && common::cluster::ready(&p)).then_some(())
    });
    assert_eq!(
        c.ok(&["exec", "db-0", "--", "cat", "/data/mark"]).trim(),
        "kept"
    );
    assert_eq!(
        c.ok(&["exec", "db-0", "--", "cat", "/data/id"]).trim(),
        "db-0"
    );
    let storage = c.env.path("storage");
    let volumes = || std::fs::read_dir(&storage).map(|d| d.count()).unwrap_or(0);
    assert_eq!(volumes(), 2, "a directory per claim under {storage:?}");

    // Deleting the workloads stops every container.
    c.ok(&[
        "delete",
        "deploy/web",
        "ds/agent",
        "sts/db",
        "job/ok",
        "job/bad",
        "job/idx",
    ]);
    c.until("every pod sandbox gone", 120, || {
        (sandboxes(&c) == 0).then_some(())
    });
    // The claims deleted, their volumes go, and the agent removes the directories.
    c.ok(&["delete", "pvc", "data-db-0", "data-db-1"]);
    c.until("the local-path directories removed", 60, || {
        (volumes() == 0).then_some(())
    });
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn an_autoscaler_adds_replicas_when_real_cpu_use_passes_its_target() {
    let c = Cluster::start();
    // Each pod spins (held to 200m by its limit) against a 100m request: ~200%.
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: burn}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: burn}}}}\n  template:\n    metadata: {{labels: {{app: burn}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: burn, image: {BUSYBOX}, command: [sh, -c, 'while :; do :; done'], resources: {{requests: {{cpu: 100m}}, limits: {{cpu: 200m}}}}}}]\n"
    ));
    c.ok(&["rollout", "status", "deploy/burn", "--timeout=120s"]);
    c.apply("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: burn}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burn}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}\n");
    c.until("the Deployment scaled to maxReplicas", 150, || {
        (c.json("deploy", "burn")["spec"]["replicas"] == 3).then_some(())
    });
    let ev = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=burn,reason=SuccessfulRescale",
    ]);
    assert!(
        ev.contains("reason: cpu resource utilization (percentage of request) above target"),
        "{ev}"
    );
    let hpa = c.json("hpa", "burn");
    let used = hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        .as_i64()
        .unwrap_or(0);
    assert!(used > 50, "{hpa}");
    c.ok(&["delete", "hpa/burn", "deploy/burn"]);
    c.until("every pod sandbox gone", 120, || {
        (sandboxes(&c) == 0).then_some(())
    });
}
