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
    emit_many(ctx, vec![ev]).await
}

/// Records `evs` now, in order; returns once they are in the store (or their write failed, which
/// is logged). Events emitted at the same time by different actors (a thousand node actors
/// launching) are written together: whoever finds the writer free writes every event waiting,
/// in one id allocation and a few transactions ([`fleet_state::events::record_many`]); the others
/// find theirs written when they get the writer.
pub async fn emit_many(ctx: &Ctx, evs: Vec<NewEvent>) {
    if evs.is_empty() {
        return;
    }
    for ev in &evs {
        ctx.metrics.events.get_or_create(&crate::metrics::KindLabel::new(ev.kind.name())).inc();
    }
    let now = ctx.clock.now();
    let (done, mut written) = tokio::sync::oneshot::channel();
    ctx.events.waiting.lock().expect("events lock").push((evs.into_iter().map(|e| (now, e)).collect(), done));
    let _writer = ctx.events.writer.lock().await;
    // Written (or failed) by the writer before us: ours was in its batch.
    if !matches!(written.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Empty)) {
        return;
    }
    let batch = std::mem::take(&mut *ctx.events.waiting.lock().expect("events lock"));
    let (evs, dones): (Vec<Vec<(fleet_core::Time, NewEvent)>>, Vec<_>) = batch.into_iter().unzip();
    let evs: Vec<_> = evs.into_iter().flatten().collect();
    let n = evs.len();
    if let Err(e) = fleet_state::events::record_many(&*ctx.store, &ctx.keys, evs).await {
        tracing::warn!(events = n, error = %e, "events not recorded");
    }
    for d in dones {
        let _ = d.send(());
    }
}

/// One caller's events, stamped, and how it learns they are written.
type Batch = (Vec<(fleet_core::Time, NewEvent)>, tokio::sync::oneshot::Sender<()>);

/// Events waiting to be written, and the right to write them ([`emit_many`]).
#[derive(Debug, Default)]
pub struct EventWriter {
    waiting: std::sync::Mutex<Vec<Batch>>,
    writer: tokio::sync::Mutex<()>,
}

/// Records the lifecycle step `ev` that made a node `after` (where it is worth an event).
pub async fn node(ctx: &Ctx, after: &NodeRecord, ev: &NodeEvent) {
    if let Some(e) = node_step(after, ev) {
        emit(ctx, e).await;
    }
}
