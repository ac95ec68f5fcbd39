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
use fleet_core::{CapacityType, Money, NodeId, RunnerId, Time};
use serde::Serialize;

use crate::autoscale::{self, DemandHistory, RunnerInfo, ScaleDecision};
use crate::budget::{self, BudgetCap, Spend};
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
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { max_candidates: 16 }
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
    pub unplaced: Vec<Unplaced>,
    pub burn_per_hour: Money,
    /// The most the new nodes can add per hour.
    pub max_added_per_hour: Money,
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
    let parts: Vec<String> =
        counts.iter().rev().map(|((fits, cap), (k, p))| format!("{k} × {fits}-runner {cap} node at {p}/h")).collect();
    let mut s = format!("cheapest mix for {runners} runner(s): {} = {price}/h", parts.join(" + "));
    if let Some(top) = index.best(app, input) {
        let per_gpu = top.node_price.hourly().times(runners.div_ceil(top.runners_per_node.max(1)));
        if per_gpu > price {
            s += &format!(
                "; the lowest $/GPU offering ({} runners per node) would cost {per_gpu}/h",
                top.runners_per_node
            );
        }
    }
    s
}

/// Plans the whole fleet. Pure: same inputs, same plan.
pub fn plan(index: &PlacementIndex, spec: &FleetSpec, state: &FleetView, opts: &PlanOptions) -> FleetPlan {
    let now = state.now;
    let empty = AppView::default();
    let all_nodes = || state.apps.values().flat_map(|a| a.nodes.iter());
    let mut quota_used = index.quota_usage(all_nodes().map(|n| n.offering));
    let fleet_burn: Money = all_nodes().map(|n| index.offering(n.offering).price.hourly()).sum();
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
        let burn: Money = st.nodes.iter().map(|n| index.offering(n.offering).price.hourly()).sum();
        let mut app_room = budget::headroom(
            &app.budget,
            &Spend { burn_per_hour: burn, month_to_date: st.month_to_date },
            now,
            Some(&app.name),
        );
        // Each runner's slot price: its node's price over the runners on it now, so scale-down
        // empties the dearest nodes per used slot first.
        let mut on_node: HashMap<NodeId, u32, IdBuild> = HashMap::default();
        for r in &st.runners {
            *on_node.entry(r.node).or_default() += 1;
        }
        let node_price: HashMap<NodeId, fleet_core::Price, IdBuild> =
            st.nodes.iter().map(|n| (n.id, index.offering(n.offering).price)).collect();
        let infos: Vec<RunnerInfo> = st
            .runners
            .iter()
            .map(|r| RunnerInfo {
                slot_price: node_price.get(&r.node).map_or(r.runner.slot_price, |p| p.per_gpu(on_node[&r.node])),
                ..r.runner
            })
            .collect();
        let decision = autoscale::decide_with(
            &app.scaling,
            st.queued,
            st.in_flight,
            st.scale_up_pending_since,
            &infos,
            &st.demand,
            now,
        );

        // Runners that stay, per node.
        let stopping: HashSet<RunnerId, IdBuild> = decision.stop.iter().copied().collect();
        let mut hosted: HashMap<NodeId, u32, IdBuild> = st.nodes.iter().map(|n| (n.id, 0)).collect();
        for r in st.runners.iter().filter(|r| !stopping.contains(&r.runner.id)) {
            *hosted.entry(r.node).or_default() += 1;
        }
        let on_demand_running: u32 = st
            .nodes
            .iter()
            .filter(|n| capacity_of(index, n.offering) == CapacityType::OnDemand)
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
        for (capacity, kinds, wanted) in [
            (CapacityWanted::OnDemand, &[CapacityWanted::OnDemand][..], od_left),
            (CapacityWanted::Spot, spot_kinds, spot_left),
        ] {
            let mut left = wanted;
            // The cheapest mix of node sizes for the runners left (see `sizing`), taken one node
            // at a time; made again when a node's price moved (a quota filled meanwhile).
            let mut mix: std::collections::VecDeque<(SizeClass, u32)> = Default::default();
            let mut mix_note = String::new();
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
                    mix = nodes.iter().map(|n| (classes[n.class], n.runners)).collect();
                    mix_note = describe_mix(index, i, &base, &classes, &nodes, price, left);
                }
                let (class, r) = mix.pop_front().expect("mix is not empty");
                let node_capacity = match class.capacity {
                    CapacityType::Spot => CapacityWanted::Spot,
                    _ => CapacityWanted::OnDemand,
                };
                let base = RankInput { capacity: node_capacity, ..base };
                let room = app_room.clone().min(fleet_room.clone());
                let nodes_left = mix.len() as u32 + 1;
                let share = room.per_hour.map(|h| h.divided_by(nodes_left));
                let rank_with = |max: Option<Money>| {
                    let input = RankInput {
                        min_runners: r,
                        max_node_price: max,
                        budget_cap: room.bound_by.as_ref(),
                        ..base.clone()
                    };
                    index.rank_for_runners(i, &input, opts.max_candidates)
                };
                let mut candidates = rank_with(share);
                if candidates.is_empty() && share != room.per_hour {
                    candidates = rank_with(room.per_hour);
                }
                if candidates.is_empty() {
                    unplaced.push(Unplaced {
                        runners: left,
                        capacity,
                        why: format!(
                            "budget: the cheapest node for {r} runner(s), {}/h, exceeds the room left ({}/h)",
                            class.price,
                            room.per_hour.unwrap_or(Money::ZERO)
                        ),
                        budget_cap: room.bound_by.clone(),
                    });
                    break;
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
                    why,
                });
                left -= r;
                if quota_moved {
                    // A quota filled a little: the sizes still to come may cost more now.
                    mix.clear();
                }
            }
        }

        let release_nodes =
            st.nodes.iter().filter(|n| hosted[&n.id] == 0 && !on_existing.contains_key(&n.id)).map(|n| n.id).collect();
        fleet_added += added;
        apps.push(AppPlan {
            app: app.name.clone(),
            decision,
            split,
            on_existing: on_existing.into_iter().collect(),
            new_nodes,
            release_nodes,
            unplaced,
            burn_per_hour: burn,
            max_added_per_hour: added,
        });
    }
    FleetPlan { apps, burn_per_hour: fleet_burn, max_added_per_hour: fleet_added }
}

#[cfg(test)]
mod tests;
