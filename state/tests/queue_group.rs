//! Group commit of queue submits: one transaction for the group, ids in order, every record
//! there, and single submits after it go on from the counter.

use fleet_core::keys::Keys;
use fleet_state::queue::{self, Submission};
use fleet_state::store::Store;
use fleet_state::store::embedded::EmbeddedStore;

#[tokio::test]
async fn a_group_is_committed_in_one_transaction_with_consecutive_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let keys = Keys::new("f");
    let now = chrono::Utc::now();
    let first = queue::submit_as(&store, &keys, "a", serde_json::json!({"i": 0}), now, None).await.unwrap();
    let before = store.get(&keys.queued("a", first)).await.unwrap().unwrap().mod_revision;
    let group: Vec<Submission> = (1..=5)
        .map(|i| Submission {
            app: if i % 2 == 0 { "b".into() } else { "a".into() },
            input: serde_json::json!({"i": i}),
            owner: Some("t".into()),
        })
        .collect();
    let ids = queue::submit_group(&store, &keys, &group, now).await.unwrap();
    assert_eq!(ids, (first + 1..=first + 5).collect::<Vec<_>>());
    let mut revisions = std::collections::BTreeSet::new();
    for (id, s) in ids.iter().zip(&group) {
        let kv = store.get(&keys.queued(&s.app, *id)).await.unwrap().expect("written");
        revisions.insert(kv.mod_revision);
        let r = queue::get(&store, &keys, &s.app, *id).await.unwrap();
        assert_eq!((r.input, r.owner.as_deref()), (s.input.clone(), Some("t")));
    }
    assert_eq!(revisions.len(), 1, "one commit for the whole group");
    assert!(revisions.into_iter().next().unwrap() > before);
    let next = queue::submit_as(&store, &keys, "a", serde_json::json!({}), now, None).await.unwrap();
    assert_eq!(next, first + 6);
    assert!(queue::submit_group(&store, &keys, &[], now).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_scan_with_a_cache_counts_as_a_fresh_one_through_claims_completions_requeues_and_poison() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let keys = Keys::new("f");
    let now = chrono::Utc::now();
    let mut cache = queue::ScanCache::default();
    // Each scan with the cache must say what a scan without one says.
    async fn both(
        store: &EmbeddedStore,
        keys: &Keys,
        cache: &mut queue::ScanCache,
    ) -> (std::collections::BTreeMap<String, queue::Depth>, u32) {
        let cached = queue::scan_cached(store, keys, cache).await.unwrap();
        let fresh = queue::scan(store, keys).await.unwrap();
        assert_eq!(cached.0, fresh.0, "cached depths differ from a fresh scan");
        cached
    }
    let depth = |q, f| queue::Depth { queued: q, in_flight: f };
    for i in 0..3 {
        queue::submit(&store, &keys, "a", serde_json::json!({"i": i}), now).await.unwrap();
    }
    let (d, _) = both(&store, &keys, &mut cache).await;
    assert_eq!(d["a"], depth(3, 0));
    assert_eq!(cache.len(), 3);
    // A claim changes the record's revision: read again, now in flight.
    let lease = store.grant_lease(std::time::Duration::from_secs(60)).await.unwrap();
    let claimed = queue::claim(&store, &keys, "a", 7, 1, lease, now).await.unwrap().expect("one queued");
    let (d, _) = both(&store, &keys, &mut cache).await;
    assert_eq!(d["a"], depth(2, 1));
    // Completed: gone from the queue and from the cache.
    queue::complete(&store, &keys, "a", claimed.id, 7, Ok(serde_json::json!(1)), now).await.unwrap();
    let (d, _) = both(&store, &keys, &mut cache).await;
    assert_eq!(d["a"], depth(2, 0));
    assert_eq!(cache.len(), 2);
    // A claim whose lease ends: the cached scan puts it back.
    let lease = store.grant_lease(std::time::Duration::from_secs(60)).await.unwrap();
    queue::claim(&store, &keys, "a", 8, 1, lease, now).await.unwrap().expect("one queued");
    assert_eq!(both(&store, &keys, &mut cache).await.0["a"], depth(1, 1));
    store.revoke(lease).await.unwrap();
    let (d, requeued) = queue::scan_cached(&store, &keys, &mut cache).await.unwrap();
    assert_eq!((d["a"], requeued), (depth(2, 0), 1));
    assert_eq!(both(&store, &keys, &mut cache).await.0["a"], depth(2, 0));
    // A poisoned record is skipped; written again as a good one, it counts.
    let bad = keys.queued("b", 999);
    store.put(&bad, b"not json".to_vec(), None).await.unwrap();
    let (d, _) = both(&store, &keys, &mut cache).await;
    assert!(!d.contains_key("b"), "{d:?}");
    let good = serde_json::json!({"id": 999, "app": "b", "input": {}, "submitted_at": now, "attempts": 0,
                                   "state": {"state": "queued"}});
    store.put(&bad, serde_json::to_vec(&good).unwrap(), None).await.unwrap();
    let (d, _) = both(&store, &keys, &mut cache).await;
    assert_eq!(d["b"], depth(1, 0));
}
