//! Garbage collection and namespace deletion in `berth server`, on simulated nodes,
//! driven with kubectl: an object whose owners are gone is deleted by the collector
//! (as when its owner was deleted just before a crash), an object with a live owner
//! is kept; `--cascade=background|orphan|foreground` behave as on Kubernetes; a
//! deleted namespace is emptied and removed; and a Deployment, a namespace or an
//! orphaning deletion interrupted by kill -9 of the server are finished once the
//! server is back. Needs kubectl 1.32.

mod common;

use common::cluster::{Cluster, SimNodes};

fn exists(c: &Cluster, kind: &str, name: &str) -> bool {
    c.kubectl(&["get", kind, name]).status.success()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn dependents_of_gone_owners_are_collected_even_across_a_crash() {
    let mut c = Cluster::api_only();
    let p = format!("gc{}", std::process::id());
    let _nodes = SimNodes::start(&c, &p, 2, &[], true);
    // An owner that exists keeps its dependent; one that does not, does not.
    c.ok(&["create", "configmap", "owner", "--from-literal=a=b"]);
    let uid = c.json("configmap", "owner")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let owned = |name: &str, kind: &str, api: &str, owner: &str, uid: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences: [{{apiVersion: {api}, kind: {kind}, name: {owner}, uid: {uid}}}]\ndata: {{a: b}}\n"
        )
    };
    c.apply(&owned("kept", "ConfigMap", "v1", "owner", &uid));
    c.apply(&owned(
        "orphan",
        "Deployment",
        "apps/v1",
        "ghost",
        "00000000-0000-4000-8000-000000000001",
    ));
    // Right name, wrong UID: that owner is gone too (a new object of its name).
    c.apply(&owned(
        "stale",
        "ConfigMap",
        "v1",
        "owner",
        "00000000-0000-4000-8000-000000000002",
    ));
    // Events are not watched by the collector (as kube's), but an Event owner is
    // still looked up: a live one keeps its dependent, a gone one does not.
    c.apply(
        "apiVersion: v1\nkind: Event\nmetadata: {name: ev}\ninvolvedObject: {kind: ConfigMap, name: owner, namespace: default}\nreason: Test\nmessage: an owner\ntype: Normal\n",
    );
    let ev_uid = c.json("event", "ev")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    c.apply(&owned("event-kept", "Event", "v1", "ev", &ev_uid));
    c.apply(&owned(
        "event-orphan",
        "Event",
        "events.k8s.io/v1",
        "ev",
        "00000000-0000-4000-8000-000000000003",
    ));
    c.until("the dependents of gone owners collected", 60, || {
        (!exists(&c, "configmap", "orphan")
            && !exists(&c, "configmap", "stale")
            && !exists(&c, "configmap", "event-orphan"))
        .then_some(())
    });
    assert!(exists(&c, "configmap", "kept"));
    assert!(exists(&c, "configmap", "event-kept"));

    // A Deployment deleted, the server killed at once: once back, nothing of it is
    // left, whatever the cascade had done before the kill.
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=example.invalid/web:1",
        "--replicas=4",
    ]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.ok(&["delete", "deployment", "web", "--wait=false"]);
    c.kill();
    c.spawn();
    c.wait_api();
    c.until("the Deployment's ReplicaSets and pods gone", 60, || {
        let rs = c.ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
        let pods = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
        (rs.trim().is_empty() && pods.trim().is_empty()).then_some(())
    });
    // The live owner still holds its dependent after the restart.
    assert!(exists(&c, "configmap", "kept"));
    c.ok(&["delete", "configmap", "owner"]);
    c.until("the dependent of a deleted owner collected", 30, || {
        (!exists(&c, "configmap", "kept")).then_some(())
    });
}

fn names(c: &Cluster, args: &[&str]) -> Vec<String> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "name"]);
    c.ok(&a).lines().map(str::to_string).collect()
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn cascades_and_namespace_deletion_finish_even_across_a_crash() {
    let mut c = Cluster::api_only();
    let p = format!("cascade{}", std::process::id());
    let _nodes = SimNodes::start(&c, &p, 2, &[], true);
    let deploy = |ns: &str, name: &str| {
        c.ok(&[
            "-n",
            ns,
            "create",
            "deployment",
            name,
            "--image=example.invalid/web:1",
            "--replicas=2",
        ]);
        c.ok(&[
            "-n",
            ns,
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=60s",
        ]);
    };

    // Background: the Deployment goes at once, its ReplicaSet and pods after it.
    deploy("default", "bg");
    c.ok(&["delete", "deployment", "bg", "--cascade=background"]);
    c.until("the background cascade", 60, || {
        (names(&c, &["rs,pods", "-l", "app=bg"]).is_empty()).then_some(())
    });
    // Foreground: the Deployment waits for its dependents, so when kubectl's wait
    // for it ends, they are gone already.
    deploy("default", "fg");
    c.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert_eq!(names(&c, &["rs", "-l", "app=fg"]), Vec::<String>::new());
    // Orphan: the ReplicaSet and its pods stay, no longer owned.
    deploy("default", "orph");
    c.ok(&[
        "delete",
        "deployment",
        "orph",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    let rs = names(&c, &["rs", "-l", "app=orph"]);
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!(
        c.ok(&["get", &rs[0], "-o", "jsonpath={.metadata.ownerReferences}"]),
        ""
    );
    assert_eq!(names(&c, &["pods", "-l", "app=orph"]).len(), 2);
    c.ok(&["delete", &rs[0]]);

    // A namespace is emptied (pods on nodes included) and removed; while that goes
    // on, kube's conditions say what is left.
    c.ok(&["create", "namespace", "scratch"]);
    c.ok(&[
        "-n",
        "scratch",
        "create",
        "configmap",
        "c",
        "--from-literal=a=b",
    ]);
    deploy("scratch", "web");
    c.ok(&["delete", "namespace", "scratch", "--timeout=60s"]);
    assert!(!c.kubectl(&["get", "namespace", "scratch"]).status.success());

    // A finalizer nobody removes keeps its namespace Terminating, and the
    // namespace's conditions name it.
    c.ok(&["create", "namespace", "held"]);
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: held, finalizers: [example.com/hold]}\n");
    c.ok(&["delete", "namespace", "held", "--wait=false"]);
    c.until("the held namespace's conditions", 30, || {
        let ns = c.json("namespace", "held");
        let conds = ns["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conds
            .iter()
            .any(|k| {
                k["type"] == "NamespaceFinalizersRemaining"
                    && k["status"] == "True"
                    && k["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("example.com/hold in 1 resource instances"))
            })
            .then_some(())
    });
    assert_eq!(
        c.ok(&["get", "namespace", "held", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
    c.ok(&[
        "-n",
        "held",
        "patch",
        "configmap",
        "c",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    c.until("the held namespace gone", 30, || {
        (!c.kubectl(&["get", "namespace", "held"]).status.success()).then_some(())
    });

    // Deletions interrupted by kill -9 of the server: a namespace with pods, and an
    // orphaning delete. Whatever was done before the kill, they are finished once
    // the server is back.
    c.ok(&["create", "namespace", "crash"]);
    deploy("crash", "web");
    deploy("default", "kept");
    c.ok(&["delete", "namespace", "crash", "--wait=false"]);
    c.ok(&[
        "delete",
        "deployment",
        "kept",
        "--cascade=orphan",
        "--wait=false",
    ]);
    c.kill();
    c.spawn();
    c.wait_api();
    c.until("the namespace deleted before the crash gone", 60, || {
        (!c.kubectl(&["get", "namespace", "crash"]).status.success()).then_some(())
    });
    c.until("the orphaning delete finished", 60, || {
        (!c.kubectl(&["get", "deployment", "kept"]).status.success()).then_some(())
    });
    let rs = names(&c, &["rs", "-l", "app=kept"]);
    assert_eq!(rs.len(), 1, "{rs:?}");
    assert_eq!(
        c.ok(&["get", &rs[0], "-o", "jsonpath={.metadata.ownerReferences}"]),
        ""
    );
    assert_eq!(names(&c, &["pods", "-l", "app=kept"]).len(), 2);
}

/// Custom kinds take part like built-in ones: the collector deletes a custom object
/// whose owner is gone and a built-in object whose custom owner is gone (kinds found
/// by discovery), and a namespace's deletion empties it of custom objects too.
#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn custom_objects_are_collected_and_namespaced_like_built_in_ones() {
    let c = Cluster::api_only();
    c.apply(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gizmos.gc.example.com}\nspec:\n  group: gc.example.com\n  scope: Namespaced\n  names: {plural: gizmos, singular: gizmo, kind: Gizmo}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n",
    );
    c.ok(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        "crd/gizmos.gc.example.com",
    ]);
    c.ok(&["create", "configmap", "boss"]);
    let uid = |kind: &str, name: &str| {
        c.json(kind, name)["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let boss = uid("configmap", "boss");
    c.apply(&format!(
        "apiVersion: gc.example.com/v1\nkind: Gizmo\nmetadata:\n  name: minion\n  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: boss, uid: {boss}}}]\n"
    ));
    let minion = uid("gizmo", "minion");
    c.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: follower\n  ownerReferences: [{{apiVersion: gc.example.com/v1, kind: Gizmo, name: minion, uid: {minion}}}]\n"
    ));
    c.ok(&["delete", "configmap", "boss"]);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while exists(&c, "gizmo", "minion") || exists(&c, "configmap", "follower") {
        assert!(
            std::time::Instant::now() < end,
            "dependents of a deleted owner left: {}",
            c.ok(&["get", "gizmos,configmaps"])
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }

    c.ok(&["create", "namespace", "gizmo-land"]);
    c.apply("apiVersion: gc.example.com/v1\nkind: Gizmo\nmetadata: {name: inside, namespace: gizmo-land}\n");
    c.ok(&["delete", "namespace", "gizmo-land", "--timeout=60s"]);
    assert!(!c
        .kubectl(&["get", "namespace", "gizmo-land"])
        .status
        .success());
}
