//! The discrete-event simulation. Virtual time in milliseconds; no wall clock; one seeded RNG, and
//! events ordered by (time, sequence number), so a scenario and seed always give the same run.
//!
//! Every `tick` the engine asks [`fleet_policies::plan::plan`] — the daemon's own decision code —
//! what to do, and carries it out against simulated clouds: launches walk each node's ranked
//! candidates, failing over on simulated insufficient-capacity answers (which go into the same
//! unavailable cache placement reads); nodes provision, boot and load the model before their
//! runners serve; spot nodes are reclaimed at the cloud's rate and their requests re-queued;
//! billing follows each cloud's step and minimum.
//!
//! Simplifications (documented so results are read right): a runner serves up to
//! `max_multiplexing` requests at once, each at full speed; service time is prefill plus decode
//! at the scenario's token rates, scaled by the node's GPU bf16 TFLOP/s.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use fleet_core::spec::{FleetSpec, KeepAlive};
use fleet_core::{CapacityType, Catalog, GpuModel, Money, Price, Time};
use fleet_policies::autoscale::{DemandHistory, DemandSample, RunnerInfo};
use fleet_policies::placement::{CapacityWanted, PlacementIndex, RankInput, UnavailableCache, UnavailableReason};
use fleet_policies::plan::{AppView, FleetView, NodeView, PlanOptions, RunnerView, plan};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::demand::{Arrival, Requests};
use crate::report::{AppSample, Report, Sample};
use crate::scenario::{FetchFrom, Policy, Scenario, ServiceModel, runner_start_estimate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Tick,
    NodeReady(usize),
    RunnerReady(usize),
    Done {
        runner: usize,
        req: usize,
    },
    Preempt(usize),
    /// The oracle's booking `i` launches, and ends.
    Book(usize),
    Unbook(usize),
}

impl Ev {
    /// Events ride in the heap as one u64 (3 bits of kind, then ids): 16-byte heap entries sift
    /// much faster than 40-byte ones, and the heap is the simulation's hottest structure.
    fn pack(self) -> u64 {
        let (kind, a, b) = match self {
            Ev::Tick => (0u64, 0, 0),
            Ev::NodeReady(n) => (1, n, 0),
            Ev::RunnerReady(r) => (2, r, 0),
            Ev::Done { runner, req } => (3, runner, req),
            Ev::Preempt(n) => (4, n, 0),
            Ev::Book(i) => (5, i, 0),
            Ev::Unbook(i) => (6, i, 0),
        };
        assert!(a < 1 << 29 && b < 1 << 32, "more than 2^29 runners or 2^32 requests");
        kind << 61 | (a as u64) << 32 | b as u64
    }

    fn unpack(x: u64) -> Ev {
        let a = ((x >> 32) & ((1 << 29) - 1)) as usize;
        let b = (x & 0xffff_ffff) as usize;
        match x >> 61 {
            0 => Ev::Tick,
            1 => Ev::NodeReady(a),
            2 => Ev::RunnerReady(a),
            3 => Ev::Done { runner: a, req: b },
            4 => Ev::Preempt(a),
            5 => Ev::Book(a),
            _ => Ev::Unbook(a),
        }
    }
}

struct Node {
    app: usize,
    offering: u32,
    slots: u32,
    /// Being consolidated away, and how many of its runners have been replaced.
    leaving: bool,
    replaced: u32,
    /// Released while a runner drains: ends when the last one stops.
    releasing: bool,
    launched_ms: u64,
    /// `launched_ms` as the planner's clock reads it (made once: every pass shows it).
    launched_at: Time,
    /// Its GPU's speed relative to the H100-SXM the service rates are given for.
    speed: f64,
    /// Its cloud's billing step and minimum (kept here: every pass asks for each node).
    billing: (Duration, Duration),
    up: bool,
    ended_ms: Option<u64>,
    runners: Vec<usize>,
    /// When the node's disk holds the model's weights (fetched, or being fetched until then):
    /// `[weights]` scenarios only.
    holds_at: Option<u64>,
    /// Since when every runner it had has stopped (none while one runs or none ever started).
    empty_since_ms: Option<u64>,
}

struct Runner {
    app: usize,
    node: usize,
    ready: bool,
    stopped: bool,
    in_flight: Vec<usize>,
    idle_since_ms: Option<u64>,
    busy_since_ms: Option<u64>,
    in_spare: bool,
    /// Told to stop while serving: takes no new request, stops when the last one finishes.
    draining: bool,
}

/// "No runner" / "not started" in the per-request tables.
const NONE: u32 = u32::MAX;

/// Longest simulation: times are kept in u32 milliseconds (about 49.7 days).
pub const MAX_DURATION: Duration = Duration::from_millis(u32::MAX as u64 - 1);

/// The simulation's start: midnight UTC on the first of a month, so monthly budgets see a whole month.
pub fn start_time() -> Time {
    chrono::Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().expect("valid time")
}

pub struct Engine<'a> {
    sc: &'a Scenario,
    /// The scenario's spec, with the demand apps' scaling as a baseline policy sets it.
    spec: FleetSpec,
    /// `TargetQps`, per demand: the replicas decided, and since when a lower count has been wanted.
    qps_replicas: Vec<u32>,
    qps_lower_since: Vec<Option<u64>>,
    /// `TargetQps` with several demands: each demand's arrival times (one demand reads `arrivals`).
    demand_times: Vec<Vec<u64>>,
    /// [`start_time`], computed once: building it from a calendar date is not free.
    start: Time,
    index: PlacementIndex,
    /// Per app: how its runners serve ([`Scenario::service_for`]) and where their weights come
    /// from ([`Scenario::weights_for`]).
    services: Vec<ServiceModel>,
    weights: Vec<Option<crate::scenario::Weights>>,
    /// Per demand (the scenario's order), its app's index in the spec; per app, its demand.
    demand_apps: Vec<usize>,
    demand_of_app: Vec<Option<usize>>,
    arrivals: Vec<Arrival>,
    /// Per arrival, its demand; empty when there is one.
    req_demand: Vec<u16>,
    next_arrival: usize,
    /// Per demand: requests arrived so far.
    arrived: Vec<u64>,
    /// Pending events as (time in ms << 32 | push sequence) << 64 | packed event: 16-byte
    /// entries, the earliest first, ties in push order ([`Engine::push`]). One u128 compares in a
    /// couple of branch-free instructions where a (u64, u64) tuple branches, in the same order.
    heap: BinaryHeap<Reverse<u128>>,
    seq: u32,
    now: u64,
    end: u64,
    /// Per demand: requests waiting for a runner of its app.
    queues: Vec<VecDeque<usize>>,
    /// Per request: the runner serving it, and when it first started, or [`NONE`]. Compact
    /// because a month can hold tens of millions of requests.
    assigned: Vec<u32>,
    started_ms: Vec<u32>,
    nodes: Vec<Node>,
    runners: Vec<Runner>,
    /// Per demand: runners of its app that had a free slot when pushed (other apps get no
    /// requests). Entries are checked when taken: a runner stopped or filled since is dropped then.
    spare: Vec<Vec<usize>>,
    /// The fleet's spend (burn and month-to-date without walking the nodes), and each app's, for
    /// its own month-to-date (its budget).
    spend: Spend,
    app_spend: Vec<Spend>,
    /// Nodes not ended and runners not stopped: what a tick looks at (the vectors keep history).
    live_nodes: BTreeSet<usize>,
    live_runners: BTreeSet<usize>,
    pending_since: Vec<Option<Time>>,
    /// What each app's autoscaler has learned of its demand, kept as fleetd keeps it.
    history: Vec<DemandHistory>,
    live_per_offering: BTreeMap<u32, u32>,
    cache: UnavailableCache,
    /// The first bill that could not be counted exactly; the run then fails with it.
    overflow: Option<fleet_core::MoneyOverflow>,
    report: Report,
    busy_gpu_ms: u128,
    /// The node of each oracle booking, once launched.
    booked: Vec<Option<usize>>,
}

/// Spend of a set of nodes (the fleet's, or one app's): Σ hourly price of the live ones (µ$/h),
/// Σ price × launch time (µ$/h × ms), and the ended ones' bills.
#[derive(Debug, Clone, Default)]
struct Spend {
    live_price: i128,
    live_price_launch: i128,
    closed: Money,
}

impl Spend {
    /// A node at `price` (µ$/h) launched at `at_ms`.
    fn launch(&mut self, price: i128, at_ms: u64) {
        self.live_price += price;
        self.live_price_launch += price * i128::from(at_ms);
    }

    /// That node ended, billed `cost`; a sum too large to count stays at [`Money::MAX`].
    fn end(&mut self, price: i128, launched_ms: u64, cost: Money) -> Result<(), fleet_core::MoneyOverflow> {
        self.live_price -= price;
        self.live_price_launch -= price * i128::from(launched_ms);
        self.closed = self.closed.try_add(cost).inspect_err(|_| self.closed = Money::MAX)?;
        Ok(())
    }

    /// Spend so far this month at `now_ms`: closed bills plus live nodes' running cost
    /// (unrounded billing).
    fn month_to_date(&self, now_ms: u64) -> Money {
        let open = (self.live_price * i128::from(now_ms) - self.live_price_launch) / 3_600_000;
        self.closed + Money::from_micros_saturating(open)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<'a> Engine<'a> {
    pub fn new(sc: &'a Scenario, catalog: Arc<Catalog>, requests: Requests) -> Engine<'a> {
        let index = PlacementIndex::new(catalog, &sc.spec);
        let demand_apps: Vec<usize> =
            sc.demands.iter().map(|d| index.app_index(&d.app).expect("scenario checked the app")).collect();
        let apps = sc.spec.apps.len();
        let mut demand_of_app = vec![None; apps];
        for (d, &a) in demand_apps.iter().enumerate() {
            demand_of_app[a] = Some(d);
        }
        let end = ms(sc.duration);
        let Requests { mut arrivals, demand: mut req_demand } = requests;
        if req_demand.is_empty() {
            arrivals.retain(|a| a.at_ms < end);
        } else {
            (arrivals, req_demand) = arrivals.into_iter().zip(req_demand).filter(|(a, _)| a.at_ms < end).unzip();
        }
        let n = arrivals.len();
        let demands = demand_apps.len();
        let mut report = Report::new(sc, n as u64);
        if demands > 1 {
            let mut requests = vec![0u64; demands];
            for d in &req_demand {
                requests[usize::from(*d)] += 1;
            }
            report.by_app(sc, &requests);
        }
        let demand_times = if demands > 1 && matches!(sc.policy, Policy::TargetQps { .. }) {
            let mut t = vec![Vec::new(); demands];
            for (a, d) in arrivals.iter().zip(&req_demand) {
                t[usize::from(*d)].push(a.at_ms);
            }
            t
        } else {
            Vec::new()
        };
        let mut e = Engine {
            sc,
            spec: sc.spec.clone(),
            qps_replicas: vec![0; demands],
            qps_lower_since: vec![None; demands],
            demand_times,
            start: start_time(),
            index,
            services: sc.spec.apps.iter().map(|a| sc.service_for(&a.name).clone()).collect(),
            weights: sc.spec.apps.iter().map(|a| sc.weights_for(&a.name)).collect(),
            demand_apps,
            demand_of_app,
            arrivals,
            req_demand,
            next_arrival: 0,
            arrived: vec![0; demands],
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            end,
            queues: vec![VecDeque::new(); demands],
            assigned: vec![NONE; n],
            started_ms: vec![NONE; n],
            nodes: Vec::new(),
            runners: Vec::new(),
            spare: vec![Vec::new(); demands],
            spend: Spend::default(),
            app_spend: vec![Spend::default(); apps],
            live_nodes: BTreeSet::new(),
            live_runners: BTreeSet::new(),
            pending_since: vec![None; apps],
            history: vec![DemandHistory::default(); apps],
            live_per_offering: BTreeMap::new(),
            cache: UnavailableCache::default(),
            overflow: None,
            report,
            busy_gpu_ms: 0,
            booked: Vec::new(),
        };
        e.push(0, Ev::Tick);
        if let Policy::Oracle { bookings } = &sc.policy {
            e.booked = vec![None; bookings.len()];
            for (i, b) in bookings.iter().enumerate() {
                e.push(b.launch_ms, Ev::Book(i));
                e.push(b.end_ms, Ev::Unbook(i));
            }
        }
        e
    }

    fn push(&mut self, at: u64, ev: Ev) {
        // Times fit in 32 bits (a run is at most MAX_DURATION); anything later is past the end and
        // never handled, so it may share the last instant. After 2^32 pushes ties go by the
        // packed event instead: still one order for a seed.
        let at = at.min(u64::from(u32::MAX));
        self.seq = self.seq.saturating_add(1);
        let key = at << 32 | u64::from(self.seq);
        self.heap.push(Reverse(u128::from(key) << 64 | u128::from(ev.pack())));
    }

    fn at(&self, t_ms: u64) -> Time {
        self.start + chrono::Duration::milliseconds(t_ms as i64)
    }

    /// Runs to the scenario's end and returns the report, or the first bill too large to count
    /// exactly (prices and durations far beyond any real ones).
    pub fn run(self) -> Result<Report, fleet_core::MoneyOverflow> {
        self.run_with_progress(&mut |_, _| {})
    }

    /// Like [`Engine::run`], calling `progress(virtual ms done, virtual ms in all)` every tick.
    pub fn run_with_progress(
        mut self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Report, fleet_core::MoneyOverflow> {
        loop {
            let next_ev = self.heap.peek().map(|Reverse(entry)| (entry >> 96) as u64);
            let next_arr = self.arrivals.get(self.next_arrival).map(|a| a.at_ms);
            // Arrivals come from the sorted trace, not the heap: same order, far fewer heap operations.
            let take_arrival = match (next_arr, next_ev) {
                (Some(a), Some(e)) => a <= e,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if take_arrival {
                let i = self.next_arrival;
                self.next_arrival += 1;
                self.now = self.arrivals[i].at_ms;
                self.report.events += 1;
                let d = crate::demand::demand_of(&self.req_demand, i);
                self.arrived[d] += 1;
                self.queues[d].push_back(i);
                self.dispatch(d);
                continue;
            }
            let Some(Reverse(entry)) = self.heap.pop() else { break };
            let t = (entry >> 96) as u64;
            let ev = Ev::unpack(entry as u64);
            if t >= self.end {
                break;
            }
            self.now = t;
            self.report.events += 1;
            match ev {
                Ev::Tick => {
                    self.tick();
                    progress(self.now, self.end);
                }
                Ev::NodeReady(n) => self.node_ready(n),
                Ev::RunnerReady(r) => self.runner_ready(r),
                Ev::Done { runner, req } => self.done(runner, req),
                Ev::Preempt(n) => self.preempt(n),
                Ev::Book(i) => self.book(i),
                Ev::Unbook(i) => {
                    if let Some(n) = self.booked[i] {
                        self.end_node(n);
                        self.dispatch_all();
                    }
                }
            }
        }
        self.finish()
    }

    fn service_ms(&self, req: usize, node: usize) -> u64 {
        to_ms(service_at(&self.services[self.nodes[node].app], &self.arrivals[req], self.nodes[node].speed))
    }

    fn mux(&self, app: usize) -> usize {
        self.spec.apps[app].scaling.max_multiplexing.max(1) as usize
    }

    /// Hands demand `d`'s queued requests to its app's runners with a free slot, the runner
    /// pushed last first.
    fn dispatch(&mut self, d: usize) {
        while !self.queues[d].is_empty() {
            let Some(&r) = self.spare[d].last() else { return };
            let mux = self.mux(self.runners[r].app);
            let usable = {
                let x = &self.runners[r];
                x.ready && !x.stopped && !x.draining && x.in_flight.len() < mux
            };
            if !usable {
                self.spare[d].pop();
                self.runners[r].in_spare = false;
                continue;
            }
            let req = self.queues[d].pop_front().expect("non-empty");
            let node = self.runners[r].node;
            let done_at = self.now + self.service_ms(req, node);
            let runner = &mut self.runners[r];
            if runner.in_flight.is_empty() {
                runner.busy_since_ms = Some(self.now);
                runner.idle_since_ms = None;
            }
            runner.in_flight.push(req);
            if runner.in_flight.len() >= mux {
                runner.in_spare = false;
                self.spare[d].pop();
            }
            self.assigned[req] = r as u32;
            if self.started_ms[req] == NONE {
                self.started_ms[req] = self.now as u32;
            }
            self.push(done_at, Ev::Done { runner: r, req });
        }
    }

    /// Every demand's [`Engine::dispatch`] (after capacity changed for any of them).
    fn dispatch_all(&mut self) {
        for d in 0..self.queues.len() {
            self.dispatch(d);
        }
    }

    /// Offers runner `r` (of demand `d`'s app) to the next requests.
    fn make_spare(&mut self, r: usize, d: usize) {
        if !self.runners[r].in_spare {
            self.runners[r].in_spare = true;
            self.spare[d].push(r);
        }
    }

    fn gpus_per_runner(&self, app: usize) -> u128 {
        u128::from(self.spec.apps[app].gpu.count)
    }

    fn end_busy(&mut self, r: usize) {
        if let Some(since) = self.runners[r].busy_since_ms.take() {
            self.busy_gpu_ms += u128::from(self.now - since) * self.gpus_per_runner(self.runners[r].app);
        }
    }

    fn done(&mut self, r: usize, req: usize) {
        if self.assigned[req] != r as u32 {
            return; // the runner was lost and the request re-queued
        }
        self.assigned[req] = NONE;
        self.report.served += 1;
        let wait = u64::from(self.started_ms[req]) - self.arrivals[req].at_ms;
        self.report.waits_ms.push(wait as u32);
        if let Some(by) = self.report.apps_waits.get_mut(crate::demand::demand_of(&self.req_demand, req)) {
            by.push(wait as u32);
        }
        let runner = &mut self.runners[r];
        runner.in_flight.retain(|x| *x != req);
        if runner.in_flight.is_empty() {
            runner.idle_since_ms = Some(self.now);
            self.end_busy(r);
        }
        if self.runners[r].draining && self.runners[r].in_flight.is_empty() {
            self.stop_runner(r);
            let n = self.runners[r].node;
            if self.nodes[n].releasing && self.nodes[n].runners.iter().all(|x| self.runners[*x].stopped) {
                self.end_node(n);
            }
        }
        // Only a demand app's runners serve requests.
        let d = self.demand_of_app[self.runners[r].app].expect("a runner that served has demand");
        if !self.runners[r].stopped && !self.runners[r].draining && self.runners[r].ready {
            self.make_spare(r, d);
        }
        self.dispatch(d);
    }

    fn runner_ready(&mut self, r: usize) {
        let runner = &mut self.runners[r];
        if runner.stopped || !self.nodes[runner.node].up {
            return;
        }
        runner.ready = true;
        runner.idle_since_ms = Some(self.now);
        if let Some(d) = self.demand_of_app[runner.app] {
            self.make_spare(r, d);
            self.dispatch(d);
        }
    }

    fn node_ready(&mut self, n: usize) {
        if self.nodes[n].ended_ms.is_some() {
            return;
        }
        self.nodes[n].up = true;
        for r in self.nodes[n].runners.clone() {
            if !self.runners[r].stopped {
                let start = self.runner_start(n);
                self.push(self.now + start, Ev::RunnerReady(r));
            }
        }
    }

    /// Milliseconds from now until a runner starting on ready node `n` serves: the model load;
    /// with `[weights]`, the fetch (none when the node holds them; from its region's peers when
    /// the cache is on and some node there holds or fetches them, no sooner than that one's
    /// fetch ends; else from the origin, billed) and the load from disk.
    fn runner_start(&mut self, n: usize) -> u64 {
        let Some(w) = self.weights[self.nodes[n].app].clone() else {
            return ms(self.services[self.nodes[n].app].model_load);
        };
        let now = self.now;
        let load = ms(w.load());
        let (done, from) = match self.nodes[n].holds_at {
            Some(at) => (at.max(now), None),
            None => {
                let o = self.index.offering(self.nodes[n].offering);
                // Peers: nodes of the same app (the same model) in the region.
                let app = self.nodes[n].app;
                let peers = if w.cache {
                    self.live_nodes
                        .iter()
                        .filter(|&&m| m != n && self.nodes[m].app == app)
                        .filter(|&&m| {
                            let p = self.index.offering(self.nodes[m].offering);
                            p.cloud == o.cloud && p.region == o.region
                        })
                        .filter_map(|&m| self.nodes[m].holds_at)
                        .min()
                } else {
                    None
                };
                match peers {
                    Some(first) => ((now + ms(w.fetch(FetchFrom::Peers))).max(first), Some(FetchFrom::Peers)),
                    None => (now + ms(w.fetch(FetchFrom::Origin)), Some(FetchFrom::Origin)),
                }
            }
        };
        self.nodes[n].holds_at = Some(done);
        if let Some(p) = &mut self.report.weights {
            p.runner_starts += 1;
            p.fetch_s += (done - now) as f64 / 1000.0;
            p.load_s += load as f64 / 1000.0;
            match from {
                None => p.from_node += 1,
                Some(FetchFrom::Peers) => {
                    p.from_peers += 1;
                    p.peer_gb += w.size_gb;
                }
                Some(FetchFrom::Origin) => {
                    p.from_origin += 1;
                    p.origin_gb += w.size_gb;
                    p.origin_egress += w.egress();
                }
            }
        }
        done - now + load
    }

    /// Stops a runner as fleetd does: at once when it serves nothing, else it drains (claims no
    /// more, stops when its requests finish).
    fn drain_runner(&mut self, r: usize) {
        if self.runners[r].in_flight.is_empty() {
            self.stop_runner(r);
        } else {
            self.runners[r].draining = true;
        }
    }

    /// Releases a node as fleetd does: it ends once its runners have drained.
    fn release_node(&mut self, n: usize) {
        if self.nodes[n].runners.iter().any(|r| !self.runners[*r].stopped && !self.runners[*r].in_flight.is_empty()) {
            for r in self.nodes[n].runners.clone() {
                self.drain_runner(r);
            }
            self.nodes[n].releasing = true;
        } else {
            self.end_node(n);
        }
    }

    /// Stops a runner now; its in-flight requests go back to the front of the queue (a node lost).
    fn stop_runner(&mut self, r: usize) {
        if self.runners[r].stopped {
            return;
        }
        self.end_busy(r);
        self.live_runners.remove(&r);
        let runner = &mut self.runners[r];
        runner.stopped = true;
        runner.ready = false;
        let node = runner.node;
        let lost = std::mem::take(&mut runner.in_flight);
        if self.nodes[node].runners.iter().all(|x| self.runners[*x].stopped) {
            self.nodes[node].empty_since_ms.get_or_insert(self.now);
        }
        if let Some(d) = self.demand_of_app[self.runners[r].app] {
            for req in lost.into_iter().rev() {
                self.assigned[req] = NONE;
                self.queues[d].push_front(req);
            }
        }
    }

    fn node_cost(&mut self, n: usize, until_ms: u64) -> Money {
        let node = &self.nodes[n];
        let o = self.index.offering(node.offering);
        let model = self.sc.cloud(o.cloud);
        let ran = model.billed(Duration::from_millis(until_ms - node.launched_ms));
        match o.price.try_cost_for(ran) {
            Ok(c) => c,
            Err(e) => {
                self.overflowed(e);
                Money::MAX
            }
        }
    }

    /// Keeps the first overflow; the run reports it at the end.
    fn overflowed(&mut self, e: fleet_core::MoneyOverflow) {
        self.overflow.get_or_insert(e);
    }

    fn end_node(&mut self, n: usize) {
        if self.nodes[n].ended_ms.is_some() {
            return;
        }
        for r in self.nodes[n].runners.clone() {
            self.stop_runner(r);
        }
        self.nodes[n].ended_ms = Some(self.now);
        self.nodes[n].up = false;
        self.live_nodes.remove(&n);
        let price = i128::from(self.index.offering(self.nodes[n].offering).price.hourly().micros());
        let cost = self.node_cost(n, self.now);
        let (launched, app) = (self.nodes[n].launched_ms, self.nodes[n].app);
        if let Err(e) = self.spend.end(price, launched, cost) {
            self.overflowed(e);
        }
        // An app's bills are part of the fleet's: an overflow there is reported just above.
        let _ = self.app_spend[app].end(price, launched, cost);
        let o = self.index.offering(self.nodes[n].offering);
        self.report.charge(o, cost, self.now - self.nodes[n].launched_ms, &self.spec.apps[self.nodes[n].app].name);
        if let Some(c) = self.live_per_offering.get_mut(&self.nodes[n].offering) {
            *c -= 1;
        }
    }

    fn preempt(&mut self, n: usize) {
        if self.nodes[n].ended_ms.is_some() {
            return;
        }
        self.report.preemptions += 1;
        let key = self.index.offering(self.nodes[n].offering).key();
        self.cache.mark(key, UnavailableReason::Preempted, self.at(self.now), self.sc.unavailable_ttl);
        self.end_node(n);
        self.dispatch_all();
    }

    fn burn(&self) -> Money {
        Money::from_micros_saturating(self.spend.live_price)
    }

    fn tick(&mut self) {
        let now_ts = self.at(self.now);
        self.cache.expire(now_ts);
        let mut apps = BTreeMap::new();
        self.apply_baseline();
        let mut histories: Vec<DemandHistory> = (0..self.spec.apps.len()).map(|i| self.demand_history(i)).collect();
        for (i, app) in self.spec.apps.iter().enumerate() {
            let runners: Vec<RunnerView> = self
                .live_runners
                .iter()
                .map(|&id| (id, &self.runners[id]))
                .filter(|(_, r)| r.app == i)
                .map(|(id, r)| RunnerView {
                    runner: RunnerInfo {
                        id: id as u64,
                        ready: r.ready,
                        in_flight: r.in_flight.len() as u32,
                        idle_since: r.idle_since_ms.map(|t| self.at(t)),
                        // Set by the planner from the node's price and its runners.
                        slot_price: Price::ZERO,
                        paid_until: None,
                        work_milli: 0,
                    },
                    node: r.node as u64,
                })
                .collect();
            let nodes: Vec<NodeView> = self
                .live_nodes
                .iter()
                .map(|&id| (id, &self.nodes[id]))
                .filter(|(_, n)| n.app == i)
                .map(|(id, n)| NodeView {
                    leaving: n.leaving,
                    replaced: n.replaced,
                    billed_since: Some(n.launched_at),
                    // The cloud has billed the whole step begun (and the minimum).
                    paid_until: paid_until(n.billing, n.launched_at, self.now - n.launched_ms),
                    billing_step: Some(n.billing.0).filter(|s| *s > Duration::from_secs(1)),
                    holds_weights: n.holds_at.is_some(),
                    empty_since: n.empty_since_ms.map(|t| self.at(t)),
                    ..NodeView::new(id as u64, n.offering, n.slots)
                })
                .collect();
            let in_flight: u32 = runners.iter().map(|r| r.runner.in_flight).sum();
            let queued = self.demand_of_app[i].map_or(0, |d| self.queues[d].len() as u32);
            let demand = std::mem::take(&mut histories[i]);
            let st = AppView {
                queued,
                in_flight,
                scale_up_pending_since: self.pending_since[i],
                runners,
                nodes,
                month_to_date: self.app_spend[i].month_to_date(self.now),
                demand,
                outside_burn: Money::ZERO,
                cold_start: if self.demand_of_app[i].is_some() { self.cold_start_model(i) } else { None },
            };
            apps.insert(app.name.clone(), st);
        }
        // Each app's month-to-date is its own nodes' (its budget); the fleet's is all of them.
        let mtd = self.spend.month_to_date(self.now);
        let state = FleetView { now: now_ts, apps, unavailable: &self.cache, fleet_month_to_date: mtd };
        // The oracle's nodes come and go by its bookings: nothing to decide for the demand apps.
        // The spec's other apps are planned as under every policy (their floors, budgets), so
        // the oracle's cost compares with the others' like for like.
        let oracle = matches!(self.sc.policy, Policy::Oracle { .. });
        let p = if oracle && self.demand_apps.len() == self.spec.apps.len() {
            fleet_policies::plan::FleetPlan::default()
        } else {
            let opts = PlanOptions { consolidation_horizon: self.sc.consolidation_horizon, ..PlanOptions::default() };
            plan(&self.index, &self.spec, &state, &opts)
        };
        let mut views = state.apps;
        for (i, ap) in p.apps.iter().enumerate() {
            if oracle && self.demand_of_app[i].is_some() {
                continue;
            }
            self.pending_since[i] = ap.decision.pending_since;
            // The history goes back to the engine with this tick's sample, as fleetd keeps it.
            let v = views.get_mut(&ap.app).expect("every app has a view");
            let mut h = std::mem::take(&mut v.demand);
            let arrived = self.demand_of_app[i].map_or(0, |d| self.arrived[d]);
            h.record(DemandSample {
                at: now_ts,
                desired: ap.decision.target.wanted,
                arrived,
                queued: v.queued,
                in_flight: v.in_flight,
                in_flight_work: ap.in_flight_work,
            });
            self.history[i] = h;
            for id in &ap.decision.stop {
                self.drain_runner(*id as usize);
            }
            if let Some(m) = &ap.consolidate {
                for n in &m.nodes {
                    self.nodes[*n as usize].leaving = true;
                }
                self.report.consolidations += 1;
            }
            for (node, n) in &ap.replaced {
                self.nodes[*node as usize].replaced += n;
            }
            for node in &ap.cancel_moves {
                let n = &mut self.nodes[*node as usize];
                (n.leaving, n.replaced) = (false, 0);
            }
            for (node, count) in &ap.on_existing {
                for _ in 0..*count {
                    self.add_runner(i, *node as usize);
                }
            }
            for np in &ap.new_nodes {
                self.launch(i, &np.candidates, np.runners, np.sized_for);
            }
            for node in &ap.release_nodes {
                self.release_node(*node as usize);
            }
            self.report.budget_events += ap.unplaced.iter().filter(|u| u.budget_cap.is_some()).count() as u64;
        }
        let burn = self.burn();
        self.report.max_burn_per_hour = self.report.max_burn_per_hour.max(burn);
        let live =
            || self.live_runners.iter().map(|r| &self.runners[*r]).filter(|r| self.demand_of_app[r.app].is_some());
        let capacity: usize = live().filter(|r| r.ready).map(|r| self.mux(r.app)).sum();
        let in_flight: usize = live().map(|r| r.in_flight.len()).sum();
        let queued: usize = self.queues.iter().map(VecDeque::len).sum();
        let per_app = if self.demand_apps.len() > 1 {
            let mut v: Vec<AppSample> =
                self.queues.iter().map(|q| AppSample { demand: q.len() as u32, capacity: 0 }).collect();
            for r in live() {
                let d = &mut v[self.demand_of_app[r.app].expect("live() keeps demand apps")];
                d.demand += r.in_flight.len() as u32;
                if r.ready {
                    d.capacity += self.mux(r.app) as u32;
                }
            }
            v
        } else {
            Vec::new()
        };
        self.report.timeline.push(Sample {
            t_s: self.now / 1000,
            demand: (queued + in_flight) as u32,
            capacity: capacity as u32,
            apps: per_app,
            burn_per_hour: burn,
            cold_starts: self.report.cold_starts,
        });
        let every = (self.end / 500).max(ms(self.sc.tick));
        if self.report.burn_by_cloud.last().is_none_or(|s| self.now >= s.t_s * 1000 + every) {
            let mut by_cloud: BTreeMap<String, Money> = BTreeMap::new();
            for &n in &self.live_nodes {
                let o = self.index.offering(self.nodes[n].offering);
                *by_cloud.entry(o.cloud.to_string()).or_default() += o.price.hourly();
            }
            self.report
                .burn_by_cloud
                .push(crate::report::CloudSample { t_s: self.now / 1000, burn_per_hour: by_cloud });
        }
        self.dispatch_all();
        self.push(self.now + ms(self.sc.tick), Ev::Tick);
    }

    /// Sets each demand app's scaling as the scenario's baseline policy decides (nothing for the
    /// spec's own): a fixed count is `min = max`, started at once and stopped at once.
    fn apply_baseline(&mut self) {
        for d in 0..self.demand_apps.len() {
            let want = match &self.sc.policy {
                Policy::Spec | Policy::Oracle { .. } => return,
                Policy::StaticPeak { runners } => runners[d],
                Policy::TargetQps { per_runner_qps, downscale_delay } => {
                    const WINDOW_MS: u64 = 60_000;
                    let now = self.now;
                    let (from, to) = if self.demand_times.is_empty() {
                        (
                            self.arrivals.partition_point(|a| a.at_ms + WINDOW_MS <= now),
                            self.arrivals.partition_point(|a| a.at_ms <= now),
                        )
                    } else {
                        let t = &self.demand_times[d];
                        (t.partition_point(|a| a + WINDOW_MS <= now), t.partition_point(|a| *a <= now))
                    };
                    let rate = (to - from) as f64 / (WINDOW_MS as f64 / 1000.0);
                    let max = self.sc.spec.apps[self.demand_apps[d]].scaling.max_concurrency;
                    let wanted = ((rate / per_runner_qps[d]).ceil() as u32).min(max);
                    if wanted >= self.qps_replicas[d] {
                        self.qps_lower_since[d] = None;
                        self.qps_replicas[d] = wanted;
                    } else {
                        let since = *self.qps_lower_since[d].get_or_insert(now);
                        if now - since >= ms(*downscale_delay) {
                            self.qps_replicas[d] = wanted;
                            self.qps_lower_since[d] = None;
                        }
                    }
                    self.qps_replicas[d]
                }
            };
            // The spec's `min_concurrency` holds under the baselines too: the operator asked for
            // those runners whatever the demand, and every policy is compared paying for them.
            let want = want.max(self.sc.spec.apps[self.demand_apps[d]].scaling.min_concurrency);
            let s = &mut self.spec.apps[self.demand_apps[d]].scaling;
            s.min_concurrency = want;
            s.max_concurrency = want;
            s.concurrency_buffer = 0;
            s.concurrency_buffer_perc = 0;
            s.keep_alive = KeepAlive::For(Duration::ZERO);
            if matches!(self.sc.policy, Policy::StaticPeak { .. }) {
                s.scaling_delay = Duration::ZERO;
            }
        }
    }

    /// What app `app`'s autoscaler has learned (taken out for the tick and put back after it),
    /// with a cold start (provision + boot + model load) and a re-creation (that plus minimum
    /// billing) on the cloud of the app's cheapest offering now.
    fn demand_history(&mut self, app: usize) -> DemandHistory {
        let model = match self.index.best(app, &RankInput::new(self.at(self.now), &self.cache)) {
            Some(c) => self.sc.cloud(self.index.offering(c.offering).cloud).clone(),
            None => self.sc.default_cloud.clone(),
        };
        let mut h = std::mem::take(&mut self.history[app]);
        // Warm: some live node of the app holds the weights (peers can serve them).
        let warm = self.live_nodes.iter().any(|&n| self.nodes[n].app == app && self.nodes[n].holds_at.is_some());
        h.cold_start = model.provision_delay
            + model.boot
            + runner_start_estimate(&self.services[app], self.weights[app].as_ref(), warm);
        // What a new node bills at least: billed by the hour with the default minimum of a
        // minute, that is the hour (until 2026-12-03 the autoscaler was told a minute there, and
        // kept runners and sized backlogs as if a node were billed by the second).
        h.recreate = h.cold_start + model.least_billed();
        h
    }

    /// The weights model the planner weighs new nodes and empty ones with (`[weights]` with the
    /// cache and `cold_start_aware` on): provision and boot on the cloud of the app's cheapest
    /// offering now, over the consolidation horizon (an hour without one).
    fn cold_start_model(&self, app: usize) -> Option<fleet_policies::coldstart::ColdStartModel> {
        let w = self.weights[app].as_ref().filter(|w| w.cache && w.cold_start_aware)?;
        let cloud = match self.index.best(app, &RankInput::new(self.at(self.now), &self.cache)) {
            Some(c) => self.sc.cloud(self.index.offering(c.offering).cloud),
            None => &self.sc.default_cloud,
        };
        Some(fleet_policies::coldstart::ColdStartModel {
            size_gb: w.size_gb,
            origin_gb_per_s: w.origin_gb_per_s,
            peer_gb_per_s: w.peer_gb_per_s,
            disk_gb_per_s: w.disk_gb_per_s,
            egress_per_gb: w.egress_per_gb,
            provision_and_boot: cloud.provision_delay + cloud.boot,
            horizon: self.sc.consolidation_horizon.unwrap_or(Duration::from_secs(3600)),
        })
    }

    fn add_runner(&mut self, app: usize, node: usize) {
        let id = self.runners.len();
        self.runners.push(Runner {
            app,
            node,
            ready: false,
            stopped: false,
            in_flight: Vec::new(),
            idle_since_ms: None,
            busy_since_ms: None,
            in_spare: false,
            draining: false,
        });
        self.nodes[node].runners.push(id);
        self.nodes[node].empty_since_ms = None;
        self.live_runners.insert(id);
        self.report.cold_starts += 1;
        if self.nodes[node].up {
            let start = self.runner_start(node);
            self.push(self.now + start, Ev::RunnerReady(id));
        }
    }

    /// Launches the oracle's booking `i`: its offering, no capacity error, no preemption, the
    /// mean provisioning delay.
    fn book(&mut self, i: usize) {
        let Policy::Oracle { bookings } = &self.sc.policy else { return };
        let b = bookings[i].clone();
        let o = self.index.offering(b.offering);
        let model = self.sc.cloud(o.cloud).clone();
        let n = self.new_node(b.app, b.offering, b.runners, ms(model.provision_delay + model.boot));
        self.booked[i] = Some(n);
        for _ in 0..b.runners {
            self.add_runner(b.app, n);
        }
    }

    /// Records a launched node (ready after `ready_in` ms) and starts billing it.
    fn new_node(&mut self, app: usize, offering: u32, slots: u32, ready_in: u64) -> usize {
        let n = self.nodes.len();
        self.nodes.push(Node {
            app,
            offering,
            slots,
            leaving: false,
            replaced: 0,
            releasing: false,
            launched_ms: self.now,
            launched_at: self.at(self.now),
            speed: gpu_speed(self.index.offering(offering).instance.gpu),
            billing: {
                let m = self.sc.cloud(self.index.offering(offering).cloud);
                (m.billing_step, m.min_billing)
            },
            up: false,
            ended_ms: None,
            runners: Vec::new(),
            holds_at: None,
            empty_since_ms: None,
        });
        let boot = ms(self.sc.cloud(self.index.offering(offering).cloud).boot);
        if let Some(p) = &mut self.report.weights {
            p.nodes += 1;
            p.provision_s += ready_in.saturating_sub(boot) as f64 / 1000.0;
            p.boot_s += boot.min(ready_in) as f64 / 1000.0;
        }
        self.live_nodes.insert(n);
        let price = i128::from(self.index.offering(offering).price.hourly().micros());
        self.spend.launch(price, self.now);
        self.app_spend[app].launch(price, self.now);
        *self.live_per_offering.entry(offering).or_default() += 1;
        self.report.nodes_launched += 1;
        self.push(self.now + ready_in, Ev::NodeReady(n));
        n
    }

    /// Walks the candidates as the orchestrator does: on simulated insufficient capacity, mark
    /// the offering unavailable and try the next.
    /// `sized_for`: the runners the plan sized the node for (its own and room for those of nodes it
    /// takes over): what it is checked against for being oversized.
    fn launch(
        &mut self,
        app: usize,
        candidates: &[fleet_policies::placement::Candidate],
        runners: u32,
        sized_for: u32,
    ) {
        // The n-th node launched draws from its own stream (common random numbers): policies
        // compared on one seed meet the same provisioning delays, capacity errors and
        // preemptions for their first, second, … node, so their differences are theirs.
        let mut rng = self.node_rng(self.nodes.len() as u64);
        for c in candidates {
            let o = self.index.offering(c.offering);
            let model = self.sc.cloud(o.cloud).clone();
            let live = self.live_per_offering.get(&c.offering).copied().unwrap_or(0);
            let capacity = if self.sc.capacity.is_empty() {
                model.capacity
            } else {
                self.sc.capacity.get(&o.key().to_string()).copied().unwrap_or(model.capacity)
            };
            let ice = model.ice_probability > 0.0 && rng.random::<f64>() < model.ice_probability;
            if live >= capacity || ice {
                self.report.failovers += 1;
                let key = o.key();
                self.cache.mark(
                    key,
                    UnavailableReason::InsufficientCapacity,
                    self.at(self.now),
                    self.sc.unavailable_ttl,
                );
                continue;
            }
            let jitter = ms(model.provision_jitter);
            let delay = ms(model.provision_delay) + if jitter > 0 { rng.random_range(0..=2 * jitter) } else { 0 };
            let ready_in = delay.saturating_sub(jitter) + ms(model.boot);
            let n = self.new_node(app, c.offering, c.runners_per_node, ready_in);
            if self.oversized(app, c, sized_for) {
                self.report.oversized_nodes += 1;
            }
            if c.capacity == CapacityType::Spot && model.preemptions_per_hour > 0.0 {
                let hours = -(1.0 - rng.random::<f64>()).ln() / model.preemptions_per_hour;
                self.push(self.now + (hours * 3_600_000.0) as u64, Ev::Preempt(n));
            }
            for _ in 0..runners {
                self.add_runner(app, n);
            }
            return;
        }
        self.report.launch_failures += 1;
    }

    fn node_rng(&self, n: u64) -> StdRng {
        StdRng::seed_from_u64(self.sc.seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Whether a node of candidate `c` for `runners` runners costs more than the cheapest offering
    /// of the same capacity type that the app may use, fits them, and is not marked unavailable
    /// now (quotas aside): checked against every offering of the catalog, not through the
    /// planner's sizing.
    fn oversized(&self, app: usize, c: &fleet_policies::placement::Candidate, runners: u32) -> bool {
        let capacity = match c.capacity {
            CapacityType::Spot => CapacityWanted::Spot,
            _ => CapacityWanted::OnDemand,
        };
        let input = RankInput { capacity, ..RankInput::new(self.at(self.now), &self.cache) };
        let cheapest = self
            .index
            .explain(app, &input)
            .ranked
            .iter()
            .filter(|x| x.runners_per_node >= runners)
            .map(|x| x.node_price)
            .min();
        cheapest.is_some_and(|p| c.node_price > p)
    }

    fn finish(mut self) -> Result<Report, fleet_core::MoneyOverflow> {
        self.now = self.end;
        for n in self.live_nodes.clone() {
            self.end_node(n);
        }
        self.report.unserved = self.report.requests - self.report.served;
        self.report.busy_gpu_hours = self.busy_gpu_ms as f64 / 3_600_000.0;
        // Each demand's tokens, summed in arrival order.
        let mut tokens = vec![(0.0f64, 0.0f64); self.demand_apps.len()];
        for (i, a) in self.arrivals.iter().enumerate() {
            let t = &mut tokens[crate::demand::demand_of(&self.req_demand, i)];
            t.0 += f64::from(a.context_tokens);
            t.1 += f64::from(a.generated_tokens);
        }
        let bounds: Vec<Money> = self
            .demand_apps
            .iter()
            .zip(&tokens)
            // An app's `min_concurrency` runners are paid for whatever its demand: its bound is
            // at least theirs (they serve its demand too, so the larger of the two, not the sum).
            .map(|(&app, &(ctx, generated))| {
                demand_lower_bound(self.sc, &self.index, app, ctx, generated).max(floor_cost(self.sc, &self.index, app))
            })
            .collect();
        let floors = (0..self.spec.apps.len())
            .filter(|a| self.demand_of_app[*a].is_none())
            .map(|a| floor_cost(self.sc, &self.index, a))
            .sum::<Money>();
        self.report.lower_bound = bounds.iter().sum::<Money>() + floors;
        for (r, b) in self.report.apps.iter_mut().zip(bounds) {
            r.lower_bound = b;
        }
        self.report.finish(self.sc);
        match self.overflow {
            Some(e) => Err(e),
            None => Ok(self.report),
        }
    }
}

/// How long request `a` takes on a `gpu`: prefill plus decode at the scenario's H100 token rates,
/// scaled by the GPU's bf16 TFLOP/s.
pub(crate) fn service_ms(s: &ServiceModel, a: &Arrival, gpu: GpuModel) -> u64 {
    to_ms(service_s(s, a, gpu))
}

fn to_ms(s: f64) -> u64 {
    (s * 1000.0).ceil().max(1.0) as u64
}

/// Until when a node launched at `launched` and up `ran_ms` is paid for, where that is more
/// than a second away (the rest of a billing step, or of the minimum billing), under
/// `(billing step, minimum billing)`.
fn paid_until((step, min_billing): (Duration, Duration), launched: Time, ran_ms: u64) -> Option<Time> {
    let ran = Duration::from_millis(ran_ms);
    // Billed by the second past the minimum (most nodes, every pass): nothing to work out.
    if step <= Duration::from_secs(1) && ran >= min_billing {
        return None;
    }
    let billed = crate::scenario::billed(step, min_billing, ran);
    // Billed by a longer step, a node exactly at a step's end is paid until now, not by the
    // second: the next step begins with the next instant it runs. (Until 2026-12-03 it was
    // `None` there, as if billed by the second; launches and passes fall on whole ticks, so a
    // pass met that instant every hour, and a move weighed then owed nothing for the step its
    // release would begin: an 8-GPU node was replaced on the hour for $0.68/h less, and both
    // paid the next hour.)
    let stepped = step > Duration::from_secs(1);
    (billed > ran + Duration::from_secs(1) || stepped)
        .then(|| launched + chrono::Duration::from_std(billed).unwrap_or_default())
}

/// Seconds request `a` is in service on `gpu` (the scenario's H100 rates scaled by bf16 TFLOP/s).
pub(crate) fn service_s(s: &ServiceModel, a: &Arrival, gpu: GpuModel) -> f64 {
    service_at(s, a, gpu_speed(gpu))
}

/// A GPU's speed relative to the H100-SXM: its bf16 TFLOP/s over the H100-SXM's.
fn gpu_speed(gpu: GpuModel) -> f64 {
    f64::from(gpu.bf16_dense_tflops()) / f64::from(GpuModel::H100Sxm.bf16_dense_tflops())
}

/// [`service_s`] on a GPU of relative speed `scale` ([`gpu_speed`], kept per node).
fn service_at(s: &ServiceModel, a: &Arrival, scale: f64) -> f64 {
    f64::from(a.context_tokens) / (s.prefill_tokens_per_s * scale)
        + f64::from(a.generated_tokens) / (s.decode_tokens_per_s * scale)
}

/// The least any policy could pay for a demand of `ctx` context and `generated` generated tokens
/// on app `app`: all of it served on the single cheapest offering the app may use (by effective
/// $/GPU-hour, spot included, ignoring capacity limits), with no idle time, no cold starts and
/// per-millisecond billing. A run's lower bound is the sum over its demands plus, for each of
/// the spec's other apps (which get no requests), `floor_cost`, which every policy pays alike.
pub fn demand_lower_bound(sc: &Scenario, index: &PlacementIndex, app: usize, ctx: f64, generated: f64) -> Money {
    let cache = UnavailableCache::default();
    let ranked = index.explain(app, &RankInput::new(start_time(), &cache)).ranked;
    let a = &sc.spec.apps[app];
    let service = sc.service_for(&a.name);
    let mux = f64::from(a.scaling.max_multiplexing.max(1));
    ranked
        .iter()
        .map(|c| {
            let gpu = index.offering(c.offering).instance.gpu;
            let scale = f64::from(gpu.bf16_dense_tflops()) / f64::from(GpuModel::H100Sxm.bf16_dense_tflops());
            let work_s =
                ctx / (service.prefill_tokens_per_s * scale) + generated / (service.decode_tokens_per_s * scale);
            // Runner-time: each runner serves `mux` at once, and holds `count` GPUs.
            let gpu_ms = (work_s / mux * 1000.0).ceil() as u64 * u64::from(a.gpu.count);
            let per_gpu: Price = c.effective_gpu_price;
            per_gpu.cost_for(Duration::from_millis(gpu_ms))
        })
        .min()
        .unwrap_or(Money::ZERO)
}

/// App `app`'s `min_concurrency` runners held for the scenario's whole duration at the cheapest
/// effective $/GPU-hour it may buy (per-millisecond billing, no cold start).
fn floor_cost(sc: &Scenario, index: &PlacementIndex, app: usize) -> Money {
    let a = &sc.spec.apps[app];
    let gpus = u64::from(a.scaling.min_concurrency) * u64::from(a.gpu.count);
    if gpus == 0 {
        return Money::ZERO;
    }
    let cache = UnavailableCache::default();
    let ranked = index.explain(app, &RankInput::new(start_time(), &cache)).ranked;
    let Some(per_gpu) = ranked.iter().map(|c| c.effective_gpu_price).min() else { return Money::ZERO };
    let gpu_ms = ms(sc.duration).saturating_mul(gpus);
    per_gpu.try_cost_for(Duration::from_millis(gpu_ms)).unwrap_or(Money::MAX)
}

#[cfg(test)]
mod tests {
    use super::Ev;

    #[test]
    fn events_pack_and_unpack() {
        for ev in [
            Ev::Tick,
            Ev::NodeReady(7),
            Ev::RunnerReady((1 << 29) - 1),
            Ev::Done { runner: 123_456, req: u32::MAX as usize },
            Ev::Preempt(0),
            Ev::Book(3),
            Ev::Unbook((1 << 29) - 1),
        ] {
            assert_eq!(Ev::unpack(ev.pack()), ev);
        }
    }

    #[test]
    fn a_node_billed_by_the_hour_is_paid_until_the_end_of_the_hour_begun_and_exactly_at_it() {
        use std::time::Duration;
        let hour = (Duration::from_secs(3600), Duration::from_secs(3600));
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        assert_eq!(super::paid_until(hour, t0, 1_000), Some(at(3600)));
        assert_eq!(super::paid_until(hour, t0, 3_599_000), Some(at(3600)));
        // At the hour's end it is paid until now: the next hour begins with the next instant it
        // runs (until 2026-12-03, `None`, as if billed by the second).
        assert_eq!(super::paid_until(hour, t0, 3_600_000), Some(at(3600)));
        assert_eq!(super::paid_until(hour, t0, 3_601_000), Some(at(7200)));
        // Billed by the second: within the minimum, until its end; past it, nothing prepaid.
        let second = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(super::paid_until(second, t0, 10_000), Some(at(60)));
        assert_eq!(super::paid_until(second, t0, 60_000), None);
        assert_eq!(super::paid_until(second, t0, 3_600_000), None);
    }
}
