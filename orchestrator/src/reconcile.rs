//! The reconciler's pure half: the store's records → the planner's view of the fleet, and the
//! money they have cost. No I/O here; [`crate::actors::fleet`] reads the store, calls
//! [`fleet_policies::plan::plan`] with what this builds, and carries the plan out.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, TimeZone, Utc};
use fleet_core::{Money, OfferingKey};
use fleet_policies::autoscale::RunnerInfo;
use fleet_policies::placement::{OfferingId, PlacementIndex, UnavailableCache};
use fleet_policies::plan::{AppState, FleetState, NodeView, RunnerView};

use crate::lifecycle::node::{NodeState, Time};
use crate::lifecycle::runner::RunnerState;
use crate::model::{NodeRecord, RunnerRecord};
use crate::queue::Depth;

/// Offering keys → the index's ids.
pub fn offering_ids(index: &PlacementIndex) -> HashMap<OfferingKey, OfferingId> {
    index.catalog().offerings().iter().enumerate().map(|(i, o)| (o.key(), i as OfferingId)).collect()
}

/// The first instant of `now`'s month (UTC): budgets per month count from there.
pub fn month_start(now: Time) -> Time {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().unwrap_or(now)
}

/// What `node` cost within `now`'s month.
pub fn month_cost(node: &NodeRecord, now: Time) -> Money {
    let start = month_start(now);
    match (node.price, node.billing_since) {
        (Some(p), Some(since)) => {
            let from = since.max(start);
            let until = node.billing_until.unwrap_or(now);
            if until <= from { Money::ZERO } else { p.cost_for((until - from).to_std().unwrap_or_default()) }
        }
        _ => Money::ZERO,
    }
}

/// Nodes the planner counts as the app's capacity: launched or on the way, not leaving.
fn counts_as_capacity(n: &NodeRecord) -> bool {
    matches!(
        n.state,
        NodeState::Requested { .. }
            | NodeState::Launching { .. }
            | NodeState::Bootstrapping { .. }
            | NodeState::Ready { .. }
    )
}

/// Runners the planner counts: not stopping or stopped.
fn counts_as_runner(r: &RunnerRecord) -> bool {
    !matches!(r.state, RunnerState::Stopping { .. } | RunnerState::Stopped { .. })
}

/// The planner's view.
#[allow(clippy::too_many_arguments)]
// each input is a distinct part of the world the plan sees Nodes whose offering is not in the index (a catalog change) are left out
/// of planning; they keep running until drained by hand or released by a later spec.
pub fn fleet_state<'a, N: Borrow<NodeRecord>, R: Borrow<RunnerRecord>>(
    index: &PlacementIndex,
    ids: &HashMap<OfferingKey, OfferingId>,
    nodes: &[N],
    runners: &[R],
    depths: &BTreeMap<String, Depth>,
    pending_since: &HashMap<String, Time>,
    unavailable: &'a UnavailableCache,
    now: Time,
) -> FleetState<'a> {
    let mut apps: BTreeMap<String, AppState> = BTreeMap::new();
    let mut fleet_mtd = Money::ZERO;
    let mut node_offering: HashMap<u64, OfferingId> = HashMap::new();
    let mut hosted: HashMap<u64, u32> = HashMap::new();
    for r in runners.iter().map(Borrow::borrow).filter(|r| counts_as_runner(r)) {
        if let Some(n) = r.node() {
            *hosted.entry(n).or_default() += 1;
        }
    }
    for n in nodes.iter().map(Borrow::borrow) {
        let cost = month_cost(n, now);
        fleet_mtd += cost;
        let app = apps.entry(n.app.clone()).or_default();
        app.month_to_date += cost;
        if !counts_as_capacity(n) {
            continue;
        }
        let Some(&oid) = n.offering().and_then(|k| ids.get(k)) else { continue };
        node_offering.insert(n.id, oid);
        let slots = if n.cordoned { hosted.get(&n.id).copied().unwrap_or(0) } else { n.slots };
        app.nodes.push(NodeView { id: n.id, offering: oid, slots });
    }
    for r in runners.iter().map(Borrow::borrow).filter(|r| counts_as_runner(r)) {
        let Some(node) = r.node() else { continue };
        let Some(&oid) = node_offering.get(&node) else { continue };
        let (ready, in_flight, idle_since) = match &r.state {
            RunnerState::Idle { since, .. } => (true, 0, Some(*since)),
            RunnerState::Busy { in_flight, .. } => (true, *in_flight, None),
            _ => (false, 0, None),
        };
        let info =
            RunnerInfo { id: r.id, ready, in_flight, idle_since, gpu_price: index.offering(oid).price_per_gpu() };
        apps.entry(r.app.clone()).or_default().runners.push(RunnerView { runner: info, node });
    }
    for (app, d) in depths {
        let a = apps.entry(app.clone()).or_default();
        a.queued = d.queued;
        a.in_flight = d.in_flight;
    }
    for (app, since) in pending_since {
        apps.entry(app.clone()).or_default().scale_up_pending_since = Some(*since);
    }
    FleetState { now, apps, unavailable, fleet_month_to_date: fleet_mtd }
}

#[cfg(test)]
mod tests;
