//! Applying a spec: the same text twice writes once.

use fleet_core::keys::Keys;
use fleet_state::model::apply_spec;
use fleet_state::store::Store;
use fleet_state::store::embedded::EmbeddedStore;

const SPEC: &str = "[fleet]\nname = \"f\"\n[apps.a]\ngpu = \"H100\"\n";

#[tokio::test]
async fn an_unchanged_spec_writes_no_new_revision_and_a_changed_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let keys = Keys::new("f");
    let now = chrono::Utc::now();
    apply_spec(&store, &keys, "f", SPEC, now).await.unwrap();
    let first = revision(&store, &keys).await;
    apply_spec(&store, &keys, "f", SPEC, now).await.unwrap();
    assert_eq!(revision(&store, &keys).await, first, "the same spec again is no change");
    let changed = SPEC.replace("gpu = \"H100\"", "gpu = \"A100-80GB\"");
    apply_spec(&store, &keys, "f", &changed, now).await.unwrap();
    assert!(revision(&store, &keys).await > first, "a changed spec is written");
}

async fn revision(store: &EmbeddedStore, keys: &Keys) -> i64 {
    store.get(&keys.spec()).await.unwrap().unwrap().mod_revision
}
