//! Admission in `berth server`, driven with kubectl: Pod Security admission by
//! namespace labels — a pod past the enforced level refused with each violation
//! named, warnings for the warn level on pods and on workloads' templates, and a
//! Deployment whose pods its namespace refuses failing to create them, as on
//! Kubernetes. Needs kubectl 1.32.

mod common;

use common::cluster::Cluster;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn pod_security_levels_refuse_and_warn_by_namespace_label() {
    let c = Cluster::api_only();
    c.ok(&["create", "namespace", "locked"]);
    c.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=baseline",
        "pod-security.kubernetes.io/warn=restricted",
    ]);
    // Past baseline: refused, each violation with the field to fix.
    let o = c.kubectl(&[
        "run",
        "priv",
        "--image=busybox",
        "-n",
        "locked",
        "--privileged",
    ]);
    assert!(!o.status.success());
    let e = text(&o);
    assert!(
        e.contains(r#"pods "priv" is forbidden: violates PodSecurity "baseline:latest": privileged (container "priv" must not set securityContext.privileged=true)"#),
        "{e}"
    );
    let host = c.kubectl_in(
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: host, namespace: locked}\nspec:\n  hostNetwork: true\n  volumes: [{name: root, hostPath: {path: /}}]\n  containers: [{name: c, image: busybox, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]\n"),
    );
    let e = text(&host);
    assert!(!host.status.success(), "{e}");
    for v in [
        "host namespaces (hostNetwork=true)",
        r#"non-default capabilities (container "c" must not include "SYS_ADMIN" in securityContext.capabilities.add)"#,
        r#"hostPath volumes (volume "root")"#,
    ] {
        assert!(e.contains(v), "{v} missing: {e}");
    }
    // Within baseline but not restricted: made, with restricted's warning.
    let o = c.kubectl(&["run", "plain", "--image=busybox", "-n", "locked"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(r#"Warning: would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "plain" must set securityContext.allowPrivilegeEscalation=false)"#),
        "{out}"
    );
    // Hardened: no warning.
    let o = c.kubectl_in(
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: hardened, namespace: locked}\nspec:\n  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}\n  containers: [{name: c, image: busybox, securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}}]\n"),
    );
    assert!(
        o.status.success() && !text(&o).contains("Warning"),
        "{}",
        text(&o)
    );
    // A workload is warned of pods its namespace will refuse; the pods are refused.
    let o = c.kubectl_in(
        &["create", "-f", "-"],
        Some("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: hostnet, namespace: locked}\nspec:\n  selector: {matchLabels: {app: hostnet}}\n  template:\n    metadata: {labels: {app: hostnet}}\n    spec:\n      hostNetwork: true\n      containers: [{name: c, image: busybox}]\n"),
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(r#"Warning: deployment "hostnet" would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#),
        "{out}"
    );
    c.until("the ReplicaSet's FailedCreate event", 20, || {
        let ev = c.ok(&[
            "get",
            "events",
            "-n",
            "locked",
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
        ]);
        (ev.contains("FailedCreate") && ev.contains("violates PodSecurity \"baseline:latest\""))
            .then_some(())
    });
    // Unlabelled namespaces are privileged: anything goes.
    c.ok(&["run", "priv", "--image=busybox", "--privileged"]);
}

fn pod(name: &str, cpu: &str, memory: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: q}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {{requests: {{cpu: {cpu}}}, limits: {{memory: {memory}}}}}\n"
    )
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn resource_quotas_cap_what_a_namespace_makes() {
    let c = Cluster::api_only();
    c.ok(&["create", "namespace", "q"]);
    c.ok(&[
        "create",
        "quota",
        "compute",
        "--hard=pods=2,requests.cpu=1,limits.memory=1Gi",
        "-n",
        "q",
    ]);
    let create = |yaml: &str| c.kubectl_in(&["create", "-f", "-"], Some(yaml));
    // A pod that says nothing of what the quota caps.
    let o = c.kubectl(&["run", "bare", "--image=busybox", "-n", "q"]);
    assert!(
        text(&o).contains(r#"pods "bare" is forbidden: failed quota: compute: must specify limits.memory for: bare; requests.cpu for: bare"#),
        "{}",
        text(&o)
    );
    assert!(create(&pod("a", "600m", "512Mi")).status.success());
    let o = create(&pod("b", "600m", "256Mi"));
    assert!(
        text(&o).contains(r#"pods "b" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"#),
        "{}",
        text(&o)
    );
    assert!(create(&pod("b", "300m", "256Mi")).status.success());
    let o = create(&pod("c", "50m", "64Mi"));
    assert!(
        text(&o)
            .contains("exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"),
        "{}",
        text(&o)
    );
    // The quota's status shows the usage, as `kubectl describe quota` reads it.
    c.until("the quota's usage", 15, || {
        let q: serde_json::Value =
            serde_json::from_str(&c.ok(&["get", "quota", "compute", "-n", "q", "-o", "json"]))
                .ok()?;
        let used = &q["status"]["used"];
        (used["pods"] == "2" && used["requests.cpu"] == "900m" && used["limits.memory"] == "768Mi")
            .then_some(())
    });
    // A burst from a controller stops at the limit too.
    c.ok(&[
        "delete",
        "pod",
        "a",
        "b",
        "-n",
        "q",
        "--grace-period=0",
        "--force",
    ]);
    let o = c.kubectl_in(
        &["create", "-f", "-"],
        Some("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: burst, namespace: q}\nspec:\n  replicas: 5\n  selector: {matchLabels: {app: burst}}\n  template:\n    metadata: {labels: {app: burst}}\n    spec:\n      containers: [{name: c, image: busybox, resources: {requests: {cpu: 10m}, limits: {memory: 16Mi}}}]\n"),
    );
    assert!(o.status.success(), "{}", text(&o));
    c.until("the ReplicaSet's FailedCreate for the quota", 20, || {
        let ev = c.ok(&[
            "get",
            "events",
            "-n",
            "q",
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
        ]);
        ev.contains("exceeded quota: compute").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pods = c.ok(&["get", "pods", "-n", "q", "-o", "name"]);
    assert_eq!(pods.lines().count(), 2, "{pods}");
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn limit_ranges_default_and_bound_containers_and_claims() {
    let c = Cluster::api_only();
    c.ok(&["create", "namespace", "lr"]);
    c.apply(
        r#"apiVersion: v1
kind: LimitRange
metadata: {name: limits, namespace: lr}
spec:
  limits:
  - type: Container
    default: {cpu: 200m, memory: 128Mi}
    defaultRequest: {cpu: 100m}
    max: {cpu: "1"}
    min: {cpu: 50m}
  - type: PersistentVolumeClaim
    max: {storage: 1Gi}
"#,
    );
    let create = |yaml: &str| c.kubectl_in(&["create", "-f", "-"], Some(yaml));
    let pod = |name: &str, resources: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: lr}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {resources}\n")
    };
    // Left out: defaulted, and said so.
    assert!(create(&pod("plain", "{}")).status.success());
    let p: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "pod", "plain", "-n", "lr", "-o", "json"])).unwrap();
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(r["requests"]["cpu"], "100m", "{r}");
    assert_eq!(r["requests"]["memory"], "128Mi", "{r}");
    assert_eq!(r["limits"]["cpu"], "200m", "{r}");
    assert_eq!(r["limits"]["memory"], "128Mi", "{r}");
    let ann = p["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
        .as_str()
        .unwrap_or("");
    assert!(ann.starts_with("LimitRanger plugin set: "), "{ann}");
    // Out of bounds: refused with every reason.
    let o = create(&pod("big", "{limits: {cpu: \"2\"}}"));
    assert!(
        text(&o).contains(
            r#"pods "big" is forbidden: [maximum cpu usage per Container is 1, but limit is 2]"#
        ),
        "{}",
        text(&o)
    );
    let o = create(&pod("tiny", "{requests: {cpu: 10m}}"));
    assert!(
        text(&o).contains("minimum cpu usage per Container is 50m, but request is 10m"),
        "{}",
        text(&o)
    );
    let o = create(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: lr}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 2Gi}}\n",
    );
    assert!(
        text(&o).contains(r#"persistentvolumeclaims "data" is forbidden: [maximum storage usage per PersistentVolumeClaim is 1Gi, but request is 2Gi]"#),
        "{}",
        text(&o)
    );
}

/// `--pod-security-admission-config-file`: the cluster's defaults apply to namespaces
/// without labels (a label overrides its mode), exempt namespaces are not checked,
/// and a pod's updates are checked when they change what runs (an image), not when
/// they only touch its labels. A bad file stops the server with the field named.
#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn pod_security_defaults_exemptions_and_updates() {
    let env = common::Env::new();
    let bad = env.path("bad-psa.yaml");
    std::fs::write(&bad, "apiVersion: pod-security.admission.config.k8s.io/v1\nkind: PodSecurityConfiguration\ndefaults: {enforce: strict}\n").unwrap();
    let err = env.fails(&[
        "server",
        "--disable-agent",
        "--pod-security-admission-config-file",
        bad.to_str().unwrap(),
    ]);
    assert!(
        err.contains("defaults.enforce: \"strict\" is not a level"),
        "{err}"
    );

    let cfg = env.path("psa.yaml");
    std::fs::write(&cfg, "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    defaults: {enforce: baseline, enforce-version: latest}\n    exemptions: {namespaces: [legacy]}\n").unwrap();
    let c = Cluster::api_only_with(&[
        "--pod-security-admission-config-file",
        cfg.to_str().unwrap(),
    ]);
    for ns in ["plain", "legacy", "open"] {
        c.ok(&["create", "namespace", ns]);
    }
    c.ok(&[
        "label",
        "namespace",
        "open",
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    let run = |ns: &str| c.kubectl(&["run", "priv", "--image=busybox", "-n", ns, "--privileged"]);
    let refused = run("plain");
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains(r#"violates PodSecurity "baseline:latest": privileged"#),
        "{}",
        text(&refused)
    );
    for ns in ["legacy", "open"] {
        let o = run(ns);
        assert!(o.status.success(), "{ns}: {}", text(&o));
    }

    // Updates: a label is always writable; a new image is checked.
    c.ok(&["run", "web", "--image=busybox", "-n", "plain"]);
    c.ok(&[
        "label",
        "namespace",
        "plain",
        "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
    ]);
    c.ok(&["label", "pod", "web", "-n", "plain", "tier=front"]);
    let o = c.kubectl(&["set", "image", "pod/web", "web=busybox:2", "-n", "plain"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(r#"violates PodSecurity "restricted:latest""#),
        "{}",
        text(&o)
    );
}

/// Scoped quotas track only the pods in their scopes (BestEffort, Terminating,
/// PriorityClass); per-StorageClass quotas only claims of their class; an update
/// that grows what a quota counts (a claim resized) is checked as a create is.
#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn scoped_and_storage_class_quotas_and_updates() {
    let c = Cluster::api_only();
    c.ok(&["create", "namespace", "sq"]);
    let create = |yaml: &str| c.kubectl_in(&["create", "-n", "sq", "-f", "-"], Some(yaml));
    let ok = |yaml: &str| {
        let o = create(yaml);
        assert!(o.status.success(), "{}", text(&o));
    };
    ok("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: besteffort}\nspec:\n  hard: {pods: '1'}\n  scopes: [BestEffort]\n");
    ok("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: high}\nspec:\n  hard: {pods: '1', requests.cpu: 500m}\n  scopeSelector:\n    matchExpressions: [{scopeName: PriorityClass, operator: In, values: [high]}]\n");
    ok("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: gold}\nspec:\n  hard: {gold.storageclass.storage.k8s.io/requests.storage: 2Gi, gold.storageclass.storage.k8s.io/persistentvolumeclaims: '2'}\n");
    ok("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n");
    let pod = |name: &str, extra: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra}  containers:\n  - name: c\n    image: busybox\n")
    };
    // BestEffort: one pod without requests; a second is refused; a pod with
    // requests is not the quota's to count.
    ok(&pod("be1", ""));
    let o = create(&pod("be2", ""));
    assert!(
        text(&o).contains(
            "exceeded quota: besteffort, requested: pods=1, used: pods=1, limited: pods=1"
        ),
        "{}",
        text(&o)
    );
    ok(&pod("sized", "").replace(
        "image: busybox\n",
        "image: busybox\n    resources: {requests: {cpu: 10m}}\n",
    ));
    // PriorityClass high: its pods must give cpu requests and stay under 500m.
    let high = |name: &str, cpu: &str| {
        pod(name, "  priorityClassName: high\n").replace(
            "image: busybox\n",
            &format!("image: busybox\n    resources: {{requests: {{cpu: {cpu}}}}}\n"),
        )
    };
    let o = create(&high("h1", "600m"));
    assert!(
        text(&o).contains("exceeded quota: high, requested: requests.cpu=600m, used: requests.cpu=0, limited: requests.cpu=500m"),
        "{}",
        text(&o)
    );
    ok(&high("h1", "400m"));

    // Claims of class gold count; others do not. A resize past the limit is refused.
    let claim = |name: &str, class: &str, size: &str| {
        format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  storageClassName: {class}\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n")
    };
    ok(&claim("g1", "gold", "1Gi"));
    ok(&claim("s1", "silver", "5Gi"));
    let o = create(&claim("g2", "gold", "2Gi"));
    assert!(
        text(&o).contains("exceeded quota: gold, requested: gold.storageclass.storage.k8s.io/requests.storage=2Gi, used: gold.storageclass.storage.k8s.io/requests.storage=1Gi, limited: gold.storageclass.storage.k8s.io/requests.storage=2Gi"),
        "{}",
        text(&o)
    );
    let o = c.kubectl(&[
        "patch",
        "pvc",
        "g1",
        "-n",
        "sq",
        "--type=merge",
        "-p",
        r#"{"spec": {"resources": {"requests": {"storage": "3Gi"}}}}"#,
    ]);
    assert!(!o.status.success(), "a resize past the quota: {}", text(&o));
    assert!(text(&o).contains("exceeded quota: gold"), "{}", text(&o));
    // Labels do not grow anything: allowed.
    c.ok(&["label", "pvc", "g1", "-n", "sq", "tier=db"]);
    c.until("the scoped quotas' usage", 15, || {
        let used = |q: &str| {
            serde_json::from_str::<serde_json::Value>(
                &c.ok(&["get", "quota", q, "-n", "sq", "-o", "json"]),
            )
            .ok()
            .map(|v| v["status"]["used"].clone())
        };
        (used("besteffort")?["pods"] == "1"
            && used("high")?["requests.cpu"] == "400m"
            && used("gold")?["gold.storageclass.storage.k8s.io/requests.storage"] == "1Gi")
            .then_some(())
    });
}
