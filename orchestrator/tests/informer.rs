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

#[tokio::test(start_paused = true)]
async fn the_queues_are_followed_and_a_submit_nudges_once_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let keys = Keys::new("t");
    let now = chrono::Utc::now();
    let depth = |queued, in_flight| fleet_state::queue::Depth { queued, in_flight };
    fleet_state::queue::submit(&*store, &keys, "a", serde_json::json!({}), now).await.unwrap();
    let nudge = Arc::new(tokio::sync::Notify::new());
    let inf = Informer::start(store.clone(), &keys, Some(nudge.clone())).await;
    let (depths, suspects) = inf.queues().expect("listed at start");
    assert_eq!((depths["a"], suspects.len()), (depth(1, 0), 0));

    // A submit: the nudge comes after the mirror counts it.
    fleet_state::queue::submit(&*store, &keys, "b", serde_json::json!({}), now).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), nudge.notified()).await.expect("a submit nudges");
    assert_eq!(inf.queues().unwrap().0["b"], depth(1, 0));

    // Claimed: in flight, and no nudge (nothing became queued).
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let r = fleet_state::queue::claim(&*store, &keys, "a", 5, 1, lease, now).await.unwrap().expect("queued");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(inf.queues().unwrap(), ([("a".into(), depth(0, 1)), ("b".into(), depth(1, 0))].into(), vec![]));
    assert!(tokio::time::timeout(Duration::from_millis(100), nudge.notified()).await.is_err(), "a claim nudged");

    // The claimer's lease ends: the request is a suspect, and a requeue puts it back.
    store.revoke(lease).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (depths, suspects) = inf.queues().unwrap();
    assert_eq!(suspects, vec![keys.queued("a", r.id)]);
    let (depths, n) = fleet_state::queue::requeue_suspects(&*store, &keys, depths, &suspects).await.unwrap();
    assert_eq!((depths["a"], n), (depth(1, 0), 1));
    tokio::time::timeout(Duration::from_secs(5), nudge.notified()).await.expect("a request put back nudges");
    assert_eq!(inf.queues().unwrap(), ([("a".into(), depth(1, 0)), ("b".into(), depth(1, 0))].into(), vec![]));
}
