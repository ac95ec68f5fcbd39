//! etcd stopped for 60 s under a running fleet (real etcd, the daemon's actor tree on the fake
//! cloud, simulated agents on the same etcd) and restarted: no node is drained or terminated for
//! the heartbeats nobody could see, nothing is launched twice, and the fleet converges after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::keys::Keys;
use fleet_core::{CapacityType, Cloud};
use fleet_orchestrator::actors::root::RootActor;
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_orchestrator::clock::Clock;
use fleet_orchestrator::lifecycle::node::NodeState;
use fleet_orchestrator::model::{NodeRecord, apply_spec};
use fleet_orchestrator::store::Store;
use fleet_orchestrator::store::etcd::EtcdStore;
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_orchestrator::testing::harness::h100x8;
use fleet_orchestrator::testing::sim_agent::{SimAgentConfig, SimAgents};
use fleet_providers::Provider;
use fleet_providers::fake::{Call, FakeConfig, FakeProvider};
use ractor::Actor;

async fn ready(store: &dyn Store, keys: &Keys) -> Vec<u64> {
    match store.range(&keys.nodes()).await {
        Ok((kvs, _)) => kvs
            .iter()
            .map(|kv| kv.json::<NodeRecord>().unwrap())
            .filter(|n| matches!(n.state, NodeState::Ready { .. }))
            .map(|n| n.id)
            .collect(),
        Err(_) => vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_second_etcd_outage_terminates_nothing_and_the_fleet_converges() {
    let mut etcd = EtcdServer::start();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(2)).await.unwrap(),
    );
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
        agent_lost_after: Duration::from_secs(5),
        retry_max: Duration::from_secs(2),
        ..Config::default()
    };
    let ctx = Arc::new(Ctx::new("t", store.clone(), providers, Arc::new(InstanceRunning), config, Clock::System));
    let spec = "[fleet]\nname = \"t\"\n[apps.llm]\ngpu = \"H100\"\ngpus = 1\n[apps.llm.scaling]\nmin_concurrency = 2\nmax_concurrency = 2\nkeep_alive = \"1h\"\n";
    apply_spec(&*store, &keys, "t", spec, chrono::Utc::now()).await.unwrap();
    let agents = SimAgentConfig {
        poll: Duration::from_millis(100),
        load_time: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(3),
        ..SimAgentConfig::default()
    };
    let _agents = SimAgents::spawn(store.clone(), keys.clone(), Clock::System, agents);
    let (_root, _) = Actor::spawn(None, RootActor, ctx.clone()).await.unwrap();
    let t = Instant::now();
    let before = loop {
        let r = ready(&*store, &keys).await;
        if r.len() == 2 {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "two ready nodes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let launches_before = fake.calls().iter().filter(|c| matches!(c, Call::Launch { .. })).count();

    etcd.stop();
    tokio::time::sleep(Duration::from_secs(60)).await;
    etcd.restart();
    let restarted = Instant::now();

    // Converged: the same two nodes ready, well past agent_lost_after.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = ready(&*store, &keys).await;
    println!("after the outage: ready {after:?} ({:?} after etcd returned)", restarted.elapsed());
    assert_eq!(after, before, "the same nodes serve (none drained, none replaced)");
    let calls = fake.calls();
    assert!(!calls.iter().any(|c| matches!(c, Call::Terminate { .. })), "nothing terminated: {calls:?}");
    let launches = calls.iter().filter(|c| matches!(c, Call::Launch { .. })).count();
    assert_eq!(launches, launches_before, "nothing launched again");
    assert_eq!(fake.live_instances().len(), 2);
}
