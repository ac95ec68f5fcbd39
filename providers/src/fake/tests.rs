use std::sync::Arc;

use fleet_core::GpuModel;

use super::*;
use crate::conformance::{self, ConformanceEnv};

fn offering(name: &str, gpu: GpuModel, capacity: CapacityType, price: &str) -> Offering {
    Offering {
        cloud: Cloud::Aws,
        region: "us-east-1".into(),
        zone: Some("use1-az1".into()),
        instance: fleet_core::InstanceType {
            name: name.into(),
            gpu,
            gpu_count: 8,
            vcpus: 96,
            memory_gib: 1152,
            interconnect: None,
        },
        capacity,
        price: fleet_core::Price::parse_decimal(price).unwrap(),
        source: fleet_core::Source {
            name: "test".into(),
            as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        },
        availability: fleet_core::Availability::Unknown,
    }
}

fn offerings() -> Vec<Offering> {
    vec![
        offering("p5.48xlarge", GpuModel::H100Sxm, CapacityType::OnDemand, "98.32"),
        offering("p4d.24xlarge", GpuModel::A100_40GB, CapacityType::Spot, "10.5"),
    ]
}

fn fake(seed: u64) -> FakeProvider {
    FakeProvider::new(FakeConfig { seed, ..FakeConfig::new(Cloud::Aws, "test-fleet", offerings()) })
}

fn env() -> ConformanceEnv {
    ConformanceEnv {
        fleet: "test-fleet".into(),
        on_demand: offerings()[0].key(),
        spot: Some(offerings()[1].key()),
        missing_id: "fake-999999".into(),
        run_id: "conf".into(),
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let p = fake(1);
    conformance::run(&p, &env()).await;
    assert!(p.live_instances().is_empty(), "the suite leaked {:?}", p.live_instances());
}

#[tokio::test]
async fn one_shot_errors_fire_once_in_order() {
    let p = fake(1);
    let req = LaunchRequest::new("test-fleet", "n1", "app", offerings()[0].key());
    p.fail_next(Op::Launch, ProviderError::Transient { detail: "first".into() });
    p.fail_next(Op::Launch, ProviderError::Unauthorized { detail: "second".into() });
    assert_eq!(p.launch(&req).await.unwrap_err().kind(), "transient");
    assert_eq!(p.launch(&req).await.unwrap_err().kind(), "unauthorized");
    assert!(p.launch(&req).await.is_ok());
    assert_eq!(p.calls().len(), 3);
}

#[tokio::test]
async fn capacity_pools_run_out_and_refill() {
    let p = fake(1);
    let key = offerings()[0].key();
    p.set_capacity(key.clone(), 1);
    let a = p.launch(&LaunchRequest::new("test-fleet", "n1", "app", key.clone())).await.unwrap();
    let e = p.launch(&LaunchRequest::new("test-fleet", "n2", "app", key.clone())).await.unwrap_err();
    assert_eq!(e.unavailable_offering(), Some(&key));
    assert_eq!(e.kind(), "insufficient-capacity");
    p.terminate(&a.id).await.unwrap();
    assert!(p.launch(&LaunchRequest::new("test-fleet", "n2", "app", key)).await.is_ok());
}

#[tokio::test]
async fn throttling_and_preemption() {
    let p = fake(1);
    p.throttle(2, Duration::from_millis(500));
    assert!(
        matches!(p.list().await, Err(ProviderError::Throttled { retry_after, .. }) if retry_after == Duration::from_millis(500))
    );
    assert!(p.list().await.is_err());
    assert!(p.list().await.is_ok());
    let od = p.launch(&LaunchRequest::new("test-fleet", "od", "app", offerings()[0].key())).await.unwrap();
    let spot = p.launch(&LaunchRequest::new("test-fleet", "sp", "app", offerings()[1].key())).await.unwrap();
    assert!(!p.preempt(&od.id), "on-demand cannot be preempted");
    assert!(p.preempt(&spot.id));
    assert_eq!(p.get(&spot.id).await.unwrap().state, InstanceState::Terminated);
    assert_eq!(p.list().await.unwrap().iter().map(|i| i.id.clone()).collect::<Vec<_>>(), [od.id]);
}

#[tokio::test]
async fn probabilistic_failures_are_reproducible_for_a_seed() {
    async fn outcomes(seed: u64) -> Vec<bool> {
        let p = fake(seed);
        p.fail_rate(Op::Get, 0.5, ProviderError::Transient { detail: "flaky".into() });
        let mut v = Vec::new();
        for _ in 0..64 {
            v.push(matches!(p.get("x").await, Err(ProviderError::Transient { .. })));
        }
        v
    }
    let a = outcomes(7).await;
    assert_eq!(a, outcomes(7).await);
    assert_ne!(a, outcomes(8).await);
    let failures = a.iter().filter(|f| **f).count();
    assert!((16..=48).contains(&failures), "{failures} of 64 at p=0.5");
}

#[tokio::test(start_paused = true)]
async fn launch_latency_runs_on_tokio_time_and_concurrent_same_token_launches_one() {
    let cfg = FakeConfig {
        launch_latency: Duration::from_secs(90),
        ..FakeConfig::new(Cloud::Aws, "test-fleet", offerings())
    };
    let p = Arc::new(FakeProvider::new(cfg));
    let req = LaunchRequest::new("test-fleet", "n1", "app", offerings()[0].key());
    let start = tokio::time::Instant::now();
    let (a, b) = tokio::join!(p.launch(&req), p.launch(&req));
    assert_eq!(a.unwrap().id, b.unwrap().id);
    assert_eq!(start.elapsed(), Duration::from_secs(90));
    assert_eq!(p.live_instances().len(), 1);
    let i = p.get(&p.live_instances()[0].id).await.unwrap();
    assert_eq!(i.launched_at.unwrap().to_rfc3339(), "2026-11-25T00:01:30+00:00");
}

#[test]
fn debug_shows_no_internals() {
    assert_eq!(format!("{:?}", fake(1)), "FakeProvider { cloud: Aws, fleet: \"test-fleet\" }");
}
