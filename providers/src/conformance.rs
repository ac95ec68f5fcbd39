//! The contract of [`Provider`], as checks every adapter must pass (the fake, AWS against moto,
//! and each cloud that follows). Call [`run`] from an adapter's tests; it panics with a message
//! naming the broken rule.

use fleet_core::{CapacityType, OfferingKey};

use crate::{InstanceState, LaunchRequest, Provider, ProviderError, TAG_APP, TAG_FLEET, TAG_NODE, TAG_TOKEN};

/// What the suite needs to know about the provider under test.
#[derive(Debug, Clone)]
pub struct ConformanceEnv {
    /// The fleet name the provider was configured with.
    pub fleet: String,
    /// An on-demand offering it can launch (e.g. p5.48xlarge).
    pub on_demand: OfferingKey,
    /// A spot offering it can launch (e.g. p4d.24xlarge spot); `None` for clouds that sell no
    /// spot (Lambda).
    pub spot: Option<OfferingKey>,
    /// An instance id in the provider's format that does not exist.
    pub missing_id: String,
    /// Makes node ids unique when several runs share one cloud (or emulator).
    pub run_id: String,
}

/// Runs every check in order, cleaning up what it launched.
pub async fn run(p: &dyn Provider, env: &ConformanceEnv) {
    let name = p.name();

    // offerings: non-empty, this cloud's, priced, and including what the suite launches.
    let offerings = p.offerings().await.unwrap_or_else(|e| panic!("{name}: offerings() failed: {e}"));
    assert!(!offerings.is_empty(), "{name}: offerings() is empty");
    for o in &offerings {
        assert_eq!(o.cloud, p.cloud(), "{name}: offering {} is another cloud's", o.key());
        assert!(o.price.hourly() > fleet_core::Money::ZERO, "{name}: offering {} has no price", o.key());
    }
    for want in std::iter::once(&env.on_demand).chain(env.spot.as_ref()) {
        assert!(
            offerings.iter().any(|o| o.key().instance_type == want.instance_type && o.capacity == want.capacity),
            "{name}: offerings() lacks {want}"
        );
    }

    // launch: the instance carries the fleet's tags and is what was asked for.
    let node_a = format!("{}-a", env.run_id);
    let req_a = LaunchRequest::new(&env.fleet, &node_a, "conformance", env.on_demand.clone());
    let a = p.launch(&req_a).await.unwrap_or_else(|e| panic!("{name}: launch failed: {e}"));
    assert!(!a.id.is_empty(), "{name}: launched instance has no id");
    assert!(a.state.is_live(), "{name}: a new instance is {}", a.state);
    assert_eq!(a.offering.instance_type, env.on_demand.instance_type, "{name}: wrong instance type");
    assert_eq!(
        a.offering.capacity,
        CapacityType::OnDemand,
        "{name}: on-demand launch came back {}",
        a.offering.capacity
    );
    for (k, v) in [(TAG_FLEET, env.fleet.as_str()), (TAG_NODE, node_a.as_str()), (TAG_APP, "conformance")] {
        assert_eq!(a.tags.get(k).map(String::as_str), Some(v), "{name}: tag {k} missing or wrong on {}", a.id);
    }
    assert_eq!(a.tags.get(TAG_TOKEN), Some(&req_a.idempotency_token), "{name}: token tag missing");

    // Idempotent: same token, same instance, and still only one.
    let again = p.launch(&req_a).await.unwrap_or_else(|e| panic!("{name}: relaunch failed: {e}"));
    assert_eq!(again.id, a.id, "{name}: relaunch with the same token created another instance");
    let listed = p.list().await.unwrap_or_else(|e| panic!("{name}: list failed: {e}"));
    assert_eq!(
        listed.iter().filter(|i| i.node_id() == Some(node_a.as_str())).count(),
        1,
        "{name}: duplicate instances for {node_a}"
    );

    // Spot where the cloud sells it, a second on-demand instance where not.
    let node_b = format!("{}-b", env.run_id);
    let b_offering = env.spot.clone().unwrap_or_else(|| env.on_demand.clone());
    let req_b = LaunchRequest::new(&env.fleet, &node_b, "conformance", b_offering.clone());
    let b = p.launch(&req_b).await.unwrap_or_else(|e| panic!("{name}: second launch ({b_offering}) failed: {e}"));
    assert_eq!(
        b.offering.capacity, b_offering.capacity,
        "{name}: {b_offering} launch came back {}",
        b.offering.capacity
    );
    assert_eq!(b.offering.instance_type, b_offering.instance_type);
    assert_ne!(b.id, a.id);

    // get.
    let got = p.get(&a.id).await.unwrap_or_else(|e| panic!("{name}: get failed: {e}"));
    assert_eq!((got.id.as_str(), got.node_id()), (a.id.as_str(), Some(node_a.as_str())));
    match p.get(&env.missing_id).await {
        Err(ProviderError::NotFound { .. }) => {}
        other => panic!("{name}: get of a missing instance gave {other:?}, not NotFound"),
    }

    // list: both, and only this fleet's.
    let listed = p.list().await.unwrap_or_else(|e| panic!("{name}: list failed: {e}"));
    for id in [&a.id, &b.id] {
        assert!(listed.iter().any(|i| &i.id == id), "{name}: list() lacks {id}");
    }
    for i in &listed {
        assert_eq!(i.tags.get(TAG_FLEET), Some(&env.fleet), "{name}: list() returned another fleet's {}", i.id);
        assert!(i.state.is_live(), "{name}: list() returned terminated {}", i.id);
    }

    // terminate: twice is fine, unknown is fine, and it is gone from list.
    p.terminate(&a.id).await.unwrap_or_else(|e| panic!("{name}: terminate failed: {e}"));
    p.terminate(&a.id).await.unwrap_or_else(|e| panic!("{name}: second terminate failed: {e}"));
    p.terminate(&env.missing_id)
        .await
        .unwrap_or_else(|e| panic!("{name}: terminate of a missing instance failed: {e}"));
    match p.get(&a.id).await {
        Ok(i) => assert_eq!(i.state, InstanceState::Terminated, "{name}: terminated instance is {}", i.state),
        Err(ProviderError::NotFound { .. }) => {}
        Err(e) => panic!("{name}: get after terminate failed: {e}"),
    }
    let listed = p.list().await.unwrap_or_else(|e| panic!("{name}: list failed: {e}"));
    assert!(!listed.iter().any(|i| i.id == a.id), "{name}: list() still shows terminated {}", a.id);
    p.terminate(&b.id).await.unwrap_or_else(|e| panic!("{name}: terminate failed: {e}"));
}
