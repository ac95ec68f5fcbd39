//! The supervision tree (ractor):
//!
//! ```text
//! RootActor ── restarts the fleet actor when it fails
//! └─ FleetActor ── reconciles: store + policies' plan → node and runner records, launch orders
//!      └─ CloudActor (one per provider)
//!           └─ RegionActor (one per region in use) ── launch calls, bounded and backed off per region
//!                └─ NodeActor (one per launched node) ── bootstrap, health, drain, terminate
//!                     └─ RunnerActor (one per runner) ── start, stop, loss of its node
//! ```
//!
//! Everything an actor knows it can read back from the store, so a restarted actor picks up where
//! its predecessor stopped: supervisors restart failed children (the next reconcile re-creates
//! node and runner actors; cloud and region actors are restarted at once, with backoff when they
//! keep failing). Decisions come from `fleet_policies` (pure functions); actors carry them out.
//! Provider calls happen below the cloud actors, so one slow or throttled cloud never blocks another.

pub mod cloud;
pub mod fleet;
pub mod node;
pub mod region;
pub mod root;
pub mod runner;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fleet_core::Cloud;
use fleet_core::keys::Keys;
use fleet_providers::{Instance, Provider};
use fleet_state::model::NodeRecord;
use fleet_state::store::Store;

use crate::access::AgentAccess;
use crate::metrics::Metrics;

/// Timings of the control loops. Defaults suit real clouds; tests shorten them.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the fleet reconciles (and at most how long a change waits to be acted on).
    pub reconcile_every: Duration,
    /// How often a node actor checks its instance and agent.
    pub node_poll: Duration,
    /// How long an offering that refused capacity or quota is avoided.
    pub unavailable_ttl: Duration,
    /// Launch calls in flight at once per region.
    pub launches_per_region: usize,
    /// First retry delay after a transient provider error (doubles per attempt, with jitter).
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A node not Ready this long after launch is given up (and terminated).
    pub bootstrap_timeout: Duration,
    /// A runner not serving this long after it started loading is given up.
    pub runner_start_timeout: Duration,
    /// A stopping runner whose agent does not confirm within this is considered stopped.
    pub runner_stop_timeout: Duration,
    /// A ready node's agent has this long to register before the node counts as unhealthy.
    pub agent_grace: Duration,
    /// An instance of the fleet that no node record holds is terminated once seen so this long.
    pub orphan_grace: Duration,
    /// A ready node without a live, healthy agent this long (while the daemon sees the store) is
    /// drained and replaced.
    pub agent_lost_after: Duration,
    /// How often every provider's offerings (live prices, availability) are gathered again.
    pub prices_every: Duration,
    /// What re-creating a runner costs, in time billed: cold start (provision + boot + model
    /// load) plus the minimum billing of a new node. `keep_alive = "auto"` weighs it against the
    /// app's recent arrival gaps (`fleet_policies::autoscale`).
    pub recreate: Duration,
    /// How long a runner started now takes to serve (provision + boot + model load):
    /// `predict = true` sizes for the arrival rate this far ahead.
    pub cold_start: Duration,
    /// Consolidation moves must pay for themselves within this long (`None`: no consolidation).
    pub consolidation_horizon: Option<Duration>,
    /// Where a cloud reports host keys (`Provider::host_keys`) but has none for a booting
    /// instance yet, bootstrap waits this long for them before it pins the key at first contact
    /// (and says so in the node's events).
    pub host_key_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reconcile_every: Duration::from_secs(1),
            node_poll: Duration::from_secs(5),
            unavailable_ttl: Duration::from_secs(600),
            launches_per_region: 16,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            bootstrap_timeout: Duration::from_secs(900),
            runner_start_timeout: Duration::from_secs(900),
            runner_stop_timeout: Duration::from_secs(120),
            agent_grace: Duration::from_secs(30),
            orphan_grace: Duration::from_secs(600),
            agent_lost_after: Duration::from_secs(30),
            prices_every: Duration::from_secs(900),
            // 90 s provision + 60 s boot + 30 s model load + 60 s minimum billing.
            recreate: Duration::from_secs(240),
            // 90 s provision + 60 s boot + 30 s model load.
            cold_start: Duration::from_secs(180),
            consolidation_horizon: Some(Duration::from_secs(3600)),
            host_key_wait: Duration::from_secs(300),
        }
    }
}

/// Gets fleet onto a launched instance and says when it is ready for runners. The SSH bootstrap
/// of the agent issue implements this; [`InstanceRunning`] is enough where the machine image
/// already runs the agent (and for the fake provider).
#[async_trait]
pub trait Bootstrap: Send + Sync + std::fmt::Debug {
    /// Ok(true): ready; Ok(false): not yet, ask again; Err: give the node up.
    async fn bootstrap(&self, node: &NodeRecord, instance: &Instance) -> Result<bool, String>;
}

/// Ready as soon as the cloud reports the instance running.
#[derive(Debug, Default)]
pub struct InstanceRunning;

#[async_trait]
impl Bootstrap for InstanceRunning {
    async fn bootstrap(&self, _node: &NodeRecord, instance: &Instance) -> Result<bool, String> {
        Ok(instance.state == fleet_providers::InstanceState::Running)
    }
}

/// What every actor shares.
#[derive(Debug)]
pub struct Ctx {
    pub fleet: String,
    pub keys: Keys,
    pub store: Arc<dyn Store>,
    pub providers: BTreeMap<Cloud, Arc<dyn Provider>>,
    pub bootstrap: Arc<dyn Bootstrap>,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub clock: fleet_state::clock::Clock,
    pub launches: Arc<LaunchGate>,
    /// Wakes the fleet actor for a pass now (a spec was applied, a request came in) instead of
    /// at its next tick.
    pub nudge: Arc<tokio::sync::Notify>,
    /// Per-node store users for agents (least privilege), where the store has users.
    pub access: Option<Arc<dyn AgentAccess>>,
    /// Spot offerings whose instance the cloud took back without a notice (found gone by a node
    /// actor); the fleet's next pass marks them unavailable, as it does for notices.
    pub reclaimed: Arc<std::sync::Mutex<Vec<fleet_core::OfferingKey>>>,
    /// Requests submitted per app since this fleetd started (the API counts, the autoscaler
    /// reads arrival rates from it).
    pub arrivals: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    /// Serving figures per app from finished requests ([`crate::serving`]).
    pub serving: Arc<crate::serving::Serving>,
    /// The fleet's push key (nodes' push credentials derive from it); `None`: no pushes, every
    /// request goes through the queue ([`crate::push`]).
    pub push_key: Option<fleet_core::Secret>,
    /// Requests pushed to runners and not yet finished.
    pub pushes: Arc<crate::push::Outstanding>,
    /// Group commit for queue submits (started with the API; `None`: each submit commits alone).
    pub submitter: Option<crate::submitter::Submitter>,
    /// Leases agents hold through the store gateway (`/v1/store/call`).
    pub gateway_leases: Arc<crate::access::gateway::GatewayLeases>,
    /// What the API lets in per app: queue bound, rate per token.
    pub admission: Arc<crate::admission::Admission>,
    /// The applied spec as last parsed, with the store revision it was read at: requests are
    /// checked against it without parsing the TOML again while the spec is unchanged.
    pub spec_cache: std::sync::Mutex<Option<(fleet_state::store::Revision, Arc<fleet_core::spec::FleetSpec>)>>,
    /// The `[clouds.*]` accounts this fleetd runs with: a spec must carry the same to be applied
    /// (accounts change only with a restart, so a spec is never half applied).
    pub clouds: fleet_core::spec::CloudAccounts,
    /// What the enabled clouds sell, as last gathered by the fleet actor (empty before): the API
    /// checks an applied spec against it (an app nothing can place is said at once).
    pub offerings: std::sync::RwLock<Arc<fleet_core::Catalog>>,
    /// Model origin clients, one per origin, made on first use (signing agents' reads).
    pub origins: tokio::sync::Mutex<
        std::collections::HashMap<fleet_core::artifact::Origin, Arc<dyn fleet_providers::origin::OriginStore>>,
    >,
    /// The dashboard's samples and newest overview ([`crate::dashboard`]).
    pub dashboard: Arc<crate::dashboard::Dashboard>,
    /// Events emitted together are written together ([`crate::events::emit_many`]).
    pub events: Arc<crate::events::EventWriter>,
}

impl Ctx {
    /// The offerings last gathered, or (before the first gathering) the built-in catalog's rows
    /// of the enabled clouds.
    pub fn offerings(&self) -> Arc<fleet_core::Catalog> {
        let c = self.offerings.read().expect("offerings lock").clone();
        if !c.is_empty() {
            return c;
        }
        let rows = fleet_core::Catalog::builtin().offerings().iter().filter(|o| self.providers.contains_key(&o.cloud));
        Arc::new(fleet_core::Catalog::new(rows.cloned().collect()))
    }
}

impl Ctx {
    /// A context for fleet `fleet` with fresh metrics, an open launch gate and no nudge pending.
    pub fn new(
        fleet: &str,
        store: Arc<dyn Store>,
        providers: BTreeMap<Cloud, Arc<dyn Provider>>,
        bootstrap: Arc<dyn Bootstrap>,
        config: Config,
        clock: fleet_state::clock::Clock,
    ) -> Ctx {
        let metrics = Arc::new(Metrics::new());
        metrics.zero_series(providers.keys().copied());
        Ctx {
            fleet: fleet.to_string(),
            keys: Keys::new(fleet),
            store,
            providers,
            bootstrap,
            config,
            metrics,
            clock,
            launches: Default::default(),
            nudge: Default::default(),
            access: None,
            reclaimed: Default::default(),
            arrivals: Default::default(),
            serving: Default::default(),
            push_key: None,
            pushes: Default::default(),
            submitter: None,
            gateway_leases: Default::default(),
            admission: Default::default(),
            spec_cache: Default::default(),
            clouds: Default::default(),
            offerings: std::sync::RwLock::new(Arc::new(fleet_core::Catalog::new(Vec::new()))),
            origins: Default::default(),
            dashboard: Default::default(),
            events: Default::default(),
        }
    }
}

/// Launch calls in flight, and whether new ones may start: on shutdown fleetd closes the gate and
/// waits for the calls already made to be answered and recorded, so none is abandoned.
#[derive(Debug, Default)]
pub struct LaunchGate {
    closed: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held while a launch call is in flight.
pub struct LaunchPass<'a>(&'a LaunchGate);

impl Drop for LaunchPass<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl LaunchGate {
    /// `None` once shutting down: do not start the call (the record stays Requested, and the
    /// next fleetd launches it).
    pub fn enter(&self) -> Option<LaunchPass<'_>> {
        use std::sync::atomic::Ordering;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let pass = LaunchPass(self);
        if self.closed.load(Ordering::SeqCst) { None } else { Some(pass) }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Closes the gate and waits until every launch call in flight has been answered.
    pub async fn close_and_wait(&self) {
        use std::sync::atomic::Ordering;
        self.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Exponential backoff with ±25 % jitter, so many retrying actors do not retry in step.
pub fn backoff(cfg: &Config, attempt: u32) -> Duration {
    use rand::Rng;
    let base = cfg.retry_base.saturating_mul(1u32 << attempt.min(16)).min(cfg.retry_max);
    let jitter = rand::rng().random_range(0.75..1.25);
    base.mul_f64(jitter)
}

/// Counts a child's recent failures: restart while under `max` in `window`, escalate beyond.
#[derive(Debug, Default)]
pub struct RestartBudget {
    failures: Vec<tokio::time::Instant>,
}

impl RestartBudget {
    /// Records a failure now; true if the child may be restarted.
    pub fn allow(&mut self, max: usize, window: Duration) -> bool {
        let now = tokio::time::Instant::now();
        self.failures.retain(|t| now.duration_since(*t) < window);
        self.failures.push(now);
        self.failures.len() <= max
    }

    /// Failures within the window (the attempt number for backoff).
    pub fn recent(&self) -> u32 {
        self.failures.len() as u32
    }
}
