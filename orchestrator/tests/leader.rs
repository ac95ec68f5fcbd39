//! Leader election on real etcd: one daemon leads; when it dies (its lease is no longer kept
//! alive) another takes over within one lease TTL; a leader that loses its lease learns it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::keys::Keys;
use fleet_orchestrator::leader::{acquire, current};
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_state::store::Store;
use fleet_state::store::etcd::EtcdStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_within_one_ttl_of_the_leaders_death() {
    let etcd = EtcdServer::start();
    let connect = || async {
        let s: Arc<dyn Store> = Arc::new(
            EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(5)).await.unwrap(),
        );
        s
    };
    let (a, b) = (connect().await, connect().await);
    let keys = Keys::new("t");
    let ttl = Duration::from_secs(3);
    let leader_a = acquire(a.clone(), &keys, "fleetd-a", ttl).await.unwrap();
    assert_eq!(current(&*a, &keys).await.unwrap().as_deref(), Some("fleetd-a"));
    // B campaigns and waits while A leads.
    let keys_b = keys.clone();
    let b2 = b.clone();
    let campaign = tokio::spawn(async move { acquire(b2, &keys_b, "fleetd-b", ttl).await.unwrap() });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!campaign.is_finished(), "B must not lead while A keeps its lease");

    // A dies: nothing keeps its lease alive any more.
    let lease_a = leader_a.lease;
    drop(leader_a);
    let died = Instant::now();
    let mut leader_b = campaign.await.unwrap();
    let took = died.elapsed();
    println!("leader died → follower leads in {took:?} (TTL {ttl:?})");
    assert!(took <= ttl + Duration::from_secs(1), "took over after {took:?}");
    assert_eq!(current(&*b, &keys).await.unwrap().as_deref(), Some("fleetd-b"));

    // A leader whose lease is revoked under it learns that it lost.
    b.revoke(leader_b.lease).await.unwrap();
    tokio::time::timeout(ttl, leader_b.lost()).await.expect("B notices it lost leadership");
    assert!(a.keep_alive(lease_a).await.is_err(), "A's old lease is gone");
}
