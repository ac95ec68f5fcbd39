//! One decision for the whole fleet: per app, how many runners to start and stop, where new runners
//! go (free slots on existing nodes first, then new nodes), which offerings each new node may try
//! in failover order, which nodes are left empty, and what budgets held back.
//!
//! Budgets hold for every failover choice: each new node's candidates are limited to a price the
//! remaining room can pay, and the node reserves the dearest of them, so whichever candidate the
//! orchestrator ends up launching, the app's and the fleet's caps hold. Apps are planned in the
//! spec's (name) order against the shared fleet room.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use fleet_core::spec::{FleetSpec, SpotPolicy};
use fleet_core::{CapacityType, Money, NodeId, Price, RunnerId, Time};
use serde::Serialize;

use crate::autoscale::{self, DemandHistory, RunnerInfo, ScaleDecision};
use crate::budget::{self, BudgetCap, Spend};
use crate::consolidate::{self, Move};
use crate::placement::{Candidate, CapacityWanted, OfferingId, PlacementIndex, RankInput, SizeClass, UnavailableCache};
use crate::sizing::{self, SizedNode};
use crate::spot::{self, CapacitySplit};

/// A node of an app, running or launching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: NodeId,
    pub offering: OfferingId,
    /// How many of the app's runners it can host.
    pub slots: u32,
    /// Being consolidated away: it takes no new runners, its runners are replaced elsewhere
    /// and stop once the replacements serve (see [`crate::consolidate`]).
    pub leaving: bool,
    /// Of a leaving node: how many replacements of its runners have been started so far (the
    /// caller keeps the count from [`AppPlan::replaced`]).
    pub replaced: u32,
    /// When its billing started (a launched node), for the minimum billing left on it.
    pub billed_since: Option<Time>,
    /// Until when it is already paid for, where billing is by a longer step than the second (a
    /// cloud billing by the hour: the end of the hour begun). Its runners are then not stopped
    /// before ([`crate::autoscale::PREPAID_LEAD`]), and a move counts the time left as owed.
    pub paid_until: Option<Time>,
    /// With `paid_until`: the cloud's billing step (an hour billed by the hour), so a move can
    /// tell whether the node it leaves will be released before the next step begins.
    pub billing_step: Option<std::time::Duration>,
    /// What it holds of the budget per hour, when the caller knows better than the offering's
    /// price now: a node not yet Ready holds the dearest candidate it may still fail over to;
    /// a running one, the price it was launched at. `None`: the offering's current price.
    pub held_per_hour: Option<Money>,
    /// Its disk holds the app's model weights (or is fetching them): its region is warm
    /// ([`crate::coldstart`]).
    pub holds_weights: bool,
    /// Since when it has hosted no runner (`None`: it hosts some, or the caller does not know).
    pub empty_since: Option<Time>,
}

impl NodeView {
    pub fn new(id: NodeId, offering: OfferingId, slots: u32) -> NodeView {
        NodeView {
            id,
            offering,
            slots,
            leaving: false,
            replaced: 0,
            billed_since: None,
            paid_until: None,
            billing_step: None,
            held_per_hour: None,
            holds_weights: false,
            empty_since: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerView {
    pub runner: RunnerInfo,
    pub node: NodeId,
}

/// What is true of one app now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppView {
    pub queued: u32,
    pub in_flight: u32,
    pub scale_up_pending_since: Option<Time>,
    pub runners: Vec<RunnerView>,
    pub nodes: Vec<NodeView>,
    pub month_to_date: Money,
    /// The app's recent desired runners and what re-creating one costs (for `keep_alive = "auto"`).
    pub demand: DemandHistory,
    /// Hourly price of the app's billing nodes the plan cannot see as capacity (their offering
    /// left the catalog, or they are draining or terminating): they still count against every
    /// budget until the cloud stops billing them.
    pub outside_burn: Money,
    /// What the app's cold start is made of, where known: new nodes then prefer regions that
    /// hold its weights, and a region's last copy is kept a while ([`crate::coldstart`]).
    pub cold_start: Option<crate::coldstart::ColdStartModel>,
}

#[derive(Debug, Clone)]
pub struct FleetView<'a> {
    pub now: Time,
    /// Apps missing here have no runners, nodes or demand.
    pub apps: BTreeMap<String, AppView>,
    pub unavailable: &'a UnavailableCache,
    pub fleet_month_to_date: Money,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// How many offerings each new node may fail over through.
    pub max_candidates: usize,
    /// Consolidation: a move must pay for itself within this long (`None`: never consolidate).
    pub consolidation_horizon: Option<std::time::Duration>,
}

impl Default for PlanOptions {
    /// 16 failover candidates; consolidation moves that pay within an hour.
    fn default() -> Self {
        PlanOptions { max_candidates: 16, consolidation_horizon: Some(std::time::Duration::from_secs(3600)) }
    }
}

/// A node to launch: try `candidates` in order until one succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    pub capacity: CapacityWanted,
    pub runners: u32,
    pub candidates: Vec<Candidate>,
    /// The dearest candidate's price: what this node holds of the budget.
    pub reserved_per_hour: Money,
    /// The runners it is sized for: `runners`, and room for the runners of nodes of the app it
    /// is to take over ([`sizing::absorbing_mix`]); its candidates fit this many.
    pub sized_for: u32,
    /// Why this node has the size it has (the mix it belongs to, and what the lowest-$/GPU
    /// offering would have cost for the same runners).
    pub why: String,
}

/// Runners demand wants that this decision does not place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unplaced {
    pub runners: u32,
    pub capacity: CapacityWanted,
    pub why: String,
    pub budget_cap: Option<BudgetCap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppPlan {
    pub app: String,
    pub decision: ScaleDecision,
    pub split: CapacitySplit,
    /// Runners started on free slots of existing nodes: (node, count).
    pub on_existing: Vec<(NodeId, u32)>,
    pub new_nodes: Vec<NodePlan>,
    /// Nodes left with no runners: terminate them.
    pub release_nodes: Vec<NodeId>,
    /// Nodes to consolidate away: mark them leaving (see [`crate::consolidate`]).
    pub consolidate: Option<Move>,
    /// Replacements started this decision for leaving nodes' runners (counted in
    /// `decision.start`): add them to the nodes' `replaced`.
    pub replaced: Vec<(NodeId, u32)>,
    /// Leaving nodes whose runners cannot be replaced now: unmark them (they stay, serving).
    pub cancel_moves: Vec<NodeId>,
    pub unplaced: Vec<Unplaced>,
    /// The monthly cap whose money runs out within ten minutes: the app winds down to its floor
    /// (`min_concurrency` where `keep_min_over_budget`, else none).
    pub winding_down: Option<BudgetCap>,
    pub burn_per_hour: Money,
    /// The most the new nodes can add per hour.
    pub max_added_per_hour: Money,
    /// The app's requests in flight weighted by their runners' speed, in thousandths of an
    /// H100's work: what the caller records in its [`crate::autoscale::DemandSample`]. Requests
    /// in flight that no runner given counts are taken at the runners' mean speed (an H100's
    /// with none).
    pub in_flight_work: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetPlan {
    pub apps: Vec<AppPlan>,
    pub burn_per_hour: Money,
    pub max_added_per_hour: Money,
}

/// Hashes caller-assigned numeric ids (runners, nodes) by one multiplication: they are often
/// sequential, and planning runs every tick of a simulation, so SipHash showed in profiles.
#[derive(Default)]
struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads sequential ids over the high bits hash tables use.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdBuild = BuildHasherDefault<IdHash>;

/// The (cloud, region) pairs where a node of the app holds its weights.
fn warm_regions<'a>(
    index: &'a PlacementIndex,
    st: &AppView,
) -> std::collections::BTreeSet<(fleet_core::Cloud, &'a str)> {
    st.nodes
        .iter()
        .filter(|n| n.holds_weights)
        .map(|n| {
            let o = index.offering(n.offering);
            (o.cloud, o.region.as_str())
        })
        .collect()
}

/// Whether empty node `n` stays: it holds its region's last copy of the app's weights (no
/// other node of the app there keeps one: one that serves, or an empty one listed before it)
/// and has been empty for less than that copy is worth
/// ([`crate::coldstart::ColdStartModel::keep_last_copy_for`]).
fn keeps_last_copy(
    index: &PlacementIndex,
    st: &AppView,
    n: &NodeView,
    now: Time,
    empty: &dyn Fn(&NodeView) -> bool,
) -> bool {
    let (Some(m), Some(since)) = (&st.cold_start, n.empty_since) else { return false };
    if !n.holds_weights || n.leaving {
        return false;
    }
    let o = index.offering(n.offering);
    let others = st.nodes.iter().any(|x| {
        let p = index.offering(x.offering);
        x.id != n.id
            && x.holds_weights
            && !x.leaving
            && p.cloud == o.cloud
            && p.region == o.region
            && (!empty(x) || x.id < n.id)
    });
    if others {
        return false;
    }
    let price = n.held_per_hour.map(Price::per_hour).unwrap_or(o.price);
    (now - since).to_std().unwrap_or_default() < m.keep_last_copy_for(price)
}

fn capacity_of(index: &PlacementIndex, id: OfferingId) -> CapacityType {
    index.offering(id).capacity
}

/// Puts up to `want` runners on free slots of nodes whose capacity type `ok` accepts; returns how
/// many are left.
fn fill(
    want: u32,
    ok: impl Fn(CapacityType) -> bool,
    free: &mut [(NodeId, CapacityType, u32)],
    on_existing: &mut BTreeMap<NodeId, u32>,
) -> u32 {
    let mut left = want;
    for (id, cap, f) in free.iter_mut() {
        if left == 0 {
            break;
        }
        if ok(*cap) && *f > 0 {
            let n = left.min(*f);
            *f -= n;
            left -= n;
            *on_existing.entry(*id).or_default() += n;
        }
    }
    left
}

/// Says why a mix of node sizes was chosen: its nodes, its price, and what nodes of the lowest
/// $/GPU offering would have cost for the same runners.
fn describe_mix(
    index: &PlacementIndex,
    app: usize,
    input: &RankInput,
    classes: &[SizeClass],
    nodes: &[SizedNode],
    price: Money,
    runners: u32,
) -> String {
    let mut counts: BTreeMap<(u32, CapacityType), (u32, Money)> = BTreeMap::new();
    for n in nodes {
        let c = classes[n.class];
        counts.entry((c.fits, c.capacity)).or_insert((0, c.price)).0 += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .rev()
        .map(|((fits, cap), (k, p))| format!("{k} × {fits}-runner {cap} node at {}/h", p.cents()))
        .collect();
    let mut s = format!("cheapest mix for {runners} runner(s): {} = {}/h", parts.join(" + "), price.cents());
    if let Some(top) = index.best(app, input) {
        let per_gpu = top.node_price.hourly().times(runners.div_ceil(top.runners_per_node.max(1)));
        if per_gpu > price {
            s += &format!(
                "; the lowest $/GPU offering ({} runners per node) would cost {}/h",
                top.runners_per_node,
                per_gpu.cents()
            );
        }
    }
    s
}

/// The app's `base_on_demand` runners: up to `base` of those on on-demand nodes not leaving
/// (serving ones first, then the cheapest per slot). Scale-down takes their slots as the
/// cheapest of all, so it stops spot runners before them: the spec asks that this many runners
/// never run on spot, and stopping the dearest slots first (until 2026-12-03) stopped the
/// on-demand ones first, leaving an app that had scaled down on spot alone, which one wave of
/// preemptions can take whole. Runners beyond the base on on-demand nodes (spot's fallback)
/// still go first.
fn base_runners(
    st: &AppView,
    node_of: &HashMap<NodeId, &NodeView, IdBuild>,
    index: &PlacementIndex,
    base: u32,
) -> HashSet<RunnerId, IdBuild> {
    if base == 0 {
        return HashSet::default();
    }
    let mut on_demand: Vec<(&RunnerInfo, Price)> = st
        .runners
        .iter()
        .filter_map(|r| {
            let n = node_of.get(&r.node)?;
            let o = index.offering(n.offering);
            (!n.leaving && o.capacity == CapacityType::OnDemand)
                .then_some((&r.runner, o.work_price().per_gpu(n.slots.max(1))))
        })
        .collect();
    on_demand
        .sort_by(|(a, pa), (b, pb)| (b.in_flight > 0).cmp(&(a.in_flight > 0)).then(pa.cmp(pb)).then(a.id.cmp(&b.id)));
    on_demand.into_iter().take(base as usize).map(|(r, _)| r.id).collect()
}

/// Over a monthly cap: nothing starts, and runners beyond `floor` stop — those not serving yet
/// first, then idle ones, then the dearest slots.
fn wind_down(decision: &mut ScaleDecision, runners: &[RunnerInfo], floor: u32) {
    decision.start = 0;
    decision.pending_since = None;
    let stopping: HashSet<RunnerId, IdBuild> = decision.stop.iter().copied().collect();
    let mut staying: Vec<&RunnerInfo> = runners.iter().filter(|r| !stopping.contains(&r.id)).collect();
    let excess = staying.len().saturating_sub(floor as usize);
    staying.sort_by(|a, b| {
        (a.ready, a.in_flight > 0, std::cmp::Reverse(a.slot_price), a.id).cmp(&(
            b.ready,
            b.in_flight > 0,
            std::cmp::Reverse(b.slot_price),
            b.id,
        ))
    });
    decision.stop.extend(staying.iter().take(excess).map(|r| r.id));
    decision.target.desired = decision.target.desired.min(floor);
    decision.target.wanted = decision.target.wanted.min(floor);
}

/// [`AppPlan::in_flight_work`]: every runner's requests in flight at its node's GPU's speed (a
/// leaving node's too: they are served there), the rest at the mean of those speeds; never more
/// requests than the app has in flight.
fn in_flight_work(st: &AppView, work_milli: &dyn Fn(&RunnerView) -> u32) -> u64 {
    let (mut work, mut counted, mut speeds, mut runners) = (0u64, 0u64, 0u64, 0u64);
    for r in &st.runners {
        let w = u64::from(work_milli(r));
        if w == 0 {
            continue;
        }
        work += u64::from(r.runner.in_flight) * w;
        counted += u64::from(r.runner.in_flight);
        speeds += w;
        runners += 1;
    }
    let total = u64::from(st.in_flight);
    if counted >= total {
        // The runners count more than the app's total (a view taken between two records):
        // their mean speed over the total.
        return (work * total).checked_div(counted).unwrap_or(0);
    }
    let mean = speeds.checked_div(runners).unwrap_or(1000);
    work + (total - counted) * mean
}

/// The speed (thousandths of an H100's work, weighted by runners) of the GPUs that the
/// cheapest mix of new nodes for `n` runners has ([`sizing::cheapest_mix`] over `classes`); 0
/// where no offering can be had.
fn mix_work_milli(index: &PlacementIndex, classes: &[SizeClass], n: u32) -> u32 {
    let Some((_, nodes)) = sizing::cheapest_mix(classes, n) else { return 0 };
    let (work, runners) = nodes.iter().fold((0u64, 0u64), |(w, r), node| {
        let milli = index.offering(classes[node.class].offering).instance.gpu.work_milli();
        (w + u64::from(milli) * u64::from(node.runners), r + u64::from(node.runners))
    });
    work.checked_div(runners).map_or(0, |w| u32::try_from(w).unwrap_or(u32::MAX))
}

/// Plans the whole fleet. Pure: same inputs, same plan.
pub fn plan(index: &PlacementIndex, spec: &FleetSpec, state: &FleetView, opts: &PlanOptions) -> FleetPlan {
    let now = state.now;
    let empty = AppView::default();
    let all_nodes = || state.apps.values().flat_map(|a| a.nodes.iter());
    let mut quota_used = index.quota_usage(all_nodes().map(|n| n.offering));
    let held = |n: &NodeView| n.held_per_hour.unwrap_or_else(|| index.offering(n.offering).price.hourly());
    let fleet_burn: Money =
        all_nodes().map(held).sum::<Money>() + state.apps.values().map(|a| a.outside_burn).sum::<Money>();
    let mut fleet_room = budget::headroom(
        &spec.budget,
        &Spend { burn_per_hour: fleet_burn, month_to_date: state.fleet_month_to_date },
        now,
        None,
    );
    let mut apps = Vec::with_capacity(spec.apps.len());
    let mut fleet_added = Money::ZERO;

    for (i, app) in spec.apps.iter().enumerate() {
        let st = state.apps.get(&app.name).unwrap_or(&empty);
        let burn: Money = st.nodes.iter().map(held).sum::<Money>() + st.outside_burn;
        let app_spend = Spend { burn_per_hour: burn, month_to_date: st.month_to_date };
        let mut app_room = budget::headroom(&app.budget, &app_spend, now, Some(&app.name));
        // The month's money runs out within ten minutes at this burn: no new runner, and
        // runners above the floor wind down (stopping drains them: what they serve finishes).
        let winding_down = budget::month_exhausted(&app.budget, &app_spend, now, Some(&app.name)).or_else(|| {
            let fleet_spend = Spend { burn_per_hour: fleet_burn, month_to_date: state.fleet_month_to_date };
            budget::month_exhausted(&spec.budget, &fleet_spend, now, None)
        });
        // Each runner's slot price: its node's price per hour of H100 work over the runners on
        // it now, so scale-down empties the dearest nodes per used slot of work first. An app
        // allowing several GPU families gets runners of each, and an A100 runner is billed less
        // than an H100 runner but serves about a third of its requests: by the bill alone
        // (until 2026-12-03), scale-down stopped the H100 runners and kept the dearer work.
        let mut on_node: HashMap<NodeId, u32, IdBuild> =
            HashMap::with_capacity_and_hasher(st.nodes.len(), IdBuild::default());
        for r in &st.runners {
            *on_node.entry(r.node).or_default() += 1;
        }
        let node_of: HashMap<NodeId, &NodeView, IdBuild> = st.nodes.iter().map(|n| (n.id, n)).collect();
        let base = base_runners(st, &node_of, index, app.placement.base_on_demand);
        // A runner's speed: its node's GPU's (as given where its node is not).
        let work_milli = |r: &RunnerView| {
            node_of.get(&r.node).map_or(r.runner.work_milli, |n| index.offering(n.offering).instance.gpu.work_milli())
        };
        // A leaving node's runners are replaced one for one: those not replaced yet count for
        // the autoscaler as they are; a replaced one is represented by its replacement.
        let leaving: HashMap<NodeId, u32, IdBuild> =
            st.nodes.iter().filter(|n| n.leaving).map(|n| (n.id, n.replaced)).collect();
        let mut seen: HashMap<NodeId, u32, IdBuild> =
            HashMap::with_capacity_and_hasher(leaving.len(), IdBuild::default());
        let infos: Vec<RunnerInfo> = st
            .runners
            .iter()
            .filter(|r| match leaving.get(&r.node) {
                None => true,
                Some(replaced) => {
                    let k = seen.entry(r.node).or_default();
                    *k += 1;
                    *k > *replaced
                }
            })
            .map(|r| {
                let node = node_of.get(&r.node);
                let slot_price = node
                    .map_or(r.runner.slot_price, |n| index.offering(n.offering).work_price().per_gpu(on_node[&r.node]));
                RunnerInfo {
                    slot_price: if base.contains(&r.runner.id) { Price::ZERO } else { slot_price },
                    paid_until: node.map_or(r.runner.paid_until, |n| n.paid_until),
                    work_milli: work_milli(r),
                    ..r.runner
                }
            })
            .collect();
        let in_flight_work = in_flight_work(st, &work_milli);
        // `predict` sizes the runners it starts for the GPU they will run on: the one the
        // cheapest mix of new nodes for that many runners has (as placed below), which depends
        // on how many start (one runner: the cheapest small node; sixteen: 8-GPU nodes). So the
        // decision is made for the app's cheapest runner's speed, then again for the speed of
        // the mix for the runners it starts, until a speed comes round again or three more
        // decisions are made. Where the speeds cycle (one runner fits an A100 node, three an
        // H100 node sized for four: sized for the A100, three start and get H100s; sized for
        // the H100, one starts and gets an A100), the fewest starts of the cycle stand: a start
        // too small is made up at the next pass, the runners it started counted at their own
        // speed, while a start too large is paid for, a new node's minimum billing and more.
        // Until 2026-12-04 the cheapest runner's speed stood (see [`autoscale::decide_next`]).
        let mix_kinds: &[CapacityWanted] = match app.placement.spot {
            SpotPolicy::Spot => &[CapacityWanted::Spot],
            SpotPolicy::OnDemand => &[CapacityWanted::OnDemand],
            SpotPolicy::Auto => &[CapacityWanted::Spot, CapacityWanted::OnDemand],
        };
        let decide = |next_work_milli: u32| {
            autoscale::decide_next(
                &app.scaling,
                st.queued,
                st.in_flight,
                st.scale_up_pending_since,
                &infos,
                &st.demand,
                next_work_milli,
                now,
            )
        };
        let mut decision = decide(0);
        if app.scaling.predict && decision.start > 0 {
            // The sizes a new node can have now (the same at every decision of this pass).
            let base = RankInput { quota_used: &quota_used, ..RankInput::new(now, state.unavailable) };
            let classes: Vec<SizeClass> = mix_kinds
                .iter()
                .flat_map(|k| index.size_classes(i, &RankInput { capacity: *k, ..base.clone() }))
                .collect();
            // The speeds decided at, each with its decision.
            let mut tried: Vec<(u32, ScaleDecision)> = Vec::new();
            while decision.start > 0 && tried.len() < 3 {
                let w = mix_work_milli(index, &classes, decision.start);
                if w == 0 {
                    break;
                }
                if let Some(k) = tried.iter().position(|(t, _)| *t == w) {
                    // The last decision's own speed: they agree. An earlier one's: a cycle.
                    if let Some((_, fewest)) = tried[k..].iter().min_by_key(|(_, d)| d.start)
                        && fewest.start < decision.start
                    {
                        decision = fewest.clone();
                    }
                    break;
                }
                decision = decide(w);
                tried.push((w, decision.clone()));
            }
        }
        if winding_down.is_some() {
            wind_down(
                &mut decision,
                &infos,
                if app.scaling.keep_min_over_budget { app.scaling.min_concurrency } else { 0 },
            );
        }

        let mut replaced: Vec<(NodeId, u32)> = Vec::new();
        let mut move_cap: Option<Money> = None;
        // The same, per hour of H100 work: a replacement of a slower GPU may bill less and still
        // buy less work (an A100 node for an H100 node's runners), which is no saving.
        let mut move_work_cap: Option<Money> = None;
        if !leaving.is_empty() {
            let autoscaler_stops: HashSet<RunnerId, IdBuild> = decision.stop.iter().copied().collect();
            // Replacements still owed per leaving node: its runners the autoscaler keeps, less
            // those already replaced. They start now (a move waits for no scaling delay).
            let mut all_replaced = true;
            for (node, done) in &leaving {
                let kept =
                    st.runners.iter().filter(|r| r.node == *node && !autoscaler_stops.contains(&r.runner.id)).count()
                        as u32;
                let owed = kept.saturating_sub(*done);
                if owed > 0 {
                    replaced.push((*node, owed));
                    decision.start += owed;
                    all_replaced = false;
                }
            }
            replaced.sort_unstable();
            // Each replacement node must cost less than the nodes it replaces together (one
            // node, or the nodes of a merge), whatever candidate a launch ends up on (a failover
            // to a dearer offering would undo the saving).
            move_cap = (!replaced.is_empty()).then(|| {
                replaced
                    .iter()
                    .filter_map(|(id, _)| node_of.get(id))
                    .map(|n| index.offering(n.offering).price.hourly())
                    .sum::<Money>()
                    - Money::from_micros(1)
            });
            move_work_cap = (!replaced.is_empty()).then(|| {
                replaced
                    .iter()
                    .filter_map(|(id, _)| node_of.get(id))
                    .map(|n| index.offering(n.offering).work_price().hourly())
                    .sum::<Money>()
                    - Money::from_micros(1)
            });
            // Once every replacement serves, the leaving nodes' runners stop: a stop drains (no
            // new request is claimed, those in flight finish), so nothing is lost or served
            // twice. Ones still starting there serve nothing and stop at once.
            let starting =
                !all_replaced || st.runners.iter().any(|r| !r.runner.ready && !leaving.contains_key(&r.node));
            for r in st.runners.iter().filter(|r| leaving.contains_key(&r.node)) {
                if autoscaler_stops.contains(&r.runner.id) {
                    continue;
                }
                if !r.runner.ready || !starting {
                    decision.stop.push(r.runner.id);
                }
            }
        }
        // Runners that stay, per node.
        let stopping: HashSet<RunnerId, IdBuild> = decision.stop.iter().copied().collect();
        let mut hosted: HashMap<NodeId, u32, IdBuild> = st.nodes.iter().map(|n| (n.id, 0)).collect();
        for r in st.runners.iter().filter(|r| !stopping.contains(&r.runner.id)) {
            *hosted.entry(r.node).or_default() += 1;
        }
        let on_demand_running: u32 = st
            .nodes
            .iter()
            .filter(|n| !n.leaving && capacity_of(index, n.offering) == CapacityType::OnDemand)
            .map(|n| hosted[&n.id])
            .sum();
        let spot_available = app.placement.spot != SpotPolicy::OnDemand && {
            let probe = RankInput {
                capacity: CapacityWanted::Spot,
                quota_used: &quota_used,
                ..RankInput::new(now, state.unavailable)
            };
            index.best(i, &probe).is_some()
        };
        let split = spot::split(
            app.placement.spot,
            app.placement.base_on_demand,
            on_demand_running,
            decision.start,
            spot_available,
        );

        // Free slots on existing nodes: the fullest nodes first, so emptier ones can drain.
        let mut free: Vec<(NodeId, CapacityType, u32)> = st
            .nodes
            .iter()
            .filter(|n| !n.leaving)
            .map(|n| (n.id, capacity_of(index, n.offering), n.slots.saturating_sub(hosted[&n.id])))
            .filter(|(_, _, f)| *f > 0)
            .collect();
        free.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
        let mut on_existing: BTreeMap<NodeId, u32> = BTreeMap::new();
        let od_left = fill(split.on_demand, |c| c == CapacityType::OnDemand, &mut free, &mut on_existing);
        // Spot runners take spot nodes' slots first, then any paid-for slot.
        let spot_left = fill(split.spot, |c| c == CapacityType::Spot, &mut free, &mut on_existing);
        let spot_left = fill(spot_left, |_| true, &mut free, &mut on_existing);

        let mut new_nodes = Vec::new();
        let mut unplaced = Vec::new();
        let mut added = Money::ZERO;
        // Spot runners of an `auto` app may go on on-demand nodes where that is the cheaper way to
        // host them (a small on-demand node against a large spot one); each node keeps to one
        // capacity type, so its failover list does too.
        let spot_kinds: &[CapacityWanted] = if app.placement.spot == SpotPolicy::Auto {
            &[CapacityWanted::Spot, CapacityWanted::OnDemand]
        } else {
            &[CapacityWanted::Spot]
        };
        // New nodes may be sized with room for the runners of the app's nodes they will take over
        // (`sizing::absorbing_mix`): only where consolidation will move those runners, and only
        // where a new node's minimum billing is longer than its cold start (billed by the hour):
        // merging the nodes later then pays a whole minimum billing more, which sizing for them
        // now saves, and the saving is counted over that minimum. Billed by the second, a later
        // merge costs a cold start, and consolidation makes it once the level has lasted; room
        // made at launch bets on a level a burst may not keep (measured: the code trace's bursts
        // on 1-GPU runners, $7.08 → $12.44, room on 8-GPU nodes the level left at once). The
        // nodes, by capacity type, dearest per runner first.
        let min_billing = st.demand.recreate.saturating_sub(st.demand.cold_start);
        let absorb_horizon = opts
            .consolidation_horizon
            .filter(|h| app.scaling.consolidation && !h.is_zero() && min_billing > st.demand.cold_start)
            .map(|_| min_billing);
        let movable = |capacity: CapacityWanted| -> Vec<sizing::Movable> {
            let mut v: Vec<(Money, NodeId, sizing::Movable)> = st
                .nodes
                .iter()
                .filter(|n| !n.leaving && capacity.accepts(capacity_of(index, n.offering)))
                .filter_map(|n| {
                    let runners = hosted[&n.id] + on_existing.get(&n.id).copied().unwrap_or(0);
                    let paid = n.paid_until.map(|p| (p - now).to_std().unwrap_or_default()).unwrap_or_default();
                    let price = held(n);
                    (runners > 0).then(|| {
                        let m = sizing::Movable { price, runners, release_in: paid.max(st.demand.cold_start) };
                        (price.divided_by(runners), n.id, m)
                    })
                })
                .collect();
            v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            v.into_iter().map(|(_, _, m)| m).collect()
        };
        for (capacity, kinds, wanted) in [
            (CapacityWanted::OnDemand, &[CapacityWanted::OnDemand][..], od_left),
            (CapacityWanted::Spot, spot_kinds, spot_left),
        ] {
            let mut left = wanted;
            // The cheapest mix of node sizes for the runners left (see `sizing`), taken one node
            // at a time; made again when a node's price moved (a quota filled meanwhile).
            // Each node of the mix: its size, the runners it starts, the runners it is sized for.
            let mut mix: std::collections::VecDeque<(SizeClass, u32, u32)> = Default::default();
            let mut mix_note = String::new();
            // Room for other nodes' runners is made once per capacity type.
            let mut absorbing = absorb_horizon;
            while left > 0 {
                let base = RankInput { capacity, quota_used: &quota_used, ..RankInput::new(now, state.unavailable) };
                if mix.is_empty() {
                    let classes: Vec<SizeClass> = kinds
                        .iter()
                        .flat_map(|k| index.size_classes(i, &RankInput { capacity: *k, ..base.clone() }))
                        .collect();
                    let Some((price, nodes)) = sizing::cheapest_mix(&classes, left) else {
                        let why = if capacity == CapacityWanted::Spot {
                            "no spot offering can be had now; waiting for spot (policy \"spot\")".to_string()
                        } else {
                            "no offering can be had now: every one is excluded or recently failed".to_string()
                        };
                        unplaced.push(Unplaced { runners: left, capacity, why, budget_cap: None });
                        break;
                    };
                    mix = nodes.iter().map(|n| (classes[n.class], n.runners, n.runners)).collect();
                    mix_note = describe_mix(index, i, &base, &classes, &nodes, price, left);
                    if let Some(horizon) = absorbing.take()
                        && let Some(a) = sizing::absorbing_mix(&classes, left, &movable(capacity), horizon)
                    {
                        mix = a
                            .nodes
                            .iter()
                            .zip(&a.sized_for)
                            .map(|(n, sized)| (classes[n.class], n.runners, *sized))
                            .collect();
                        let sized_nodes: Vec<SizedNode> = a
                            .nodes
                            .iter()
                            .zip(&a.sized_for)
                            .map(|(n, sized)| SizedNode { class: n.class, runners: *sized })
                            .collect();
                        mix_note = format!(
                            "sized with room for the {} runner(s) of {} node(s) of the app it takes over once they \
                             have used what they are paid for ({} saved over a new node's minimum billing after \
                             that, net of the larger nodes' price until then); {}",
                            a.room,
                            a.absorbs,
                            a.net_saving.cents(),
                            describe_mix(index, i, &base, &classes, &sized_nodes, a.price, left + a.room)
                        );
                    }
                }
                let (class, r, sized) = mix.pop_front().expect("mix is not empty");
                let node_capacity = match class.capacity {
                    CapacityType::Spot => CapacityWanted::Spot,
                    _ => CapacityWanted::OnDemand,
                };
                let base = RankInput { capacity: node_capacity, ..base };
                let room = app_room.clone().min(fleet_room.clone());
                let nodes_left = mix.len() as u32 + 1;
                let cap = |m: Option<Money>| match (m, move_cap) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let share = cap(room.per_hour.map(|h| h.divided_by(nodes_left)));
                let rank_with = |max: Option<Money>, runners: u32| {
                    let input = RankInput {
                        min_runners: runners,
                        max_node_price: max,
                        budget_cap: room.bound_by.as_ref(),
                        ..base.clone()
                    };
                    let mut c = index.rank_for_runners(i, &input, opts.max_candidates);
                    if let Some(w) = move_work_cap {
                        c.retain(|c| c.work_price.hourly() <= w);
                    }
                    c
                };
                let mut candidates = rank_with(share, sized);
                if candidates.is_empty() && share != cap(room.per_hour) {
                    candidates = rank_with(cap(room.per_hour), sized);
                }
                // The mix's node is dearer than the room left: a node for fewer runners that fits
                // it instead (a budget that pays for three 1-GPU nodes but not the 8-GPU node the
                // mix wants gets the three), the mix made again for what is left after it.
                let (mut r, mut sized) = (r, sized);
                // No room in the budget for the room: a node for its own runners.
                if candidates.is_empty() && sized > r {
                    sized = r;
                    candidates = rank_with(share, r);
                    if candidates.is_empty() && share != cap(room.per_hour) {
                        candidates = rank_with(cap(room.per_hour), r);
                    }
                }
                if candidates.is_empty()
                    && room.per_hour.is_some()
                    && let Some((fewer, c)) =
                        (1..r).rev().map(|n| (n, rank_with(cap(room.per_hour), n))).find(|(_, c)| !c.is_empty())
                {
                    mix_note = format!(
                        "budget: a node for {r} runner(s) at {}/h exceeds the room left ({}/h{}), so the largest node it pays for; {mix_note}",
                        class.price.cents(),
                        room.per_hour.unwrap_or(Money::ZERO).cents(),
                        room.bound_by.as_ref().map(|b| format!(" under the {b}")).unwrap_or_default()
                    );
                    candidates = c;
                    r = fewer;
                    sized = fewer;
                    mix.clear();
                }
                if candidates.is_empty() {
                    unplaced.push(Unplaced {
                        runners: left,
                        capacity,
                        why: format!(
                            "budget: the cheapest node for {r} runner(s), {}/h, exceeds the room left ({}/h){}",
                            class.price.cents(),
                            room.per_hour.unwrap_or(Money::ZERO).cents(),
                            room.bound_by.as_ref().map(|b| format!(" under the {b}")).unwrap_or_default()
                        ),
                        budget_cap: room.bound_by.clone(),
                    });
                    break;
                }
                if let Some(m) = &st.cold_start {
                    let warm = warm_regions(index, st);
                    crate::coldstart::order(
                        &mut candidates,
                        m,
                        |c| {
                            let o = index.offering(c.offering);
                            warm.contains(&(o.cloud, o.region.as_str()))
                        },
                        |c| c.work_price,
                    );
                }
                let reserved = candidates.iter().map(|c| c.node_price.hourly()).max().unwrap_or(Money::ZERO);
                app_room.consume(reserved);
                fleet_room.consume(reserved);
                added += reserved;
                // Count the node against every quota any of its candidates would use.
                let mut hit = vec![false; quota_used.len()];
                for c in &candidates {
                    for q in index.quotas_of(c.offering) {
                        hit[*q as usize] = true;
                    }
                }
                let quota_moved = hit.iter().any(|h| *h);
                for (q, h) in hit.iter().enumerate() {
                    if *h {
                        quota_used[q] += candidates.iter().map(|c| c.gpus).max().unwrap_or(0);
                    }
                }
                let why = format!("{r} of {} runners it fits; {mix_note}", candidates[0].runners_per_node);
                new_nodes.push(NodePlan {
                    capacity: node_capacity,
                    runners: r,
                    candidates,
                    reserved_per_hour: reserved,
                    sized_for: sized,
                    why,
                });
                left -= r;
                if quota_moved {
                    // A quota filled a little: the sizes still to come may cost more now.
                    mix.clear();
                }
            }
        }

        let empty = |n: &NodeView| hosted[&n.id] == 0 && !on_existing.contains_key(&n.id);
        let release_nodes: Vec<NodeId> =
            st.nodes.iter().filter(|n| empty(n) && !keeps_last_copy(index, st, n, now, &empty)).map(|n| n.id).collect();
        // A move whose replacements cannot be placed is called off; the node stays, serving.
        let cancel_moves: Vec<NodeId> = if unplaced.is_empty() {
            Vec::new()
        } else {
            st.nodes.iter().filter(|n| n.leaving && hosted[&n.id] > 0).map(|n| n.id).collect()
        };
        // A new move only while the app is steady: nothing starting, stopping, leaving or
        // waiting to be placed.
        let steady = leaving.is_empty()
            && decision.start == 0
            && decision.stop.is_empty()
            && unplaced.is_empty()
            && new_nodes.is_empty()
            && st.runners.iter().all(|r| r.runner.ready);
        let warm = warm_regions(index, st);
        let warm_offering = |id: OfferingId| {
            let o = index.offering(id);
            warm.contains(&(o.cloud, o.region.as_str()))
        };
        let consolidate = match opts.consolidation_horizon {
            Some(horizon) if steady && app.scaling.consolidation && !st.nodes.is_empty() => {
                let live: Vec<NodeView> = st.nodes.iter().filter(|n| hosted[&n.id] > 0).cloned().collect();
                let used: Vec<u32> = live.iter().map(|n| hosted[&n.id]).collect();
                // The longest idle runner per node: the earliest idle since (one pass over the
                // runners), made a duration once per node.
                let mut earliest: HashMap<NodeId, Time, IdBuild> =
                    HashMap::with_capacity_and_hasher(live.len(), IdBuild::default());
                for r in st.runners.iter().filter(|r| r.runner.in_flight == 0) {
                    if let Some(t) = r.runner.idle_since {
                        let e = earliest.entry(r.node).or_insert(t);
                        *e = (*e).min(t);
                    }
                }
                let idle_for: Vec<std::time::Duration> = live
                    .iter()
                    .map(|n| earliest.get(&n.id).map(|t| (now - *t).to_std().unwrap_or_default()).unwrap_or_default())
                    .collect();
                let room = app_room.clone().min(fleet_room.clone());
                consolidate::consider(&consolidate::Input {
                    index,
                    app: i,
                    spec: app,
                    nodes: &live,
                    hosted: &used,
                    idle_for: &idle_for,
                    rank: RankInput {
                        quota_used: &quota_used,
                        max_node_price: room.per_hour,
                        budget_cap: room.bound_by.as_ref(),
                        ..RankInput::new(now, state.unavailable)
                    },
                    horizon,
                    wanted_again: &|level| st.demand.level_returns(level, now),
                    cold_start: st.demand.cold_start,
                    min_billing: st.demand.recreate.saturating_sub(st.demand.cold_start),
                    now,
                    weights: st.cold_start.as_ref().map(|m| (m, &warm_offering as &dyn Fn(OfferingId) -> bool)),
                })
            }
            _ => None,
        };
        fleet_added += added;
        apps.push(AppPlan {
            app: app.name.clone(),
            decision,
            split,
            on_existing: on_existing.into_iter().collect(),
            new_nodes,
            release_nodes,
            consolidate,
            replaced,
            cancel_moves,
            unplaced,
            winding_down,
            burn_per_hour: burn,
            max_added_per_hour: added,
            in_flight_work,
        });
    }
    FleetPlan { apps, burn_per_hour: fleet_burn, max_added_per_hour: fleet_added }
}

#[cfg(test)]
mod tests;
