//! The checks every [`Store`] must pass; run against etcd and the embedded store by
//! `orchestrator/tests/store.rs`. Each check works under its own prefix, so one store can serve all.

use std::sync::Arc;
use std::time::Duration;

use super::{Compare, Op, Store, StoreError, WatchEvent, allocate_ids};

/// Every check, in order; panics with the check's name on the first failure.
pub async fn run(store: Arc<dyn Store>, prefix: &str) {
    basic(&*store, &format!("{prefix}/basic/")).await;
    transactions(&*store, &format!("{prefix}/txn/")).await;
    leases(&*store, &format!("{prefix}/lease/")).await;
    watches(&*store, &format!("{prefix}/watch/")).await;
    counters(store.clone(), &format!("{prefix}/ids/")).await;
    large_range(&*store, &format!("{prefix}/large/")).await;
    large_values(&*store, &format!("{prefix}/big/")).await;
}

/// Values of 1 MiB (under etcd's 1.5 MiB request limit), 24 MiB in all: far over gRPC's 4 MiB
/// answer limit and an HTTP client's 10 MB. `range` still returns every one, in order, and
/// `range_page` pages through them without a page over its byte budget (beyond a single key).
pub async fn large_values(s: &dyn Store, p: &str) {
    let n = 24;
    let keys: Vec<String> = (0..n).map(|i| format!("{p}{i:03}")).collect();
    for (i, k) in keys.iter().enumerate() {
        s.put(k, vec![b'a' + (i % 26) as u8; 1 << 20], None).await.unwrap();
    }
    let (kvs, _) = s.range(p).await.unwrap();
    assert_eq!(kvs.len(), n, "large values: every key");
    assert!(kvs.iter().map(|k| &k.key).eq(keys.iter()), "large values: in order");
    assert!(kvs.iter().enumerate().all(|(i, kv)| kv.value.len() == 1 << 20 && kv.value[0] == b'a' + (i % 26) as u8));
    let budget = 3 << 20;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.range_page(p, after.as_deref(), budget).await.unwrap();
        let bytes: usize = page.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
        assert!(!page.kvs.is_empty(), "large values: a page has at least one key");
        assert!(bytes <= budget || page.kvs.len() == 1, "large values: a page of {bytes} bytes");
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        after = seen.last().cloned();
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, keys, "large values: the pages cover the range once, in order");
    let tiny = s.range_page(p, None, 1).await.unwrap();
    assert_eq!((tiny.kvs.len(), tiny.more), (1, true), "large values: one key over the budget still comes");
    let past = s.range_page(p, Some(&keys[n - 1]), budget).await.unwrap();
    assert!(past.kvs.is_empty() && !past.more, "large values: nothing after the last key");
}

/// A prefix with more keys (and bytes) than one response carries comes back whole and in order.
pub async fn large_range(s: &dyn Store, p: &str) {
    let value = vec![b'x'; 1_000];
    let n = 5_000;
    let keys: Vec<String> = (0..n).map(|i| format!("{p}{i:06}")).collect();
    let max = s.max_txn_ops();
    for chunk in keys.chunks(max.min(n)) {
        s.txn(vec![], chunk.iter().map(|k| Op::put(k.clone(), value.clone())).collect()).await.unwrap();
    }
    let (kvs, rev) = s.range(p).await.unwrap();
    assert_eq!(kvs.len(), n, "large range: every key");
    assert!(kvs.iter().map(|k| &k.key).eq(keys.iter()), "large range: in order");
    assert!(kvs.iter().all(|k| k.mod_revision <= rev), "large range: one snapshot");
}

pub async fn basic(s: &dyn Store, p: &str) {
    let a = format!("{p}a");
    let b = format!("{p}b");
    assert_eq!(s.get(&a).await.unwrap(), None, "basic: fresh key is absent");
    let r1 = s.put(&b, b"2".to_vec(), None).await.unwrap();
    let r2 = s.put(&a, b"1".to_vec(), None).await.unwrap();
    assert!(r2 > r1, "basic: revisions grow ({r1} then {r2})");
    let (kvs, rev) = s.range(p).await.unwrap();
    assert_eq!(kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), [a.as_str(), b.as_str()], "basic: key order");
    assert!(rev >= r2, "basic: range revision {rev} ≥ last write {r2}");
    let r3 = s.put(&a, b"1b".to_vec(), None).await.unwrap();
    let kv = s.get(&a).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision, kv.create_revision),
        (&b"1b"[..], r3, r2),
        "basic: revisions of a key"
    );
    // A prefix read does not include keys that merely share the first characters of the prefix's parent.
    s.put(&format!("{}x", p.trim_end_matches('/')), b"-".to_vec(), None).await.unwrap();
    assert_eq!(s.range(p).await.unwrap().0.len(), 2, "basic: prefix boundary");
    assert!(s.delete(&a).await.unwrap(), "basic: delete existing");
    assert!(!s.delete(&a).await.unwrap(), "basic: delete absent");
    assert_eq!(s.get(&a).await.unwrap(), None);
}

pub async fn transactions(s: &dyn Store, p: &str) {
    let k = format!("{p}k");
    let other = format!("{p}other");
    let first = s.txn(vec![Compare::absent(&k)], vec![Op::put(&k, b"one".to_vec())]).await.unwrap();
    assert!(first.succeeded, "txn: create-if-absent");
    let second = s.txn(vec![Compare::absent(&k)], vec![Op::put(&k, b"two".to_vec())]).await.unwrap();
    assert!(!second.succeeded, "txn: second create-if-absent must fail");
    let kv = s.get(&k).await.unwrap().unwrap();
    assert_eq!(kv.value, b"one", "txn: failed txn applied nothing");

    // A stale compare applies none of several ops.
    s.put(&k, b"changed".to_vec(), None).await.unwrap();
    let stale =
        s.txn(vec![Compare::unchanged(&kv)], vec![Op::put(&k, b"x".to_vec()), Op::put(&other, b"y".to_vec())]).await;
    assert!(!stale.unwrap().succeeded, "txn: stale compare");
    assert_eq!(s.get(&other).await.unwrap(), None, "txn: all-or-nothing");

    // A fresh compare applies all ops at one revision.
    let kv = s.get(&k).await.unwrap().unwrap();
    let ok = s.txn(vec![Compare::unchanged(&kv)], vec![Op::delete(&k), Op::put(&other, b"y".to_vec())]).await.unwrap();
    assert!(ok.succeeded, "txn: fresh compare");
    assert_eq!(s.get(&k).await.unwrap(), None);
    assert_eq!(s.get(&other).await.unwrap().unwrap().mod_revision, ok.revision, "txn: one revision");

    let dup = s.txn(vec![], vec![Op::put(&k, b"1".to_vec()), Op::delete(&k)]).await;
    assert!(matches!(dup, Err(StoreError::Invalid(_))), "txn: a key twice is refused: {dup:?}");
}

/// Waits (in the store's clock) until `key` is gone; false after `limit`.
async fn gone(s: &dyn Store, key: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if s.get(key).await.unwrap().is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

pub async fn leases(s: &dyn Store, p: &str) {
    let ttl = Duration::from_secs(2);
    // Kept alive past several TTLs: the key stays.
    let kept = s.grant_lease(ttl).await.unwrap();
    let k1 = format!("{p}kept");
    s.put(&k1, b"alive".to_vec(), Some(kept)).await.unwrap();
    assert_eq!(s.get(&k1).await.unwrap().unwrap().lease, Some(kept), "lease: key carries its lease");
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        s.keep_alive(kept).await.unwrap();
    }
    assert!(s.get(&k1).await.unwrap().is_some(), "lease: kept-alive key survives 4 s of a 2 s TTL");

    // Not kept alive: the key goes, and the lease is gone for good.
    let dying = s.grant_lease(ttl).await.unwrap();
    let k2 = format!("{p}dying");
    s.put(&k2, b"soon gone".to_vec(), Some(dying)).await.unwrap();
    assert!(gone(s, &k2, Duration::from_secs(10)).await, "lease: key of an expired lease is deleted");
    let ka = s.keep_alive(dying).await;
    assert!(matches!(ka, Err(StoreError::LeaseNotFound(_))), "lease: keep-alive after expiry: {ka:?}");
    let late = s.put(&k2, b"x".to_vec(), Some(dying)).await;
    assert!(matches!(late, Err(StoreError::LeaseNotFound(_))), "lease: put on an ended lease: {late:?}");
    let late_txn = s.txn(vec![], vec![Op::put_with_lease(&k2, b"x".to_vec(), dying)]).await;
    assert!(matches!(late_txn, Err(StoreError::LeaseNotFound(_))), "lease: txn on an ended lease: {late_txn:?}");
    assert_eq!(s.get(&k2).await.unwrap(), None, "lease: refused put wrote nothing");

    // Revoked: keys go at once.
    s.revoke(kept).await.unwrap();
    assert_eq!(s.get(&k1).await.unwrap(), None, "lease: revoke deletes keys");
    s.revoke(kept).await.unwrap();
}

async fn next(w: &mut super::Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.recv())
        .await
        .expect("watch: an event within 10 s")
        .expect("watch: stream open")
        .expect("watch: event, not error")
}

pub async fn watches(s: &dyn Store, p: &str) {
    let a = format!("{p}a");
    let (_, rev) = s.range(p).await.unwrap();
    let mut w = s.watch(p, rev + 1).await.unwrap();
    s.put(&format!("{}-not-mine", p.trim_end_matches('/')), b"-".to_vec(), None).await.unwrap();
    let r1 = s.put(&a, b"1".to_vec(), None).await.unwrap();
    s.delete(&a).await.unwrap();
    match next(&mut w).await {
        WatchEvent::Put(kv) => {
            assert_eq!((kv.key.as_str(), kv.value.as_slice(), kv.mod_revision), (a.as_str(), &b"1"[..], r1))
        }
        e => panic!("watch: expected put, got {e:?}"),
    }
    assert!(matches!(next(&mut w).await, WatchEvent::Delete { key, .. } if key == a), "watch: delete event");

    // Resuming from a past revision replays what happened since.
    let mut replay = s.watch(p, r1).await.unwrap();
    assert!(matches!(next(&mut replay).await, WatchEvent::Put(kv) if kv.mod_revision == r1), "watch: replay put");
    assert!(matches!(next(&mut replay).await, WatchEvent::Delete { .. }), "watch: replay delete");

    // A lease expiry shows up as a delete.
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    s.put(&a, b"leased".to_vec(), Some(lease)).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Put(_)));
    s.revoke(lease).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Delete { key, .. } if key == a), "watch: lease end deletes");

    // One transaction under the prefix and beside it: the watch gets its own events only, in
    // order, and `recv_unless` passes over those it is told to.
    let (b, c, d) = (format!("{p}b"), format!("{p}c"), format!("{p}d"));
    let beside = format!("{}-beside", p.trim_end_matches('/'));
    let ops = vec![
        Op::put(&beside, b"x".to_vec()),
        Op::put(&b, b"2".to_vec()),
        Op::put(&c, b"3".to_vec()),
        Op::put(&d, b"4".to_vec()),
    ];
    let rev = s.txn(vec![], ops).await.unwrap().revision;
    let got = tokio::time::timeout(Duration::from_secs(10), w.recv_unless(|e| e.key() == b))
        .await
        .expect("watch: an event within 10 s")
        .expect("watch: stream open")
        .expect("watch: event, not error");
    assert!(
        matches!(&got, WatchEvent::Put(kv) if kv.key == c && kv.value == b"3" && kv.mod_revision == rev),
        "watch: recv_unless gave {got:?}, not the put of {c}"
    );
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.key == d), "watch: the rest of the batch");
}

pub async fn counters(s: Arc<dyn Store>, p: &str) {
    let key = format!("{p}counter");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, key) = (s.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..10 {
                let first = allocate_ids(&*s, &key, 3).await.unwrap();
                got.extend(first..first + 3);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=120).collect::<Vec<u64>>(), "counters: concurrent allocations are disjoint and dense");
}
