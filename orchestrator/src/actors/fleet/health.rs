//! Node health as a pass sees it: agents that never registered or whose lease expired, agents
//! that report themselves unfit, spot interruption notices. Unhealthy nodes are logged and counted
//! (`fleet_nodes_unhealthy`), and drained once unhealthy longer than the grace allows (their
//! replacements are planned in the same pass).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use fleet_core::{NodeId, Time};
use fleet_policies::placement::UnavailableReason;
use fleet_state::lifecycle::node::{DrainReason, NodeEvent, NodePhase, transition};
use fleet_state::model::{NodeRecord, update_at};
use fleet_state::store::StoreError;

use super::FleetState;
use super::pass::FULL_SYNC_EVERY;
use crate::actors::Ctx;
use crate::reconcile::{Unhealthy, drains, unhealthy_nodes};

/// Updates the fleet's view of unhealthy nodes from this pass's records and agents, and drains
/// those unhealthy for longer than `agent_lost_after` (counted from when this daemon started to
/// see the store: `view_since`).
pub(super) async fn check(
    st: &mut FleetState,
    ctx: &Ctx,
    nodes: &[Arc<NodeRecord>],
    view_since: Time,
    now: Time,
) -> Result<(), StoreError> {
    let keys = &ctx.keys;
    let agents = st.informer.agents();
    st.agent_seen.extend(agents.iter().map(|a| a.node));
    if st.passes.is_multiple_of(FULL_SYNC_EVERY) {
        let live: HashSet<NodeId> = nodes.iter().map(|n| n.id).collect();
        st.agent_seen.retain(|id| live.contains(id));
    }
    note_health(st, unhealthy_nodes(nodes, &agents, &st.agent_seen, now, ctx.config.agent_grace));
    st.unhealthy_since.retain(|id, _| st.unhealthy.contains_key(id));
    for id in st.unhealthy.keys() {
        st.unhealthy_since.entry(*id).or_insert(now);
    }
    for (id, reason) in drains(&st.unhealthy, &st.unhealthy_since, view_since, now, ctx.config.agent_lost_after) {
        let updated = update_at(&*ctx.store, &keys.node(id), |cur: &NodeRecord| {
            let state = transition(&cur.state, NodeEvent::Drain { reason: reason.clone() }, now).ok()?;
            (state != cur.state).then(|| NodeRecord { state, ..cur.clone() })
        })
        .await?;
        if let Some((r, rev)) = updated
            && matches!(r.state, NodePhase::Draining { .. })
        {
            crate::events::node(ctx, &r, &NodeEvent::Drain { reason: reason.clone() }).await;
            tracing::warn!(node = id, ?reason, "node drained: a replacement is planned, then it is terminated");
            // A reclaimed spot offering is avoided for a while: its replacement goes elsewhere.
            if matches!(reason, DrainReason::SpotInterruption)
                && let Some(o) = r.offering()
                && o.capacity == fleet_core::CapacityType::Spot
            {
                st.unavailable.mark(o.clone(), UnavailableReason::Preempted, now, ctx.config.unavailable_ttl);
            }
            // So is an offering that handed over a machine unlike what was rented.
            if matches!(reason, DrainReason::HardwareFault)
                && let Some(o) = r.offering()
            {
                tracing::warn!(node = id, offering = %o, "offering avoided for a while: its machine was not what was rented");
                st.unavailable.mark(o.clone(), UnavailableReason::Faulty, now, ctx.config.unavailable_ttl);
            }
            st.informer.put_node(r, rev);
        }
    }
    Ok(())
}

/// Logs nodes turning unhealthy (and well again) and sets `fleet_nodes_unhealthy`.
fn note_health(st: &mut FleetState, now: BTreeMap<NodeId, Unhealthy>) {
    for (id, why) in &now {
        if st.unhealthy.get(id) != Some(why) {
            tracing::warn!(node = id, reason = %why, "node unhealthy");
        }
    }
    for id in st.unhealthy.keys() {
        if !now.contains_key(id) {
            tracing::info!(node = id, "node healthy again (or no longer ready)");
        }
    }
    for label in ["no_agent", "reported", "hardware", "interrupted"] {
        let n = now.values().filter(|u| u.label() == label).count();
        st.ctx.metrics.nodes_unhealthy.get_or_create(&crate::metrics::KindLabel::new(label)).set(n as i64);
    }
    st.unhealthy = now;
}
