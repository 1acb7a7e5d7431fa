//! The SQLite store kept in shape while it runs: compaction in steps keeps exactly
//! the history it should, space is given back, one process at a time writes a store,
//! an old store is converted to incremental vacuum, and snapshots are consistent
//! copies that restore into a fresh data directory. And an etcd snapshot through
//! etcd's API.

use std::collections::BTreeMap;

use berth_store::sqlite::{maintenance, snapshot, SqliteStore};
use berth_store::{Event, Store};

/// Everything under `/k/` at `revision`: key → (value, mod revision).
async fn state(s: &SqliteStore, revision: i64) -> BTreeMap<String, (Vec<u8>, i64)> {
    s.list("/k/", revision, 0, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
        .collect()
}

async fn history(s: &SqliteStore, after: i64) -> Vec<(String, i64, bool)> {
    let now = s.revision().await.unwrap();
    let mut rx = s.watch("/k/", after).await.unwrap();
    let mut out = Vec::new();
    while out.last().map(|(_, r, _)| *r) != Some(now) && now > after {
        let ev = rx.recv().await.unwrap();
        out.push((
            ev.key().to_string(),
            ev.revision(),
            matches!(ev, Event::Delete { .. }),
        ));
    }
    out
}

/// Rows left in the log (a second connection reads the file).
fn rows(path: &std::path::Path) -> Vec<(i64, String, bool)> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT revision, key, value IS NULL FROM log ORDER BY revision")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stepped_compaction_keeps_what_reads_and_watches_after_it_need() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    let s = SqliteStore::open(&path).unwrap();
    // Several compaction steps' worth of churn: updates, deletions, re-creations.
    for round in 0..60 {
        for k in 0..50 {
            let key = format!("/k/{k:02}");
            match (round + k) % 7 {
                3 if round > 0 => {
                    s.delete(&key, 0).await.unwrap();
                }
                _ => {
                    let v = format!("{round}-{k}").into_bytes();
                    if s.update(&key, &v, 0).await.is_err() {
                        s.create(&key, &v).await.unwrap();
                    }
                }
            }
        }
    }
    let now = s.revision().await.unwrap();
    assert!(now > 2 * maintenance::COMPACTION_STEP, "{now} revisions");
    for target in [now / 3, 2 * now / 3] {
        let before = [target, (target + now) / 2, now];
        let mut lists = Vec::new();
        for r in &before {
            lists.push(state(&s, *r).await);
        }
        let watched = history(&s, target).await;
        s.compact(target).await.unwrap();
        // Reads and watches at or after the compaction see what they saw.
        for (r, want) in before.iter().zip(&lists) {
            assert_eq!(&state(&s, *r).await, want, "list at {r}");
        }
        assert_eq!(history(&s, target).await, watched);
        assert!(matches!(
            s.list("/k/", target - 1, 0, None).await,
            Err(berth_store::Error::Compacted { .. })
        ));
        // And nothing else is kept: at most one live row per key at or before it.
        let left = rows(&path);
        let mut at_or_before: BTreeMap<&str, usize> = BTreeMap::new();
        for (rev, key, deleted) in &left {
            if *rev <= target {
                assert!(!deleted, "a deletion at {rev} was kept");
                *at_or_before.entry(key).or_default() += 1;
            }
        }
        assert!(at_or_before.values().all(|n| *n == 1), "{at_or_before:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_space_is_given_back_and_the_file_shrinks() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("state.db")).unwrap();
    let big = vec![b'x'; 64 * 1024];
    for i in 0..200 {
        s.create(&format!("/k/{i:03}"), &big).await.unwrap();
    }
    for i in 0..200 {
        s.delete(&format!("/k/{i:03}"), 0).await.unwrap();
    }
    s.reclaim().await.unwrap(); // checkpointed: the file holds it all
    let full = s.sizes().await.unwrap();
    assert!(full.db > 10 << 20, "{full:?}");
    s.compact(s.revision().await.unwrap()).await.unwrap();
    assert!(
        s.sizes().await.unwrap().free > 10 << 20,
        "compaction frees pages"
    );
    s.reclaim().await.unwrap();
    let after = s.sizes().await.unwrap();
    assert_eq!(after.free, 0, "{after:?}");
    assert!(after.db < full.db / 4, "{full:?} -> {after:?}");
    assert!(after.wal <= maintenance::WAL_LIMIT as u64, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_at_a_time_writes_a_store() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    let s = SqliteStore::open(&path).unwrap();
    let e = SqliteStore::open(&path)
        .err()
        .expect("a second opener is refused");
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(s);
    SqliteStore::open(&path).expect("free again once closed");
}

/// Checkpoints from aside never catch up with writes that never pause; the WAL
/// still starts over and stays bounded (writers checkpoint past the backstop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_writes_that_never_pause() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("state.db")).unwrap();
    let value = vec![b'w'; 16 * 1024];
    // About 100 MB of WAL frames, written back to back from 4 writers.
    let mut writers = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        let value = value.clone();
        writers.push(tokio::spawn(async move {
            let key = format!("/k/w{w}");
            let mut rev = s.create(&key, &value).await.unwrap().mod_revision;
            for _ in 0..1500 {
                rev = s.update(&key, &value, rev).await.unwrap().mod_revision;
            }
        }));
    }
    let mut largest = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        largest = largest.max(s.sizes().await.unwrap().wal);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        largest <= 2 * maintenance::WAL_LIMIT as u64,
        "the WAL grew to {largest} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_before_incremental_vacuum_is_converted() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE log (revision INTEGER PRIMARY KEY, key TEXT NOT NULL, value BLOB,
               create_revision INTEGER NOT NULL, prev_revision INTEGER NOT NULL);
             CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('revision', 1), ('compacted', 0);
             INSERT INTO log VALUES (1, '/k/a', x'76', 1, 0);",
        )
        .unwrap();
        let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 0);
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.get("/k/a").await.unwrap().unwrap().value, b"v");
    drop(s);
    let c = rusqlite::Connection::open(&path).unwrap();
    let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, 2, "incremental");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_during_writes_restore_into_a_fresh_directory() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    let s = SqliteStore::open(&path).unwrap();
    for i in 0..100 {
        s.create(&format!("/k/{i:03}"), b"before").await.unwrap();
    }
    // Writes go on while the snapshot is taken.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                s.update(&format!("/k/{:03}", i % 100), format!("w{i}").as_bytes(), 0)
                    .await
                    .unwrap();
            }
        })
    };
    let out = d.path().join("snap.db");
    let info = tokio::task::spawn_blocking({
        let (path, out) = (path.clone(), out.clone());
        move || snapshot::save(&path, &out)
    })
    .await
    .unwrap()
    .unwrap();
    writer.await.unwrap();
    assert_eq!(info.keys, 100);
    assert!(info.revision >= 100 && info.bytes > 0, "{info:?}");
    // The snapshot is the store as it was at its revision.
    let want = state(&s, info.revision).await;
    let fresh = tempfile::tempdir().unwrap();
    let restored = fresh.path().join("server/state.db");
    let (got_info, aside) = snapshot::restore(&out, &restored, false).unwrap();
    assert_eq!((got_info, aside), (info, None));
    let r = SqliteStore::open(&restored).unwrap();
    assert_eq!(r.revision().await.unwrap(), info.revision);
    assert_eq!(state(&r, 0).await, want);
    // Refused while a server has the store open, and over an existing one without
    // --force; with it, the old store is set aside, not lost.
    let e = snapshot::restore(&out, &restored, true).unwrap_err();
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(r);
    let e = snapshot::restore(&out, &restored, false).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    let (_, aside) = snapshot::restore(&out, &restored, true).unwrap();
    let aside = aside.expect("the old store set aside");
    assert!(aside.exists(), "{}", aside.display());
    // Not a snapshot: a clear error.
    let junk = d.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, not even close").unwrap();
    let e = snapshot::restore(&junk, &fresh.path().join("other/state.db"), false).unwrap_err();
    assert!(e.to_string().contains("junk.db"), "{e}");
}

#[allow(clippy::duplicate_mod)]
#[path = "support/etcd.rs"]
mod etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_snapshots_come_through_etcds_api() {
    let cluster = etcd::Cluster::start(1);
    let s = berth_store::etcd::EtcdStore::connect(&cluster.endpoints())
        .await
        .unwrap();
    for i in 0..50 {
        s.create(&format!("/k/{i}"), b"v").await.unwrap();
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("snap.etcd");
    let bytes = s.snapshot(&out).await.unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), bytes);
    // etcd's own tool reads it: the keys are there.
    let status = std::process::Command::new("etcdctl")
        .args(["snapshot", "status", out.to_str().unwrap(), "-w", "json"])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl (Debian's etcd-client) is installed");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(v["totalKey"].as_i64().unwrap() >= 50, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_compaction_finishes_at_the_next() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    let s = SqliteStore::open(&path).unwrap();
    for round in 0..100 {
        for k in 0..30 {
            let v = format!("{round}").into_bytes();
            if s.update(&format!("/k/{k:02}"), &v, 0).await.is_err() {
                s.create(&format!("/k/{k:02}"), &v).await.unwrap();
            }
        }
    }
    let target = s.revision().await.unwrap() - 10;
    let want = state(&s, target).await;
    // As if the server died just after a compaction began: the mark moved, no step
    // ran (another connection moves it; the store's lock is berth's, not SQLite's).
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            [target],
        )
        .unwrap();
    assert!(rows(&path).iter().filter(|(r, _, _)| *r <= target).count() > 30);
    // The next compaction, even to the same revision, does the steps left.
    s.compact(target).await.unwrap();
    let at_or_before = rows(&path).iter().filter(|(r, _, _)| *r <= target).count();
    assert_eq!(
        at_or_before, 30,
        "one row per key at or before the compaction"
    );
    assert_eq!(state(&s, target).await, want);
}
