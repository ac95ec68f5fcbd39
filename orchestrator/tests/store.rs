//! The store suite against both implementations: a real etcd and the embedded redb store.

use std::sync::Arc;
use std::time::Duration;

use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_state::store::embedded::EmbeddedStore;
use fleet_state::store::etcd::EtcdStore;
use fleet_state::store::{Store, StoreError, suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_store_suite() {
    let server = EtcdServer::start();
    let store =
        EtcdStore::connect(std::slice::from_ref(&server.client_url), None, Duration::from_secs(5)).await.unwrap();
    suite::run(Arc::new(store), "/suite").await;
}

// Paused time: lease expiry is driven by tokio's clock, so the suite's waits take no real time.
#[tokio::test(start_paused = true)]
async fn embedded_passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    suite::run(Arc::new(store), "/suite").await;
}

#[tokio::test(start_paused = true)]
async fn embedded_keeps_data_and_leases_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (rev, lease) = {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.put("/k/plain", b"v".to_vec(), None).await.unwrap();
        let lease = s.grant_lease(Duration::from_secs(10)).await.unwrap();
        let rev = s.put("/k/leased", b"l".to_vec(), Some(lease)).await.unwrap();
        (rev, lease)
    };
    // The old store's expiry task is gone with it; give it a turn to notice.
    tokio::task::yield_now().await;
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let (kvs, now) = s.range("/k/").await.unwrap();
    assert_eq!(kvs.len(), 2);
    assert_eq!(now, rev, "revision survives a restart");
    let next = s.put("/k/plain", b"w".to_vec(), None).await.unwrap();
    assert_eq!(next, rev + 1, "revisions continue, never reused");
    // The lease got its full TTL again at open; without keep-alives it ends after that.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(s.get("/k/leased").await.unwrap().is_some(), "lease restarted with its full TTL");
    s.keep_alive(lease).await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(s.get("/k/leased").await.unwrap(), None, "lease expired after a restart");
    let new_lease = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert!(new_lease > lease, "lease ids are never reused");
}

#[tokio::test]
async fn embedded_refuses_a_second_opener_of_the_same_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(dir.path()).unwrap();
    let err = EmbeddedStore::open(dir.path()).unwrap_err();
    assert!(matches!(&err, StoreError::Io(m) if m.contains("another fleetd")), "{err}");
}

#[tokio::test]
async fn etcd_unreachable_is_reported_as_unavailable() {
    let err = EtcdStore::connect(&["http://127.0.0.1:1".into()], None, Duration::from_secs(2)).await;
    // Connecting is lazy in some versions: the first call then fails instead.
    let err = match err {
        Err(e) => e,
        Ok(s) => s.get("/x").await.unwrap_err(),
    };
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

/// Group commit under contention: changes staged together share a commit, yet each is checked
/// against the ones staged before it (no lost update), durable when acknowledged, and a lease
/// ended while puts on it are staged leaves none of them behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_group_commit_keeps_every_change_checked_durable_and_leases_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (count, revisions) = {
        let s = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        // 8 tasks × 50 compare-and-swap increments of one counter, plus a put of its own each time.
        s.put("/g/counter", serde_json::to_vec(&0u64).unwrap(), None).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..50 {
                    let r = s.put(&format!("/g/own/{t}/{i}"), vec![t as u8], None).await.unwrap();
                    revs.push(r);
                    fleet_state::model::update::<u64, _>(&*s, "/g/counter", |n| Some(n + 1)).await.unwrap();
                }
                revs
            }));
        }
        let mut revisions = Vec::new();
        for t in tasks {
            revisions.extend(t.await.unwrap());
        }
        let count: u64 = serde_json::from_slice(&s.get("/g/counter").await.unwrap().unwrap().value).unwrap();

        // A lease ended while 4 tasks keep putting keys on it: afterwards none is left.
        let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
        let mut putters = Vec::new();
        for t in 0..4 {
            let s = s.clone();
            putters.push(tokio::spawn(async move {
                for i in 0..200 {
                    match s.put(&format!("/g/leased/{t}/{i}"), vec![1], Some(lease)).await {
                        Ok(_) => {}
                        Err(StoreError::LeaseNotFound(_)) => return,
                        Err(e) => panic!("{e}"),
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.revoke(lease).await.unwrap();
        for p in putters {
            p.await.unwrap();
        }
        let (left, _) = s.range("/g/leased/").await.unwrap();
        assert!(left.is_empty(), "{} keys outlived their lease", left.len());
        (count, revisions)
    };
    // Each put got its own revision.
    let mut sorted = revisions.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 400, "revisions shared between changes");
    // Every acknowledged change is in the file.
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let (own, _) = s.range("/g/own/").await.unwrap();
    assert_eq!(own.len(), 400);
    let stored: u64 = serde_json::from_slice(&s.get("/g/counter").await.unwrap().unwrap().value).unwrap();
    assert_eq!((count, stored), (400, 400), "increments lost");
    assert!(s.range("/g/leased/").await.unwrap().0.is_empty());
}

/// Revisions go on across a lease that ends with no keys and a restart: a revision the store
/// has answered with is never given to a later change.
#[tokio::test(start_paused = true)]
async fn embedded_gives_no_revision_twice_across_a_keyless_lease_end_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let seen = {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let first = s.put("/r/a", b"1".to_vec(), None).await.unwrap();
        let lease = s.grant_lease(Duration::from_secs(10)).await.unwrap();
        s.revoke(lease).await.unwrap();
        // A transaction with nothing to do answers with the store's revision.
        let seen = s.txn(vec![], vec![]).await.unwrap().revision;
        assert!(seen >= first);
        assert_eq!(s.range("/r/").await.unwrap().1, seen, "a listing and a transaction agree");
        seen
    };
    tokio::task::yield_now().await;
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(s.range("/r/").await.unwrap().1, seen, "the revision survives the restart");
    assert!(s.put("/r/c", b"3".to_vec(), None).await.unwrap() > seen);
}

/// The embedded store's log segments in `dir`, oldest first.
fn log_segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("fleet.wal."))
        .collect();
    found.sort();
    found
}

async fn dump(s: &EmbeddedStore, prefix: &str) -> Vec<(String, Vec<u8>, i64, i64, Option<i64>)> {
    let (kvs, _) = s.range(prefix).await.unwrap();
    kvs.into_iter().map(|kv| (kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease)).collect()
}

// What a stop leaves in the log (no checkpoint yet) is there after the next open, revisions and
// leases included, however the last append was cut short; the open applies it to the file and
// starts a fresh segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_replays_its_log_after_a_stop_and_drops_only_an_append_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let (before, rev) = {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let lease = s.grant_lease(Duration::from_secs(600)).await.unwrap();
        for i in 0..50 {
            s.put(&format!("/k/{i:03}"), vec![i as u8; 100], None).await.unwrap();
        }
        s.put("/k/leased", b"l".to_vec(), Some(lease)).await.unwrap();
        s.delete("/k/007").await.unwrap();
        s.txn(vec![], vec![fleet_state::store::Op::put("/k/001", b"again".to_vec())]).await.unwrap();
        let rev = s.put("/k/last", b"x".to_vec(), None).await.unwrap();
        (dump(&s, "/k/").await, rev)
    };
    tokio::task::yield_now().await;
    let segments = log_segments(dir.path());
    assert_eq!(segments.len(), 1, "the changes are in the log, not yet checkpointed: {segments:?}");
    let logged = std::fs::metadata(&segments[0]).unwrap().len();
    assert!(logged > 50 * 100, "every change is in the log ({logged} bytes)");
    // Appends cut short: a header promising more than is there, and zeros where a file grew.
    for tail in [vec![200u8, 0, 0, 0, 1, 2, 3, 4, 9, 9], vec![0u8; 64]] {
        let mut bytes = std::fs::read(&segments[0]).unwrap();
        bytes.truncate(logged as usize);
        bytes.extend(&tail);
        std::fs::write(&segments[0], &bytes).unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(dump(&s, "/k/").await, before, "every acknowledged change is back, nothing more");
        assert_eq!(s.range("/none/").await.unwrap().1, rev, "the revision is back");
        assert!(!segments[0].exists(), "the replayed segment is applied to the file and removed");
        drop(s);
        tokio::task::yield_now().await;
        // Put it back for the next tail (the file now has it all: applying it again is a no-op).
        let mut restored = std::fs::read(&segments[0]).unwrap_or_default();
        if restored.is_empty() {
            restored = bytes[..logged as usize].to_vec();
        }
        for seg in log_segments(dir.path()) {
            std::fs::remove_file(seg).unwrap();
        }
        std::fs::write(&segments[0], &restored).unwrap();
    }
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(dump(&s, "/k/").await, before);
    assert_eq!(s.put("/k/next", b"n".to_vec(), None).await.unwrap(), rev + 1, "no revision is given twice");
}

// A segment applied before and found again (a crash between a checkpoint's commit and the
// segment's removal) changes nothing: a key it put and a later segment deleted stays deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_applies_a_log_segment_found_twice_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.put("/k/gone", b"v1".to_vec(), None).await.unwrap();
        s.put("/k/kept", b"v1".to_vec(), None).await.unwrap();
    }
    tokio::task::yield_now().await;
    let first = log_segments(dir.path());
    assert_eq!(first.len(), 1);
    let old = std::fs::read(&first[0]).unwrap();
    let rev = {
        // This open applies the first segment; the delete and the put go to the next.
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.delete("/k/gone").await.unwrap();
        s.put("/k/kept", b"v2".to_vec(), None).await.unwrap()
    };
    tokio::task::yield_now().await;
    // This open applies the second: the file has everything, and one empty segment is left.
    drop(EmbeddedStore::open(dir.path()).unwrap());
    tokio::task::yield_now().await;
    std::fs::write(&first[0], &old).unwrap();
    assert_eq!(log_segments(dir.path()).len(), 2);
    let s = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(s.get("/k/gone").await.unwrap(), None, "a deleted key is not brought back by an old segment");
    assert_eq!(s.get("/k/kept").await.unwrap().unwrap().value, b"v2", "the newer value stands");
    assert_eq!(s.range("/k/").await.unwrap().1, rev);
    assert_eq!(log_segments(dir.path()).len(), 1, "both applied and removed; a fresh one takes the appends");
}

// Damage anywhere but the end of the newest segment is not a stop's cut: the store refuses to
// open, saying where, rather than skip acknowledged changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_refuses_a_damaged_log_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        for i in 0..10 {
            s.put(&format!("/k/{i}"), vec![7; 50], None).await.unwrap();
        }
    }
    tokio::task::yield_now().await;
    let seg = log_segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    // A later segment exists (as when checkpoints failed): this one is not the newest.
    let later = seg.with_file_name(format!("fleet.wal.{:020}", 99_999));
    std::fs::write(&later, b"FLEETWAL").unwrap();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let err = EmbeddedStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { key, detail } if key.contains("fleet.wal.") && detail.contains("damaged")),
        "{err}"
    );
}

// Past its size limit a segment is closed and checkpointed into the file while writes go on;
// when the store closes the checkpoint is done, and what it applied is read back from the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_checkpoints_a_full_log_segment_into_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![3u8; 256 * 1024];
    let rev = {
        let s = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        // 80 values of 256 KiB: 20 MiB, past the 16 MiB a segment takes.
        for i in 0..80 {
            s.put(&format!("/big/{i:03}"), value.clone(), None).await.unwrap();
        }
        assert!(s.delete("/big/000").await.unwrap());
        s.range("/none/").await.unwrap().1
    };
    tokio::task::yield_now().await;
    let segments = log_segments(dir.path());
    assert_eq!(segments.len(), 1, "the full segment was checkpointed and removed: {segments:?}");
    assert!(std::fs::metadata(&segments[0]).unwrap().len() < 16 << 20);
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let (kvs, now) = s.range("/big/").await.unwrap();
    assert_eq!(kvs.len(), 79);
    assert!(kvs.iter().all(|kv| kv.value == value));
    assert_eq!(now, rev);
}
