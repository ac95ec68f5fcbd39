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
