//! etcd stopped for 60 s under a running fleet (real etcd, the daemon's actor tree on the fake
//! cloud, simulated agents on the same etcd) and restarted: no node is drained or terminated for
//! the heartbeats nobody could see, nothing is launched twice, and the fleet converges after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_orchestrator::actors::Config;
use fleet_orchestrator::sim_agents::{SimAgentConfig, SimAgents};
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_orchestrator::testing::live::{LiveFleet, fast_config, spec, wait_for};
use fleet_providers::fake::Call;
use fleet_state::store::Store;
use fleet_state::store::etcd::EtcdStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_second_etcd_outage_terminates_nothing_and_the_fleet_converges() {
    let mut etcd = EtcdServer::start();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(2)).await.unwrap(),
    );
    let config =
        Config { node_poll: Duration::from_millis(200), agent_lost_after: Duration::from_secs(5), ..fast_config() };
    let f = LiveFleet::start(store.clone(), config, None, &spec("llm", 2)).await;
    let agents = SimAgentConfig {
        poll: Duration::from_millis(100),
        load_time: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(3),
        ..SimAgentConfig::default()
    };
    let _agents = SimAgents::spawn(store.clone(), f.keys.clone(), fleet_state::clock::Clock::System, agents);
    let ids = |nodes: Vec<fleet_state::model::NodeRecord>| nodes.iter().map(|n| n.id).collect::<Vec<_>>();
    let before = wait_for("two ready nodes", Duration::from_secs(30), || async {
        let r = ids(f.ready_nodes().await);
        (r.len() == 2).then_some(r)
    })
    .await;
    let fake = f.fake.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let launches_before = fake.calls().iter().filter(|c| matches!(c, Call::Launch { .. })).count();

    etcd.stop();
    tokio::time::sleep(Duration::from_secs(60)).await;
    etcd.restart();
    let restarted = Instant::now();

    // Converged: the same two nodes ready, well past agent_lost_after.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = ids(f.ready_nodes().await);
    println!("after the outage: ready {after:?} ({:?} after etcd returned)", restarted.elapsed());
    assert_eq!(after, before, "the same nodes serve (none drained, none replaced)");
    let calls = fake.calls();
    assert!(!calls.iter().any(|c| matches!(c, Call::Terminate { .. })), "nothing terminated: {calls:?}");
    let launches = calls.iter().filter(|c| matches!(c, Call::Launch { .. })).count();
    assert_eq!(launches, launches_before, "nothing launched again");
    assert_eq!(fake.live_instances().len(), 2);
}
