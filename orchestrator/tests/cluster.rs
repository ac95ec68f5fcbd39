//! fleetd's actor tree on a 3-member etcd cluster (three etcd processes on loopback): one member
//! killed, the fleet keeps working — requests are served and a scale-up launches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_orchestrator::sim_agents::{SimAgentConfig, SimAgents};
use fleet_orchestrator::testing::etcd::EtcdCluster;
use fleet_orchestrator::testing::live::{LiveFleet, fast_config, spec, wait_for};
use fleet_state::model::{RequestState, apply_spec};
use fleet_state::queue;
use fleet_state::store::Store;
use fleet_state::store::etcd::EtcdStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_etcd_cluster_loses_a_member_and_the_fleet_keeps_working() {
    let mut cluster = EtcdCluster::start(3);
    let store: Arc<dyn Store> =
        Arc::new(EtcdStore::connect(&cluster.client_urls, None, Duration::from_secs(2)).await.unwrap());
    let f = LiveFleet::start(store.clone(), fast_config(), None, &spec("llm", 1)).await;
    let (keys, ctx, fake) = (f.keys.clone(), f.ctx.clone(), f.fake.clone());
    let agents = SimAgentConfig {
        poll: Duration::from_millis(100),
        load_time: Duration::from_millis(200),
        service_time: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(5),
        ..SimAgentConfig::default()
    };
    let _agents = SimAgents::spawn(store.clone(), keys.clone(), fleet_state::clock::Clock::System, agents);
    wait_for("one ready node", Duration::from_secs(30), || async { (f.ready_nodes().await.len() == 1).then_some(()) })
        .await;

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
    apply_spec(&*store, &keys, "t", &spec("llm", 3), chrono::Utc::now()).await.unwrap();
    ctx.nudge.notify_one();
    wait_for("three ready nodes", Duration::from_secs(30), || async {
        (f.ready_nodes().await.len() == 3).then_some(())
    })
    .await;
    println!("with a member down: request served and scaled 1 → 3 nodes in {:?}", t.elapsed());
    assert_eq!(fake.live_instances().len(), 3, "no duplicate launch");
}
