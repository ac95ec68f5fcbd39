//! Consolidation (Karpenter's word for it): moving an app's runners to fewer or cheaper nodes
//! when that saves more over a stated horizon than the move costs.
//!
//! One node of an app is considered at a time, and only while the app is steady (every runner
//! ready, nothing to start or stop, no node already leaving), and only nodes whose runners have
//! served within the last cold start (a runner idle for longer is the autoscaler's to stop;
//! moved, it would start idle anew). For each such node:
//!
//! - **Delete**: its runners fit on the free slots of the app's other nodes. Saving: its price
//!   per hour. Cost: the minimum billing still owed on it (paid whether it runs or not).
//! - **Replace**: one node of another offering hosts its runners for less (a smaller size, spot
//!   where the app allows it and its on-demand base stays whole, a price that fell elsewhere).
//!   Saving: the price difference per hour. Cost: the new node's cold start (provision + boot +
//!   model load, billed before it serves) plus the minimum billing still owed on the old one.
//!   The new node must fit the budget room left, as any new node must. Nor may it do less work
//!   for its price than the old node ([`fleet_core::GpuModel::work_price`]): an A100 node that
//!   bills less than an H100 node but serves a third of its requests is no saving.
//! - **Merge**: several part-full nodes give way to one node that hosts all their runners for
//!   less than they cost together (seven 1-GPU nodes at $3/h → one 8-GPU node at $20/h). The
//!   groups tried: the app's movable nodes ordered by price per hosted runner, dearest first
//!   (the least used and dearest go first), and each prefix of two or more of that order.
//!   Saving: their prices less the new node's. Cost: the new node's cold start plus the minimum
//!   billing owed on all of them. The horizon is the youngest one's age.
//!
//! A move that leaves the app fewer free slots also costs what demand coming back beyond them
//! does: while demand wants a runner more than the slots left host, that runner needs a node of
//! its own (the cheapest for one), billed for the share of the time demand has wanted it and
//! through a cold start each time it came back, over the last hours
//! ([`crate::autoscale::DemandHistory::level_returns`]).
//!
//! A move is made when saving × min(horizon, the node's age) exceeds its cost (a node is expected
//! to stay about as long again as it has stayed); the best net saving wins. Carrying it
//! out is the plan's ([`crate::plan`]): the nodes are marked leaving (they take no new runners);
//! each of their runners is replaced one for one (the caller counts the replacements started, so
//! a crash in between never starts them twice), where the plan places new runners — free slots,
//! else the cheapest node mix, each candidate cheaper than the leaving nodes together (a failover
//! to a dearer offering would undo the saving); once every replacement serves, the leaving nodes'
//! runners stop — a stop drains: no new request is claimed, those in flight finish, so nothing is
//! lost or served twice — and the node, empty, is released. A move whose replacements cannot be
//! placed is called off ([`crate::plan::AppPlan::cancel_moves`]).

use std::time::Duration;

use fleet_core::spec::{AppSpec, SpotPolicy};
use fleet_core::{CapacityType, Money, NodeId, Price, Time};
use serde::Serialize;

use crate::autoscale::PREPAID_LEAD;
use crate::placement::{CapacityWanted, PlacementIndex, RankInput};
use crate::plan::NodeView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveKind {
    /// Its runners move to free slots of the app's other nodes.
    Delete,
    /// Its runners move to one new, cheaper node.
    Replace,
    /// The runners of several nodes move to one new node that costs less than they do together.
    Merge,
}

/// Nodes to consolidate away: one (delete, replace) or several (merge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub nodes: Vec<NodeId>,
    pub kind: MoveKind,
    pub saving_per_hour: Money,
    /// What the move itself costs (cold start billed, minimum billing left), and what demand
    /// coming back beyond the free slots it leaves costs over the saving's span.
    pub cost: Money,
    pub why: String,
}

/// What [`consider`] weighs for one app.
pub struct Input<'a> {
    pub index: &'a PlacementIndex,
    pub app: usize,
    pub spec: &'a AppSpec,
    /// The app's nodes, the runners each hosts, and how long the longest idle of those has been
    /// idle (zero while all serve; same order).
    pub nodes: &'a [NodeView],
    pub hosted: &'a [u32],
    pub idle_for: &'a [Duration],
    pub rank: RankInput<'a>,
    /// The saving must pay for the move within this long.
    pub horizon: Duration,
    /// How demand has wanted `level` runners of the app
    /// ([`crate::autoscale::DemandHistory::level_returns`]). A move that leaves fewer free slots
    /// saves less while demand wants a runner beyond those left: that runner then needs a node
    /// of its own (a runner on a free slot needs none).
    pub wanted_again: &'a dyn Fn(u32) -> crate::autoscale::LevelReturns,
    /// Provision + boot + model load of a new node.
    pub cold_start: Duration,
    /// A new node's minimum billing.
    pub min_billing: Duration,
    pub now: Time,
    /// Where the app's weights come from ([`crate::coldstart`]), and whether an offering's
    /// region holds them: a move's new node is then priced with its own cold start (from peers
    /// or from the origin) and the origin's bill, instead of `cold_start` alone.
    pub weights: Option<(&'a crate::coldstart::ColdStartModel, &'a dyn Fn(crate::placement::OfferingId) -> bool)>,
}

/// What starting the move's new node `c` costs before it serves: its cold start billed, and
/// the origin's bill where its region is cold; with the cold start's length and that bill.
fn cold_cost(input: &Input, c: &crate::placement::Candidate) -> (Money, Duration, Money) {
    match input.weights {
        Some((m, warm)) => {
            let warm = warm(c.offering);
            let egress = if warm { Money::ZERO } else { m.egress() };
            (c.node_price.cost_for(m.cold_start(warm)) + egress, m.cold_start(warm), egress)
        }
        None => (c.node_price.cost_for(input.cold_start), input.cold_start, Money::ZERO),
    }
}

/// The new node's minimum billing beyond the `lasts` its saving is counted over: paid whether the
/// saving lasts or not (billed by the hour, a new node is an hour).
fn unused_minimum(input: &Input, c: &crate::placement::Candidate, lasts: Duration) -> Money {
    c.node_price.cost_for(input.min_billing.saturating_sub(lasts))
}

fn billing_note(owed: Money, unused: Money) -> String {
    let mut s = String::new();
    if owed > Money::ZERO {
        s += &format!(", {} of billing left", owed.cents());
    }
    if unused > Money::ZERO {
        s += &format!(", {} of the new node's minimum billing beyond the saving counted", unused.cents());
    }
    s
}

fn returns_note(returns: Money) -> String {
    if returns > Money::ZERO {
        format!("; and {} for the runner demand comes back to beyond the free slots it leaves", returns.cents())
    } else {
        String::new()
    }
}

fn egress_note(egress: Money) -> String {
    if egress > Money::ZERO { format!(", the weights from the origin {}", egress.cents()) } else { String::new() }
}

/// The billing still owed on node `n` (at `price` per hour), paid whether it runs or not: the
/// minimum billing left, or, billed by a longer step than the second, the paid time left once the
/// move releases it. The move releases it a cold start and [`PREPAID_LEAD`] from now (its
/// replacements serve, its runners drain); a release after `paid_until` pays the steps begun by
/// then. So a move just before the hour ends owes nearly the next hour, and one with more than
/// the move's length left owes what is left after it.
fn owed(input: &Input, n: &NodeView, price: Money) -> Money {
    let age = n.billed_since.map(|s| (input.now - s).to_std().unwrap_or_default()).unwrap_or_default();
    let left = |p: Time| (p - input.now).to_std().unwrap_or_default();
    let paid = match (n.paid_until, n.billing_step) {
        (Some(p), Some(step)) if !step.is_zero() => {
            let moving = input.cold_start + PREPAID_LEAD;
            let late = moving.saturating_sub(left(p));
            if late.is_zero() {
                // Released within the paid time: what is left of it after the release.
                left(p) - moving
            } else {
                // Steps begun after `p` by the release, less the part of them before it.
                let steps = late.as_nanos().div_ceil(step.as_nanos());
                step * u32::try_from(steps).unwrap_or(u32::MAX) - late
            }
        }
        (Some(p), _) => left(p),
        (None, _) => Duration::ZERO,
    };
    Price::per_hour(price).cost_for(input.min_billing.saturating_sub(age).max(paid))
}

/// The best move for one app now, if one pays.
pub fn consider(input: &Input) -> Option<Move> {
    let idx = input.index;
    let price_of = |n: &NodeView| idx.offering(n.offering).price.hourly();
    let capacity_of = |n: &NodeView| idx.offering(n.offering).capacity;
    let on_demand_runners: u32 = input
        .nodes
        .iter()
        .zip(input.hosted)
        .filter(|(n, _)| capacity_of(n) == CapacityType::OnDemand)
        .map(|(_, h)| *h)
        .sum();
    let free_total: u32 = input
        .nodes
        .iter()
        .zip(input.hosted)
        .filter(|(m, _)| !m.leaving)
        .map(|(m, used)| m.slots.saturating_sub(*used))
        .sum();
    // The cheapest single node for `h` runners of each kind depends on `h` alone: look it up once
    // (a short list: an app's nodes host few distinct runner counts; this runs every pass).
    let mut cheapest: Vec<((u32, usize), Option<crate::placement::Candidate>)> = Vec::new();
    let mut best: Option<(Money, Move)> = None;
    let returns_cost = returns_with(input, free_total);
    for (k, n) in input.nodes.iter().enumerate() {
        let h = input.hosted[k];
        // A node with a runner idle for longer than a cold start is the autoscaler's to shrink,
        // not this module's to move: a moved runner starts idle anew, and its node would outlive
        // the one it replaced.
        if h == 0 || n.leaving || input.idle_for[k] > input.cold_start {
            continue;
        }
        let price = price_of(n);
        // What is owed and how long a saving lasts are worked out only for a move worth weighing
        // (most nodes have none): date arithmetic per node per pass adds up over a fleet.
        let owed_on_it = || owed(input, n, price);
        // How long the saving would last: the horizon, but no longer than the node has lived so
        // far (a node is expected to stay about as long again as it has stayed: one launched
        // for a burst is likely gone before a move pays).
        let lasts = || {
            let age = n.billed_since.map(|s| (input.now - s).to_std().unwrap_or_default());
            age.map_or(input.horizon, |a| a.min(input.horizon))
        };
        let mut offer = |kind: MoveKind, saving: Money, cost: Money, free_after: u32, why: &dyn Fn() -> String| {
            // What demand coming back costs is looked up only for a move that pays without it.
            let lasts = lasts();
            if Price::per_hour(saving).cost_for(lasts) <= cost {
                return;
            }
            let returns = returns_cost(lasts, free_after);
            let gain = Price::per_hour(saving).cost_for(lasts);
            if gain > cost + returns {
                let cost = cost + returns;
                let net = gain - cost;
                if best.as_ref().is_none_or(|(b, _)| net > *b) {
                    let why = why() + &returns_note(returns);
                    best = Some((net, Move { nodes: vec![n.id], kind, saving_per_hour: saving, cost, why }));
                }
            }
        };
        // Delete: the others' free slots hold its runners.
        let free = free_total - n.slots.saturating_sub(h);
        // On-demand runners kept on on-demand capacity where the base needs them.
        let base_ok = |to: CapacityType| {
            capacity_of(n) != CapacityType::OnDemand
                || to == CapacityType::OnDemand
                || on_demand_runners.saturating_sub(h) >= input.spec.placement.base_on_demand
        };
        if free >= h && base_ok(CapacityType::Spot) {
            offer(MoveKind::Delete, price, owed_on_it(), free - h, &|| {
                format!("its {h} runner(s) fit on the app's other nodes' free slots; saves {}/h", price.cents())
            });
        }
        // Replace: the cheapest single node for its runners, of the kinds the app may use.
        let kinds = kinds_of(input.spec.placement.spot);
        for (ki, kind) in kinds.iter().enumerate() {
            let found = match cheapest.iter().find(|(key, _)| *key == (h, ki)) {
                Some((_, c)) => *c,
                None => {
                    let rank = RankInput { capacity: *kind, min_runners: h, ..input.rank.clone() };
                    let c = idx.rank_for_runners(input.app, &rank, 1).into_iter().next();
                    cheapest.push(((h, ki), c));
                    c
                }
            };
            let Some(c) = found else { continue };
            let new_price = c.node_price.hourly();
            // Cheaper, and no less work for the money (a slower GPU's node may bill less and
            // still serve less per dollar: not a saving).
            let old_work = idx.offering(n.offering).work_price();
            if c.offering == n.offering || new_price >= price || c.work_price >= old_work || !base_ok(c.capacity) {
                continue;
            }
            let (cold, cold_len, egress) = cold_cost(input, &c);
            let o = idx.offering(c.offering);
            let owed = owed_on_it();
            let unused = unused_minimum(input, &c, lasts());
            let free_after = free + c.runners_per_node.saturating_sub(h);
            offer(MoveKind::Replace, price - new_price, cold + owed + unused, free_after, &|| {
                format!(
                    "one {} {} node ({}/h) hosts its {h} runner(s) for {}/h less; the move costs {} (cold start {}s billed{}{})",
                    o.instance.name,
                    o.capacity,
                    new_price.cents(),
                    (price - new_price).cents(),
                    (cold + owed + unused).cents(),
                    cold_len.as_secs(),
                    egress_note(egress),
                    billing_note(owed, unused)
                )
            });
        }
    }
    merge(input, kinds_of(input.spec.placement.spot), on_demand_runners, free_total, &returns_cost, &mut best);
    best.map(|(_, m)| m)
}

/// What a move that leaves fewer free slots (`free_after`, of `free_total` before) costs over
/// the `lasts` its saving is counted for, while demand wants a runner beyond the slots left:
/// that runner needs a node of its own (the cheapest for one runner), billed for the share of
/// the time demand wants it and through a cold start each time it comes back. A move that
/// leaves as many free slots costs nothing of the kind.
///
/// Until 2026-12-03 a move's saving was counted until demand next wanted that runner, as
/// measured over the samples' window (minutes): an 8-GPU node left with one 4-GPU runner of two
/// was replaced by a 4-GPU node ($0.68/h less) once the last burst was out of the window, the
/// next burst (every hour or so, the Azure code trace's) launched a second 4-GPU node, the two
/// were merged back onto an 8-GPU node, and so on, a cold start at each step; for a third of
/// each hour the "saving" ran a second node at $6.16/h.
fn returns_with(input: &Input, free_total: u32) -> impl Fn(Duration, u32) -> Money {
    let runners: u32 = input.hosted.iter().sum();
    let wanted_again = input.wanted_again;
    // Each level's returns, looked up once per decision (they walk the app's history), and the
    // node a returning runner gets, priced once.
    let seen: std::cell::RefCell<Vec<(u32, crate::autoscale::LevelReturns)>> = Default::default();
    let node: std::cell::OnceCell<Option<(Money, Money)>> = std::cell::OnceCell::new();
    move |lasts: Duration, free_after: u32| {
        if free_after >= free_total {
            return Money::ZERO;
        }
        let level = runners.saturating_add(free_after).saturating_add(1);
        let known = seen.borrow().iter().find(|(l, _)| *l == level).map(|(_, r)| *r);
        let r = known.unwrap_or_else(|| {
            let r = wanted_again(level);
            seen.borrow_mut().push((level, r));
            r
        });
        if r.per_hour <= 0.0 {
            return Money::ZERO;
        }
        let Some((price, cold)) = *node.get_or_init(|| returning_node(input)) else { return Money::ZERO };
        let hours = lasts.as_secs_f64() / 3600.0;
        let wanted = Duration::from_secs_f64((lasts.as_secs_f64() * r.share).min(lasts.as_secs_f64()));
        // A cold start per return: its cost as a price, over as many hours as returns expected.
        let starts = Duration::from_secs_f64((r.per_hour * hours * 3600.0).min(1e12));
        Price::per_hour(price).cost_for(wanted) + Price::per_hour(cold).cost_for(starts)
    }
}

/// The node a runner that needs one of its own gets: the cheapest for one runner of the kinds
/// the app may use, as its price per hour and what its cold start bills before it serves.
fn returning_node(input: &Input) -> Option<(Money, Money)> {
    kinds_of(input.spec.placement.spot)
        .iter()
        .filter_map(|kind| {
            let rank = RankInput { capacity: *kind, min_runners: 1, ..input.rank.clone() };
            input.index.rank_for_runners(input.app, &rank, 1).into_iter().next()
        })
        .map(|c| (c.node_price.hourly(), cold_cost(input, &c).0))
        .min()
}

fn kinds_of(spot: SpotPolicy) -> &'static [CapacityWanted] {
    match spot {
        SpotPolicy::OnDemand => &[CapacityWanted::OnDemand],
        SpotPolicy::Spot => &[CapacityWanted::Spot],
        SpotPolicy::Auto => &[CapacityWanted::Spot, CapacityWanted::OnDemand],
    }
}

/// Merges (see the module doc): prefixes of two or more of the movable nodes, dearest per hosted
/// runner first, each onto the cheapest single node of a kind the app may use; `best` is
/// replaced where one nets more.
fn merge(
    input: &Input,
    kinds: &[CapacityWanted],
    on_demand_runners: u32,
    free_total: u32,
    returns_cost: &impl Fn(Duration, u32) -> Money,
    best: &mut Option<(Money, Move)>,
) {
    let idx = input.index;
    let price_of = |n: &NodeView| idx.offering(n.offering).price.hourly();
    let mut order: Vec<usize> = (0..input.nodes.len())
        .filter(|k| input.hosted[*k] > 0 && !input.nodes[*k].leaving && input.idle_for[*k] <= input.cold_start)
        .collect();
    if order.len() < 2 {
        return;
    }
    // Dearest per hosted runner first: price / hosted compared as price_a × hosted_b.
    order.sort_by(|a, b| {
        let (pa, pb) = (price_of(&input.nodes[*a]), price_of(&input.nodes[*b]));
        pb.times(input.hosted[*a]).cmp(&pa.times(input.hosted[*b])).then(a.cmp(b))
    });
    // No node holds more than this many of the app's runners: longer prefixes cannot merge (and
    // with one runner per node, as for 8-GPU runners, there is nothing to try at all).
    let max_fit = idx.max_runners_per_node(input.app);
    let (mut runners, mut price, mut owed_total, mut on_demand) = (0u32, Money::ZERO, Money::ZERO, 0u32);
    // The free slots of the nodes merged so far, which the new node's own free slots replace.
    let mut merged_free = 0u32;
    let mut work = Money::ZERO;
    let mut youngest: Option<std::time::Duration> = None;
    for (g, k) in order.iter().enumerate() {
        let n = &input.nodes[*k];
        let h = input.hosted[*k];
        if runners + h > max_fit {
            break;
        }
        runners += h;
        merged_free += n.slots.saturating_sub(h);
        price += price_of(n);
        work += idx.offering(n.offering).work_price().hourly();
        owed_total += owed(input, n, price_of(n));
        if idx.offering(n.offering).capacity == CapacityType::OnDemand {
            on_demand += h;
        }
        if let Some(a) = n.billed_since.map(|s| (input.now - s).to_std().unwrap_or_default()) {
            youngest = Some(youngest.map_or(a, |y| y.min(a)));
        }
        if g == 0 {
            continue;
        }
        let lasts = youngest.map_or(input.horizon, |a| a.min(input.horizon));
        for kind in kinds {
            let rank = RankInput { capacity: *kind, min_runners: runners, ..input.rank.clone() };
            let Some(c) = idx.rank_for_runners(input.app, &rank, 1).into_iter().next() else { continue };
            let new_price = c.node_price.hourly();
            let base_ok = c.capacity == CapacityType::OnDemand
                || on_demand_runners.saturating_sub(on_demand) >= input.spec.placement.base_on_demand;
            if new_price >= price || c.work_price.hourly() >= work || !base_ok {
                continue;
            }
            let saving = price - new_price;
            let (cold, cold_len, egress) = cold_cost(input, &c);
            let unused = unused_minimum(input, &c, lasts);
            let cost = cold + owed_total + unused;
            let free_after = free_total - merged_free + c.runners_per_node.saturating_sub(runners);
            if Price::per_hour(saving).cost_for(lasts) <= cost {
                continue;
            }
            let returns = returns_cost(lasts, free_after);
            let gain = Price::per_hour(saving).cost_for(lasts);
            if gain <= cost + returns {
                continue;
            }
            let cost = cost + returns;
            let net = gain - cost;
            if best.as_ref().is_some_and(|(b, _)| net <= *b) {
                continue;
            }
            let o = idx.offering(c.offering);
            let nodes: Vec<NodeId> = order[..=g].iter().map(|k| input.nodes[*k].id).collect();
            let why = format!(
                "one {} {} node ({}/h) hosts the {runners} runner(s) of {} nodes ({}/h together) for {}/h less; \
                 the move costs {} (cold start {}s billed{}{})",
                o.instance.name,
                o.capacity,
                new_price.cents(),
                nodes.len(),
                price.cents(),
                saving.cents(),
                cost.cents(),
                cold_len.as_secs(),
                egress_note(egress),
                billing_note(owed_total, unused)
            ) + &returns_note(returns);
            *best = Some((net, Move { nodes, kind: MoveKind::Merge, saving_per_hour: saving, cost, why }));
        }
    }
}
