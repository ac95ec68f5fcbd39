//! A whole fleetd (actor tree, store, metrics) on fake providers and simulated agents, for tests
//! and benchmarks. Build it inside `#[tokio::test(start_paused = true)]` and move time with
//! `tokio::time::sleep` / `advance`: the clock, leases and fake clouds all follow tokio's clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use fleet_core::keys::Keys;
use fleet_core::{
    Availability, CapacityType, Cloud, GpuModel, InstanceType, Offering, OfferingKey, Price, RequestId, Source,
};
use fleet_providers::Provider;
use fleet_providers::fake::{FakeConfig, FakeProvider};
use ractor::{Actor, ActorRef};

use crate::actors::fleet::FleetMsg;
use crate::actors::root::{RootActor, RootMsg};
use crate::actors::{Config, Ctx, InstanceRunning};
use crate::sim_agents::{SimAgentConfig, SimAgents};
use fleet_state::clock::Clock;
use fleet_state::model::{NodeRecord, RunnerRecord};
use fleet_state::store::Store;
use fleet_state::store::embedded::EmbeddedStore;

/// An 8 × H100 on-demand offering at `price` dollars per hour.
pub fn h100x8(cloud: Cloud, region: &str, price: &str, capacity: CapacityType) -> Offering {
    Offering {
        cloud,
        region: region.into(),
        zone: None,
        instance: InstanceType {
            name: format!("{cloud}-8xh100"),
            gpu: GpuModel::H100Sxm,
            gpu_count: 8,
            vcpus: 192,
            memory_gib: 2048,
            interconnect: None,
        },
        capacity,
        price: Price::parse_decimal(price).expect("price"),
        source: Source { name: "test".into(), as_of: NaiveDate::from_ymd_opt(2026, 11, 1).expect("date") },
        availability: Availability::Unknown,
    }
}

pub struct CloudSetup {
    pub cloud: Cloud,
    pub offerings: Vec<Offering>,
    /// Instances each offering can have at once (unlimited when absent).
    pub capacity: HashMap<OfferingKey, u32>,
    /// How long the cloud takes to answer a launch call.
    pub launch_latency: Duration,
}

impl CloudSetup {
    pub fn new(cloud: Cloud, offerings: Vec<Offering>) -> CloudSetup {
        CloudSetup { cloud, offerings, capacity: HashMap::new(), launch_latency: Duration::ZERO }
    }

    pub fn capacity(mut self, o: &Offering, n: u32) -> CloudSetup {
        self.capacity.insert(o.key(), n);
        self
    }
}

pub struct Harness {
    pub ctx: Arc<Ctx>,
    pub root: ActorRef<RootMsg>,
    pub fakes: BTreeMap<Cloud, Arc<FakeProvider>>,
    pub agents: SimAgents,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    /// Starts fleet `test` on the embedded store (a temp dir) unless `store` is given.
    pub async fn start(
        clouds: Vec<CloudSetup>,
        config: Config,
        agent: SimAgentConfig,
        store: Option<Arc<dyn Store>>,
    ) -> Harness {
        let fleet = "test";
        let (store, dir) = match store {
            Some(s) => (s, None),
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let s: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).expect("embedded store"));
                (s, Some(dir))
            }
        };
        let clock = Clock::tokio(chrono::DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z").expect("date").to_utc());
        let mut fakes = BTreeMap::new();
        let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
        let mut agent = agent;
        agent.offerings.extend(clouds.iter().flat_map(|c| c.offerings.iter().cloned()));
        for c in clouds {
            let mut cfg = FakeConfig::new(c.cloud, fleet, c.offerings);
            cfg.capacity = c.capacity;
            cfg.launch_latency = c.launch_latency;
            cfg.boot_after = Some(Duration::from_secs(30));
            cfg.epoch = clock.now();
            let f = Arc::new(FakeProvider::new(cfg));
            providers.insert(c.cloud, f.clone());
            fakes.insert(c.cloud, f);
        }
        let keys = Keys::new(fleet);
        let ctx = Arc::new(Ctx::new(fleet, store.clone(), providers, Arc::new(InstanceRunning), config, clock));
        let (root, _) = Actor::spawn(None, RootActor, ctx.clone()).await.expect("root actor");
        let agents = SimAgents::spawn(store, keys, clock, agent);
        Harness { ctx, root, fakes, agents, _dir: dir }
    }

    pub async fn apply(&self, toml: &str) {
        fleet_state::model::apply_spec(&*self.ctx.store, &self.ctx.keys, &self.ctx.fleet, toml, self.ctx.clock.now())
            .await
            .expect("spec applies");
    }

    /// Submits `n` requests to `app` at once (one transaction, as the API's group commit does
    /// with a burst): a pass sees all of them or none.
    pub async fn submit(&self, app: &str, n: usize) -> Vec<RequestId> {
        let group: Vec<fleet_state::queue::Submission> = (0..n)
            .map(|i| fleet_state::queue::Submission {
                app: app.to_string(),
                input: serde_json::json!({ "prompt": format!("request {i}") }),
                owner: None,
            })
            .collect();
        fleet_state::queue::submit_group(&*self.ctx.store, &self.ctx.keys, &group, self.ctx.clock.now())
            .await
            .expect("submit")
    }

    pub async fn nodes(&self) -> Vec<NodeRecord> {
        let (kvs, _) = self.ctx.store.range(&self.ctx.keys.nodes()).await.expect("range");
        kvs.iter().map(|kv| kv.json().expect("node record")).collect()
    }

    pub async fn runners(&self) -> Vec<RunnerRecord> {
        let (kvs, _) = self.ctx.store.range(&self.ctx.keys.runners()).await.expect("range");
        kvs.iter().map(|kv| kv.json().expect("runner record")).collect()
    }

    /// Live instances across every fake cloud.
    pub fn live_instances(&self) -> usize {
        self.fakes.values().map(|f| f.live_instances().len()).sum()
    }

    /// Lets virtual time pass in steps of one second (actors and agents run in between).
    pub async fn run_for(&self, d: Duration) {
        let step = Duration::from_secs(1);
        let mut left = d;
        while !left.is_zero() {
            let s = step.min(left);
            tokio::time::sleep(s).await;
            left -= s;
        }
    }

    /// Runs until `cond` holds (checked every second), at most `limit`; returns whether it held.
    pub async fn run_until<F, Fut>(&self, limit: Duration, mut cond: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if cond().await {
                return true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        cond().await
    }
}

impl Harness {
    /// The fleet actor running now.
    pub async fn fleet(&self) -> ActorRef<FleetMsg> {
        ractor::call!(self.root, RootMsg::Fleet).expect("root answers")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.root.stop_children(None);
        self.root.stop(None);
    }
}
