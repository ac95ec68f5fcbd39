//! Simulated node agents: the agent side of the store protocol, for every ready node of a fleet,
//! in one task. Nodes of `fleetd --fake-clouds` have no machine to run a real `fleet-agent` on, so
//! this is what serves their requests (and those of the fake-cloud tests): it keeps a lease per ready node and an agent
//! record on it, brings starting runners up after `load_time`, stops stopping ones, claims queued
//! requests for idle capacity and completes them after `service_time` (output: the input echoed).
//!
//! It writes exactly what a real agent writes (lease-bound claims, compare-and-swap runner
//! transitions), so the orchestrator cannot tell the difference. Unlike a real agent (which
//! watches its own node's work, `fleet_state::work`), it reads the runners of every simulated
//! node at once per poll: one task stands in for all of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::keys::Keys;
use fleet_core::{NodeId, RequestId, RunnerId, Time};
use fleet_state::clock::Clock;
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::lifecycle::runner::{RunnerEvent, RunnerPhase, transition};
use fleet_state::model::{AgentHealth, AgentRecord, NodeRecord, RunnerRecord, update};
use fleet_state::queue;
use fleet_state::store::{LeaseId, Store, StoreResult, to_json};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct SimAgentConfig {
    pub poll: Duration,
    pub load_time: Duration,
    pub service_time: Duration,
    pub lease_ttl: Duration,
    /// Requests one runner serves at once, per app; an app not named here serves what the
    /// applied spec's `max_multiplexing` says (1 without a spec).
    pub multiplexing: BTreeMap<String, u32>,
    /// The clouds whose nodes these agents stand in for (`--fake-clouds`); `None`: every node
    /// (tests). A node of any other cloud has a real agent, or none: never a simulated one.
    pub clouds: Option<std::collections::BTreeSet<fleet_core::Cloud>>,
    /// What the simulated clouds sell (the GPUs a node's agent reports); the built-in catalog
    /// where an offering is not among them.
    pub offerings: Vec<fleet_core::Offering>,
    /// Spot interruption notices to simulate (`fleetd --fake-spot-notices`): the agents of the
    /// first this many spot nodes that have been ready for `spot_notice_after` report the
    /// notice a cloud's metadata endpoint gives two minutes before it takes a spot machine.
    pub spot_notices: u32,
    pub spot_notice_after: Duration,
    /// For apps whose spec pins a model: its weights' size (GB). Each runner that starts serving
    /// is reported as a cold start of the pinned model, fetched from the origin at 0.5 GB/s and
    /// loaded in `load_time`, as a real agent reports one (`None`: no cold starts reported).
    pub weights_gb: Option<f64>,
}

impl Default for SimAgentConfig {
    fn default() -> Self {
        SimAgentConfig {
            poll: Duration::from_millis(200),
            load_time: Duration::from_secs(5),
            service_time: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(10),
            multiplexing: BTreeMap::new(),
            clouds: None,
            offerings: Vec::new(),
            spot_notices: 0,
            spot_notice_after: Duration::from_secs(60),
            weights_gb: None,
        }
    }
}

/// Counts what the agents did, for tests' assertions.
#[derive(Debug, Default, Clone)]
pub struct SimAgentStats {
    pub completed: Vec<(RequestId, RunnerId)>,
    /// Completions refused because the claim was gone (the request was re-queued meanwhile).
    pub refused: u32,
}

pub struct SimAgents {
    pub stats: Arc<Mutex<SimAgentStats>>,
    /// Nodes whose agent is dead (it stops keeping its lease alive and serving).
    killed: Arc<Mutex<HashSet<NodeId>>>,
    task: JoinHandle<()>,
}

impl Drop for SimAgents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimAgents {
    pub fn spawn(store: Arc<dyn Store>, keys: Keys, clock: Clock, cfg: SimAgentConfig) -> SimAgents {
        let stats = Arc::new(Mutex::new(SimAgentStats::default()));
        let killed = Arc::new(Mutex::new(HashSet::new()));
        let mut sim = Sim {
            store,
            keys,
            clock,
            cfg,
            stats: stats.clone(),
            killed: killed.clone(),
            leases: HashMap::new(),
            jobs: Vec::new(),
            spec_mux: (0, BTreeMap::new()),
            pinned: BTreeMap::new(),
            cold_starts: HashMap::new(),
            reported: HashMap::new(),
            notices: HashMap::new(),
            logs: HashMap::new(),
        };
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = sim.step().await {
                    tracing::debug!(error = %e, "sim agent step failed");
                }
                tokio::time::sleep(sim.cfg.poll).await;
            }
        });
        SimAgents { stats, killed, task }
    }

    /// The agent of `node` dies: no more keep-alives or work; its lease runs out.
    pub fn kill(&self, node: NodeId) {
        self.killed.lock().expect("lock").insert(node);
    }

    pub fn completed(&self) -> Vec<(RequestId, RunnerId)> {
        self.stats.lock().expect("lock").completed.clone()
    }
}

struct Job {
    due: Time,
    node: NodeId,
    app: String,
    request: RequestId,
    runner: RunnerId,
    input: serde_json::Value,
}

struct Sim {
    store: Arc<dyn Store>,
    keys: Keys,
    clock: Clock,
    cfg: SimAgentConfig,
    stats: Arc<Mutex<SimAgentStats>>,
    killed: Arc<Mutex<HashSet<NodeId>>>,
    leases: HashMap<NodeId, LeaseId>,
    jobs: Vec<Job>,
    /// The applied spec's `max_multiplexing` per app, as of the spec's revision.
    spec_mux: (fleet_state::store::Revision, BTreeMap<String, u32>),
    /// The applied spec's pinned model digest per app (read with `spec_mux`).
    pinned: BTreeMap<String, String>,
    /// The cold starts each node's agent has reported (`SimAgentConfig::weights_gb`).
    cold_starts: HashMap<NodeId, Vec<fleet_state::model::ColdStart>>,
    /// What each node's agent record last said (runners, in flight): written again on change.
    reported: HashMap<NodeId, (Vec<RunnerId>, u32, bool)>,
    /// The spot interruption notices given so far (`SimAgentConfig::spot_notices`), by node.
    notices: HashMap<NodeId, fleet_state::model::InterruptionNotice>,
    /// Each node's log lines (`fleetctl logs node N`), as a real agent keeps its last lines.
    logs: HashMap<NodeId, std::collections::VecDeque<String>>,
}

/// Lines of a simulated agent's log kept and published.
const LOG_LINES: usize = 200;

/// The GPUs a machine of `offering` has, as the simulated agent reports them (the catalog's
/// model and count; healthy, idle figures).
fn sim_devices(
    known: &[fleet_core::Offering],
    offering: &fleet_core::OfferingKey,
) -> Vec<fleet_state::model::GpuReport> {
    let found = known.iter().chain(fleet_core::Catalog::builtin().offerings()).find(|o| o.key() == *offering);
    let Some(o) = found else { return Vec::new() };
    let model = o.instance.gpu;
    (0..o.instance.gpu_count)
        .map(|index| fleet_state::model::GpuReport {
            index,
            name: format!("NVIDIA {} (simulated)", model.name()),
            model: Some(model.name().to_string()),
            memory_total_mib: u64::from(model.memory_gb()) * 1024,
            memory_used_mib: Some(0),
            utilization_pct: Some(0),
            temperature_c: Some(35),
            ecc_uncorrected: Some(0),
            throttling: Vec::new(),
        })
        .collect()
}

impl Sim {
    fn store(&self) -> &dyn Store {
        &*self.store
    }
    fn keys(&self) -> &Keys {
        &self.keys
    }
    fn now(&self) -> Time {
        self.clock.now()
    }

    async fn step(&mut self) -> StoreResult<()> {
        let now = self.now();
        let killed = self.killed.lock().expect("lock").clone();
        let nodes: Vec<NodeRecord> =
            self.store().range(&self.keys().nodes()).await?.0.iter().map(|kv| kv.json()).collect::<Result<_, _>>()?;
        // Leases: one per node whose instance runs fleet's agent (ready or draining).
        let simulated = |o: &fleet_core::OfferingKey| self.cfg.clouds.as_ref().is_none_or(|c| c.contains(&o.cloud));
        let serving: HashSet<NodeId> = nodes
            .iter()
            .filter(|n| match &n.state {
                NodePhase::Ready { offering, .. } | NodePhase::Draining { offering, .. } => simulated(offering),
                _ => false,
            })
            .map(|n| n.id)
            .filter(|id| !killed.contains(id))
            .collect();
        for id in &serving {
            let ok = match self.leases.get(id) {
                Some(l) => self.store().keep_alive(*l).await.is_ok(),
                None => false,
            };
            if !ok {
                let lease = self.store().grant_lease(self.cfg.lease_ttl).await?;
                self.leases.insert(*id, lease);
                self.reported.remove(id);
                self.log(*id, now, format!("simulated agent up: lease {lease}"));
            }
        }
        self.refresh_mux().await?;
        // A node that stopped serving (terminated, or its agent killed) loses its lease: a real
        // agent dies with its machine, and its lease then expires.
        let gone: Vec<NodeId> = self.leases.keys().filter(|id| !serving.contains(id)).copied().collect();
        for id in gone {
            self.leases.remove(&id);
            self.reported.remove(&id);
            self.logs.remove(&id);
            // Its work dies with it; the claims go with the lease and the requests are re-queued.
            self.jobs.retain(|j| j.node != id);
        }

        let runners: Vec<RunnerRecord> =
            self.store().range(&self.keys().runners()).await?.0.iter().map(|kv| kv.json()).collect::<Result<_, _>>()?;
        for r in runners {
            let Some(node) = r.node() else { continue };
            let Some(&lease) = self.leases.get(&node) else { continue };
            let ev = match &r.state {
                RunnerPhase::Starting { since, .. }
                    if (now - *since).to_std().unwrap_or_default() >= self.cfg.load_time =>
                {
                    Some(RunnerEvent::Started)
                }
                // A stopping runner drains: Stopped once its requests in flight have finished.
                RunnerPhase::Stopping { .. } if !self.jobs.iter().any(|j| j.runner == r.id) => {
                    Some(RunnerEvent::Stopped)
                }
                RunnerPhase::Stopping { .. } => continue,
                _ => None,
            };
            if let Some(ev) = ev {
                self.transition(r.id, ev).await?;
                continue;
            }
            // Requests the record counts but this agent is not serving (it restarted, as the real
            // agent does after a crash): their claims went with the old lease and they are
            // queued again; the count comes down one at a time.
            let mine = self.jobs.iter().filter(|j| j.runner == r.id).count() as u32;
            if r.state.in_flight() > mine {
                self.transition(r.id, RunnerEvent::Complete).await?;
                continue;
            }
            let mux = self.mux(&r.app);
            if matches!(r.state, RunnerPhase::Idle { .. }) || r.state.in_flight() > 0 && r.state.in_flight() < mux {
                let free = mux - r.state.in_flight();
                for _ in 0..free {
                    let Some(req) = queue::claim(self.store(), self.keys(), &r.app, r.id, node, lease, now).await?
                    else {
                        break;
                    };
                    crate::crashpoint::hit("request.claimed");
                    self.transition(r.id, RunnerEvent::Claim { max: mux }).await?;
                    let due = now + chrono::Duration::from_std(self.cfg.service_time).unwrap_or_default();
                    self.jobs.push(Job {
                        due,
                        node,
                        app: r.app.clone(),
                        request: req.id,
                        runner: r.id,
                        input: req.input,
                    });
                }
            }
        }
        // Work completes when due.
        let mut due = Vec::new();
        let mut keep = Vec::new();
        for j in std::mem::take(&mut self.jobs) {
            if j.due <= now { due.push(j) } else { keep.push(j) }
        }
        self.jobs = keep;
        for j in due {
            let done = queue::complete(
                self.store(),
                self.keys(),
                &j.app,
                j.request,
                j.runner,
                Ok(serde_json::json!({ "echo": j.input })),
                now,
            )
            .await;
            match done {
                Ok(_) => {
                    crate::crashpoint::hit("request.completed");
                    self.log(j.node, now, format!("request {} of {} served by runner {}", j.request, j.app, j.runner));
                    self.stats.lock().expect("lock").completed.push((j.request, j.runner));
                    self.transition(j.runner, RunnerEvent::Complete).await?;
                }
                Err(_) => self.stats.lock().expect("lock").refused += 1,
            }
        }
        self.publish(&nodes, now).await
    }

    /// Appends a line to the node's log.
    fn log(&mut self, node: NodeId, now: Time, line: String) {
        let l = self.logs.entry(node).or_default();
        l.push_back(format!(
            "{} INFO fleet_agent(sim): {line}",
            now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ));
        while l.len() > LOG_LINES {
            l.pop_front();
        }
    }

    /// Each serving node's agent record (GPUs, runners, requests in flight) and log, on its
    /// lease, written again whenever what it says changed.
    async fn publish(&mut self, nodes: &[NodeRecord], now: Time) -> StoreResult<()> {
        let runners: Vec<RunnerRecord> =
            self.store().range(&self.keys().runners()).await?.0.iter().filter_map(|kv| kv.json().ok()).collect();
        let leases: Vec<(NodeId, LeaseId)> = self.leases.iter().map(|(n, l)| (*n, *l)).collect();
        for (id, lease) in leases {
            let Some(n) = nodes.iter().find(|n| n.id == id) else { continue };
            let mut on: Vec<RunnerId> = runners
                .iter()
                .filter(|r| {
                    r.node() == Some(id) && matches!(r.state, RunnerPhase::Idle { .. } | RunnerPhase::Busy { .. })
                })
                .map(|r| r.id)
                .collect();
            on.sort_unstable();
            let in_flight = self.jobs.iter().filter(|j| j.node == id).count() as u32;
            self.maybe_notice(n, now);
            let notice = self.notices.get(&id).cloned();
            let now_says = (on.clone(), in_flight, notice.is_some());
            if self.reported.get(&id) == Some(&now_says) {
                continue;
            }
            let before = self.reported.get(&id).map(|(r, _, _)| r.clone()).unwrap_or_default();
            for r in on.iter().filter(|r| !before.contains(r)) {
                self.log(id, now, format!("runner {r} serving"));
                if let (Some(gb), Some(digest)) = (self.cfg.weights_gb, self.pinned.get(&n.app)) {
                    let bytes = (gb * 1e9) as u64;
                    let reports = self.cold_starts.entry(id).or_default();
                    if !reports.iter().any(|c| c.runner == *r) {
                        reports.push(fleet_state::model::ColdStart {
                            runner: *r,
                            app: n.app.clone(),
                            model: Some(digest.clone()),
                            fetch_s: gb / 0.5,
                            load_s: self.cfg.load_time.as_secs_f64(),
                            bytes_origin: bytes,
                            bytes_peers: 0,
                            bytes_cached: 0,
                            first_token_s: None,
                            at: now,
                        });
                    }
                }
            }
            for r in before.iter().filter(|r| !on.contains(r)) {
                self.log(id, now, format!("runner {r} stopped"));
            }
            let devices = n.offering().map(|o| sim_devices(&self.cfg.offerings, o)).unwrap_or_default();
            let health = AgentHealth {
                ok: true,
                runners: on,
                in_flight,
                updated_at: Some(now),
                devices: devices.clone(),
                interruption: notice,
                cold_starts: self.cold_starts.get(&id).cloned().unwrap_or_default(),
                ..AgentHealth::default()
            };
            let rec =
                AgentRecord { node: id, lease, version: "sim".into(), gpus: devices.len() as u32, since: now, health };
            self.store().put(&self.keys().agent(id), to_json(&rec), Some(lease)).await?;
            let lines: Vec<&String> = self.logs.get(&id).map(|l| l.iter().collect()).unwrap_or_default();
            let log = serde_json::json!({ "lines": lines, "updated_at": now });
            self.store().put(&self.keys().agent_log(id), to_json(&log), Some(lease)).await?;
            self.reported.insert(id, now_says);
        }
        Ok(())
    }

    /// Gives `n` a spot interruption notice when it is among the first `spot_notices` spot
    /// nodes to have been ready for `spot_notice_after`.
    fn maybe_notice(&mut self, n: &NodeRecord, now: Time) {
        if self.notices.len() >= self.cfg.spot_notices as usize || self.notices.contains_key(&n.id) {
            return;
        }
        let spot = n.offering().is_some_and(|o| o.capacity == fleet_core::CapacityType::Spot);
        let NodePhase::Ready { since, .. } = &n.state else { return };
        if !spot || (now - *since).to_std().unwrap_or_default() < self.cfg.spot_notice_after {
            return;
        }
        // Clouds give two minutes' warning (AWS, and GCP's 30 s is shorter still).
        let at = now + chrono::Duration::seconds(120);
        let notice = fleet_state::model::InterruptionNotice {
            source: n.offering().map_or_else(String::new, |o| o.cloud.to_string()),
            kind: "terminate".into(),
            not_before: Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            noticed_at: now,
        };
        self.log(n.id, now, format!("spot interruption notice (simulated): the cloud takes this machine at {at}"));
        self.notices.insert(n.id, notice);
    }

    /// Requests one runner of `app` serves at once.
    fn mux(&self, app: &str) -> u32 {
        self.cfg.multiplexing.get(app).or_else(|| self.spec_mux.1.get(app)).copied().unwrap_or(1).max(1)
    }

    /// Reads the applied spec's `max_multiplexing` when the spec changed.
    async fn refresh_mux(&mut self) -> StoreResult<()> {
        let Some(kv) = self.store().get(&self.keys().spec()).await? else { return Ok(()) };
        if kv.mod_revision == self.spec_mux.0 {
            return Ok(());
        }
        let mut mux = BTreeMap::new();
        self.pinned.clear();
        if let Ok(stored) = kv.json::<fleet_state::model::StoredSpec>()
            && let Ok(spec) = fleet_core::spec::FleetSpec::parse("applied spec", &stored.toml)
        {
            for a in &spec.apps {
                mux.insert(a.name.clone(), a.scaling.max_multiplexing);
                if let Some(m) = &a.model {
                    self.pinned.insert(a.name.clone(), m.digest.to_string());
                }
            }
        }
        self.spec_mux = (kv.mod_revision, mux);
        Ok(())
    }

    async fn transition(&self, runner: RunnerId, ev: RunnerEvent) -> StoreResult<()> {
        let now = self.now();
        update(self.store(), &self.keys().runner(runner), |cur: &RunnerRecord| {
            let state = transition(&cur.state, ev.clone(), now).ok()?;
            Some(RunnerRecord { state, ..cur.clone() })
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use fleet_core::{CapacityType, Cloud, OfferingKey};
    use fleet_state::clock::Clock;
    use fleet_state::model::{CandidateRecord, NodeRecord};
    use fleet_state::store::embedded::EmbeddedStore;
    use fleet_state::store::get_json;

    use super::*;

    fn ready(id: NodeId, cloud: Cloud) -> NodeRecord {
        let offering = OfferingKey {
            cloud,
            region: "r".into(),
            zone: None,
            instance_type: "t".into(),
            capacity: CapacityType::OnDemand,
        };
        let price = fleet_core::Price::parse_decimal("1").unwrap();
        NodeRecord {
            id,
            app: "a".into(),
            state: NodePhase::Ready {
                instance_id: format!("i-{id}"),
                offering: offering.clone(),
                since: chrono::Utc::now(),
            },
            candidates: vec![CandidateRecord { offering, price, slots: 1 }],
            attempt: 0,
            slots: 1,
            price: Some(price),
            billing_since: None,
            billing_until: None,
            cordoned: false,
            leaving: None,
            created_at: chrono::Utc::now(),
        }
    }

    /// Simulated agents stand in for the simulated clouds' nodes only: a local (real-agent) node
    /// beside them gets no simulated agent record.
    #[tokio::test]
    async fn simulated_agents_serve_only_the_simulated_clouds_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let keys = Keys::new("t");
        for n in [ready(1, Cloud::Lambda), ready(2, Cloud::Local)] {
            store.put(&keys.node(n.id), to_json(&n), None).await.unwrap();
        }
        let cfg = SimAgentConfig {
            clouds: Some(BTreeSet::from([Cloud::Lambda])),
            poll: Duration::from_millis(10),
            ..SimAgentConfig::default()
        };
        let _agents = SimAgents::spawn(store.clone(), keys.clone(), Clock::System, cfg);
        let t = std::time::Instant::now();
        while get_json::<AgentRecord>(&*store, &keys.agent(1)).await.unwrap().is_none() {
            assert!(t.elapsed() < Duration::from_secs(10), "the lambda node got no simulated agent");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            get_json::<AgentRecord>(&*store, &keys.agent(2)).await.unwrap().is_none(),
            "a local node was simulated"
        );
    }
}
