//! The conformance suite every Store backend must pass (the etcd backend will run the
//! same), here against the SQLite backend on a real file; and a write acknowledged
//! before a kill -9 is there after reopening.

use std::time::Duration;

use berth_store::sqlite::SqliteStore;
use berth_store::{Error, Event, Store};

async fn conformance<S: Store>(s: &S) {
    // etcd starts at revision 1, SQLite at 0: revisions are counted from the start.
    let base = s.revision().await.unwrap();
    let r = |n: i64| base + n;
    // create / get / revisions
    let a = s.create("/pods/default/a", b"1").await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (r(1), r(1)));
    assert!(matches!(
        s.create("/pods/default/a", b"x").await,
        Err(Error::Exists(_))
    ));
    let b = s.create("/pods/default/b", b"2").await.unwrap();
    s.create("/pods/other/c", b"3").await.unwrap();
    assert_eq!(s.revision().await.unwrap(), r(3));
    assert_eq!(s.get("/pods/default/a").await.unwrap().unwrap().value, b"1");
    assert!(s.get("/pods/default/zz").await.unwrap().is_none());
    // update if revision
    let a2 = s
        .update("/pods/default/a", b"1b", a.mod_revision)
        .await
        .unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision), (r(1), r(4)));
    match s.update("/pods/default/a", b"late", a.mod_revision).await {
        Err(Error::Conflict {
            expected, current, ..
        }) if (expected, current) == (r(1), r(4)) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.update("/nope", b"x", 0).await,
        Err(Error::NotFound(_))
    ));
    // list: prefix, paging, at an older revision
    let page = s.list("/pods/default/", 0, 0, None).await.unwrap();
    assert_eq!(page.revision, r(4));
    let keys: Vec<_> = page.items.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/pods/default/a", "/pods/default/b"]);
    let p1 = s.list("/pods/", 0, 2, None).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    let p2 = s
        .list("/pods/", p1.revision, 2, p1.more_after.as_deref())
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1);
    assert_eq!(p2.more_after, None);
    let old = s.list("/pods/default/", r(3), 0, None).await.unwrap();
    assert_eq!(old.items[0].value, b"1");
    assert!(matches!(
        s.list("/", r(99), 0, None).await,
        Err(Error::Future { .. })
    ));
    // delete if revision; recreate starts a new life
    assert!(matches!(
        s.delete("/pods/default/b", r(1)).await,
        Err(Error::Conflict { .. })
    ));
    let (prev, del_rev) = s.delete("/pods/default/b", b.mod_revision).await.unwrap();
    assert_eq!((prev.value.as_slice(), del_rev), (&b"2"[..], r(5)));
    assert!(s.get("/pods/default/b").await.unwrap().is_none());
    assert!(matches!(
        s.delete("/pods/default/b", 0).await,
        Err(Error::NotFound(_))
    ));
    let b2 = s.create("/pods/default/b", b"again").await.unwrap();
    assert_eq!(b2.create_revision, r(6));
    // watch from a revision: history, then live, prefix-filtered, in order
    let mut w = s.watch("/pods/default/", r(3)).await.unwrap();
    s.create("/pods/other/d", b"ignored").await.unwrap();
    s.update("/pods/default/a", b"1c", 0).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .expect("an event")
            .expect("open");
        seen.push(ev);
    }
    let revs: Vec<i64> = seen.iter().map(Event::revision).collect();
    assert_eq!(revs, [r(4), r(5), r(6), r(8)]);
    assert!(
        matches!(&seen[1], Event::Delete { prev, revision } if prev.value == b"2" && *revision == r(5))
    );
    // compaction: old revisions answer Compacted (kube's 410 Gone); now is intact
    s.compact(r(6)).await.unwrap();
    assert!(matches!(
        s.list("/pods/", r(3), 0, None).await,
        Err(Error::Compacted { compacted, .. }) if compacted == r(6)
    ));
    assert!(matches!(
        s.watch("/pods/", r(2)).await,
        Err(Error::Compacted { .. })
    ));
    let now = s.list("/pods/", 0, 0, None).await.unwrap();
    let keys: Vec<_> = now
        .items
        .iter()
        .map(|k| (k.key.as_str(), k.value.as_slice()))
        .collect();
    assert_eq!(
        keys,
        [
            ("/pods/default/a", &b"1c"[..]),
            ("/pods/default/b", &b"again"[..]),
            ("/pods/other/c", &b"3"[..]),
            ("/pods/other/d", &b"ignored"[..]),
        ]
    );
    assert_eq!(
        s.list("/pods/", r(6), 0, None).await.unwrap().items.len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("state.db")).unwrap();
    conformance(&s).await;
    // Reopened, the same data and revision.
    drop(s);
    let s = SqliteStore::open(&d.path().join("state.db")).unwrap();
    assert_eq!(s.revision().await.unwrap(), 8);
    assert_eq!(
        s.get("/pods/default/a")
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        8
    );
}

/// With BERTH_STORE_WRITER=PATH, this test binary is the writer: it creates keys one
/// by one and prints each revision once the write returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    if let Ok(path) = std::env::var("BERTH_STORE_WRITER") {
        let s = SqliteStore::open(std::path::Path::new(&path)).unwrap();
        for i in 0.. {
            let kv = s.create(&format!("/k/{i:06}"), b"v").await.unwrap();
            println!("{}", kv.mod_revision);
        }
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("state.db");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_writes_survive_kill_9",
            "--nocapture",
        ])
        .env("BERTH_STORE_WRITER", &db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut acked = 0i64;
    let mut line = String::new();
    while acked < 200 {
        line.clear();
        if std::io::BufRead::read_line(&mut out, &mut line).unwrap() == 0 {
            break;
        }
        if let Ok(r) = line.trim().parse::<i64>() {
            acked = r;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(acked >= 200, "the writer acknowledged only {acked} writes");
    let s = SqliteStore::open(&db).unwrap();
    let have = s.revision().await.unwrap();
    assert!(have >= acked, "acknowledged {acked}, found {have}");
    let page = s.list("/k/", 0, 0, None).await.unwrap();
    assert_eq!(page.items.len() as i64, have);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_compaction_keeps_recent_history() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("state.db")).unwrap();
    for i in 0..10 {
        s.create(&format!("/k/{i}"), b"v").await.unwrap();
    }
    // Each tick compacts to the revision of the tick before: here 10, once two
    // ticks have passed.
    let task = tokio::spawn(
        berth_store::Backend::Sqlite(s.clone()).compact_periodically(Duration::from_millis(20)),
    );
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while s.list("/k/", 9, 0, None).await.is_ok() {
        assert!(std::time::Instant::now() < end, "never compacted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert!(matches!(
        s.list("/k/", 9, 0, None).await,
        Err(Error::Compacted { compacted: 10, .. })
    ));
    assert_eq!(s.list("/k/", 10, 0, None).await.unwrap().items.len(), 10);
}

#[path = "support/etcd.rs"]
mod etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_conformance_suite() {
    let cluster = etcd::Cluster::start(1);
    let s = berth_store::etcd::EtcdStore::connect(&cluster.endpoints())
        .await
        .unwrap();
    conformance(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_keeps_serving_with_a_member_killed() {
    let mut cluster = etcd::Cluster::start(3);
    let s = berth_store::etcd::EtcdStore::connect(&cluster.endpoints())
        .await
        .unwrap();
    let mut w = s.watch("/k/", s.revision().await.unwrap()).await.unwrap();
    for i in 0..20 {
        s.create(&format!("/k/{i:03}"), b"v").await.unwrap();
    }
    // Kill the member the client most likely talks to, then keep writing: the client
    // moves to the others, which still have a quorum.
    cluster.kill(0);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut i = 20;
    while i < 40 {
        match s.create(&format!("/k/{i:03}"), b"v").await {
            Ok(_) => i += 1,
            Err(Error::Exists(_)) => i += 1, // acknowledged just before the error
            Err(e) => {
                assert!(std::time::Instant::now() < end, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(s.list("/k/", 0, 0, None).await.unwrap().items.len(), 40);
    // The member comes back and catches up.
    cluster.restart(0);
    let only0 = berth_store::etcd::EtcdStore::connect(&[cluster.members[0].client_url.clone()])
        .await
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while only0
        .list("/k/", 0, 0, None)
        .await
        .map(|p| p.items.len())
        .unwrap_or(0)
        < 40
    {
        assert!(
            std::time::Instant::now() < end,
            "the restarted member never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(w.try_recv());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err =
        match berth_store::etcd::EtcdStore::connect(&[format!("http://127.0.0.1:{port}")]).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("connected to nothing"),
        };
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// Concurrent writers: a watcher sees every revision, in order.
async fn concurrent_writes_reach_watchers_in_order<S: Store + Clone + 'static>(s: S) {
    let start = s.revision().await.unwrap();
    let mut w = s.watch("/c/", start).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                s.create(&format!("/c/{t}-{i}"), b"v").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut last = start;
    for _ in 0..400 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.recv())
            .await
            .expect("every write reaches the watcher")
            .unwrap();
        assert!(
            ev.revision() > last,
            "out of order: {} after {last}",
            ev.revision()
        );
        last = ev.revision();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_watchers_see_concurrent_writes_in_order() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("state.db")).unwrap();
    concurrent_writes_reach_watchers_in_order(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_watchers_see_concurrent_writes_in_order() {
    let cluster = etcd::Cluster::start(1);
    let s = berth_store::etcd::EtcdStore::connect(&cluster.endpoints())
        .await
        .unwrap();
    concurrent_writes_reach_watchers_in_order(s).await;
}

/// Writers racing on the same keys: of the creates of one key exactly one wins and
/// the rest are told it exists; of the updates conditioned on one revision exactly
/// one wins and the rest conflict; the winners' revisions are all distinct, and
/// every write with no race on its key goes through (a refused write in a batch of
/// concurrent commits takes nothing from its neighbours).
async fn racing_conditional_writes_have_one_winner_each<S: Store + Clone + 'static>(s: S) {
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            for k in 0..20 {
                match s
                    .create(&format!("/race/{k}"), format!("{t}").as_bytes())
                    .await
                {
                    Ok(kv) => wins.push(kv.mod_revision),
                    Err(berth_store::Error::Exists(_)) => {}
                    Err(e) => panic!("create /race/{k}: {e}"),
                }
                let own = s
                    .create(&format!("/own/{t}-{k}"), b"v")
                    .await
                    .expect("a key no one else writes");
                wins.push(own.mod_revision);
            }
            wins
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.extend(t.await.unwrap());
    }
    // 20 contested creates won once each, 16 × 20 uncontested ones.
    assert_eq!(revisions.len(), 20 + 16 * 20, "{revisions:?}");
    let distinct: std::collections::BTreeSet<_> = revisions.iter().collect();
    assert_eq!(distinct.len(), revisions.len(), "a revision given twice");

    let base = s
        .get("/race/0")
        .await
        .unwrap()
        .expect("created")
        .mod_revision;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.update("/race/0", format!("u{t}").as_bytes(), base).await
        }));
    }
    let (mut won, mut conflicts) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(kv) => won.push(kv),
            Err(berth_store::Error::Conflict { expected, .. }) => {
                assert_eq!(expected, base);
                conflicts += 1;
            }
            Err(e) => panic!("update: {e}"),
        }
    }
    assert_eq!(
        (won.len(), conflicts),
        (1, 15),
        "one update at revision {base} wins"
    );
    let now = s.get("/race/0").await.unwrap().expect("still there");
    assert_eq!(now.mod_revision, won[0].mod_revision);
    assert_eq!(now.value, won[0].value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_racing_conditional_writes_have_one_winner_each() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("state.db")).unwrap();
    racing_conditional_writes_have_one_winner_each(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_racing_conditional_writes_have_one_winner_each() {
    let cluster = etcd::Cluster::start(1);
    let s = berth_store::etcd::EtcdStore::connect(&cluster.endpoints())
        .await
        .unwrap();
    racing_conditional_writes_have_one_winner_each(s).await;
}

/// A store dropped right after concurrent writes can be opened again at once: no
/// committer left behind keeps its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_reopens_at_once_after_concurrent_writes() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    for round in 0..50 {
        let s = SqliteStore::open(&path)
            .unwrap_or_else(|e| panic!("round {round}: the store is still held: {e}"));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.create(&format!("/r/{round}-{t}"), b"v").await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.list("/r/", 0, 0, None).await.unwrap().items.len(), 400);
}
