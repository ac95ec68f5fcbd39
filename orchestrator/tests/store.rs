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
