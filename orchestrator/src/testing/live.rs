//! fleetd's actor tree in the test's process on a real store (etcd, usually), real time, and a
//! fake cloud of one-GPU nodes (one runner per node): for tests that run real components beside
//! it (etcd clusters and outages, real agents).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::keys::Keys;
use fleet_core::{CapacityType, Cloud, Offering};
use fleet_providers::Provider;
use fleet_providers::fake::{FakeConfig, FakeProvider};
use fleet_state::clock::Clock;
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::model::{NodeRecord, apply_spec};
use fleet_state::store::Store;
use ractor::{Actor, ActorRef};

use super::harness::h100x8;
use crate::access::AgentAccess;
use crate::actors::root::{RootActor, RootMsg};
use crate::actors::{Config, Ctx, InstanceRunning};

/// One H100 per node, $2.50/h on Lambda, so each runner gets a node of its own.
pub fn h100x1() -> Offering {
    let mut o = h100x8(Cloud::Lambda, "us-east-1", "2.5", CapacityType::OnDemand);
    o.instance.name = "gpu_1x_h100_sxm5".into();
    o.instance.gpu_count = 1;
    o
}

/// A spec for fleet `t`: app `app` on `runners` one-GPU runners, kept for an hour.
pub fn spec(app: &str, runners: u32) -> String {
    format!(
        "[fleet]\nname = \"t\"\n[apps.{app}]\ngpu = \"H100\"\ngpus = 1\n[apps.{app}.scaling]\nmin_concurrency = {runners}\nmax_concurrency = {runners}\nkeep_alive = \"1h\"\n"
    )
}

/// Quick passes and polls, for tests on real time.
pub fn fast_config() -> Config {
    Config {
        reconcile_every: Duration::from_millis(200),
        node_poll: Duration::from_millis(100),
        retry_max: Duration::from_secs(2),
        ..Config::default()
    }
}

pub struct LiveFleet {
    pub ctx: Arc<Ctx>,
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub fake: Arc<FakeProvider>,
    pub root: ActorRef<RootMsg>,
}

impl LiveFleet {
    /// Applies `spec` (fleet `t`) and starts the actor tree.
    pub async fn start(
        store: Arc<dyn Store>,
        config: Config,
        access: Option<Arc<dyn AgentAccess>>,
        spec: &str,
    ) -> LiveFleet {
        let keys = Keys::new("t");
        let mut fc = FakeConfig::new(Cloud::Lambda, "t", vec![h100x1()]);
        fc.boot_after = Some(Duration::from_millis(100));
        let fake = Arc::new(FakeProvider::new(fc));
        let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
        providers.insert(Cloud::Lambda, fake.clone());
        let mut ctx = Ctx::new("t", store.clone(), providers, Arc::new(InstanceRunning), config, Clock::System);
        ctx.access = access;
        let ctx = Arc::new(ctx);
        apply_spec(&*store, &keys, "t", spec, chrono::Utc::now()).await.expect("spec applies");
        let (root, _) = Actor::spawn(None, RootActor, ctx.clone()).await.expect("actor tree");
        LiveFleet { ctx, store, keys, fake, root }
    }

    /// Ready nodes (none when the store cannot be read).
    pub async fn ready_nodes(&self) -> Vec<NodeRecord> {
        match self.store.range(&self.keys.nodes()).await {
            Ok((kvs, _)) => kvs
                .iter()
                .filter_map(|kv| kv.json::<NodeRecord>().ok())
                .filter(|n| matches!(n.state, NodePhase::Ready { .. }))
                .collect(),
            Err(_) => vec![],
        }
    }
}

/// Polls `f` every 20 ms until it gives a value; panics naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
