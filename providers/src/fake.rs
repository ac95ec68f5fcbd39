//! A provider that fails the way clouds fail, on purpose. Every orchestrator test runs on it.
//!
//! - offerings and a capacity per offering ("insufficient capacity pools": once an offering's
//!   instances are all out, launches there fail with `InsufficientCapacity` until one terminates);
//! - launch latency (a `tokio::time::sleep`, so paused-time tests run it instantly);
//! - one-shot errors per operation ([`FakeProvider::fail_next`]), probabilistic ones
//!   ([`FakeProvider::fail_rate`], drawn from a seeded RNG: the same seed and calls give the same
//!   failures), throttling for the next N calls ([`FakeProvider::throttle`]);
//! - spot preemption on demand ([`FakeProvider::preempt`]);
//! - every call recorded ([`FakeProvider::calls`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fleet_core::{CapacityType, Cloud, Offering, OfferingKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Instance, InstanceState, LaunchRequest, Provider, ProviderError, ProviderResult, TAG_FLEET};

/// The operations errors can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Offerings,
    Launch,
    Get,
    List,
    Terminate,
}

/// A recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Offerings,
    Launch { token: String, offering: OfferingKey },
    Get { id: String },
    List,
    Terminate { id: String },
}

#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub cloud: Cloud,
    pub fleet: String,
    pub offerings: Vec<Offering>,
    /// Instances each offering can have live at once; offerings not listed are unlimited.
    pub capacity: HashMap<OfferingKey, u32>,
    pub launch_latency: Duration,
    /// Pending instances report Running this long after launch (`None`: only [`FakeProvider::boot_all`]).
    pub boot_after: Option<Duration>,
    pub seed: u64,
    /// What `launched_at` counts from (plus the tokio clock's progress since creation).
    pub epoch: DateTime<Utc>,
    /// Where the simulated cloud keeps its instances (`fleetd --fake-clouds`: in the data
    /// directory), so they outlive a fleetd restart as a real cloud's do. `None`: in memory.
    pub persist: Option<std::path::PathBuf>,
}

/// What a persisted fake cloud keeps.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Saved {
    next_id: u64,
    instances: BTreeMap<String, Instance>,
    by_token: HashMap<String, String>,
}

impl FakeConfig {
    pub fn new(cloud: Cloud, fleet: &str, offerings: Vec<Offering>) -> FakeConfig {
        FakeConfig {
            cloud,
            fleet: fleet.to_string(),
            offerings,
            capacity: HashMap::new(),
            launch_latency: Duration::ZERO,
            boot_after: None,
            seed: 0,
            epoch: DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z").expect("valid").to_utc(),
            persist: None,
        }
    }
}

struct State {
    rng: StdRng,
    next_id: u64,
    instances: BTreeMap<String, Instance>,
    by_token: HashMap<String, String>,
    one_shot: HashMap<Op, VecDeque<ProviderError>>,
    rates: HashMap<Op, (f64, ProviderError)>,
    throttled_calls: u32,
    throttle_retry_after: Duration,
    live_per_offering: HashMap<OfferingKey, u32>,
    capacity: HashMap<OfferingKey, u32>,
    calls: Vec<(Duration, Call)>,
    launch_calls: usize,
}

pub struct FakeProvider {
    cfg: FakeConfig,
    created: tokio::time::Instant,
    state: Mutex<State>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider").field("cloud", &self.cfg.cloud).field("fleet", &self.cfg.fleet).finish()
    }
}

impl FakeProvider {
    /// A fake cloud; with `cfg.persist`, the instances saved there by an earlier one (an
    /// unreadable file is an error naming it, never a silently empty cloud).
    pub fn open(cfg: FakeConfig) -> Result<FakeProvider, String> {
        let saved = match &cfg.persist {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                serde_json::from_str::<Saved>(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            _ => Saved { next_id: 1, ..Saved::default() },
        };
        let p = FakeProvider::new(cfg);
        {
            let mut s = p.lock();
            for i in saved.instances.values().filter(|i| i.state.is_live()) {
                *s.live_per_offering.entry(i.offering.clone()).or_default() += 1;
            }
            s.next_id = saved.next_id.max(1);
            s.instances = saved.instances;
            s.by_token = saved.by_token;
        }
        Ok(p)
    }

    /// Writes the instances where `cfg.persist` says (atomically: a temp file renamed).
    fn save(&self, s: &State) {
        let Some(path) = &self.cfg.persist else { return };
        let saved = Saved { next_id: s.next_id, instances: s.instances.clone(), by_token: s.by_token.clone() };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension("tmp");
        let res = serde_json::to_vec(&saved)
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(&tmp, b).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "simulated cloud state not saved");
        }
    }

    pub fn new(cfg: FakeConfig) -> FakeProvider {
        let state = State {
            rng: StdRng::seed_from_u64(cfg.seed),
            next_id: 1,
            instances: BTreeMap::new(),
            by_token: HashMap::new(),
            one_shot: HashMap::new(),
            rates: HashMap::new(),
            throttled_calls: 0,
            throttle_retry_after: Duration::ZERO,
            live_per_offering: HashMap::new(),
            capacity: cfg.capacity.clone(),
            calls: Vec::new(),
            launch_calls: 0,
        };
        FakeProvider { cfg, created: tokio::time::Instant::now(), state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread must not hide the fake's state from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next call of `op` fails with `err` (queued: several calls fail in order).
    pub fn fail_next(&self, op: Op, err: ProviderError) {
        self.lock().one_shot.entry(op).or_default().push_back(err);
    }

    /// Each call of `op` fails with `err` with probability `p` (seeded, so reproducible).
    pub fn fail_rate(&self, op: Op, p: f64, err: ProviderError) {
        self.lock().rates.insert(op, (p, err));
    }

    /// The next `calls` calls (of any operation) are throttled.
    pub fn throttle(&self, calls: u32, retry_after: Duration) {
        let mut s = self.lock();
        s.throttled_calls = calls;
        s.throttle_retry_after = retry_after;
    }

    /// How many instances of `offering` can be live at once from now on.
    pub fn set_capacity(&self, offering: OfferingKey, instances: u32) {
        self.lock().capacity.insert(offering, instances);
    }

    /// Reclaims spot instance `id` as a cloud would. Returns false if it is not a live spot instance.
    pub fn preempt(&self, id: &str) -> bool {
        let mut s = self.lock();
        let Some(i) = s.instances.get_mut(id) else { return false };
        if i.offering.capacity != CapacityType::Spot || !i.state.is_live() {
            return false;
        }
        i.state = InstanceState::Terminated;
        let key = i.offering.clone();
        if let Some(n) = s.live_per_offering.get_mut(&key) {
            *n -= 1;
        }
        self.save(&s);
        true
    }

    /// Moves pending instances to running (a cloud does this on its own after boot).
    pub fn boot_all(&self) {
        for i in self.lock().instances.values_mut() {
            if i.state == InstanceState::Pending {
                i.state = InstanceState::Running;
            }
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.iter().map(|(_, c)| c.clone()).collect()
    }

    /// How many calls were made (cheap: for waiting on a count without copying the record).
    pub fn call_count(&self) -> usize {
        self.lock().calls.len()
    }

    /// How many launch calls were made (as cheap as [`FakeProvider::call_count`]).
    pub fn launch_count(&self) -> usize {
        self.lock().launch_calls
    }

    /// Tokio time since the fake was created: the clock of [`FakeProvider::timed_calls`].
    pub fn elapsed(&self) -> Duration {
        self.created.elapsed()
    }

    /// Calls with when they were made (tokio time since the fake was created).
    pub fn timed_calls(&self) -> Vec<(Duration, Call)> {
        self.lock().calls.clone()
    }

    /// Live instances, whoever's (for leak checks in tests).
    pub fn live_instances(&self) -> Vec<Instance> {
        self.lock().instances.values().filter(|i| i.state.is_live()).cloned().collect()
    }

    /// Records the call and applies throttling, then one-shot, then probabilistic errors.
    fn enter(&self, op: Op, call: Call) -> ProviderResult<()> {
        let at = self.created.elapsed();
        let mut s = self.lock();
        s.launch_calls += usize::from(matches!(call, Call::Launch { .. }));
        s.calls.push((at, call));
        if s.throttled_calls > 0 {
            s.throttled_calls -= 1;
            return Err(ProviderError::Throttled {
                retry_after: s.throttle_retry_after,
                detail: "fake throttling".into(),
            });
        }
        if let Some(e) = s.one_shot.get_mut(&op).and_then(VecDeque::pop_front) {
            return Err(e);
        }
        if let Some((p, e)) = s.rates.get(&op).cloned()
            && s.rng.random::<f64>() < p
        {
            return Err(e);
        }
        Ok(())
    }

    fn now(&self) -> DateTime<Utc> {
        self.cfg.epoch + chrono::Duration::from_std(self.created.elapsed()).unwrap_or_default()
    }
}

#[async_trait]
impl Provider for FakeProvider {
    fn cloud(&self) -> Cloud {
        self.cfg.cloud
    }

    fn name(&self) -> String {
        format!("fake-{}", self.cfg.cloud)
    }

    async fn offerings(&self) -> ProviderResult<Vec<Offering>> {
        self.enter(Op::Offerings, Call::Offerings)?;
        Ok(self.cfg.offerings.clone())
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<Instance> {
        self.enter(Op::Launch, Call::Launch { token: req.idempotency_token.clone(), offering: req.offering.clone() })?;
        {
            let s = self.lock();
            if let Some(id) = s.by_token.get(&req.idempotency_token) {
                return Ok(s.instances[id].clone());
            }
        }
        if !self.cfg.offerings.iter().any(|o| o.key() == req.offering) {
            return Err(ProviderError::InvalidRequest { detail: format!("{} is not offered here", req.offering) });
        }
        // A zero sleep still waits for the timer's next tick (up to a millisecond): none then.
        if !self.cfg.launch_latency.is_zero() {
            tokio::time::sleep(self.cfg.launch_latency).await;
        }
        let now = self.now();
        let mut s = self.lock();
        // Another call with the same token may have finished while this one slept.
        if let Some(id) = s.by_token.get(&req.idempotency_token) {
            return Ok(s.instances[id].clone());
        }
        let live = s.live_per_offering.get(&req.offering).copied().unwrap_or(0);
        if s.capacity.get(&req.offering).is_some_and(|cap| live >= *cap) {
            return Err(ProviderError::InsufficientCapacity {
                offering: req.offering.clone(),
                detail: format!("all {live} instances of the pool are in use"),
            });
        }
        let n = s.next_id;
        s.next_id += 1;
        let id = format!("fake-{n:06}");
        let inst = Instance {
            id: id.clone(),
            offering: req.offering.clone(),
            state: InstanceState::Pending,
            public_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, (n >> 8) as u8, n as u8))),
            private_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, (n >> 8) as u8, n as u8))),
            ssh: Some(std::net::SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, (n >> 8) as u8, n as u8)), 22)),
            ssh_host_keys: Vec::new(),
            launched_at: Some(now),
            tags: req.tags.clone(),
        };
        *s.live_per_offering.entry(req.offering.clone()).or_default() += 1;
        s.by_token.insert(req.idempotency_token.clone(), id.clone());
        s.instances.insert(id, inst.clone());
        self.save(&s);
        Ok(inst)
    }

    async fn get(&self, id: &str) -> ProviderResult<Instance> {
        self.enter(Op::Get, Call::Get { id: id.into() })?;
        let now = self.now();
        let mut s = self.lock();
        if let (Some(boot), Some(i)) = (self.cfg.boot_after, s.instances.get_mut(id))
            && i.state == InstanceState::Pending
            && i.launched_at.is_some_and(|t| now - t >= chrono::Duration::from_std(boot).unwrap_or_default())
        {
            i.state = InstanceState::Running;
            self.save(&s);
        }
        s.instances
            .get(id)
            .filter(|i| i.tags.get(TAG_FLEET) == Some(&self.cfg.fleet))
            .cloned()
            .ok_or_else(|| ProviderError::NotFound { what: format!("instance {id}") })
    }

    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        self.enter(Op::List, Call::List)?;
        let s = self.lock();
        Ok(s.instances
            .values()
            .filter(|i| i.state.is_live() && i.tags.get(TAG_FLEET) == Some(&self.cfg.fleet))
            .cloned()
            .collect())
    }

    async fn terminate(&self, id: &str) -> ProviderResult<()> {
        self.enter(Op::Terminate, Call::Terminate { id: id.into() })?;
        let mut s = self.lock();
        let Some(i) = s.instances.get_mut(id) else { return Ok(()) };
        if i.state.is_live() {
            i.state = InstanceState::Terminated;
            let key = i.offering.clone();
            if let Some(n) = s.live_per_offering.get_mut(&key) {
                *n -= 1;
            }
            self.save(&s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod persist_tests {
    use super::*;

    #[tokio::test]
    async fn a_persisted_fake_cloud_keeps_its_instances_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let o = fleet_core::Catalog::builtin().offerings().iter().find(|o| o.cloud == Cloud::Lambda).unwrap().clone();
        let mut cfg = FakeConfig::new(Cloud::Lambda, "t", vec![o.clone()]);
        cfg.persist = Some(dir.path().join("fake-lambda.json"));
        cfg.capacity.insert(o.key(), 2);
        let first = FakeProvider::open(cfg.clone()).unwrap();
        let a = first.launch(&LaunchRequest::new("t", "1", "llm", o.key())).await.unwrap();
        let b = first.launch(&LaunchRequest::new("t", "2", "llm", o.key())).await.unwrap();
        first.terminate(&b.id).await.unwrap();
        drop(first);

        let again = FakeProvider::open(cfg.clone()).unwrap();
        assert_eq!(again.get(&a.id).await.unwrap().id, a.id, "a live instance is still there");
        assert_eq!(again.get(&b.id).await.unwrap().state, InstanceState::Terminated);
        // The same token finds the same instance; ids go on; the pool counts the live one.
        assert_eq!(again.launch(&LaunchRequest::new("t", "1", "llm", o.key())).await.unwrap().id, a.id);
        let c = again.launch(&LaunchRequest::new("t", "3", "llm", o.key())).await.unwrap();
        assert!(c.id != a.id && c.id != b.id);
        let e = again.launch(&LaunchRequest::new("t", "4", "llm", o.key())).await.unwrap_err();
        assert!(matches!(e, ProviderError::InsufficientCapacity { .. }), "{e}");

        std::fs::write(cfg.persist.as_ref().unwrap(), "not json").unwrap();
        let e = FakeProvider::open(cfg).unwrap_err();
        assert!(e.contains("fake-lambda.json"), "{e}");
    }
}
