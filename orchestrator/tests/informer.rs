//! The informer follows the store: writes by anyone show up, deletes too, and stale events do not
//! overwrite newer writes-through.

use std::sync::Arc;
use std::time::Duration;

use fleet_core::keys::Keys;
use fleet_orchestrator::informer::Informer;
use fleet_state::model::RunnerRecord;
use fleet_state::store::embedded::EmbeddedStore;
use fleet_state::store::{Store, to_json};

fn runner(id: u64, node: u64) -> RunnerRecord {
    let now = chrono::Utc::now();
    RunnerRecord::placed(id, "a", node, now)
}

#[tokio::test(start_paused = true)]
async fn the_cache_follows_writes_deletes_and_ignores_stale_events() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let keys = Keys::new("t");
    store.put(&keys.runner(1), to_json(&runner(1, 10)), None).await.unwrap();
    let inf = Informer::start(store.clone(), &keys, None).await;
    assert!(inf.is_fresh());
    assert_eq!(inf.runners().len(), 1, "listed at start");

    let r2 = store.put(&keys.runner(2), to_json(&runner(2, 20)), None).await.unwrap();
    store.put(&keys.runner(1), to_json(&runner(1, 11)), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let rs = inf.runners();
    assert_eq!(rs.iter().map(|r| (r.id, r.node())).collect::<Vec<_>>(), vec![(1, Some(11)), (2, Some(20))]);

    // A write-through newer than the store's event wins; the older event is ignored.
    inf.put_runner(runner(2, 99), r2 + 100);
    store.put(&keys.runner(2), to_json(&runner(2, 21)), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(inf.runners()[1].node(), Some(99));

    store.delete(&keys.runner(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(inf.runners().len(), 1, "deletes show up");
}
