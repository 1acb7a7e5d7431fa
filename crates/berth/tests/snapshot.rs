//! `berth server snapshot save|ls|restore` on a running server's SQLite store: the
//! snapshot is the store at one revision; a restore is refused while the server
//! runs and over an existing store without --force; restored, the server comes back
//! with what the snapshot held, and a fresh data directory is told about its
//! certificates. Needs kubectl 1.32.

mod common;

use common::cluster::Cluster;

fn configmaps(c: &Cluster) -> Vec<String> {
    let out = c.ok(&["get", "configmaps", "-o", "name", "-l", "snap=yes"]);
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn snapshots_of_a_running_server_restore_what_they_held() {
    let mut c = Cluster::api_only();
    for n in ["a", "b"] {
        c.ok(&["create", "configmap", n, "--from-literal=k=v"]);
        c.ok(&["label", "configmap", n, "snap=yes"]);
    }
    let saved = c
        .env
        .ok(&["server", "snapshot", "save", "--name", "before"]);
    assert!(
        saved.starts_with("Snapshot before-") && saved.contains("keys"),
        "{saved}"
    );
    let name = saved
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    c.ok(&["create", "configmap", "c", "--from-literal=k=v"]);
    c.ok(&["label", "configmap", "c", "snap=yes"]);
    let ls = c.env.ok(&["server", "snapshot", "ls"]);
    let mut lines = ls.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STORE", "REVISION", "SIZE", "CREATED"]
    );
    let row = lines.next().expect("the snapshot listed");
    assert!(row.starts_with(&name) && row.contains("sqlite"), "{ls}");

    // Not while the server runs.
    let err = c
        .env
        .fails(&["server", "snapshot", "restore", &name, "--force"]);
    assert!(err.contains("in use by another process"), "{err}");
    c.kill();
    // Not over the store without --force; with it, the store is set aside.
    let err = c.env.fails(&["server", "snapshot", "restore", &name]);
    assert!(err.contains("--force"), "{err}");
    let out = c
        .env
        .ok(&["server", "snapshot", "restore", &name, "--force"]);
    assert!(out.contains("The store that was there is at"), "{out}");
    c.spawn();
    c.wait_api();
    assert_eq!(configmaps(&c), ["configmap/a", "configmap/b"]);

    // Into a fresh data directory: restored, and told the certificates are not there.
    let fresh = c.env.path("fresh");
    let snapdir = c.env.root().join("server/snapshots");
    let out = c.env.ok(&[
        "server",
        "snapshot",
        "restore",
        &name,
        "--dir",
        snapdir.to_str().unwrap(),
        "--data-dir",
        fresh.to_str().unwrap(),
    ]);
    assert!(
        out.contains("has no certificates yet") && out.contains("--data-dir"),
        "{out}"
    );
    assert!(fresh.join("state.db").exists());
    let err = c
        .env
        .fails(&["server", "snapshot", "restore", "no-such-snapshot"]);
    assert!(err.contains("no snapshot no-such-snapshot"), "{err}");
}
