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
