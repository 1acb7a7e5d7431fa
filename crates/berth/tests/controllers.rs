//! The controllers in `berth server`, on simulated nodes, driven with kubectl as a
//! user would: Deployments rolled out, scaled, rolled back, paused, resumed and
//! restarted (`kubectl rollout ...`); ReplicaSets replacing lost pods; Jobs run to
//! completion, to BackoffLimitExceeded, by index, by podFailurePolicy, and deleted
//! after their TTL. Needs kubectl 1.32.

mod common;

use common::cluster::{tail, Cluster, SimNodes};
use serde_json::Value;

fn sim(c: &Cluster, prefix: &str, count: usize) -> SimNodes {
    SimNodes::start(c, prefix, count, &[], true)
}

/// The ReplicaSets of `app` as (name, replicas, revision, revision-history).
fn replica_sets(c: &Cluster, app: &str) -> Vec<(String, i64, String, String)> {
    let v: Value =
        serde_json::from_str(&c.ok(&["get", "rs", "-l", &format!("app={app}"), "-o", "json"]))
            .unwrap();
    let mut out: Vec<_> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| {
            let ann = &rs["metadata"]["annotations"];
            (
                rs["metadata"]["name"].as_str().unwrap().to_string(),
                rs["spec"]["replicas"].as_i64().unwrap_or(0),
                ann["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                ann["deployment.kubernetes.io/revision-history"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.2.cmp(&b.2));
    out
}

/// The running pods of `app` (not being deleted).
fn running_pods(c: &Cluster, app: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&c.ok(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]))
            .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running"
        })
        .cloned()
        .collect()
}

/// The images of the running pods of `app`, sorted.
fn pod_images(c: &Cluster, app: &str) -> Vec<String> {
    let mut out: Vec<String> = running_pods(c, app)
        .iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

/// The nodes of the running pods of `app`, sorted.
fn pod_nodes(c: &Cluster, app: &str) -> Vec<String> {
    let mut out: Vec<String> = running_pods(c, app)
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .collect();
    out.sort();
    out
}

/// The messages of the events about objects named `name`, oldest first.
fn event_messages(c: &Cluster, name: &str) -> String {
    c.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "custom-columns=M:.message",
    ])
}

/// Waits for the rollout of deployment `name`; on failure, what the controllers left.
fn rollout(c: &Cluster, name: &str) -> String {
    let o = c.kubectl(&[
        "rollout",
        "status",
        &format!("deploy/{name}"),
        "--timeout=60s",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() || !out.contains("successfully rolled out") {
        let state = c.kubectl(&["get", "deploy,rs,pods,events", "-o", "yaml"]);
        panic!(
            "rollout of {name} did not finish:\n{out}\n{}\n--- objects:\n{}\n--- server log tail:\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&state.stdout),
            tail(&c.log(), 60)
        );
    }
    out
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn deployments_roll_out_scale_roll_back_pause_and_restart_as_on_kubernetes() {
    let c = Cluster::api_only();
    let p = format!("d{}", std::process::id());
    let _nodes = sim(&c, &p, 3);
    let img = |tag: &str| format!("example.invalid/web:{tag}");
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image",
        &img("v1"),
        "--replicas=3",
    ]);
    rollout(&c, "web");
    assert_eq!(pod_images(&c, "web"), vec![img("v1"); 3]);
    let rss = replica_sets(&c, "web");
    assert_eq!(rss.len(), 1, "{rss:?}");
    let (first, _, rev, _) = &rss[0];
    assert_eq!(rev, "1");
    // Pods carry the ReplicaSet's hash, which names it.
    let hash = first.strip_prefix("web-").unwrap();
    let pods = c.ok(&[
        "get",
        "pods",
        "-l",
        &format!("pod-template-hash={hash}"),
        "-o",
        "name",
    ]);
    assert_eq!(pods.lines().count(), 3, "{pods}");
    let d = c.json("deploy", "web");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let cond = |d: &Value, t: &str| {
        d["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(cond(&d, "Available")["status"], "True", "{d}");
    assert_eq!(
        cond(&d, "Progressing")["reason"],
        "NewReplicaSetAvailable",
        "{d}"
    );

    // A new image rolls: a second ReplicaSet takes every replica, with revision 2.
    c.ok(&[
        "annotate",
        "deploy",
        "web",
        "kubernetes.io/change-cause=to v2",
    ]);
    c.ok(&["set", "image", "deploy/web", &format!("web={}", img("v2"))]);
    rollout(&c, "web");
    assert_eq!(pod_images(&c, "web"), vec![img("v2"); 3]);
    let rss = replica_sets(&c, "web");
    assert_eq!(
        rss.iter().map(|r| (r.1, r.2.as_str())).collect::<Vec<_>>(),
        [(0, "1"), (3, "2")],
        "{rss:?}"
    );
    let history = c.ok(&["rollout", "history", "deploy/web"]);
    assert!(history.contains("2         to v2"), "{history}");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
        "-o",
        "custom-columns=R:.reason,M:.message",
    ]);
    assert!(
        events.contains(&format!("Scaled up replica set {} from 0 to 1", rss[1].0)),
        "{events}"
    );
    assert!(
        events.contains(&format!("Scaled down replica set {first} from 3 to 2")),
        "{events}"
    );

    // Scaling alone does not roll.
    c.ok(&["scale", "deploy/web", "--replicas=5"]);
    c.until("5 replicas available", 30, || {
        (c.json("deploy", "web")["status"]["availableReplicas"] == 5).then_some(())
    });
    assert_eq!(replica_sets(&c, "web").len(), 2);

    // Undo brings revision 1's ReplicaSet back as revision 3.
    c.ok(&["rollout", "undo", "deploy/web"]);
    rollout(&c, "web");
    assert_eq!(pod_images(&c, "web"), vec![img("v1"); 5]);
    let rss = replica_sets(&c, "web");
    assert_eq!(rss.len(), 2, "{rss:?}");
    let back = rss.iter().find(|r| r.0 == *first).unwrap();
    assert_eq!(
        (back.1, back.2.as_str(), back.3.as_str()),
        (5, "3", "1"),
        "{rss:?}"
    );

    // Paused: a template change waits; resumed, it rolls.
    c.ok(&["rollout", "pause", "deploy/web"]);
    c.until("Progressing says paused", 30, || {
        (cond(&c.json("deploy", "web"), "Progressing")["reason"] == "DeploymentPaused")
            .then_some(())
    });
    c.ok(&["set", "image", "deploy/web", &format!("web={}", img("v3"))]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        replica_sets(&c, "web").len(),
        2,
        "a paused Deployment rolled"
    );
    c.ok(&["rollout", "resume", "deploy/web"]);
    rollout(&c, "web");
    assert_eq!(pod_images(&c, "web"), vec![img("v3"); 5]);

    // Restart: same image, new pods; and only two old revisions are kept.
    c.ok(&[
        "patch",
        "deploy/web",
        "-p",
        r#"{"spec":{"revisionHistoryLimit":1}}"#,
    ]);
    let before = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    c.ok(&["rollout", "restart", "deploy/web"]);
    rollout(&c, "web");
    let after = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "--field-selector=status.phase=Running",
        "-o",
        "name",
    ]);
    assert!(
        after.lines().all(|p| !before.contains(p)),
        "{before}\n{after}"
    );
    c.until("old revisions trimmed to 1", 30, || {
        (replica_sets(&c, "web").len() == 2).then_some(())
    });

    // Deleting the Deployment takes its ReplicaSets and pods.
    c.ok(&["delete", "deploy", "web"]);
    c.until("ReplicaSets and pods gone", 60, || {
        let left = c.ok(&["get", "rs,pods", "-l", "app=web", "-o", "name"]);
        left.trim().is_empty().then_some(())
    });
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn recreate_stops_the_old_pods_before_starting_new_ones_and_replica_sets_replace_lost_pods() {
    let c = Cluster::api_only();
    let p = format!("r{}", std::process::id());
    let _nodes = sim(&c, &p, 2);
    c.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: db}\nspec:\n  replicas: 2\n  strategy: {type: Recreate}\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: example.invalid/db:1}]}\n",
    );
    rollout(&c, "db");
    c.ok(&["set", "image", "deploy/db", "db=example.invalid/db:2"]);
    rollout(&c, "db");
    assert_eq!(
        pod_images(&c, "db"),
        vec!["example.invalid/db:2".to_string(); 2]
    );
    // The old ReplicaSet went to zero before the new one started.
    let events = event_messages(&c, "db");
    let down = events.find("Scaled down replica set").expect(&events);
    let up2 = events.rfind("Scaled up replica set").expect(&events);
    assert!(down < up2, "{events}");

    // A bare ReplicaSet keeps its count: a deleted pod is replaced, a scale-down
    // removes the surplus.
    c.apply(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: cache}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: cache}}\n  template:\n    metadata: {labels: {app: cache}}\n    spec: {containers: [{name: c, image: example.invalid/cache}]}\n",
    );
    let running = |n: usize| {
        c.until(&format!("{n} cache pods running"), 30, || {
            (pod_images(&c, "cache").len() == n
                && c.json("rs", "cache")["status"]["readyReplicas"] == n)
                .then_some(())
        })
    };
    running(3);
    let victim = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=cache",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    c.ok(&["delete", "pod", &victim]);
    running(3);
    let names = c.ok(&["get", "pods", "-l", "app=cache", "-o", "name"]);
    assert!(!names.contains(&format!("pod/{victim}\n")), "{names}");
    c.ok(&["scale", "rs/cache", "--replicas=1"]);
    running(1);
    let rs = c.json("rs", "cache");
    assert_eq!(rs["status"]["replicas"], 1, "{rs}");
    assert_eq!(
        rs["status"]["observedGeneration"], rs["metadata"]["generation"],
        "{rs}"
    );
}

fn job(name: &str, spec: &str, run_seconds: &str, exit_code: i32) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{spec}  template:\n    metadata: {{annotations: {{sim.berth.dev/run-seconds: \"{run_seconds}\", sim.berth.dev/exit-code: \"{exit_code}\"}}}}\n    spec:\n      restartPolicy: Never\n      containers: [{{name: main, image: example.invalid/task}}]\n"
    )
}

fn condition(j: &Value, kind: &str) -> Value {
    j["status"]["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == kind && c["status"] == "True")
        })
        .cloned()
        .unwrap_or_default()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn jobs_run_to_completion_fail_by_backoff_or_policy_and_go_after_their_ttl() {
    let c = Cluster::api_only();
    let p = format!("j{}", std::process::id());
    let _nodes = sim(&c, &p, 2);
    c.apply(&job(
        "batch",
        "  completions: 4\n  parallelism: 2\n",
        "0.5",
        0,
    ));
    c.apply(&job("flaky", "  backoffLimit: 0\n", "0.2", 1));
    c.apply(&job(
        "indexed",
        "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
        "0.3",
        0,
    ));
    c.apply(&job(
        "policy",
        "  backoffLimit: 5\n  podFailurePolicy:\n    rules:\n    - {action: FailJob, onExitCodes: {containerName: main, operator: In, values: [42]}}\n",
        "0.2",
        42,
    ));
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/batch",
        "job/indexed",
        "--timeout=60s",
    ]);
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/flaky",
        "job/policy",
        "--timeout=60s",
    ]);

    let batch = c.json("job", "batch");
    assert_eq!(batch["status"]["succeeded"], 4, "{batch}");
    assert!(batch["status"]["completionTime"].is_string(), "{batch}");
    let table = c.ok(&["get", "job", "batch"]);
    assert!(
        table.contains("Complete") && table.contains("4/4"),
        "{table}"
    );

    let flaky = c.json("job", "flaky");
    assert_eq!(
        condition(&flaky, "Failed")["reason"],
        "BackoffLimitExceeded",
        "{flaky}"
    );
    assert_eq!(
        condition(&flaky, "Failed")["message"],
        "Job has reached the specified backoff limit"
    );
    assert_eq!(flaky["status"]["failed"], 1, "{flaky}");

    let policy = c.json("job", "policy");
    let failed = condition(&policy, "Failed");
    assert_eq!(failed["reason"], "PodFailurePolicy", "{policy}");
    let msg = failed["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Container main for pod default/policy-")
            && msg.ends_with("failed with exit code 42 matching FailJob rule at index 0"),
        "{msg}"
    );

    let indexed = c.json("job", "indexed");
    assert_eq!(indexed["status"]["completedIndexes"], "0-2", "{indexed}");
    let pods: Value = serde_json::from_str(&c.ok(&[
        "get",
        "pods",
        "-l",
        "batch.kubernetes.io/job-name=indexed",
        "-o",
        "json",
    ]))
    .unwrap();
    let mut hosts: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["spec"]["hostname"].as_str().unwrap())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["indexed-0", "indexed-1", "indexed-2"]);
    let env = &pods["items"][0]["spec"]["containers"][0]["env"][0];
    assert_eq!(env["name"], "JOB_COMPLETION_INDEX", "{env}");
    // Every finished pod was counted and released.
    let all: Value = serde_json::from_str(&c.ok(&["get", "pods", "-o", "json"])).unwrap();
    for p in all["items"].as_array().unwrap() {
        assert!(
            p["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty()),
            "{p}"
        );
    }

    // A finished Job with a TTL goes, with its pods.
    c.apply(&job("brief", "  ttlSecondsAfterFinished: 1\n", "0.2", 0));
    c.until("the Job deleted after its TTL", 60, || {
        let o = c.kubectl(&["get", "job", "brief"]);
        (!o.status.success()).then_some(())
    });
    c.until("its pods deleted", 60, || {
        c.ok(&[
            "get",
            "pods",
            "-l",
            "batch.kubernetes.io/job-name=brief",
            "-o",
            "name",
        ])
        .trim()
        .is_empty()
        .then_some(())
    });
}

fn cronjob(name: &str, policy: &str, extra: &str, run_seconds: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: {name}}}\nspec:\n  schedule: \"* * * * *\"\n  concurrencyPolicy: {policy}\n{extra}  jobTemplate:\n    spec:\n      template:\n        metadata: {{annotations: {{sim.berth.dev/run-seconds: \"{run_seconds}\"}}}}\n        spec:\n          restartPolicy: Never\n          containers: [{{name: main, image: example.invalid/task}}]\n"
    )
}

/// The Jobs a CronJob made, oldest first.
fn jobs_of(c: &Cluster, cj: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&c.ok(&["get", "jobs", "-o", "json"])).unwrap();
    let mut out: Vec<Value> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["metadata"]["ownerReferences"][0]["name"] == cj
                && j["metadata"]["deletionTimestamp"].is_null()
        })
        .cloned()
        .collect();
    out.sort_by_key(|j| j["metadata"]["name"].as_str().unwrap().to_string());
    out
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn cronjobs_fire_on_schedule_with_their_concurrency_policy_and_history_limits() {
    let c = Cluster::api_only();
    let p = format!("c{}", std::process::id());
    let _nodes = sim(&c, &p, 2);
    // Bad schedules and time zones are refused naming the field.
    let o = c.kubectl(&[
        "create",
        "cronjob",
        "bad",
        "--image=x",
        "--schedule=61 * * * *",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("spec.schedule: Invalid value: \"61 * * * *\": minute field \"61\": 61 is outside 0-59"), "{err}");
    let o = c.kubectl_in(
        &["apply", "-f", "-"],
        Some(&cronjob("tz", "Allow", "  timeZone: Mars/Olympus\n", "1")),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains(
                "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"
            ),
        "{err}"
    );

    c.apply(&cronjob(
        "done",
        "Allow",
        "  successfulJobsHistoryLimit: 1\n",
        "0.3",
    ));
    c.apply(&cronjob("forbid", "Forbid", "", "600"));
    c.apply(&cronjob("replace", "Replace", "", "600"));
    // As if the last run were two minutes ago: the run due now starts at once.
    let earlier = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    for cj in ["done", "forbid", "replace"] {
        let patch = format!(r#"{{"status":{{"lastScheduleTime":"{earlier}"}}}}"#);
        c.ok(&[
            "patch",
            "cronjob",
            cj,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]);
    }
    let first = |cj: &str| {
        c.until(&format!("{cj}'s first Job"), 30, || {
            jobs_of(&c, cj).first().cloned()
        })
    };
    let (done1, forbid1, replace1) = (first("done"), first("forbid"), first("replace"));
    let minute = |j: &Value| -> i64 {
        j["metadata"]["name"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let scheduled = done1["metadata"]["annotations"]
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap();
    assert_eq!(
        scheduled.parse::<jiff::Timestamp>().unwrap().as_second(),
        minute(&done1) * 60,
        "{done1}"
    );
    c.ok(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{}", done1["metadata"]["name"].as_str().unwrap()),
        "--timeout=30s",
    ]);
    let cj = c.until("done's success recorded", 30, || {
        let cj = c.json("cronjob", "done");
        (cj["status"]["lastSuccessfulTime"].is_string() && cj["status"]["active"].is_null())
            .then_some(cj)
    });
    assert!(cj["status"]["lastScheduleTime"].is_string(), "{cj}");
    let active = c.json("cronjob", "forbid")["status"]["active"].clone();
    assert_eq!(active[0]["name"], forbid1["metadata"]["name"], "{active}");

    // The next minute: Allow runs again and keeps one finished Job; Forbid waits for
    // its running Job; Replace replaces it.
    c.until("the next minute's Jobs", 90, || {
        let done = jobs_of(&c, "done");
        let replace = jobs_of(&c, "replace");
        let next_done = done.iter().any(|j| minute(j) > minute(&done1));
        let replaced = replace.len() == 1 && minute(&replace[0]) > minute(&replace1);
        (next_done && replaced).then_some(())
    });
    let forbid = jobs_of(&c, "forbid");
    assert_eq!(forbid.len(), 1, "{forbid:?}");
    assert_eq!(forbid[0]["metadata"]["name"], forbid1["metadata"]["name"]);
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=forbid",
        "-o",
        "custom-columns=R:.reason",
    ]);
    assert!(events.contains("JobAlreadyActive"), "{events}");
    c.until("done keeps one finished Job", 30, || {
        let done = jobs_of(&c, "done");
        (done.len() == 1 && minute(&done[0]) > minute(&done1)).then_some(())
    });
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn daemonsets_run_one_pod_per_fitting_node_and_roll_node_by_node() {
    let c = Cluster::api_only();
    let p = format!("s{}", std::process::id());
    let _nodes = sim(&c, &p, 3);
    let (n0, n2) = (format!("{p}-0"), format!("{p}-2"));
    c.ok(&["taint", "node", &n2, "dedicated=db:NoSchedule"]);
    c.apply(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: a, image: example.invalid/agent:1}]}\n",
    );
    let ds_rollout = || {
        let out = c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
    };
    let placed = |want: usize| {
        c.until(&format!("{want} daemon pods running"), 30, || {
            let ds = c.json("ds", "agent");
            let s = &ds["status"];
            (s["desiredNumberScheduled"] == want
                && s["numberReady"] == want
                && pod_images(&c, "agent").len() == want)
                .then(|| pod_nodes(&c, "agent"))
        })
    };
    // The tainted node is left out; the others get one pod each, placed by the
    // scheduler through an affinity to their name, with kube's daemon tolerations.
    let nodes = placed(2);
    assert!(!nodes.contains(&n2), "{nodes:?}");
    let pods: Value =
        serde_json::from_str(&c.ok(&["get", "pods", "-l", "app=agent", "-o", "json"])).unwrap();
    let pod = &pods["items"][0];
    let term = &pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"]
        [0];
    assert_eq!(term["key"], "metadata.name", "{pod}");
    assert_eq!(term["values"][0], pod["spec"]["nodeName"], "{pod}");
    let tolerations = pod["spec"]["tolerations"].to_string();
    assert!(
        tolerations.contains("node.kubernetes.io/unreachable")
            && tolerations.contains("node.kubernetes.io/unschedulable"),
        "{tolerations}"
    );
    // Untainted, the node gets its pod; a node selector takes pods off other nodes.
    c.ok(&["taint", "node", &n2, "dedicated-"]);
    assert_eq!(placed(3).len(), 3);
    c.ok(&["label", "node", &n0, "role=edge"]);
    c.ok(&[
        "patch",
        "ds",
        "agent",
        "-p",
        r#"{"spec":{"template":{"spec":{"nodeSelector":{"role":"edge"}}}}}"#,
    ]);
    ds_rollout();
    assert_eq!(placed(1), vec![n0.clone()]);
    c.ok(&[
        "patch",
        "ds",
        "agent",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]"#,
    ]);
    ds_rollout();
    placed(3);

    // A new image rolls node by node; history and undo go through ControllerRevisions.
    c.ok(&["set", "image", "ds/agent", "a=example.invalid/agent:2"]);
    ds_rollout();
    assert_eq!(
        pod_images(&c, "agent"),
        vec!["example.invalid/agent:2".to_string(); 3]
    );
    // Three templates, four changes: the first came back (without the selector) and
    // took a new number rather than a new revision.
    let history = c.ok(&["rollout", "history", "ds/agent"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["2", "3", "4"], "{history}");
    c.ok(&["rollout", "undo", "ds/agent"]);
    ds_rollout();
    placed(3);
    assert_eq!(
        pod_images(&c, "agent"),
        vec!["example.invalid/agent:1".to_string(); 3]
    );
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn statefulsets_start_in_order_keep_their_names_and_claims_and_update_from_the_top() {
    let c = Cluster::api_only();
    let p = format!("t{}", std::process::id());
    let _nodes = sim(&c, &p, 2);
    let sts = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  serviceName: db\n  replicas: 3\n  selector: {{matchLabels: {{app: db}}}}\n  persistentVolumeClaimRetentionPolicy: {{whenScaled: Delete}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec: {{containers: [{{name: db, image: {image}}}]}}\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
        )
    };
    // With every node cordoned, db-0 cannot start: OrderedReady makes no other pod.
    for n in 0..2 {
        c.ok(&["cordon", &format!("{p}-{n}")]);
    }
    c.apply(&sts("example.invalid/db:1"));
    c.until("db-0 made", 30, || {
        c.kubectl(&["get", "pod", "db-0"])
            .status
            .success()
            .then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let names = c.ok(&["get", "pods", "-l", "app=db", "-o", "name"]);
    assert_eq!(names.trim(), "pod/db-0", "{names}");
    for n in 0..2 {
        c.ok(&["uncordon", &format!("{p}-{n}")]);
    }
    let out = c.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    assert!(out.contains("roll out complete"), "{out}");
    let pods = running_pods(&c, "db");
    let names: Vec<&str> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);
    for (i, pod) in pods.iter().enumerate() {
        assert_eq!(pod["spec"]["hostname"], format!("db-{i}"));
        assert_eq!(pod["spec"]["subdomain"], "db");
        assert_eq!(
            pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            format!("db-{i}")
        );
        let vol = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "data")
            .unwrap()
            .clone();
        assert_eq!(
            vol["persistentVolumeClaim"]["claimName"],
            format!("data-db-{i}"),
            "{vol}"
        );
    }
    // The default local-path class binds each claim where its pod was placed.
    let claims = c.until("the claims bound", 30, || {
        let claims = c.ok(&[
            "get",
            "pvc",
            "-o",
            "custom-columns=N:.metadata.name,S:.status.phase",
            "--no-headers",
        ]);
        let words: Vec<String> = claims.split_whitespace().map(str::to_string).collect();
        (words.iter().filter(|w| *w == "Bound").count() == 3).then_some(words)
    });
    assert_eq!(
        claims,
        [
            "data-db-0",
            "Bound",
            "data-db-1",
            "Bound",
            "data-db-2",
            "Bound"
        ]
    );

    // A new image replaces pods from the highest ordinal down.
    let before = |n: &str| {
        c.json("pod", n)["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let uid0 = before("db-0");
    c.apply(&sts("example.invalid/db:2"));
    let out = c.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    assert!(out.contains("roll out complete"), "{out}");
    assert_eq!(
        pod_images(&c, "db"),
        vec!["example.invalid/db:2".to_string(); 3]
    );
    assert_ne!(before("db-0"), uid0);
    let s = c.json("sts", "db")["status"].clone();
    assert_eq!(s["currentRevision"], s["updateRevision"], "{s}");
    let events = event_messages(&c, "db");
    let deleted: Vec<&str> = events
        .lines()
        .filter_map(|l| l.strip_prefix("Deleted pod: "))
        .collect();
    assert_eq!(deleted, ["db-2", "db-1", "db-0"], "{events}");

    // Scale down removes the highest first, with its claim (whenScaled: Delete).
    c.ok(&["scale", "sts/db", "--replicas=1"]);
    c.until("scaled to db-0 alone", 60, || {
        let names: Vec<String> = running_pods(&c, "db")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        let claims = c.ok(&["get", "pvc", "-o", "name"]);
        (names == ["db-0"] && claims.trim() == "persistentvolumeclaim/data-db-0").then_some(())
    });
}

/// A `berth controller-manager` process, killed when dropped; its log in a file.
struct Manager {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Manager {
    fn start(c: &Cluster, n: usize) -> Manager {
        Manager::start_with(c, n, &[])
    }

    fn start_with(c: &Cluster, n: usize, flags: &[&str]) -> Manager {
        let log = c.env.path(&format!("manager-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = c
            .env
            .cmd(&["controller-manager", "--kubeconfig"])
            .arg(c.kubeconfig())
            .args(flags)
            .env("BERTH_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Manager { child, log }
    }

    fn leads(&self) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains("became leader")
    }

    fn signal(&mut self, sig: rustix::process::Signal) {
        let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig);
        let _ = self.child.wait();
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn of_two_controller_managers_one_acts_and_the_other_takes_over_when_it_dies() {
    let c = Cluster::api_only_with(&["--disable", "controllers"]);
    let p = format!("l{}", std::process::id());
    let _nodes = sim(&c, &p, 2);
    let mut managers = [Manager::start(&c, 0), Manager::start(&c, 1)];
    let holder = || {
        let o = c.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let first = c.until("a leader", 30, || (!holder().is_empty()).then(holder));
    let table = c.ok(&["get", "lease", "-n", "kube-system"]);
    assert!(
        table.contains("kube-controller-manager") && table.contains(&first),
        "{table}"
    );
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=example.invalid/web",
        "--replicas=4",
    ]);
    rollout(&c, "web");
    // Exactly one manager acted: one ReplicaSet, four pods.
    assert_eq!(replica_sets(&c, "web").len(), 1);
    assert_eq!(
        c.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .lines()
            .count(),
        4
    );
    let leader = c.until("the leader's log", 10, || {
        managers.iter().position(|m| m.leads())
    });
    assert_eq!(managers.iter().filter(|m| m.leads()).count(), 1);

    // The leader dies without a word: after the lease runs out, the other takes over.
    managers[leader].signal(rustix::process::Signal::KILL);
    c.ok(&["scale", "deploy/web", "--replicas=6"]);
    c.until("the survivor scaled to 6", 60, || {
        (c.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .lines()
            .count()
            == 6)
            .then_some(())
    });
    let second = holder();
    assert_ne!(second, first);
    assert!(managers[1 - leader].leads());
    let transitions = c.ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-controller-manager",
        "-o",
        "jsonpath={.spec.leaseTransitions}",
    ]);
    assert_eq!(transitions.trim(), "1");
    // A clean stop gives the lease up at once.
    managers[1 - leader].signal(rustix::process::Signal::TERM);
    c.until("the lease given up", 10, || {
        holder().is_empty().then_some(())
    });
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn an_out_of_process_manager_acts_as_each_controllers_own_service_account() {
    let c = Cluster::api_only_with(&["--disable", "controllers"]);
    let p = format!("i{}", std::process::id());
    let _nodes = sim(&c, &p, 2);
    let manager = Manager::start_with(&c, 0, &["--use-service-account-credentials"]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=example.invalid/web",
        "--replicas=2",
    ]);
    rollout(&c, "web");
    let accounts = c.ok(&["get", "serviceaccounts", "-n", "kube-system", "-o", "name"]);
    for sa in ["deployment-controller", "replicaset-controller"] {
        assert!(
            accounts.contains(&format!("serviceaccount/{sa}\n")),
            "{accounts}"
        );
    }
    // The ReplicaSet controller loses its rights: the Deployment controller, acting
    // as its own account, still scales the ReplicaSet, but the pods are refused to
    // the ReplicaSet controller's account, by that name (in the server's log: the
    // account may not write the ReplicaSet's status or events either).
    c.ok(&[
        "delete",
        "clusterrolebinding",
        "system:controller:replicaset-controller",
    ]);
    c.ok(&["scale", "deploy/web", "--replicas=3"]);
    let refused = "User \"system:serviceaccount:kube-system:replicaset-controller\" cannot create resource \"pods\"";
    c.until("the ReplicaSet's pods refused", 30, || {
        c.log().contains(refused).then_some(())
    });
    assert!(
        !std::fs::read_to_string(&manager.log)
            .unwrap_or_default()
            .contains("ERROR"),
        "{}",
        std::fs::read_to_string(&manager.log).unwrap_or_default()
    );
    assert_eq!(replica_sets(&c, "web")[0].1, 3);
    assert_eq!(
        c.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .lines()
            .count(),
        2
    );
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_rollout_cut_by_kill_9_of_the_server_resumes_without_extra_pods_or_revisions() {
    let mut c = Cluster::api_only();
    let p = format!("k{}", std::process::id());
    let _nodes = sim(&c, &p, 3);
    // Slow on purpose: one pod at a time, each available a second after it is ready.
    c.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 12\n  minReadySeconds: 1\n  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: example.invalid/web:1}]}\n",
    );
    rollout(&c, "web");
    c.ok(&["set", "image", "deploy/web", "web=example.invalid/web:2"]);
    c.until("the rollout under way", 30, || {
        let n = c.json("deploy", "web")["status"]["updatedReplicas"]
            .as_i64()
            .unwrap_or(0);
        (n >= 2).then_some(())
    });
    c.kill();
    c.spawn();
    c.wait_api();
    let out = c.ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(
        pod_images(&c, "web"),
        vec!["example.invalid/web:2".to_string(); 12]
    );
    let all = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    c.until("only the 12 new pods left", 30, || {
        (c.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .lines()
            .count()
            == 12)
            .then_some(())
    });
    let rss = replica_sets(&c, "web");
    assert_eq!(
        rss.iter().map(|r| (r.1, r.2.as_str())).collect::<Vec<_>>(),
        [(0, "1"), (12, "2")],
        "{rss:?}\n{all}"
    );
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_node_that_stops_reporting_goes_unknown_is_tainted_and_loses_its_pods_after_their_toleration() {
    // Simulated nodes renew their Leases every 10 s, as the kubelet: the grace period
    // must be longer (kube's is 40 s).
    let c = Cluster::api_only_with(&["--node-monitor-grace-period", "15s"]);
    let p = format!("n{}", std::process::id());
    let mut doomed = SimNodes::start(&c, &format!("{p}a"), 1, &["--keep"], true);
    let (dead, alive) = (format!("{p}a-0"), format!("{p}b-0"));
    // A pod bound to a node that never registers: nothing will ever run or stop it.
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: stray}}\nspec:\n  nodeName: {p}-ghost\n  containers: [{{name: c, image: example.invalid/c}}]\n"
    ));
    // Two pods on the node that will die (tolerating its loss for 3 s, not 300).
    c.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 3}]\n      containers: [{name: web, image: example.invalid/web}]\n",
    );
    rollout(&c, "web");
    assert_eq!(pod_nodes(&c, "web"), [dead.clone(), dead.clone()]);
    // A pod made without tolerations gets kube's five-minute ones.
    let tols = running_pods(&c, "web")[0]["spec"]["tolerations"].to_string();
    assert!(
        tols.contains("node.kubernetes.io/not-ready") && tols.contains("300"),
        "{tols}"
    );
    let _survivor = sim(&c, &format!("{p}b"), 1);
    // The node's simulation dies without a word: its Lease is no longer renewed.
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&doomed.0),
        rustix::process::Signal::KILL,
    );
    let _ = doomed.0.wait();
    let node = c.until("the node Unknown and tainted", 45, || {
        let n = c.json("node", &dead);
        let taints = n["spec"]["taints"].to_string();
        let unknown = n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "Unknown");
        (unknown && taints.contains("node.kubernetes.io/unreachable")).then_some(n)
    });
    let taints = node["spec"]["taints"].to_string();
    assert!(
        taints.contains("NoExecute") && taints.contains("NoSchedule"),
        "{taints}"
    );
    let nodes = c.ok(&["get", "nodes", &dead]);
    assert!(nodes.contains("NotReady"), "{nodes}");
    // Its pods are evicted after their 3 s and replaced on the live node.
    c.until("the pods replaced on the live node", 30, || {
        (pod_nodes(&c, "web") == [alive.clone(), alive.clone()]).then_some(())
    });
    let events = c.ok(&["get", "events", "-o", "custom-columns=R:.reason,M:.message"]);
    assert!(
        events.contains("TaintManagerEviction")
            && events.contains(&format!("Node {dead} status is now: NodeNotReady")),
        "{events}"
    );
    // kube's zone gauges and node eviction counter, on the server's /metrics.
    let metrics = c.until("the zone gauges counting the dead node", 30, || {
        let m = c.ok(&["get", "--raw", "/metrics"]);
        m.lines()
            .any(|l| l.starts_with("node_collector_unhealthy_nodes_in_zone{") && !l.ends_with(" 0"))
            .then_some(m)
    });
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("node_collector_evictions_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(metrics.contains("node_collector_zone_size{"), "{metrics}");
    // The pod garbage collector took the stray pod after the grace period.
    c.until("the pod of a node that never registered gone", 30, || {
        (!c.kubectl(&["get", "pod", "stray"]).status.success()).then_some(())
    });
    // Deleting the dead node removes its pods, stuck terminating with no kubelet.
    c.ok(&["delete", "node", &dead]);
    c.until("the dead node's pods gone", 30, || {
        let left = c.ok(&["get", "pods", "-o", "jsonpath={.items[*].spec.nodeName}"]);
        (!left.contains(&dead)).then_some(())
    });
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn nodes_that_go_down_together_are_tainted_for_eviction_one_at_a_time() {
    // One node every 4 s in a zone; the grace period past the simulated Leases' 10 s.
    let c = Cluster::api_only_with(&[
        "--node-monitor-grace-period",
        "15s",
        "--node-eviction-rate",
        "0.25",
    ]);
    let p = format!("z{}", std::process::id());
    let mut two = SimNodes::start(&c, &format!("{p}a"), 2, &["--keep"], true);
    let mut third = SimNodes::start(&c, &format!("{p}c"), 1, &["--keep"], true);
    let _healthy = sim(&c, &format!("{p}b"), 2);
    let kill = |s: &mut SimNodes| {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&s.0),
            rustix::process::Signal::KILL,
        );
        let _ = s.0.wait();
    };
    // The NoExecute taint's time on `node`, once it has one.
    let no_execute = |node: &str| -> Option<String> {
        let n = c.json("node", node);
        n["spec"]["taints"].as_array()?.iter().find_map(|t| {
            (t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
                .then(|| t["timeAdded"].as_str().unwrap_or("").to_string())
        })
    };
    // Two of five go down at once: both are tainted, at the zone's pace.
    kill(&mut two);
    let (a0, a1) = (format!("{p}a-0"), format!("{p}a-1"));
    let times = c.until("both down nodes tainted NoExecute", 60, || {
        Some((no_execute(&a0)?, no_execute(&a1)?))
    });
    let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
    let apart = (at(&times.0) - at(&times.1)).get_seconds().abs();
    assert!(apart >= 3, "NoExecute taints {apart} s apart: {times:?}");
    // A third of five: most of this small zone is down, likelier the network's
    // fault than the nodes': it is marked unschedulable but keeps its pods.
    kill(&mut third);
    let c0 = format!("{p}c-0");
    c.until("the third node unreachable", 45, || {
        c.json("node", &c0)["spec"]["taints"]
            .to_string()
            .contains("node.kubernetes.io/unreachable")
            .then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(6));
    let taints = c.json("node", &c0)["spec"]["taints"].to_string();
    assert!(
        taints.contains("NoSchedule") && !taints.contains("NoExecute"),
        "{taints}"
    );
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn services_get_endpoint_slices_and_endpoints_of_the_pods_they_select() {
    let c = Cluster::api_only();
    let p = format!("e{}", std::process::id());
    let _nodes = sim(&c, &p, 2);
    c.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: example.invalid/web, ports: [{name: http, containerPort: 8080}]}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: manual}\nspec:\n  ports: [{port: 80}]\n",
    );
    rollout(&c, "web");
    let ips = |n: usize| {
        c.until(&format!("{n} endpoints"), 30, || {
            let v: Value = serde_json::from_str(&c.ok(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "json",
            ]))
            .unwrap();
            let items = v["items"].as_array()?.clone();
            let eps: Vec<Value> = items
                .iter()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .collect();
            (items.len() == 1 && eps.len() == n).then_some((items[0].clone(), eps))
        })
    };
    let (slice, eps) = ips(2);
    assert_eq!(slice["ports"][0]["port"], 8080, "{slice}");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    let pod_ips: Vec<String> = running_pods(&c, "web")
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    for e in &eps {
        assert_eq!(e["conditions"]["ready"], true, "{e}");
        assert!(
            pod_ips.contains(&e["addresses"][0].as_str().unwrap().to_string()),
            "{e} {pod_ips:?}"
        );
        assert_eq!(e["targetRef"]["kind"], "Pod");
    }
    // The Endpoints object, as kubectl shows it.
    let shown = c.ok(&["get", "endpoints", "web"]);
    for ip in &pod_ips {
        assert!(shown.contains(&format!("{ip}:8080")), "{shown}");
    }
    c.ok(&["scale", "deploy/web", "--replicas=3"]);
    ips(3);
    c.ok(&["scale", "deploy/web", "--replicas=1"]);
    ips(1);
    // A Service without a selector is left to its user.
    let manual = c.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=manual",
        "-o",
        "name",
    ]);
    assert!(manual.trim().is_empty(), "{manual}");
    assert!(!c.kubectl(&["get", "endpoints", "manual"]).status.success());
    // Deleting the Service takes its slices.
    c.ok(&["delete", "svc", "web"]);
    c.until("the slices gone", 30, || {
        c.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "name",
        ])
        .trim()
        .is_empty()
        .then_some(())
    });
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn replication_controllers_keep_their_pods_and_apply_prune_finds_every_kind() {
    let c = Cluster::api_only();
    let p = format!("q{}", std::process::id());
    let _nodes = sim(&c, &p, 2);
    c.apply(
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: old}\nspec:\n  replicas: 2\n  template:\n    metadata: {labels: {app: old}}\n    spec: {containers: [{name: c, image: example.invalid/old}]}\n",
    );
    let rc = c.json("rc", "old");
    assert_eq!(
        rc["spec"]["selector"]["app"], "old",
        "the selector defaults to the template's labels: {rc}"
    );
    let running = |n: usize| {
        c.until(
            &format!("{n} pods of the ReplicationController"),
            30,
            || {
                (pod_images(&c, "old").len() == n
                    && c.json("rc", "old")["status"]["readyReplicas"] == n)
                    .then_some(())
            },
        )
    };
    running(2);
    c.ok(&["scale", "rc/old", "--replicas=3"]);
    running(3);
    let table = c.ok(&["get", "rc", "old"]);
    assert!(
        table.contains("DESIRED") && table.contains("old"),
        "{table}"
    );

    // kubectl's default prune list asks for ReplicationControllers among others.
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep, labels: {set: p}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: drop, labels: {set: p}}\n";
    let o = c.kubectl_in(&["apply", "-l", "set=p", "-f", "-"], Some(manifest));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = c.kubectl_in(
        &["apply", "--prune", "-l", "set=p", "-f", "-"],
        Some(&manifest[..manifest.find("---").unwrap()]),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("configmap/drop pruned"), "{out}");
}
