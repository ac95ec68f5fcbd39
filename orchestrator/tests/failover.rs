//! Leader failover of two real `fleetd` processes on real etcd, sharing one cloud (moto's EC2):
//! the leader is SIGKILLed in the middle of a scale-up (its 2nd launch answered by the cloud, not
//! yet recorded); the follower must lead within one leader TTL, finish the work from the store
//! (re-sent launches find their instances by token), and leave no instance launched twice and
//! none without a record. The agents (simulated) run in this test process on etcd, as real ones
//! run on their nodes: they outlive the daemon.
#![cfg(feature = "aws")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fleetd, aws_args, aws_spec, duplicates_and_unknown, live_instances, records_match_cloud};
use fleet_core::keys::Keys;
use fleet_orchestrator::sim_agents::{SimAgentConfig, SimAgents};
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_providers::moto::Moto;
use fleet_state::clock::Clock;
use fleet_state::store::Store;
use fleet_state::store::etcd::EtcdStore;

const FLEET: &str = "ha";
const SPEC: &str = r#"
[fleet]
name = "ha"

[apps.llm]
gpu = "H100"
gpus = 8

[apps.llm.scaling]
max_concurrency = 2
keep_alive = "2s"
"#;
const TTL_S: f64 = 3.0;

#[test]
fn leader_killed_mid_scale_up_follower_leads_within_ttl_and_converges_without_duplicates() {
    let etcd = EtcdServer::start();
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        rt.block_on(EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(5))).unwrap(),
    );
    let cfg = SimAgentConfig {
        poll: Duration::from_millis(50),
        load_time: Duration::from_millis(200),
        service_time: Duration::from_millis(300),
        lease_ttl: Duration::from_secs(3),
        ..SimAgentConfig::default()
    };
    let agents = {
        let _rt = rt.enter();
        SimAgents::spawn(store, Keys::new(FLEET), Clock::System, cfg)
    };

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both daemons apply the spec (and its AWS account) at start; the test applies it again below.
    let mut args = aws_args(FLEET, &moto, SPEC, dir_a.path());
    args.extend(["--etcd".to_string(), etcd.client_url.clone(), "--leader-ttl".into(), TTL_S.to_string()]);
    let with_dir = |d: &tempfile::TempDir| {
        let mut a = args.clone();
        a.extend(["--data-dir".to_string(), d.path().display().to_string()]);
        a
    };
    // A stops at its 2nd answered launch (B never gets there while it follows).
    let a = Fleetd::start(&with_dir(&dir_a), Some("launch.answered:2"));
    assert!(a.saw("fleetd acting", Duration::from_secs(20)), "A does not lead:\n{}", a.log());
    let b = Fleetd::start(&with_dir(&dir_b), None);
    assert!(!b.saw("fleetd acting", Duration::from_secs(1)), "B leads while A does:\n{}", b.log());

    b.put_spec(&aws_spec(SPEC, &moto)); // through the follower's API: it writes to the store the leader acts on
    let ids = b.submit("llm", 6); // 3 nodes' worth (2 per node)
    assert!(
        a.saw("crash point launch.answered#2 reached", Duration::from_secs(30)),
        "the leader did not reach its 2nd launch:\n{}",
        a.log()
    );
    a.kill();
    let killed = Instant::now();
    assert!(
        b.saw("fleetd acting", Duration::from_secs_f64(TTL_S + 2.0)),
        "the follower did not lead within TTL + 2 s:\n{}",
        b.log()
    );
    let failover = killed.elapsed();

    while !b.unfinished("llm", &ids).is_empty() {
        assert!(killed.elapsed() < Duration::from_secs(60), "requests unfinished 60 s after the failover");
        std::thread::sleep(Duration::from_millis(100));
    }
    let served = killed.elapsed();
    records_match_cloud(&b, &moto, FLEET, Duration::from_secs(30));
    let converged = killed.elapsed();
    let (duplicates, unknown, instances) = duplicates_and_unknown(&b, &moto);
    assert!(duplicates.is_empty(), "nodes launched more than once: {duplicates:?}");
    assert!(unknown.is_empty(), "instances of nodes with no record: {unknown:?}");
    assert!(instances >= 2, "only {instances} instances: the failover happened before any launch");
    let completed = agents.completed();
    for id in &ids {
        assert_eq!(completed.iter().filter(|(r, _)| r == id).count(), 1, "request {id} served ≠ once: {completed:?}");
    }
    // And it scales back to zero under the new leader.
    let t = Instant::now();
    while !live_instances(&moto, FLEET).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(60), "instances still running 60 s after the work ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "failover: leader SIGKILLed mid scale-up → follower led in {:.2} s (TTL {TTL_S} s); all {} requests \
         served {:.1} s after the kill; records = cloud {:.1} s after; {instances} instances for {} nodes, \
         0 duplicates; idle and empty {:.1} s later",
        failover.as_secs_f64(),
        ids.len(),
        served.as_secs_f64(),
        converged.as_secs_f64(),
        b.node_ids().len(),
        t.elapsed().as_secs_f64()
    );
}
