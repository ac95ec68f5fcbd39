//! A node's agent learns its work by watching ([`NodeWork`]): its runners as fleetd places,
//! starts and deletes them, its apps' queued requests as they come and go — and what it reads
//! does not grow with the rest of the fleet.

use std::sync::Arc;
use std::time::Duration;

use fleet_core::keys::Keys;
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::RunnerRecord;
use fleet_state::queue;
use fleet_state::store::counted::Counted;
use fleet_state::store::embedded::EmbeddedStore;
use fleet_state::store::{Store, to_json};
use fleet_state::work::{NodeWork, View};

/// Waits (10 s at most) until the view satisfies `what`.
async fn until(work: &NodeWork, why: &str, what: impl Fn(&View) -> bool) -> View {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = work.view();
        if what(&v) {
            return v;
        }
        if tokio::time::timeout_at(deadline, work.changed()).await.is_err() {
            panic!("{why}: not seen in 10 s; the view is {v:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_its_runners_and_queues_and_reads_nothing_of_other_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let keys = Keys::new("f");
    let now = chrono::Utc::now();
    // A runner placed before the agent starts is read at start.
    inner.txn(vec![], RunnerRecord::placed(1, "a", 7, now).put_ops(&keys)).await.unwrap();
    let early = queue::submit(&*inner, &keys, "a", serde_json::json!({"i": 0}), now).await.unwrap();
    let counted = Counted::new(inner.clone());
    let reads = counted.reads.clone();
    let work = NodeWork::start(Arc::new(counted), keys.clone(), 7, vec!["a".into()]);
    let v = until(&work, "the first read", |v| v.synced).await;
    assert_eq!(v.runners.keys().copied().collect::<Vec<_>>(), vec![1]);
    assert!(v.queued["a"].contains(&early));

    // Placed here: seen; placed elsewhere: not.
    inner.txn(vec![], RunnerRecord::placed(2, "a", 7, now).put_ops(&keys)).await.unwrap();
    inner.txn(vec![], RunnerRecord::placed(3, "a", 8, now).put_ops(&keys)).await.unwrap();
    let v = until(&work, "runner 2 placed", |v| v.runners.contains_key(&2)).await;
    assert!(!v.runners.contains_key(&3), "another node's runner");
    // Started by fleetd (its record changes): seen.
    let started =
        RunnerRecord { state: RunnerPhase::Starting { node: 7, since: now }, ..RunnerRecord::placed(2, "a", 7, now) };
    inner.put(&keys.runner(2), to_json(&started), None).await.unwrap();
    until(&work, "runner 2 starting", |v| matches!(v.runners[&2].state, RunnerPhase::Starting { .. })).await;

    // Requests: queued ones appear, claimed ones leave; another app's never show.
    let id = queue::submit(&*inner, &keys, "a", serde_json::json!({"i": 1}), now).await.unwrap();
    let other = queue::submit(&*inner, &keys, "b", serde_json::json!({"i": 2}), now).await.unwrap();
    let v = until(&work, "request queued", |v| v.queued["a"].contains(&id)).await;
    assert!(!v.queued.contains_key("b") && other > 0);
    let lease = inner.grant_lease(Duration::from_secs(30)).await.unwrap();
    let got = queue::claim_one(&*inner, &keys, "a", id, 2, 7, lease, now).await.unwrap();
    assert_eq!(got.map(|r| r.id), Some(id));
    assert!(queue::claim_one(&*inner, &keys, "a", id, 1, 7, lease, now).await.unwrap().is_none(), "claimed twice");
    until(&work, "request claimed", |v| !v.queued["a"].contains(&id)).await;

    // Stopped, then deleted (with its index entry): gone from the view.
    let stopped = RunnerRecord {
        state: RunnerPhase::Stopped { since: now, lost_requests: 0 },
        ..RunnerRecord::placed(1, "a", 7, now)
    };
    inner.put(&keys.runner(1), to_json(&stopped), None).await.unwrap();
    until(&work, "runner 1 stopped", |v| !v.runners.contains_key(&1)).await;
    inner.txn(vec![], stopped.delete_ops(&keys)).await.unwrap();
    assert!(inner.get(&keys.placement(7, 1)).await.unwrap().is_none(), "the index entry goes with the record");

    // The rest of the fleet changes a lot; this node reads none of it.
    let before = reads.snapshot();
    for id in 100..300 {
        let node = 100 + id % 50;
        let mut r = RunnerRecord::placed(id, "c", node, now);
        inner.txn(vec![], r.put_ops(&keys)).await.unwrap();
        for _ in 0..3 {
            r.state = RunnerPhase::Busy { node, in_flight: 1, since: now };
            inner.put(&keys.runner(id), to_json(&r), None).await.unwrap();
        }
    }
    // A change of its own marks the end.
    inner.txn(vec![], RunnerRecord::placed(4, "a", 7, now).put_ops(&keys)).await.unwrap();
    until(&work, "runner 4 placed", |v| v.runners.contains_key(&4)).await;
    let after = reads.snapshot();
    let read = (after.keys - before.keys) + (after.events - before.events);
    assert!(read <= 4, "800 changes elsewhere, and this node read {read} keys and events: {before:?} → {after:?}");
    assert_eq!(after.ranges, before.ranges, "no range read after the first");
}
