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

/// Applies the watch's events to `mirror` up to a marker written now: after it, the mirror has
/// seen every change committed before.
async fn catch_up(
    store: &EmbeddedStore,
    watch: &mut fleet_state::store::Watch,
    keys: &Keys,
    mirror: &mut queue::QueueMirror,
) {
    let marker_key = format!("{}marker", keys.root());
    let marker = store.put(&marker_key, b"x".to_vec(), None).await.unwrap();
    loop {
        let ev = watch.recv().await.expect("watch open").expect("watch ok");
        if ev.key() == marker_key && ev.revision() == marker {
            return;
        }
        mirror.apply(keys, &ev);
    }
}

#[tokio::test]
async fn a_mirror_fed_by_the_watch_counts_and_requeues_as_a_scan_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let keys = Keys::new("f");
    let now = chrono::Utc::now();
    // Some history before the listing, so the listing matters.
    for i in 0..4 {
        queue::submit(&store, &keys, ["a", "b"][i % 2], serde_json::json!({"i": i}), now).await.unwrap();
    }
    let lease0 = store.grant_lease(std::time::Duration::from_secs(60)).await.unwrap();
    queue::claim(&store, &keys, "a", 1, 1, lease0, now).await.unwrap().expect("queued");
    let (queued, rev) = store.range(&keys.queues()).await.unwrap();
    let (claims, _) = store.range(&keys.claims()).await.unwrap();
    let mut mirror = queue::QueueMirror::listed(&keys, &queued, &claims);
    let mut watch = store.watch(keys.root(), rev + 1).await.unwrap();
    assert_eq!(mirror.len(), 4);

    // A fixed pseudo-random run of submits, claims, completions, lease ends and poison.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut leases = vec![lease0];
    let mut held: Vec<(String, u64, u64)> = Vec::new(); // (app, request, runner)
    let (mut requeued_total, mut runner) = (0, 10);
    for step in 0..240 {
        let app = ["a", "b", "c"][rnd(3) as usize];
        match rnd(10) {
            0..=3 => {
                queue::submit(&store, &keys, app, serde_json::json!({"step": step}), now).await.unwrap();
            }
            4..=5 => {
                if leases.len() < 3 || rnd(2) == 0 {
                    leases.push(store.grant_lease(std::time::Duration::from_secs(60)).await.unwrap());
                }
                runner += 1;
                let lease = leases[rnd(leases.len() as u64) as usize];
                if let Some(r) = queue::claim(&store, &keys, app, runner, 1, lease, now).await.unwrap() {
                    held.push((r.app, r.id, runner));
                }
            }
            6..=7 if !held.is_empty() => {
                let (app, id, runner) = held.swap_remove(rnd(held.len() as u64) as usize);
                // Lost when its lease ended first: then the claim is gone and this fails.
                let _ = queue::complete(&store, &keys, &app, id, runner, Ok(serde_json::json!(1)), now).await;
            }
            8 if leases.len() > 1 => {
                let lease = leases.swap_remove(rnd(leases.len() as u64) as usize);
                store.revoke(lease).await.unwrap();
            }
            9 => {
                // Poison, or a poisoned record written good again.
                let id = 9_000 + rnd(4);
                let good = serde_json::json!({"id": id, "app": app, "input": {}, "submitted_at": now,
                                               "attempts": 0, "state": {"state": "queued"}});
                let value = if rnd(2) == 0 { b"{not json".to_vec() } else { serde_json::to_vec(&good).unwrap() };
                store.put(&keys.queued(app, id), value, None).await.unwrap();
            }
            _ => {}
        }
        if step % 12 != 11 {
            continue;
        }
        catch_up(&store, &mut watch, &keys, &mut mirror).await;
        // What a scan counts before putting anything back.
        assert_eq!(mirror.depths(), queue::depths(&store, &keys).await.unwrap(), "step {step}");
        let (depths, n) = queue::requeue_suspects(&store, &keys, mirror.depths(), &mirror.suspects()).await.unwrap();
        requeued_total += n;
        // Nothing left for a scan to put back, and the same counts after.
        let (scanned, left) = queue::scan(&store, &keys).await.unwrap();
        assert_eq!((depths, left), (scanned, 0), "step {step}");
        catch_up(&store, &mut watch, &keys, &mut mirror).await;
        assert!(mirror.suspects().is_empty(), "step {step}: {:?}", mirror.suspects());
    }
    assert!(requeued_total > 0, "the run never ended a lease under a claim");
    let (all, _) = store.range(&keys.queues()).await.unwrap();
    assert_eq!(mirror.len(), all.len());
}
