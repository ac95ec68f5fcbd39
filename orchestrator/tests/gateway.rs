//! The store gateway (agents without etcd): an agent's token reaches only its node's keys, its
//! runners and its apps' queues — the same least privilege as its etcd role — owns only the
//! leases it was granted, and stops working when its node is gone. Through the real API
//! (in-process on loopback) and the real client (`HttpStore`).

use std::sync::Arc;
use std::time::Duration;

use fleet_core::keys::Keys;
use fleet_orchestrator::access::AgentAccess;
use fleet_orchestrator::access::gateway::GatewayAccess;
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_state::clock::Clock;
use fleet_state::model::RunnerRecord;
use fleet_state::store::embedded::EmbeddedStore;
use fleet_state::store::http::HttpStore;
use fleet_state::store::{Store, StoreError, to_json};

/// fleetd's API on loopback over an embedded store (in this process), and what tests reach it with.
struct Api {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    ctx: Arc<Ctx>,
    keys: Keys,
    url: String,
}

async fn api_on_loopback() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let ctx = Arc::new(Ctx::new(
        "t",
        store.clone(),
        Default::default(),
        Arc::new(InstanceRunning),
        Config::default(),
        Clock::System,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = fleet_orchestrator::api::router(ctx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Api { _dir: dir, store, ctx, keys: Keys::new("t"), url }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_reaches_only_its_node_and_apps() {
    let api = api_on_loopback().await;
    let (store, keys, url) = (api.store.clone(), api.keys.clone(), api.url.clone());
    let now = chrono::Utc::now();
    for (id, node) in [(1, 1), (2, 2)] {
        let r = RunnerRecord::placed(id, "llm", node, now);
        store.txn(vec![], r.put_ops(&keys)).await.unwrap();
    }
    store.put(&keys.queued("other", 1), b"{}".to_vec(), None).await.unwrap();

    let access = GatewayAccess { store: store.clone(), keys: keys.clone() };
    let (_, t1) = access.credentials(1, &["llm".into()]).await.unwrap();
    let (_, t2) = access.credentials(2, &["llm".into()]).await.unwrap();
    let a1 = HttpStore::new(&url, t1);
    let a2 = HttpStore::new(&url, t2);

    // Its own health key on its own lease.
    let lease = a1.grant_lease(Duration::from_secs(5)).await.unwrap();
    a1.put(&keys.agent(1), b"{}".to_vec(), Some(lease)).await.unwrap();
    a1.keep_alive(lease).await.unwrap();
    // Its runners and its apps' queue: yes. Everything else: denied.
    a1.range(&keys.runners()).await.unwrap();
    a1.range(&keys.queue("llm")).await.unwrap();
    let r1 = a1.get(&keys.runner(1)).await.unwrap().unwrap();
    a1.put(&keys.runner(1), r1.value.clone(), None).await.unwrap();
    let denied = |e: StoreError| assert!(matches!(e, StoreError::Denied(_)), "{e}");
    denied(a1.put(&keys.runner(2), r1.value.clone(), None).await.unwrap_err());
    denied(a1.put(&keys.agent(2), b"{}".to_vec(), None).await.unwrap_err());
    denied(a1.get(&keys.spec()).await.unwrap_err());
    denied(a1.range(&keys.nodes()).await.unwrap_err());
    denied(a1.range(&keys.queue("other")).await.unwrap_err());
    denied(a1.range(&keys.tokens()).await.unwrap_err());
    denied(a1.range(keys.root()).await.unwrap_err());
    // Peers: it reads who holds its apps' model chunks and the origin claims, writes its own
    // holder record and claims, never another node's holder record or another app's.
    a1.range(&keys.holders("llm")).await.unwrap();
    a1.put(&keys.holder("llm", "f00d", 1), b"{}".to_vec(), Some(lease)).await.unwrap();
    a1.put(&keys.origin_fetch("llm", "us-east-1", "f00d", 3), b"1".to_vec(), Some(lease)).await.unwrap();
    denied(a1.put(&keys.holder("llm", "f00d", 2), b"{}".to_vec(), None).await.unwrap_err());
    denied(a1.range(&keys.holders("other")).await.unwrap_err());
    denied(a1.put(&keys.origin_fetch("other", "us-east-1", "f00d", 3), b"1".to_vec(), None).await.unwrap_err());
    // It watches its node's index, its runners and its apps' queues, and nothing else.
    let (_, rev) = store.range(&keys.placed(1)).await.unwrap();
    let mut w = a1.watch(&keys.placed(1), rev + 1).await.unwrap();
    let mut wq = a1.watch(&keys.queue("llm"), rev + 1).await.unwrap();
    store.txn(vec![], RunnerRecord::placed(3, "llm", 1, now).put_ops(&keys)).await.unwrap();
    store.txn(vec![], RunnerRecord::placed(4, "llm", 2, now).put_ops(&keys)).await.unwrap();
    let id = fleet_state::queue::submit(&*store, &keys, "llm", serde_json::json!({"x": 1}), now).await.unwrap();
    let within = |w| tokio::time::timeout(Duration::from_secs(10), w);
    let ev = within(w.recv()).await.expect("an event").expect("open").expect("not lost");
    assert_eq!(ev.key(), keys.placement(1, 3), "its own placement, not node 2's");
    let ev = within(wq.recv()).await.expect("an event").expect("open").expect("not lost");
    assert_eq!(ev.key(), keys.queued("llm", id));
    assert!(matches!(ev, fleet_state::store::WatchEvent::Put(_)));
    denied(a1.watch(&keys.placed(2), rev + 1).await.unwrap_err());
    denied(a1.watch(&keys.queue("other"), rev + 1).await.unwrap_err());
    denied(a1.watch(keys.root(), rev + 1).await.unwrap_err());
    store.delete(&keys.queued("llm", id)).await.unwrap();
    // Another node's lease is not its own: it can neither keep it alive, revoke it, nor use it.
    let e = a2.keep_alive(lease).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotFound(_)), "{e}");
    assert!(matches!(a2.revoke(lease).await.unwrap_err(), StoreError::LeaseNotFound(_)));
    let e = a2.put(&keys.agent(2), b"{}".to_vec(), Some(lease)).await.unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotFound(_)), "{e}");
    // A transaction with one key outside the grant applies nothing.
    let res = a1
        .txn(
            vec![],
            vec![
                fleet_state::store::Op::put(keys.queued("llm", 9), b"{}".to_vec()),
                fleet_state::store::Op::put(keys.agent(2), b"{}".to_vec()),
            ],
        )
        .await;
    denied(res.unwrap_err());
    assert!(store.get(&keys.queued("llm", 9)).await.unwrap().is_none(), "half-applied");

    // A value its token may write but that is not a request (or is another app's, or another
    // id's) is quarantined: depths, scans and claims skip it and go on.
    a1.put(&keys.queued("llm", 7), b"not json".to_vec(), None).await.unwrap();
    let alien = fleet_state::model::RequestRecord {
        id: 8,
        app: "other".into(),
        input: serde_json::json!({}),
        submitted_at: now,
        attempts: 0,
        state: fleet_state::model::RequestState::Queued,
        owner: None,
    };
    a1.put(&keys.queued("llm", 8), to_json(&alien), None).await.unwrap();
    let good = fleet_state::queue::submit(&*store, &keys, "llm", serde_json::json!({"x": 1}), now).await.unwrap();
    let depths = fleet_state::queue::depths(&*store, &keys).await.unwrap();
    assert_eq!(depths["llm"].queued, 1, "{depths:?}");
    let (scanned, _) = fleet_state::queue::scan(&*store, &keys).await.unwrap();
    assert_eq!(scanned["llm"].queued, 1);
    let claimed = fleet_state::queue::claim(&a1, &keys, "llm", 1, 1, lease, now).await.unwrap();
    assert_eq!(claimed.map(|r| r.id), Some(good));
    assert!(fleet_state::queue::quarantined() >= 2);

    // Node gone: its token goes.
    access.forget_node(1).await.unwrap();
    let e = a1.range(&keys.runners()).await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
}

/// Leases an agent token may grant are bounded: a TTL within what an agent needs, at most a few
/// at once per node (a grant beyond that revokes the node's oldest, and its keys go with it), and
/// all of them revoked when the node is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_hoard_leases() {
    use fleet_orchestrator::access::gateway::{LEASE_TTL_MAX, LEASES_PER_NODE};
    let api = api_on_loopback().await;
    let (store, ctx, keys, url) = (api.store.clone(), api.ctx.clone(), api.keys.clone(), api.url.clone());
    let access = GatewayAccess { store: store.clone(), keys: keys.clone() };
    let (_, t1) = access.credentials(1, &["llm".into()]).await.unwrap();
    let a1 = HttpStore::new(&url, t1);

    // A lease that would outlive any agent's need (a day): refused, saying the bound.
    let e = a1.grant_lease(Duration::from_secs(86_400)).await.unwrap_err();
    assert!(matches!(&e, StoreError::Denied(m) if m.contains("60 s")), "{e}");
    assert!(a1.grant_lease(LEASE_TTL_MAX).await.is_ok());

    // Twenty grants: only the last LEASES_PER_NODE stay; the oldest were revoked with their keys.
    let mut granted = Vec::new();
    for _ in 0..20 {
        granted.push(a1.grant_lease(Duration::from_secs(30)).await.unwrap());
    }
    assert_eq!(ctx.gateway_leases.held(1), LEASES_PER_NODE);
    let oldest = granted[0];
    assert!(a1.keep_alive(oldest).await.is_err(), "the oldest lease is no longer the agent's");
    let newest = *granted.last().unwrap();
    a1.put(&keys.agent(1), b"{}".to_vec(), Some(newest)).await.unwrap();
    a1.keep_alive(newest).await.unwrap();
    // The node is gone: its leases are revoked, and the keys on them vanish.
    for lease in ctx.gateway_leases.forget(1) {
        store.revoke(lease).await.unwrap();
    }
    assert!(store.get(&keys.agent(1)).await.unwrap().is_none());
}

/// A queue of large inputs (16 requests of 1 MiB: more than an HTTP client reads in one answer by
/// default) is read through the gateway in pages of at most 4 MiB, every request once and in
/// order; one gateway answer never carries the whole queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_queue_is_read_through_the_gateway_in_bounded_pages() {
    use fleet_state::store::gateway::RANGE_PAGE_BYTES;
    let api = api_on_loopback().await;
    let (store, keys, url) = (api.store.clone(), api.keys.clone(), api.url.clone());
    let now = chrono::Utc::now();
    let big = "x".repeat(1 << 20);
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(
            fleet_state::queue::submit(&*store, &keys, "llm", serde_json::json!({"text": big}), now).await.unwrap(),
        );
    }
    let access = GatewayAccess { store: store.clone(), keys: keys.clone() };
    let (_, token) = access.credentials(1, &["llm".into()]).await.unwrap();

    // One raw call: the first page only, under the budget, with `more`.
    let addr = url.trim_start_matches("http://").to_string();
    let auth = format!("Authorization: Bearer {}", token.expose());
    let body = serde_json::json!({"call": "range", "prefix": keys.queue("llm")}).to_string();
    let (status, answer) = tokio::task::spawn_blocking(move || {
        fleet_orchestrator::testing::http::request(&addr, "POST", "/v1/store/call", &[&auth], &body)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status, 200);
    let page: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let n = page["kvs"].as_array().unwrap().len();
    assert!((1..16).contains(&n) && page["more"] == true, "{n} of 16 in the first page");
    assert!(answer.len() <= RANGE_PAGE_BYTES + (64 << 10), "a page of {} bytes", answer.len());

    // The client pages through: every request once, in order, each whole.
    let agent = HttpStore::new(&url, token);
    let (kvs, _) = agent.range(&keys.queue("llm")).await.unwrap();
    let got: Vec<u64> = kvs.iter().filter_map(|kv| fleet_core::keys::id_of(&kv.key)).collect();
    assert_eq!(got, ids);
    assert!(kvs.iter().all(|kv| kv.value.len() > 1 << 20));
}
