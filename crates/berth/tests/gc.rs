//! Garbage collection in `berth server`, on simulated nodes, driven with kubectl:
//! an object whose owners are gone is deleted by the collector (as when its owner was
//! deleted just before a crash), an object with a live owner is kept, and a
//! Deployment deleted just before kill -9 of the server leaves nothing behind once
//! the server is back. Needs kubectl 1.32.

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
    c.until("the dependents of gone owners collected", 60, || {
        (!exists(&c, "configmap", "orphan") && !exists(&c, "configmap", "stale")).then_some(())
    });
    assert!(exists(&c, "configmap", "kept"));

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
