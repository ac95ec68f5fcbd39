//! Records fleetd's decisions in the fleet's events ([`fleet_state::events`]): each lifecycle
//! step of a node, what the plan could not place and why, budgets holding back, orphans collected.
//!
//! An event records a decision; it is not part of it. A store error here is logged and the
//! decision stands (the next decision's event is written as usual).

use fleet_state::events::{NewEvent, node_step};
use fleet_state::lifecycle::node::NodeEvent;
use fleet_state::model::NodeRecord;

use crate::actors::Ctx;

/// Records `ev` now.
pub async fn emit(ctx: &Ctx, ev: NewEvent) {
    let kind = ev.kind.name();
    ctx.metrics.events.get_or_create(&crate::metrics::KindLabel::new(kind)).inc();
    if let Err(e) = fleet_state::events::record(&*ctx.store, &ctx.keys, ctx.clock.now(), ev).await {
        tracing::warn!(kind, error = %e, "event not recorded");
    }
}

/// Records the lifecycle step `ev` that made a node `after` (where it is worth an event).
pub async fn node(ctx: &Ctx, after: &NodeRecord, ev: &NodeEvent) {
    if let Some(e) = node_step(after, ev) {
        emit(ctx, e).await;
    }
}
