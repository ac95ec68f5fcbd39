//! fleetd's actor tree on a 3-member etcd cluster (three etcd processes on loopback): one member
//! killed, the fleet keeps working — requests are served and a scale-up launches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::keys::Keys;
use fleet_core::{CapacityType, Cloud};
use fleet_orchestrator::actors::root::RootActor;
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_orchestrator::clock::Clock;
use fleet_orchestrator::lifecycle::node::NodeState;
use fleet_orchestrator::model::{NodeRecord, RequestState, apply_spec};
use fleet_orchestrator::queue;
use fleet_orchestrator::store::Store;
use fleet_orchestrator::store::etcd::EtcdStore;
use fleet_orchestrator::testing::etcd::EtcdCluster;
use fleet_orchestrator::testing::harness::h100x8;
use fleet_orchestrator::testing::sim_agent::{SimAgentConfig, SimAgents};
use fleet_providers::Provider;
use fleet_providers::fake::{FakeConfig, FakeProvider};
use ractor::Actor;

fn spec(n: u32) -> String {
    format!(
        "[fleet]\nname = \"t\"\n[apps.llm]\ngpu = \"H100\"\ngpus = 1\n[apps.llm.scaling]\nmin_concurrency = {n}\nmax_concurrency = {n}\nkeep_alive = \"1h\"\n"
    )
}

async fn ready(store: &dyn Store, keys: &Keys) -> usize {
    match store.range(&keys.nodes()).await {
        Ok((kvs, _)) => kvs
            .iter()
            .map(|kv| kv.json::<NodeRecord>().unwrap())
            .filter(|n| matches!(n.state, NodeState::Ready { .. }))
            .count(),
        Err(_) => 0,
    }
}

async fn until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_etcd_cluster_loses_a_member_and_the_fleet_keeps_working() {
    let mut cluster = EtcdCluster::start(3);
    let store: Arc<dyn Store> =
        Arc::new(EtcdStore::connect(&cluster.client_urls, None, Duration::from_secs(2)).await.unwrap());
    let keys = Keys::new("t");
    let mut o = h100x8(Cloud::Lambda, "us-east-1", "2.5", CapacityType::OnDemand);
    o.instance.gpu_count = 1;
    let mut fc = FakeConfig::new(Cloud::Lambda, "t", vec![o]);
    fc.boot_after = Some(Duration::from_millis(100));
    let fake = Arc::new(FakeProvider::new(fc));
    let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert(Cloud::Lambda, fake.clone());
    let config = Config {
        reconcile_every: Duration::from_millis(200),
        node_poll: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        ..Config::default()
    };
    let ctx = Arc::new(Ctx::new("t", store.clone(), providers, Arc::new(InstanceRunning), config, Clock::System));
    apply_spec(&*store, &keys, "t", &spec(1), chrono::Utc::now()).await.unwrap();
    let agents = SimAgentConfig {
        poll: Duration::from_millis(100),
        load_time: Duration::from_millis(200),
        service_time: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(5),
        ..SimAgentConfig::default()
    };
    let _agents = SimAgents::spawn(store.clone(), keys.clone(), Clock::System, agents);
    let (_root, _) = Actor::spawn(None, RootActor, ctx.clone()).await.unwrap();
    until("one ready node", Duration::from_secs(30), async || ready(&*store, &keys).await == 1).await;

    // A member dies (the first endpoint the client knows).
    cluster.kill(0);
    let t = Instant::now();
    // Requests still flow…
    let id = loop {
        match queue::submit(&*store, &keys, "llm", serde_json::json!({"n": 1}), chrono::Utc::now()).await {
            Ok(id) => break id,
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(20), "cannot submit with 2 of 3 members: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let t2 = Instant::now();
    loop {
        let r = queue::get(&*store, &keys, "llm", id).await;
        if matches!(r.as_ref().map(|r| &r.state), Ok(RequestState::Done { .. })) {
            break;
        }
        if t2.elapsed() > Duration::from_secs(30) {
            let runners = store
                .range(&keys.runners())
                .await
                .map(|(k, _)| k.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect::<Vec<_>>());
            panic!("request not served with a member down: {r:?}\nrunners: {runners:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // …and the fleet scales.
    apply_spec(&*store, &keys, "t", &spec(3), chrono::Utc::now()).await.unwrap();
    ctx.nudge.notify_one();
    until("three ready nodes", Duration::from_secs(30), async || ready(&*store, &keys).await == 3).await;
    println!("with a member down: request served and scaled 1 → 3 nodes in {:?}", t.elapsed());
    assert_eq!(fake.live_instances().len(), 3, "no duplicate launch");
}
