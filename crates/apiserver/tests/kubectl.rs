//! kubectl 1.32 against berth's API server: the verbs users type, with the outputs
//! they expect.

mod common;

use common::{file, Server};

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
"#;

/// Removes the finalizers of `obj` (KIND/NAME) and waits until it is gone.
fn release_finalizers(s: &Server, obj: &str) {
    s.ok(&[
        "patch",
        obj,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    s.ok(&["wait", "--for=delete", obj, "--timeout=10s"]);
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn create_get_describe_and_discovery() {
    let s = Server::start();
    let f = file(s.dir.path(), "web.yaml", WEB);
    let out = s.ok(&["create", "-f", f.to_str().unwrap()]);
    assert_eq!(
        lines(&out),
        ["deployment.apps/web created", "service/web created"]
    );
    let e = s.fails(&["create", "-f", f.to_str().unwrap()]);
    assert!(
        e.contains("AlreadyExists") || e.contains("already exists"),
        "{e}"
    );

    // Tables with kube's columns, -o wide, name, jsonpath, yaml, json.
    let t = lines(&s.ok(&["get", "deploy", "-o", "wide"]));
    assert_eq!(
        t[0],
        "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR"
    );
    assert!(t[1].starts_with("web 0/2 0 0 "), "{t:?}");
    assert!(t[1].ends_with("nginx nginx:1.25 app=web"), "{t:?}");
    let svc = lines(&s.ok(&["get", "svc", "web"]));
    assert_eq!(svc[0], "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE");
    assert!(svc[1].starts_with("web ClusterIP 10.96."), "{svc:?}");
    assert!(svc[1].contains("<none> 80/TCP"), "{svc:?}");
    assert_eq!(
        s.ok(&["get", "deploy,svc", "-l", "app=web", "-o", "name"])
            .trim(),
        "deployment.apps/web"
    );
    assert_eq!(
        s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.strategy.rollingUpdate.maxSurge} {.spec.template.spec.containers[0].imagePullPolicy} {.metadata.generation}"]),
        "25% IfNotPresent 1"
    );
    let y = s.ok(&["get", "deploy", "web", "-o", "yaml"]);
    for want in [
        "revisionHistoryLimit: 10",
        "terminationGracePeriodSeconds: 30",
        "dnsPolicy: ClusterFirst",
        "uid: ",
    ] {
        assert!(y.contains(want), "{want} missing from\n{y}");
    }
    let j: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    assert_eq!(j["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(j["spec"]["sessionAffinity"], "None");
    // -A and --field-selector
    let all = lines(&s.ok(&["get", "ns"]));
    assert_eq!(all.len(), 5, "{all:?}");
    let sa = lines(&s.ok(&["get", "sa", "-A"]));
    assert_eq!(sa[0], "NAMESPACE NAME SECRETS AGE");
    assert_eq!(
        sa.len(),
        5,
        "a default ServiceAccount per namespace: {sa:?}"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "ns",
            "--field-selector",
            "metadata.name=kube-system",
            "-o",
            "name"
        ])
        .trim(),
        "namespace/kube-system"
    );
    let e = s.fails(&["get", "pods", "--field-selector", "spec.bogus=1"]);
    assert!(e.contains("field label not supported: spec.bogus"), "{e}");
    // describe reads everything through the API
    let d = s.ok(&["describe", "deploy", "web"]);
    assert!(
        d.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"),
        "{d}"
    );
    assert!(d.contains("Image:         nginx:1.25"), "{d}");
    // Discovery, OpenAPI and the rest.
    let ar = s.ok(&["api-resources"]);
    assert!(
        lines(&ar).contains(&"deployments deploy apps/v1 true Deployment".to_string()),
        "{ar}"
    );
    let av = s.ok(&["api-versions"]);
    for g in [
        "apps/v1",
        "batch/v1",
        "coordination.k8s.io/v1",
        "policy/v1",
        "v1",
    ] {
        assert!(av.lines().any(|l| l == g), "{g} missing: {av}");
    }
    let v = s.ok(&["version", "-o", "json"]);
    assert!(v.contains("\"gitVersion\": \"v1.32.0+berth\""), "{v}");
    let ex = s.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        ex.contains("rollingUpdate\t<RollingUpdateDeployment>"),
        "{ex}"
    );
    let ex = s.ok(&["explain", "pods.spec.containers.image"]);
    assert!(ex.contains("FIELD: image <string>"), "{ex}");
    assert_eq!(s.ok(&["get", "--raw", "/readyz"]), "ok");
    let m = s.ok(&["get", "--raw", "/metrics"]);
    assert!(
        m.contains(
            "apiserver_request_total{verb=\"create\",resource=\"deployments\",code=\"201\"} 1"
        ),
        "{m}"
    );
    let who = lines(&s.ok(&["auth", "whoami"]));
    assert_eq!(who[1], "Username system:admin");
    assert!(who[2].contains("system:masters"), "{who:?}");
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn apply_patch_edit_label_scale() {
    let s = Server::start();
    let f = file(s.dir.path(), "web.yaml", WEB);
    assert_eq!(
        lines(&s.ok(&["apply", "-f", f.to_str().unwrap()])),
        ["deployment.apps/web created", "service/web created"]
    );
    // Client-side apply: the last-applied annotation drives the next diff.
    let f2 = file(
        s.dir.path(),
        "web2.yaml",
        &WEB.replace("replicas: 2", "replicas: 3").replace(
            "{app: web}\nspec:\n  replicas",
            "{app: web, tier: fe}\nspec:\n  replicas",
        ),
    );
    s.ok(&["apply", "-f", f2.to_str().unwrap()]);
    let jp = |p: &str| s.ok(&["get", "deploy", "web", "-o", &format!("jsonpath={p}")]);
    assert_eq!(
        jp("{.spec.replicas} {.metadata.labels.tier} {.metadata.generation}"),
        "3 fe 2"
    );
    assert!(
        jp("{.metadata.annotations}").contains("kubectl.kubernetes.io/last-applied-configuration")
    );
    // Dropping the label from the file removes it.
    s.ok(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(jp("{.spec.replicas} {.metadata.labels.tier}"), "2 ");
    // Server-side apply: conflicts with another manager's field, forced.
    s.ok(&["scale", "deploy", "web", "--replicas=4"]);
    let ss = file(
        s.dir.path(),
        "ss.yaml",
        &WEB.replace("replicas: 2", "replicas: 5"),
    );
    let e = s.fails(&["apply", "--server-side", "-f", ss.to_str().unwrap()]);
    assert!(e.contains("Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"), "{e}");
    s.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        ss.to_str().unwrap(),
    ]);
    assert_eq!(jp("{.spec.replicas}"), "5");
    let mf = s.ok(&[
        "get",
        "deploy",
        "web",
        "--show-managed-fields",
        "-o",
        "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation} {end}",
    ]);
    assert!(mf.contains("kubectl/Apply"), "{mf}");
    // The three patch types.
    s.ok(&["patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"},{"name":"side","image":"busybox"}]}}}}"#]);
    assert_eq!(jp("{.spec.template.spec.containers[*].name}"), "nginx side");
    assert_eq!(
        jp("{.spec.template.spec.containers[0].image}"),
        "nginx:1.26"
    );
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    ]);
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":1}]"#,
    ]);
    assert_eq!(jp("{.spec.replicas} {.metadata.labels.x}"), "1 y");
    let e = s.fails(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
    ]);
    assert!(e.contains("the JSON patch failed"), "{e}");
    // label, annotate, edit through $EDITOR
    s.ok(&["label", "deploy", "web", "team=a"]);
    s.ok(&["annotate", "deploy", "web", "note=hello"]);
    let e = s.fails(&["label", "deploy", "web", "team=b"]);
    assert!(e.contains("already has a value"), "{e}");
    s.ok(&["label", "deploy", "web", "team=b", "--overwrite"]);
    let o = s.kubectl_env(
        &["edit", "deploy", "web"],
        &[("EDITOR", "sed -i s/team:\\ b/team:\\ c/")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        jp("{.metadata.labels.team} {.metadata.annotations.note}"),
        "c hello"
    );
    // Optimistic concurrency through the API: a stale resourceVersion is a 409.
    let mut stale: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    s.ok(&["label", "deploy", "web", "bump=1"]);
    stale["spec"]["replicas"] = 7.into();
    let p = file(s.dir.path(), "stale.json", &stale.to_string());
    let e = s.fails(&["replace", "-f", p.to_str().unwrap()]);
    assert!(e.contains("the object has been modified"), "{e}");
    // Immutable selector and invalid objects: 422 with field paths.
    let e = s.fails(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#,
    ]);
    assert!(
        e.contains("spec.selector: Invalid value") || e.contains("field is immutable"),
        "{e}"
    );
    let bad = file(
        s.dir.path(),
        "bad.yaml",
        &WEB.replace("name: web\n  labels", "name: Web_1\n  labels")
            .replace("image: nginx:1.25", "image: ''"),
    );
    let e = s.fails(&["create", "-f", bad.to_str().unwrap()]);
    assert!(e.contains("Deployment.apps \"Web_1\" is invalid"), "{e}");
    assert!(e.contains("metadata.name: Invalid value: \"Web_1\""), "{e}");
    assert!(
        e.contains("spec.template.spec.containers[0].image: Required value"),
        "{e}"
    );
    // Unknown fields: kubectl's strict validation is done by the server.
    let typo = file(
        s.dir.path(),
        "typo.yaml",
        &WEB.replace(
            "image: nginx:1.25",
            "image: nginx:1.25\n        imagePullPolicyy: Always",
        ),
    );
    let e = s.fails(&["apply", "-f", typo.to_str().unwrap()]);
    assert!(
        e.contains("unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""),
        "{e}"
    );
    let o = s.kubectl(&["apply", "--validate=warn", "-f", typo.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Warning: unknown field"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // dry run
    let dr = s.ok(&["scale", "deploy", "web", "--replicas=9", "--dry-run=server"]);
    assert!(dr.contains("scaled (server dry run)"), "{dr}");
    assert_ne!(jp("{.spec.replicas}"), "9");
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn watch_wait_and_delete() {
    let s = Server::start();
    let mut w = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .arg("--cache-dir")
        .arg(s.dir.path().join("kube-cache"))
        .args([
            "get",
            "pods",
            "-w",
            "--output-watch-events",
            "--request-timeout=0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    s.ok(&["run", "p1", "--image=busybox", "--", "sleep", "1000"]);
    s.ok(&["label", "pod", "p1", "a=b"]);
    // A status write marks it Ready; kubectl wait sees the condition.
    s.ok(&[
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    assert!(s
        .ok(&["wait", "--for=condition=Ready", "pod/p1", "--timeout=10s"])
        .contains("condition met"));
    // Unscheduled pods go at once; a pod bound to a node waits for its grace period.
    s.ok(&["delete", "pod", "p1"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = w.kill();
    let out = String::from_utf8_lossy(&w.wait_with_output().unwrap().stdout).into_owned();
    let ev: Vec<String> = lines(&out)
        .iter()
        .filter(|l| l.contains("p1"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(ev.first().map(String::as_str), Some("ADDED"), "{out}");
    assert!(ev.contains(&"MODIFIED".to_string()), "{out}");
    assert_eq!(ev.last().map(String::as_str), Some("DELETED"), "{out}");

    s.ok(&["run", "p2", "--image=busybox"]);
    s.ok_in(&["create", "--raw", "/api/v1/namespaces/default/pods/p2/binding", "-f", "-"], r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p2"},"target":{"name":"node-a"}}"#);
    assert_eq!(
        s.ok(&["get", "pod", "p2", "-o", "jsonpath={.spec.nodeName}"]),
        "node-a"
    );
    s.ok(&["delete", "pod", "p2", "--wait=false"]);
    let row = lines(&s.ok(&["get", "pod", "p2"]));
    assert!(row[1].starts_with("p2 0/1 Terminating"), "{row:?}");
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "p2",
            "-o",
            "jsonpath={.metadata.deletionGracePeriodSeconds}"
        ]),
        "30"
    );
    s.ok(&["delete", "pod", "p2", "--grace-period=0", "--force"]);
    assert!(s.fails(&["get", "pod", "p2"]).contains("NotFound"));
    // A finished pod goes at once, as kube's pod strategy has it: nothing runs to stop.
    let bound = |name: &str, extra: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"{extra}}},"spec":{{"nodeName":"node-a","containers":[{{"name":"c","image":"busybox"}}]}}}}"#
        )
    };
    s.ok_in(&["create", "-f", "-"], &bound("p3", ""));
    s.ok(&[
        "patch",
        "pod",
        "p3",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded"}}"#,
    ]);
    s.ok(&["delete", "pod", "p3", "--timeout=5s"]);
    // A finalizer holds a pod past its node's confirmation; it goes once removed.
    s.ok_in(
        &["create", "-f", "-"],
        &bound("p4", r#","finalizers":["example.com/hold"]"#),
    );
    s.ok(&["delete", "pod", "p4", "--wait=false"]);
    s.ok(&[
        "delete",
        "pod",
        "p4",
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "p4",
            "-o",
            "jsonpath={.metadata.deletionGracePeriodSeconds}"
        ]),
        "0"
    );
    release_finalizers(&s, "pod/p4");

    // Cascading deletion (background, orphan, foreground) and emptying a deleted
    // namespace are the controllers' work: see crates/berth/tests/gc.rs.
    // Finalizers hold an object until they are removed.
    s.ok_in(&["create", "-f", "-"], r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/hold"]}}"#);
    s.ok(&["delete", "cm", "held", "--wait=false"]);
    assert!(!s
        .ok(&[
            "get",
            "cm",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])
        .is_empty());
    release_finalizers(&s, "cm/held");
    // The API server only marks a deleted namespace Terminating (the namespace
    // controller empties and removes it; none runs here), and takes nothing new in it.
    s.ok_in(&["apply", "-f", "-"], "apiVersion: v1\nkind: Namespace\nmetadata: {name: scratch}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: scratch}\ndata: {a: b}\n");
    s.ok(&["delete", "ns", "scratch", "--wait=false"]);
    assert_eq!(
        s.ok(&["get", "ns", "scratch", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
    // Only the finalize subresource takes its finalizer off, and a second delete is
    // told why it must wait, as kube-apiserver tells it.
    s.ok(&[
        "patch",
        "ns",
        "scratch",
        "--type=merge",
        "-p",
        r#"{"spec":{"finalizers":[]}}"#,
    ]);
    assert_eq!(
        s.ok(&["get", "ns", "scratch", "-o", "jsonpath={.spec.finalizers}"]),
        r#"["kubernetes"]"#
    );
    let again = s.fails(&["delete", "ns", "scratch", "--wait=false"]);
    assert!(
        again.contains("The system is ensuring all content is removed from this namespace"),
        "{again}"
    );
    for (ns, why) in [
        ("scratch", "because it is being terminated"),
        ("gone", "namespaces \"gone\" not found"),
    ] {
        let e = String::from_utf8_lossy(
            &s.kubectl_in(
                &["-n", ns, "create", "-f", "-"],
                r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
            )
            .stderr,
        )
        .into_owned();
        assert!(e.contains(why), "{e}");
    }
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn create_generators_send_protobuf() {
    // kubectl's typed commands send application/vnd.kubernetes.protobuf bodies.
    let s = Server::start();
    s.ok(&["create", "ns", "demo"]);
    let n = ["-n", "demo"];
    let run = |args: &[&str]| s.ok(&[&n[..], args].concat());
    run(&["create", "cm", "c1", "--from-literal=a=b"]);
    run(&["create", "secret", "generic", "s1", "--from-literal=p=q"]);
    run(&[
        "create",
        "deployment",
        "d0",
        "--image=nginx:1.25",
        "--replicas=0",
    ]);
    run(&["create", "deployment", "d2", "--image=nginx", "--port=80"]);
    run(&["create", "service", "clusterip", "s1", "--tcp=80:8080"]);
    run(&["create", "service", "nodeport", "np", "--tcp=80:8080"]);
    run(&["create", "job", "j1", "--image=busybox", "--", "echo", "hi"]);
    run(&[
        "create",
        "cronjob",
        "cj1",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "echo",
        "hi",
    ]);
    run(&["create", "sa", "sa1"]);
    run(&["create", "quota", "q1", "--hard=pods=10,cpu=2"]);
    run(&[
        "create",
        "pdb",
        "pdb1",
        "--selector=app=d2",
        "--min-available=1",
    ]);
    let tok = run(&["create", "token", "sa1"]);
    assert_eq!(tok.trim().split('.').count(), 3, "a JWT: {tok}");
    assert_eq!(run(&["get", "cm", "c1", "-o", "jsonpath={.data.a}"]), "b");
    assert_eq!(
        run(&["get", "secret", "s1", "-o", "jsonpath={.data.p}"]),
        "cQ=="
    );
    assert_eq!(
        run(&[
            "get",
            "deploy",
            "d0",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"
        ]),
        "0 nginx:1.25"
    );
    assert_eq!(
        run(&[
            "get",
            "deploy",
            "d2",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].ports[0].containerPort}"
        ]),
        "80"
    );
    assert_eq!(
        run(&[
            "get",
            "svc",
            "s1",
            "-o",
            "jsonpath={.spec.ports[0].targetPort} {.spec.ports[0].nodePort}"
        ]),
        "8080 "
    );
    let np: i64 = run(&[
        "get",
        "svc",
        "np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ])
    .parse()
    .unwrap();
    assert!((30000..=32767).contains(&np), "{np}");
    assert_eq!(
        run(&[
            "get",
            "job",
            "j1",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].command}"
        ]),
        r#"["echo","hi"]"#
    );
    assert_eq!(
        run(&["get", "cj", "cj1", "-o", "jsonpath={.spec.schedule}"]),
        "*/5 * * * *"
    );
    assert_eq!(
        run(&["get", "quota", "q1", "-o", "jsonpath={.spec.hard.cpu}"]),
        "2"
    );
    assert_eq!(
        run(&["get", "pdb", "pdb1", "-o", "jsonpath={.spec.minAvailable}"]),
        "1"
    );
    let e = s.fails(&["-n", "demo", "create", "deployment", "Bad", "--image=x"]);
    assert!(e.contains("metadata.name: Invalid value: \"Bad\""), "{e}");
    // The newer groups' kinds, in protobuf too.
    run(&["create", "priorityclass", "pc1", "--value=100"]);
    run(&["create", "ingress", "in1", "--rule=example.com/=s1:80"]);
    assert_eq!(run(&["get", "pc", "pc1", "-o", "jsonpath={.value}"]), "100");
    assert_eq!(
        run(&["get", "ing", "in1", "-o", "jsonpath={.spec.rules[0].host}"]),
        "example.com"
    );
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn a_kind_not_served_gets_kubectls_own_message() {
    // kubectl reads /openapi/v2 in its protobuf form for a kind discovery lacks;
    // it must parse, so that its own "no matches" reaches the user.
    let s = Server::start();
    let e = s.fails(&["apply", "-f", file(
        s.dir.path(),
        "runtimeclass.yaml",
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: gvisor}\nhandler: runsc\n",
    ).to_str().unwrap()]);
    assert!(!e.contains("proto:"), "{e}");
    assert!(
        e.contains("no matches for kind \"RuntimeClass\" in version \"node.k8s.io/v1\""),
        "{e}"
    );
    // The protobuf document holds the definitions, found by their kind.
    let pki = s.pki();
    let o = std::process::Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        ])
        .arg("--cacert")
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .arg(format!("https://{}/openapi/v2", s.addr))
        .output()
        .expect("curl");
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.starts_with('{'), "JSON, not protobuf");
    assert!(
        text.contains("io.k8s.api.apps.v1.Deployment"),
        "no Deployment definition"
    );
    assert!(text.contains("x-kubernetes-group-version-kind"));
}
