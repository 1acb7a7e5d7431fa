//! `berth server snapshot save|ls|restore` on a running server's SQLite store: the
//! snapshot is the store at one revision; a restore is refused while the server
//! runs and over an existing store without --force; restored, the server comes back
//! with what the snapshot held, and a fresh data directory is told about its
//! certificates. Needs kubectl 1.32.

mod common;

use common::cluster::Cluster;

/// The snapshot `berth server snapshot save` says it saved ("Snapshot NAME saved: ...").
fn saved_name(saved: &str) -> String {
    saved
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string()
}

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
    let name = saved_name(&saved);
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

/// `berth server --snapshot-schedule-cron '@every 2s' --snapshot-retention 2`: the
/// server takes snapshots on its schedule and keeps the newest two of them, leaving
/// snapshots taken by hand alone; a bad schedule stops the server before it starts.
#[test]
#[cfg_attr(
    kubectl_missing,
    ignore = "needs kubectl 1.32 on PATH (scripts/deps.sh fetches it from dl.k8s.io)"
)]
fn scheduled_snapshots_are_taken_and_the_oldest_pruned() {
    let err = common::Env::new().fails(&[
        "server",
        "--disable-agent",
        "--snapshot-schedule-cron",
        "0 */12 * *",
    ]);
    assert!(
        err.contains("--snapshot-schedule-cron \"0 */12 * *\""),
        "{err}"
    );

    let c = Cluster::api_only_with(&[
        "--snapshot-schedule-cron",
        "@every 2s",
        "--snapshot-retention",
        "2",
    ]);
    c.env
        .ok(&["server", "snapshot", "save", "--name", "by-hand"]);
    let dir = c.env.root().join("server").join("snapshots");
    let scheduled = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with("scheduled-") && n.ends_with(".db"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    // Until a third scheduled snapshot has replaced the first.
    let mut seen = std::collections::BTreeSet::new();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = scheduled();
        // A third for a moment: the newest is written before the oldest goes.
        assert!(now.len() <= 3, "retention 2 kept {now:?}");
        seen.extend(now.iter().cloned());
        if seen.len() >= 3 && now.len() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "scheduled snapshots: {seen:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let ls = c.env.ok(&["server", "snapshot", "ls"]);
    assert!(
        ls.contains("by-hand-") && ls.matches("scheduled-").count() >= 2,
        "{ls}"
    );
    // Each is a whole store.
    assert!(
        ls.lines()
            .filter(|l| l.starts_with("scheduled-"))
            .all(|l| l.contains("sqlite") && !l.contains("damaged")),
        "{ls}"
    );
    let err = c
        .env
        .fails(&["server", "snapshot", "save", "--name", "scheduled-mine"]);
    assert!(
        err.contains("are the server's scheduled snapshots"),
        "{err}"
    );
}

/// A snapshot cut short (`berth server snapshot save` killed while it copies) leaves
/// no snapshot behind, or a whole one, never a damaged one under a snapshot's name;
/// and a damaged snapshot is refused by `restore` before the store it would replace
/// is touched.
#[test]
fn snapshots_are_whole_or_absent_and_damaged_ones_refused() {
    use berth_store::Store;
    let env = common::Env::new();
    let data = env.root().join("server");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("state.db");
    // A store whose copy takes a while: 20,000 keys of 4 KiB (about 90 MiB).
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let s = berth_store::sqlite::SqliteStore::open(&db).unwrap();
        let value = vec![b'v'; 4096];
        for i in 0..20_000 {
            s.create(&format!("/registry/configmaps/big/c{i:05}"), &value)
                .await
                .unwrap();
        }
    });
    let snapdir = data.join("snapshots");
    for delay_ms in [5, 40, 120] {
        let mut child = env
            .cmd(&["server", "snapshot", "save", "--name", "cut"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Whatever was cut short is no snapshot: ls lists only whole ones.
    let ls = env.ok(&["server", "snapshot", "ls"]);
    assert!(!ls.contains("damaged") && !ls.contains("partial"), "{ls}");
    let files = || -> Vec<String> {
        std::fs::read_dir(&snapdir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            // The directory's lock, held by a snapshot between its cleaning and
            // its own partial file.
            .filter(|n| n != ".snapshots.lock")
            .collect()
    };
    for name in files() {
        assert!(
            name.contains(".partial") || ls.contains(name.trim_end_matches(".db")),
            "{name} neither whole nor partial:\n{ls}"
        );
    }

    // The next snapshot clears what the cut ones left.
    let saved = env.ok(&["server", "snapshot", "save", "--name", "good"]);
    let left = files();
    assert!(!left.iter().any(|n| n.contains(".partial")), "{left:?}");

    // A damaged snapshot: refused, the store left as it was.
    let name = saved_name(&saved);
    let file = snapdir.join(format!("{name}.db"));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        let len = f.metadata().unwrap().len();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&vec![0xA5; 64 * 1024]).unwrap();
    }
    let before = std::fs::metadata(&db).unwrap().len();
    let err = env.fails(&["server", "snapshot", "restore", &name, "--force"]);
    assert!(
        err.contains("damaged") || err.contains("not a SQLite database"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        before,
        "the store was touched"
    );
    let aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("before-restore"))
        .collect();
    assert!(
        aside.is_empty(),
        "the store was set aside for a damaged snapshot"
    );
}
