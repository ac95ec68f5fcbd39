//! The plan written to the store: runner stops, runners on existing nodes, new nodes (each
//! with its runners) and releases. New node records are written before any launch call, so a
//! crash at any moment leaves every instance findable by its record's token.

use std::sync::Arc;

use fleet_core::keys::Counter;
use fleet_core::{NodeId, Time};
use fleet_policies::plan::FleetPlan;
use fleet_state::events::{EventKind, NewEvent};
use fleet_state::lifecycle::node::{DrainReason, NodeEvent, NodePhase, transition};
use fleet_state::lifecycle::runner::{self, RunnerEvent, RunnerPhase};
use fleet_state::model::{CandidateRecord, Leaving, NodeRecord, RunnerRecord, update_at};
use fleet_state::queue;
use fleet_state::store::{Op, Revision, StoreError, to_json};

use super::FleetState;
use crate::actors::Ctx;
use crate::informer::Informer;

/// Stops a runner that cannot run any more and hands its requests back.
pub(super) async fn retire_runner(
    ctx: &Ctx,
    informer: &Informer,
    r: &RunnerRecord,
    now: Time,
) -> Result<(), StoreError> {
    let key = ctx.keys.runner(r.id);
    if !matches!(r.state, RunnerPhase::Stopped { .. }) {
        update_at(&*ctx.store, &key, |cur: &RunnerRecord| {
            let next = runner::transition(&cur.state, RunnerEvent::Lost, now).ok()?;
            Some(RunnerRecord { state: next, ..cur.clone() })
        })
        .await?;
    }
    queue::requeue_orphans(&*ctx.store, &ctx.keys, &[r.id]).await?;
    let res = ctx.store.txn(vec![], r.delete_ops(&ctx.keys)).await?;
    informer.delete_runner(r.id, res.revision);
    Ok(())
}

/// Writes what the plan decided: runner stops, runners on existing nodes, new nodes (their records
/// before any launch call), releases. Returns the new nodes, each with the revision it was written
/// at, and their runners' records being built: the pass writes those after sending the launches
/// (a crash between the two leaves nodes without runners, which the next plan fills as it fills
/// any node with free slots).
pub(super) async fn carry_out(
    st: &mut FleetState,
    plan: &FleetPlan,
    nodes: &[Arc<NodeRecord>],
    now: Time,
) -> Result<(Vec<(NodeRecord, Option<Revision>)>, RunnerOps), StoreError> {
    let ctx = st.ctx.clone();
    let store = &*ctx.store;
    let keys = &ctx.keys;
    let Some(applied) = &st.applied else { return Ok((vec![], tokio::spawn(async { Vec::new() }))) };
    let mut created = Vec::new();
    // Ids for every new runner and node of every app, in two compare-and-swaps.
    let runners_wanted: u64 = plan
        .apps
        .iter()
        .map(|ap| {
            u64::from(
                ap.on_existing.iter().map(|(_, n)| n).sum::<u32>()
                    + ap.new_nodes.iter().map(|n| n.runners).sum::<u32>(),
            )
        })
        .sum();
    let nodes_wanted: u64 = plan.apps.iter().map(|ap| ap.new_nodes.len() as u64).sum();
    let (mut next_runner, mut next_node) = if runners_wanted + nodes_wanted > 0 {
        let (rk, nk) = (keys.counter(Counter::Runner), keys.counter(Counter::Node));
        let ids = fleet_state::store::allocate_many(store, &[(&rk, runners_wanted), (&nk, nodes_wanted)]).await?;
        (ids[0], ids[1])
    } else {
        (0, 0)
    };
    // New node records go to the store before their launch orders; runner records right after
    // (a node whose runners were lost to a crash in between is a node with free slots, which the
    // next plan fills).
    let mut node_ops: Vec<(Op, Written)> = Vec::new();
    // Where the new runners go (app, node, how many), in the order their ids were allocated.
    let mut placements: Vec<(String, NodeId, u32)> = Vec::new();
    let mut planned: Vec<NewEvent> = Vec::new();
    for ap in &plan.apps {
        match ap.decision.pending_since {
            Some(t) => st.pending_since.insert(ap.app.clone(), t),
            None => st.pending_since.remove(&ap.app),
        };
        for id in &ap.decision.stop {
            let done = update_at(store, &keys.runner(*id), |cur: &RunnerRecord| {
                let next = runner::transition(&cur.state, RunnerEvent::Stop, now).ok()?;
                Some(RunnerRecord { state: next, ..cur.clone() })
            })
            .await?;
            if let Some((rec, rev)) = done {
                st.informer.put_runner(rec, rev);
            }
        }
        for (node, n) in &ap.on_existing {
            placements.push((ap.app.clone(), *node, *n));
        }
        for np in &ap.new_nodes {
            let id = next_node;
            next_node += 1;
            let candidates: Vec<CandidateRecord> = np
                .candidates
                .iter()
                .map(|c| CandidateRecord {
                    offering: applied.index.offering(c.offering).key(),
                    price: c.node_price,
                    slots: c.runners_per_node,
                })
                .collect();
            let slots = candidates.first().map_or(np.runners, |c| c.slots);
            let rec = NodeRecord {
                id,
                app: ap.app.clone(),
                state: NodePhase::Requested { since: now },
                candidates,
                attempt: 0,
                slots,
                price: None,
                billing_since: None,
                billing_until: None,
                cordoned: false,
                leaving: None,
                created_at: now,
            };
            let first = rec
                .candidates
                .first()
                .map(|c| format!("{} at {}/h", c.offering, c.price.hourly().cents()))
                .unwrap_or_default();
            let message = format!(
                "for {} runner{} of {}: {first} first, {} offering{} to fail over to, {}/h reserved of the budget; {}",
                np.runners,
                if np.runners == 1 { "" } else { "s" },
                ap.app,
                rec.candidates.len().saturating_sub(1),
                if rec.candidates.len() == 2 { "" } else { "s" },
                np.reserved_per_hour.cents(),
                np.why
            );
            planned.push(NewEvent::node(EventKind::Planned, &rec, message));
            node_ops.push((Op::put(keys.node(id), to_json(&rec)), Written::Node(rec.clone())));
            placements.push((ap.app.clone(), id, np.runners));
            created.push(rec);
        }
        if !ap.new_nodes.is_empty() {
            tracing::info!(app = %ap.app, nodes = ap.new_nodes.len(), "nodes requested");
        }
        // Consolidation: a node marked leaving, replacements counted, moves called off. Each a
        // compare-and-swap on the node record, so a move survives a restart and is never done
        // twice.
        if let Some(m) = &ap.consolidate {
            let why = m.why.clone();
            let mut marked = 0;
            for node in &m.nodes {
                let done = update_at(store, &keys.node(*node), |cur: &NodeRecord| {
                    (cur.leaving.is_none() && matches!(cur.state, NodePhase::Ready { .. })).then(|| NodeRecord {
                        leaving: Some(Leaving { since: now, why: why.clone(), replaced: 0 }),
                        ..cur.clone()
                    })
                })
                .await?;
                if let Some((rec, rev)) = done {
                    crate::events::emit(&ctx, NewEvent::node(EventKind::Consolidating, &rec, m.why.clone())).await;
                    tracing::info!(app = %ap.app, node, kind = ?m.kind, saving_per_hour = %m.saving_per_hour, cost = %m.cost, why = %m.why, "consolidating a node away");
                    st.informer.put_node(rec, rev);
                    marked += 1;
                    crate::crashpoint::hit("consolidate.marked");
                }
            }
            if marked > 0 {
                ctx.metrics.consolidations.inc();
            }
        }
        for (id, n) in &ap.replaced {
            let done = update_at(store, &keys.node(*id), |cur: &NodeRecord| {
                let l = cur.leaving.as_ref()?;
                Some(NodeRecord { leaving: Some(Leaving { replaced: l.replaced + n, ..l.clone() }), ..cur.clone() })
            })
            .await?;
            if let Some((rec, rev)) = done {
                st.informer.put_node(rec, rev);
                crate::crashpoint::hit("consolidate.replaced");
            }
        }
        for id in &ap.cancel_moves {
            let done = update_at(store, &keys.node(*id), |cur: &NodeRecord| {
                cur.leaving.is_some().then(|| NodeRecord { leaving: None, ..cur.clone() })
            })
            .await?;
            if let Some((rec, rev)) = done {
                tracing::warn!(app = %ap.app, node = id, "consolidation called off: its runners cannot be replaced now");
                st.informer.put_node(rec, rev);
            }
        }
        for id in &ap.release_nodes {
            let Some(n) = nodes.iter().find(|n| n.id == *id) else { continue };
            if !matches!(n.state, NodePhase::Ready { .. } | NodePhase::Bootstrapping { .. }) {
                continue;
            }
            let done = update_at(store, &keys.node(*id), |cur: &NodeRecord| {
                let ev = match cur.state {
                    NodePhase::Ready { .. } => NodeEvent::Drain { reason: DrainReason::ScaleDown },
                    _ => NodeEvent::Terminate,
                };
                let next = transition(&cur.state, ev, now).ok()?;
                Some(NodeRecord { state: next, ..cur.clone() })
            })
            .await?;
            if let Some((rec, rev)) = done {
                let ev = match rec.state {
                    NodePhase::Draining { .. } => NodeEvent::Drain { reason: DrainReason::ScaleDown },
                    _ => NodeEvent::Terminate,
                };
                crate::events::node(&ctx, &rec, &ev).await;
                if matches!(rec.state, NodePhase::Draining { .. }) {
                    crate::crashpoint::hit("node.draining");
                }
                st.informer.put_node(rec, rev);
            }
        }
        for u in &ap.unplaced {
            tracing::debug!(app = %ap.app, runners = u.runners, why = %u.why, "runners not placed");
        }
        if let Some(cap) = &ap.winding_down {
            tracing::warn!(app = %ap.app, %cap, stopping = ap.decision.stop.len(),
                "the month's money runs out within the hour: no new runners, the app winds down to its floor");
        }
        note_unplaced(&mut st.unplaced_said, &ctx, ap, &applied.spec).await;
    }
    // The runner records are built on the blocking pool while the node records are written and
    // their launches sent (10,000 records: ~20 ms of JSON and keys that the launches need not
    // wait for).
    let runner_keys = keys.clone();
    let runner_ops = tokio::task::spawn_blocking(move || {
        let mut ops = Vec::with_capacity(2 * placements.iter().map(|(_, _, n)| *n as usize).sum::<usize>());
        for (app, node, n) in placements {
            for _ in 0..n {
                let rec = RunnerRecord::placed(next_runner, &app, node, now);
                next_runner += 1;
                // The record and its entry in the node's index, side by side (one transaction).
                let [put, place]: [Op; 2] = rec.put_ops(&runner_keys).try_into().expect("a placed runner has two ops");
                ops.extend([(put, Written::Runner(rec)), (place, Written::Placement)]);
            }
        }
        ops
    });
    let built = std::time::Instant::now();
    let written = write_all(store, &st.informer, node_ops).await?;
    crate::events::emit_many(&ctx, planned).await;
    if !created.is_empty() {
        crate::crashpoint::hit("plan.written");
        tracing::debug!(nodes = created.len(), write = ?built.elapsed(), "plan written");
    }
    ctx.metrics.nodes_requested.inc_by(created.len() as u64);
    ctx.metrics.set_budgets(&applied.spec, nodes, now);
    let written: std::collections::HashMap<NodeId, Revision> = written.into_iter().collect();
    let created = created.into_iter().map(|rec| {
        let rev = written.get(&rec.id).copied();
        (rec, rev)
    });
    Ok((created.collect(), runner_ops))
}

/// A plan's new runner records (with their index entries), being built.
pub(super) type RunnerOps = tokio::task::JoinHandle<Vec<(Op, Written)>>;

/// Writes fresh records in as few transactions as the store allows (the ids are new: there is
/// nothing to compare against), and into the cache. Returns each node record's id and the
/// revision it was written at, in the order of `ops`.
pub(super) async fn write_all(
    store: &dyn fleet_state::store::Store,
    informer: &Informer,
    ops: Vec<(Op, Written)>,
) -> Result<Vec<(NodeId, Revision)>, StoreError> {
    // Even, so that a runner record and its placement (written in pairs) share a transaction.
    let max = store.max_txn_ops().max(2) & !1;
    if ops.len() <= max {
        // As it is: a plan's 20,000 runner operations copied into a batch were ~6 MB of fresh
        // memory, and this machine is slow to touch memory for the first time.
        return write_batch(store, informer, ops).await;
    }
    let mut ops = ops.into_iter().peekable();
    let mut batches = Vec::new();
    while ops.peek().is_some() {
        batches.push(ops.by_ref().take(max).collect::<Vec<(Op, Written)>>());
    }
    // Sent together: etcd commits concurrent transactions in shared rounds (10,000 runner
    // records were 79 transactions of ~14 ms one after another).
    let mut nodes = Vec::new();
    for done in futures_util::future::join_all(batches.into_iter().map(|b| write_batch(store, informer, b))).await {
        nodes.extend(done?);
    }
    Ok(nodes)
}

/// A record written by a plan, to write through to the cache once the store has it.
pub(super) enum Written {
    Node(NodeRecord),
    Runner(RunnerRecord),
    /// A runner's entry in its node's index ([`fleet_core::keys::Keys::placement`]): not cached.
    Placement,
}

/// Writes one batch of fresh records in one transaction and into the cache.
async fn write_batch(
    store: &dyn fleet_state::store::Store,
    informer: &Informer,
    batch: Vec<(Op, Written)>,
) -> Result<Vec<(NodeId, Revision)>, StoreError> {
    // The operations are collected where the pairs were (no new allocation for them).
    let mut recs = Vec::with_capacity(batch.len());
    let ops: Vec<Op> = batch
        .into_iter()
        .map(|(op, w)| {
            recs.push(w);
            op
        })
        .collect();
    let res = store.txn(vec![], ops).await?;
    let mut nodes = Vec::new();
    for w in recs {
        match w {
            Written::Node(n) => {
                nodes.push((n.id, res.revision));
                informer.put_node(n, res.revision);
            }
            Written::Runner(r) => informer.put_runner(r, res.revision),
            Written::Placement => {}
        }
    }
    Ok(nodes)
}

/// Records an event when what an app's demand could not be placed changes (or the app winds
/// down, or everything is placed again after it was not): one event per change, not per pass.
async fn note_unplaced(
    said_before: &mut std::collections::HashMap<String, String>,
    ctx: &crate::actors::Ctx,
    ap: &fleet_policies::plan::AppPlan,
    spec: &fleet_core::spec::FleetSpec,
) {
    // Where no offering of the enabled clouds can ever host the app, say why (the apply said so
    // too) rather than "none can be had now".
    let never = if ap.unplaced.is_empty() {
        None
    } else {
        let apps = spec.apps.iter().filter(|a| a.name == ap.app).cloned().collect();
        crate::api::unplaceable_apps(ctx, &fleet_core::spec::FleetSpec { apps, ..spec.clone() }).pop()
    };
    let mut parts: Vec<String> = ap
        .unplaced
        .iter()
        .map(|u| {
            let why = never.clone().unwrap_or_else(|| u.why.clone());
            format!("{} runner{} not placed: {why}", u.runners, if u.runners == 1 { "" } else { "s" })
        })
        .collect();
    if let Some(cap) = &ap.winding_down {
        parts.push(format!(
            "{cap}: the month's money runs out within the hour; no new runners, the app winds down to its floor"
        ));
    }
    let said = parts.join("; ");
    let before = said_before.get(&ap.app).cloned().unwrap_or_default();
    if said == before {
        return;
    }
    let budget = ap.winding_down.is_some() || ap.unplaced.iter().any(|u| u.budget_cap.is_some());
    let kind = if budget { EventKind::BudgetHeld } else { EventKind::NotPlaced };
    if said.is_empty() {
        said_before.remove(&ap.app);
        crate::events::emit(ctx, NewEvent::app(kind, &ap.app, "all demand placed again")).await;
    } else {
        said_before.insert(ap.app.clone(), said.clone());
        crate::events::emit(ctx, NewEvent::app(kind, &ap.app, said)).await;
    }
}
