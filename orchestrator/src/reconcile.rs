//! The reconciler's pure half: the store's records → the planner's view of the fleet, and the
//! money they have cost. No I/O here; [`crate::actors::fleet`] reads the store, calls
//! [`fleet_policies::plan::plan`] with what this builds, and carries the plan out.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, TimeZone, Utc};
use fleet_core::{Money, NodeId, OfferingKey, Price, Time};
use fleet_policies::autoscale::RunnerInfo;
use fleet_policies::placement::{OfferingId, PlacementIndex, UnavailableCache};
use fleet_policies::plan::{AppView, FleetView, NodeView, RunnerView};
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::{AgentRecord, NodeRecord, RunnerRecord};
use fleet_state::queue::Depth;

/// Offering keys → the index's ids.
pub fn offering_ids(index: &PlacementIndex) -> HashMap<OfferingKey, OfferingId> {
    index.catalog().offerings().iter().enumerate().map(|(i, o)| (o.key(), i as OfferingId)).collect()
}

/// The first instant of `now`'s month (UTC): budgets per month count from there.
pub fn month_start(now: Time) -> Time {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().unwrap_or(now)
}

/// What `node` cost within `now`'s month.
/// The time from `now` to the start of next month (UTC): what a forecast to month end covers.
pub fn month_left(now: Time) -> std::time::Duration {
    let start = month_start(now);
    let next = if start.month() == 12 {
        start.with_year(start.year() + 1).and_then(|d| d.with_month(1))
    } else {
        start.with_month(start.month() + 1)
    }
    .unwrap_or(now);
    (next - now).to_std().unwrap_or_default()
}

pub fn month_cost(node: &NodeRecord, now: Time) -> Money {
    month_cost_since(node, month_start(now), now)
}

/// What `node` cost from `start` (a month's start) to `now`.
pub fn month_cost_since(node: &NodeRecord, start: Time, now: Time) -> Money {
    match (node.price, node.billing_since) {
        (Some(p), Some(since)) => {
            let from = since.max(start);
            let until = node.billing_until.unwrap_or(now);
            if until <= from { Money::ZERO } else { p.cost_for((until - from).to_std().unwrap_or_default()) }
        }
        _ => Money::ZERO,
    }
}

/// What `node` costs per hour now: its price while it is live and billed (from the moment the
/// cloud started charging until it stopped), nothing otherwise. Every per-hour figure fleet shows
/// (`get`, `describe`, `cost`, the metrics) is a sum of these.
pub fn burn_per_hour(node: &NodeRecord) -> Money {
    match (node.price, node.billing_since) {
        (Some(p), Some(_)) if node.is_live() && node.billing_until.is_none() => p.hourly(),
        _ => Money::ZERO,
    }
}

/// Nodes the planner counts as the app's capacity: launched or on the way, not leaving.
fn counts_as_capacity(n: &NodeRecord) -> bool {
    matches!(
        n.state,
        NodePhase::Requested { .. }
            | NodePhase::Launching { .. }
            | NodePhase::Bootstrapping { .. }
            | NodePhase::Ready { .. }
    )
}

/// Runners the planner counts: not stopping or stopped.
fn counts_as_runner(r: &RunnerRecord) -> bool {
    !matches!(r.state, RunnerPhase::Stopping { .. } | RunnerPhase::Stopped { .. })
}

/// What a node holds of the budget per hour: until it is Ready, the dearest candidate it may
/// still fail over to (a later pass cannot plan into room a launching node may need); once it
/// runs, the price it was launched at (a node whose offering left the catalog still counts).
fn held_per_hour(n: &NodeRecord) -> Option<Money> {
    match &n.state {
        NodePhase::Requested { .. } | NodePhase::Launching { .. } => {
            n.candidates.iter().skip(n.attempt).map(|c| c.price.hourly()).max().or(n.price.map(|p| p.hourly()))
        }
        _ => n.price.map(|p| p.hourly()),
    }
}

/// The planner's view. Nodes whose offering is not in the index (a catalog change) are left out
/// of planning but count against budgets; the fleet's pass drains them (`DrainReason::OfferingGone`).
// Each input is a distinct part of the world the plan sees.
#[allow(clippy::too_many_arguments)]
pub fn fleet_view<'a, N: Borrow<NodeRecord>, R: Borrow<RunnerRecord>>(
    ids: &HashMap<OfferingKey, OfferingId>,
    nodes: &[N],
    runners: &[R],
    depths: &BTreeMap<String, Depth>,
    pending_since: &HashMap<String, Time>,
    unavailable: &'a UnavailableCache,
    now: Time,
) -> FleetView<'a> {
    // Apps by position; a runner's app is its node's (so runners are placed without reading
    // their app names: at 100,000 runners, memory latency is what a pass costs).
    let mut names: Vec<&str> = Vec::new();
    let mut states: Vec<AppView> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut fleet_mtd = Money::ZERO;
    // Node → (app position, $/GPU-hour) for nodes that count as capacity.
    let mut capacity: HashMap<u64, usize> = HashMap::with_capacity(nodes.len());
    let mut cordoned: Vec<(usize, usize)> = Vec::new();
    let start = month_start(now);
    for n in nodes.iter().map(Borrow::borrow) {
        let i = match position.get(n.app.as_str()) {
            Some(i) => *i,
            None => {
                names.push(&n.app);
                states.push(AppView::default());
                position.insert(&n.app, names.len() - 1);
                names.len() - 1
            }
        };
        let cost = month_cost_since(n, start, now);
        fleet_mtd += cost;
        states[i].month_to_date += cost;
        if !counts_as_capacity(n) {
            // Leaving (draining, terminating) but still billed until the cloud confirms it gone:
            // its price still counts against the budgets, or a replacement planned beside it
            // would take the burn over the cap.
            if n.is_live() && n.billing_until.is_none() && !matches!(n.state, NodePhase::Requested { .. }) {
                states[i].outside_burn += n.price.map_or(Money::ZERO, |p| p.hourly());
            }
            continue;
        }
        let held = held_per_hour(n);
        let Some(&oid) = n.offering().and_then(|k| ids.get(k)) else {
            // Its offering left the catalog: not capacity the plan can use, but it bills.
            states[i].outside_burn += held.unwrap_or(Money::ZERO);
            continue;
        };
        capacity.insert(n.id, i);
        if n.cordoned {
            cordoned.push((i, states[i].nodes.len()));
        }
        states[i].nodes.push(NodeView {
            leaving: n.leaving.is_some(),
            replaced: n.leaving.as_ref().map_or(0, |l| l.replaced),
            billed_since: n.billing_since,
            held_per_hour: held,
            ..NodeView::new(n.id, oid, n.slots)
        });
    }
    let mut hosted: HashMap<u64, u32> = HashMap::new();
    for r in runners.iter().map(Borrow::borrow).filter(|r| counts_as_runner(r)) {
        let Some(node) = r.node() else { continue };
        let Some(&i) = capacity.get(&node) else { continue };
        if !cordoned.is_empty() {
            *hosted.entry(node).or_default() += 1;
        }
        let (ready, in_flight, idle_since) = match &r.state {
            RunnerPhase::Idle { since, .. } => (true, 0, Some(*since)),
            RunnerPhase::Busy { in_flight, .. } => (true, *in_flight, None),
            _ => (false, 0, None),
        };
        // The slot price and the speed are the planner's to set (from the node's offering and its runners).
        let info = RunnerInfo {
            id: r.id,
            ready,
            in_flight,
            idle_since,
            slot_price: Price::ZERO,
            paid_until: None,
            work_milli: 0,
        };
        states[i].runners.push(RunnerView { runner: info, node });
    }
    // A cordoned node offers no free slot: only the ones its runners use.
    for (i, k) in cordoned {
        let v = &mut states[i].nodes[k];
        v.slots = hosted.get(&v.id).copied().unwrap_or(0);
    }
    let mut apps: BTreeMap<String, AppView> = names.into_iter().map(str::to_string).zip(states).collect();
    for (app, d) in depths {
        let a = apps.entry(app.clone()).or_default();
        a.queued = d.queued;
        a.in_flight = d.in_flight;
    }
    for (app, since) in pending_since {
        apps.entry(app.clone()).or_default().scale_up_pending_since = Some(*since);
    }
    FleetView { now, apps, unavailable, fleet_month_to_date: fleet_mtd }
}

#[cfg(test)]
mod tests;

/// Why a ready node is not fit to serve, as its agent's record (or its absence) tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// No agent record: the agent never registered, or its lease expired (it died, its machine
    /// went, or it lost the store for longer than its TTL).
    NoAgent,
    /// The agent says so (burn-in failed).
    Reported(String),
    /// The agent says the machine is not what was rented (fewer GPUs, another model, ECC
    /// errors, persistent throttling): drained at once, and its offering avoided for a while.
    Hardware(String),
    /// The cloud announced it will take the instance.
    Interrupted { kind: String, not_before: Option<String> },
}

impl Unhealthy {
    pub fn label(&self) -> &'static str {
        match self {
            Unhealthy::NoAgent => "no_agent",
            Unhealthy::Reported(_) => "reported",
            Unhealthy::Hardware(_) => "hardware",
            Unhealthy::Interrupted { .. } => "interrupted",
        }
    }
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::NoAgent => f.write_str("no live agent (its lease expired or it never registered)"),
            Unhealthy::Reported(why) => write!(f, "agent reports: {why}"),
            Unhealthy::Hardware(why) => write!(f, "not the machine rented: {why}"),
            Unhealthy::Interrupted { kind, not_before } => match not_before {
                Some(t) => write!(f, "the cloud announced '{kind}' at {t}"),
                None => write!(f, "the cloud announced '{kind}'"),
            },
        }
    }
}

/// Ready nodes that are not fit to serve. A node that became ready less than `grace` ago is given
/// that long for its agent to register (where readiness does not already wait for it), unless
/// its agent was `seen` before: then its record vanishing means its lease expired.
pub fn unhealthy_nodes<N: Borrow<NodeRecord>, A: Borrow<AgentRecord>>(
    nodes: &[N],
    agents: &[A],
    seen: &std::collections::HashSet<NodeId>,
    now: Time,
    grace: std::time::Duration,
) -> BTreeMap<NodeId, Unhealthy> {
    let by_node: HashMap<NodeId, &AgentRecord> = agents.iter().map(|a| (a.borrow().node, a.borrow())).collect();
    let mut out = BTreeMap::new();
    for n in nodes {
        let n = n.borrow();
        let NodePhase::Ready { since, .. } = &n.state else { continue };
        let verdict = match by_node.get(&n.id) {
            None if !seen.contains(&n.id) && (now - *since).to_std().unwrap_or_default() < grace => None,
            None => Some(Unhealthy::NoAgent),
            Some(a) => match (&a.health.interruption, a.health.ok) {
                (Some(i), _) => Some(Unhealthy::Interrupted { kind: i.kind.clone(), not_before: i.not_before.clone() }),
                (None, false) => Some(match &a.health.hardware {
                    Some(why) => Unhealthy::Hardware(why.clone()),
                    None => Unhealthy::Reported(a.health.reason.clone().unwrap_or_else(|| "not healthy".into())),
                }),
                (None, true) => None,
            },
        };
        if let Some(v) = verdict {
            out.insert(n.id, v);
        }
    }
    out
}

/// Which unhealthy ready nodes to drain now (their replacements follow from the plan, which no
/// longer counts a draining node): an announced interruption at once; a lost or failing agent
/// once it has been so for `after`, and only when the daemon itself has seen the store without
/// a break for `after` (`view_since`): after a store outage agents get time to register again,
/// so missing heartbeats the daemon could not see never terminate anything.
pub fn drains(
    unhealthy: &BTreeMap<NodeId, Unhealthy>,
    unhealthy_since: &HashMap<NodeId, Time>,
    view_since: Time,
    now: Time,
    after: std::time::Duration,
) -> Vec<(NodeId, fleet_state::lifecycle::node::DrainReason)> {
    use fleet_state::lifecycle::node::DrainReason;
    let long = |t: Time| (now - t).to_std().unwrap_or_default() >= after;
    unhealthy
        .iter()
        .filter_map(|(id, why)| match why {
            Unhealthy::Interrupted { .. } => Some((*id, DrainReason::SpotInterruption)),
            Unhealthy::Hardware(_) => Some((*id, DrainReason::HardwareFault)),
            Unhealthy::NoAgent | Unhealthy::Reported(_) => {
                let since = unhealthy_since.get(id).copied().unwrap_or(now);
                (long(since) && long(view_since)).then_some((*id, DrainReason::AgentLost))
            }
        })
        .collect()
}
