//! One region of one cloud: makes its launch calls (at most `launches_per_region` at once, all of
//! them paused while the cloud throttles) and supervises the region's node actors.
//!
//! A launch: record Requested → Launching (with the idempotency token) *before* the call; the
//! answer moves it to Bootstrapping (instance id, price, billing start) or, on insufficient
//! capacity / quota / a refused request, back to Requested on the next candidate (or Failed when
//! none is left), and tells the fleet, which walks on at once. Transient errors retry the same
//! candidate, with the same token, after a backoff.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use fleet_core::NodeId;
use fleet_providers::{LaunchRequest, Provider, ProviderError};
use fleet_state::lifecycle::node::{NodeEvent, NodePhase, transition};
use fleet_state::model::{NodeRecord, RunnerRecord, update};
use fleet_state::store::{Revision, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::Semaphore;

use super::fleet::FleetMsg;
use super::node::{NodeActor, NodeArgs, NodeMsg};
use super::{Ctx, backoff};

pub struct RegionActor;

/// A node to launch, with the revision its record was written at when the sender knows it (a
/// pass that has just written it): the region then records the launch as started against that
/// revision without reading the record first.
#[derive(Debug, Clone)]
pub struct ToLaunch {
    pub node: NodeRecord,
    pub written_at: Option<Revision>,
}

#[derive(Debug)]
pub enum RegionMsg {
    /// Launch these nodes (their current candidates, all in this region).
    Launch(Vec<ToLaunch>),
    /// Records the launches received so far as started, together, then makes their calls.
    StartLaunches,
    /// Retry of a launch after a transient error (`attempt` counts the retries).
    Retry {
        node: NodeRecord,
        attempt: u32,
    },
    /// A launch call succeeded: start the node's actor.
    Launched(NodeRecord),
    SyncNode {
        node: NodeRecord,
        runners: Vec<Arc<RunnerRecord>>,
    },
    /// For chaos tests: panics in the handler.
    #[cfg(feature = "testing")]
    Crash(String),
}

pub struct RegionArgs {
    pub ctx: Arc<Ctx>,
    pub region: String,
    pub provider: Arc<dyn Provider>,
    pub fleet: ActorRef<FleetMsg>,
}

pub struct RegionState {
    args: RegionArgs,
    permits: Arc<Semaphore>,
    /// No launch call starts before this (the cloud asked us to slow down).
    throttled_until: Arc<std::sync::Mutex<tokio::time::Instant>>,
    nodes: HashMap<NodeId, ActorRef<NodeMsg>>,
    /// Launches received and not yet recorded as started ([`RegionMsg::StartLaunches`]).
    pending: Vec<ToLaunch>,
}

impl RegionState {
    async fn node_actor(
        &mut self,
        myself: &ActorRef<RegionMsg>,
        id: NodeId,
    ) -> Result<ActorRef<NodeMsg>, ActorProcessingErr> {
        if let Some(r) = self.nodes.get(&id) {
            return Ok(r.clone());
        }
        let args = NodeArgs { ctx: self.args.ctx.clone(), id, provider: self.args.provider.clone() };
        let (r, _) = Actor::spawn_linked(None, NodeActor, args, myself.get_cell()).await?;
        self.nodes.insert(id, r.clone());
        Ok(r)
    }
}

/// What the launch call's answer does to the record.
enum Outcome {
    Launched(NodeRecord),
    Retry,
    Failed(ProviderError),
    /// The record moved on meanwhile (another pass launched it, or an operator terminated it).
    Stale,
}

/// `cur` moved to Launching on `offering` with `token`, if it is still Requested at `attempt`:
/// the step recorded before a launch call, alone ([`launch_once`]) or together
/// ([`record_started`]).
fn started(
    cur: &NodeRecord,
    attempt: usize,
    offering: &fleet_core::OfferingKey,
    token: &str,
    now: fleet_core::Time,
) -> Option<NodeRecord> {
    if !matches!(cur.state, NodePhase::Requested { .. }) || cur.attempt != attempt {
        return None;
    }
    let ev = NodeEvent::LaunchStarted { offering: offering.clone(), token: token.to_string() };
    Some(NodeRecord { state: transition(&cur.state, ev, now).ok()?, ..cur.clone() })
}

/// Moves the records of `nodes` still Requested at their attempt to Launching with their tokens,
/// in as few transactions as the store takes (each record compared), before any of their calls:
/// the crash-safety rule of [`launch_once`], for a pass's thousand launches at the cost of a few
/// commits instead of one each. Returns the nodes recorded so; a record that changed meanwhile
/// fails its transaction, and `launch_once` records each launch of it alone, as it does for a
/// single one.
///
/// A record whose revision the sender knows is compared at it as sent; the others are read
/// first. On etcd a read is linearizable: it waits until everything committed before it is
/// applied, so 1,250 reads behind the plan's 157 runner transactions held every launch call of
/// the scale bench until the last runner record was in (first launch call 0.43-0.98 s after the
/// demand change).
async fn record_started(ctx: &Ctx, nodes: &[ToLaunch]) -> std::collections::HashSet<NodeId> {
    if nodes.len() < 2 {
        return std::collections::HashSet::new();
    }
    let now = ctx.clock.now();
    let per_txn = ctx.store.max_txn_ops().clamp(1, 1024);
    // The chunks together: on etcd (128 operations a transaction) 1,250 launches are 10 of them,
    // and one after another, behind the plan's runner records, they held the first launch call
    // back (the scale bench on etcd: at 0.95–1.31 s after the demand change, 0.77–0.90 s with
    // the chunks together).
    let chunks = nodes.chunks(per_txn).map(|chunk| async move {
        let (mut cmps, mut ops, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        // The unknown ones read together: on etcd each read is a round trip.
        let reads = futures_util::future::join_all(chunk.iter().map(|l| as_of(ctx, l))).await;
        for (l, read) in chunk.iter().zip(reads) {
            let rec = &l.node;
            let Some(offering) = rec.offering().cloned() else { continue };
            let key = ctx.keys.node(rec.id);
            // The store failing: none of this chunk is recorded here (each is, alone, before its call).
            let Ok(found) = read else { return Vec::new() };
            // Gone, or not a node record: launch_once finds out alone.
            let Some((cur, rev)) = found else { continue };
            let token = fleet_providers::idempotency_token(&ctx.fleet, &rec.id.to_string());
            let Some(next) = started(&cur, rec.attempt, &offering, &token, now) else { continue };
            cmps.push(fleet_state::store::Compare::at(key.clone(), rev));
            ops.push(fleet_state::store::Op::put_json(key, &next));
            ids.push(rec.id);
        }
        if ops.is_empty() {
            return Vec::new();
        }
        match ctx.store.txn(cmps, ops).await {
            Ok(r) if r.succeeded => ids,
            Ok(_) => {
                tracing::debug!("a launch record changed meanwhile: these launches are recorded one by one");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "launches not recorded together: recorded one by one");
                Vec::new()
            }
        }
    });
    futures_util::future::join_all(chunks).await.into_iter().flatten().collect()
}

/// The record `l` is recorded against, and its revision: as sent when the sender knows its
/// revision, else as read now (`None`: gone, or not a node record).
async fn as_of<'a>(ctx: &Ctx, l: &'a ToLaunch) -> Result<Option<(Cow<'a, NodeRecord>, Revision)>, StoreError> {
    let Some(rev) = l.written_at else {
        let kv = ctx.store.get(&ctx.keys.node(l.node.id)).await?;
        return Ok(kv.and_then(|kv| Some((Cow::Owned(kv.json::<NodeRecord>().ok()?), kv.mod_revision))));
    };
    Ok(Some((Cow::Borrowed(&l.node), rev)))
}

/// `permit` (one of the region's `launches_per_region`) is let go as soon as the cloud answers:
/// it bounds the calls in flight, not the recording of their answers. `recorded`: the launch
/// was recorded as started by [`record_started`] (no read of the record before the call, which
/// on a busy etcd was a round trip of ~20 ms with the permit held).
async fn launch_once(
    ctx: &Ctx,
    provider: &dyn Provider,
    rec: &NodeRecord,
    permit: tokio::sync::OwnedSemaphorePermit,
    recorded: bool,
) -> Result<Outcome, StoreError> {
    let key = ctx.keys.node(rec.id);
    let Some(offering) = rec.offering().cloned() else { return Ok(Outcome::Stale) };
    let mut req = LaunchRequest::new(&ctx.fleet, &rec.id.to_string(), &rec.app, offering.clone());
    if offering.capacity == fleet_core::CapacityType::Spot {
        // Never pay more for spot than the plan reserved for this candidate.
        req.max_price = rec.candidates.get(rec.attempt).map(|c| c.price);
    }
    // Record the attempt before the call: after a crash, the token finds what the call made.
    let now = ctx.clock.now();
    // A record already Launching (a retry, or a pass after a restart) keeps its token and is
    // launched again: the cloud answers with the instance the first call made, if any.
    if !recorded {
        let recorded = update(&*ctx.store, &key, |cur: &NodeRecord| {
            started(cur, rec.attempt, &offering, &req.idempotency_token, now)
        })
        .await?;
        match recorded {
            Some(NodeRecord { state: NodePhase::Launching { token, .. }, attempt, .. })
                if token == req.idempotency_token && attempt == rec.attempt => {}
            _ => return Ok(Outcome::Stale),
        }
    }
    crate::crashpoint::hit("launch.started");
    let answer = provider.launch(&req).await;
    drop(permit);
    let now = ctx.clock.now();
    ctx.metrics.launches.get_or_create(&crate::metrics::LaunchLabels::new(offering.cloud, "called")).inc();
    match answer {
        Ok(inst) => {
            crate::crashpoint::hit("launch.answered");
            let billing = inst.launched_at.unwrap_or(now);
            let rec = update(&*ctx.store, &key, |cur: &NodeRecord| {
                let ev = NodeEvent::Launched { instance_id: inst.id.clone() };
                let state = transition(&cur.state, ev, now).ok()?;
                Some(NodeRecord {
                    state,
                    price: cur.candidates.get(cur.attempt).map(|c| c.price),
                    slots: cur.candidates.get(cur.attempt).map_or(cur.slots, |c| c.slots),
                    billing_since: Some(billing),
                    ..cur.clone()
                })
            })
            .await?;
            if let Some(r) = &rec {
                crate::events::node(ctx, r, &NodeEvent::Launched { instance_id: inst.id.clone() }).await;
            }
            tracing::info!(node = rec.as_ref().map(|r| r.id), instance = %inst.id, %offering, "launched");
            crate::crashpoint::hit("launch.recorded");
            Ok(rec.map_or(Outcome::Stale, Outcome::Launched))
        }
        Err(e) if e.is_retryable() => {
            tracing::warn!(node = rec.id, %offering, error = %e, "launch failed; retrying");
            ctx.metrics
                .launch_failures
                .get_or_create(&crate::metrics::LaunchLabels::new(offering.cloud, e.kind()))
                .inc();
            Ok(Outcome::Retry)
        }
        Err(e) => {
            ctx.metrics
                .launch_failures
                .get_or_create(&crate::metrics::LaunchLabels::new(offering.cloud, e.kind()))
                .inc();
            let reason = e.to_string();
            let failed = update(&*ctx.store, &key, |cur: &NodeRecord| {
                let more = cur.attempt + 1 < cur.candidates.len();
                let ev = NodeEvent::LaunchFailed { reason: reason.clone(), retry: more };
                let state = transition(&cur.state, ev, now).ok()?;
                Some(NodeRecord { state, attempt: if more { cur.attempt + 1 } else { cur.attempt }, ..cur.clone() })
            })
            .await?;
            if let Some(r) = &failed {
                let retry = matches!(r.state, NodePhase::Requested { .. });
                crate::events::node(ctx, r, &NodeEvent::LaunchFailed { reason: reason.clone(), retry }).await;
            }
            tracing::info!(node = rec.id, %offering, error = %e, "launch refused; trying the next offering");
            Ok(Outcome::Failed(e))
        }
    }
}

#[ractor::async_trait]
impl Actor for RegionActor {
    type Msg = RegionMsg;
    type State = RegionState;
    type Arguments = RegionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RegionMsg>,
        args: RegionArgs,
    ) -> Result<RegionState, ActorProcessingErr> {
        let permits = Arc::new(Semaphore::new(args.ctx.config.launches_per_region.max(1)));
        Ok(RegionState {
            args,
            permits,
            throttled_until: Arc::new(std::sync::Mutex::new(tokio::time::Instant::now())),
            nodes: HashMap::new(),
            pending: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RegionMsg>,
        msg: RegionMsg,
        st: &mut RegionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegionMsg::Launch(nodes) => {
                // A pass's launches arrive in one message; the first of several asks for a start
                // after the others already in the mailbox.
                let first = st.pending.is_empty();
                st.pending.extend(nodes);
                if first && !st.pending.is_empty() {
                    myself.send_message(RegionMsg::StartLaunches)?;
                }
            }
            RegionMsg::StartLaunches => {
                let nodes = std::mem::take(&mut st.pending);
                let recorded = record_started(&st.args.ctx, &nodes).await;
                for ToLaunch { node, .. } in nodes {
                    let r = recorded.contains(&node.id);
                    spawn_launch(&myself, st, node, 0, r);
                }
            }
            RegionMsg::Retry { node, attempt } => spawn_launch(&myself, st, node, attempt, false),
            RegionMsg::Launched(node) => {
                let id = node.id;
                st.node_actor(&myself, id)
                    .await?
                    .send_message(NodeMsg::Sync { node: Box::new(node), runners: vec![] })?;
            }
            RegionMsg::SyncNode { node, runners } => {
                if matches!(node.state, NodePhase::Terminated { .. }) {
                    return Ok(());
                }
                let id = node.id;
                st.node_actor(&myself, id).await?.send_message(NodeMsg::Sync { node: Box::new(node), runners })?;
            }
            #[cfg(feature = "testing")]
            RegionMsg::Crash(why) => panic!("region actor {} asked to crash: {why}", st.args.region),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RegionMsg>,
        evt: SupervisionEvent,
        st: &mut RegionState,
    ) -> Result<(), ActorProcessingErr> {
        match &evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = st.nodes.iter().find(|(_, r)| r.get_id() == cell.get_id()).map(|(k, _)| *k) {
                    st.nodes.remove(&id);
                    cell.stop_children(Some("supervisor restarts this subtree".into()));
                    st.args.ctx.metrics.actor_restarts.get_or_create(&crate::metrics::KindLabel::new("node")).inc();
                    // The next reconcile's SyncNode re-creates it from the store.
                    tracing::error!(node = id, error = %err, "node actor failed; restarted on the next reconcile");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                st.nodes.retain(|_, r| r.get_id() != cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Runs one launch attempt as a task, so the region keeps taking messages (and other launches)
/// while the cloud answers.
fn spawn_launch(myself: &ActorRef<RegionMsg>, st: &RegionState, node: NodeRecord, attempt: u32, recorded: bool) {
    let ctx = st.args.ctx.clone();
    let provider = st.args.provider.clone();
    let permits = st.permits.clone();
    let throttled = st.throttled_until.clone();
    let fleet = st.args.fleet.clone();
    let me = myself.clone();
    tokio::spawn(async move {
        let Ok(permit) = permits.acquire_owned().await else { return };
        let until = *throttled.lock().expect("throttle lock");
        // Only when throttled: a sleep to a time already past still waits for the timer's next
        // tick (up to a millisecond), with the permit held.
        if until > tokio::time::Instant::now() {
            tokio::time::sleep_until(until).await;
        }
        let id = node.id;
        let Some(offering) = node.offering().cloned() else { return };
        let Some(pass) = ctx.launches.enter() else {
            let _ = fleet.send_message(FleetMsg::Launched { node: id, offering, ok: false });
            return;
        };
        let outcome = launch_once(&ctx, &*provider, &node, permit, recorded).await;
        drop(pass);
        match outcome {
            Ok(Outcome::Launched(rec)) => {
                let _ = me.send_message(RegionMsg::Launched(rec));
                let _ = fleet.send_message(FleetMsg::Launched { node: id, offering, ok: true });
            }
            Ok(Outcome::Failed(error)) => {
                let _ = fleet.send_message(FleetMsg::LaunchFailed { node: id, offering, error });
            }
            Ok(Outcome::Stale) => {
                let _ = fleet.send_message(FleetMsg::Launched { node: id, offering, ok: false });
            }
            Ok(Outcome::Retry) | Err(_) => {
                let wait = backoff(&ctx.config, attempt);
                {
                    let mut t = throttled.lock().expect("throttle lock");
                    *t = (*t).max(tokio::time::Instant::now() + wait);
                }
                // The record is Launching now: re-read it so the retry re-sends the same token.
                let fresh = fleet_state::store::get_json::<NodeRecord>(&*ctx.store, &ctx.keys.node(id)).await;
                match fresh {
                    Ok(Some((rec, _))) => {
                        let rec = match rec.state {
                            // Still Launching: retried as it is, so the launch re-sends the token
                            // recorded with it (a first call that did make the instance is found
                            // again, not doubled). Any other state: someone moved it on; no retry.
                            NodePhase::Launching { .. } => rec,
                            _ => return,
                        };
                        me.send_after(wait, move || RegionMsg::Retry { node: rec, attempt: attempt + 1 });
                    }
                    _ => {
                        // Store trouble: let the fleet's next pass re-send the launch.
                        let _ = fleet.send_message(FleetMsg::Launched { node: id, offering, ok: false });
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::sync::Arc;

    use fleet_core::{CapacityType, Cloud, Price};
    use fleet_state::lifecycle::node::NodePhase;
    use fleet_state::model::{CandidateRecord, NodeRecord};
    use fleet_state::store::embedded::EmbeddedStore;
    use fleet_state::store::{Op, Store};

    use super::{ToLaunch, record_started};
    use crate::actors::{Config, Ctx, InstanceRunning};
    use crate::testing::harness::h100x8;

    fn requested(id: u64, now: fleet_core::Time) -> NodeRecord {
        let offering = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand).key();
        NodeRecord {
            id,
            app: "llm".into(),
            state: NodePhase::Requested { since: now },
            candidates: vec![CandidateRecord { offering, price: Price::parse_decimal("20").unwrap(), slots: 1 }],
            attempt: 0,
            slots: 1,
            price: None,
            billing_since: None,
            billing_until: None,
            cordoned: false,
            leaving: None,
            created_at: now,
        }
    }

    /// Launches recorded together: a record whose revision the pass sent is compared at that
    /// revision (not read again), so one changed since then leaves its whole transaction to
    /// `launch_once`; a record sent without one is read first.
    #[tokio::test]
    async fn launches_recorded_together_compare_the_revision_they_were_sent_with() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let ctx = Ctx::new(
            "t",
            store.clone(),
            BTreeMap::new(),
            Arc::new(InstanceRunning),
            Config::default(),
            fleet_state::clock::Clock::System,
        );
        let now = ctx.clock.now();
        let write = |recs: Vec<NodeRecord>| {
            let (store, keys) = (store.clone(), ctx.keys.clone());
            async move {
                let ops = recs.iter().map(|r| Op::put_json(keys.node(r.id), r)).collect();
                store.txn(vec![], ops).await.unwrap().revision
            }
        };
        let phase = |id: u64| {
            let (store, keys) = (store.clone(), ctx.keys.clone());
            async move {
                let (rec, _) =
                    fleet_state::store::get_json::<NodeRecord>(&*store, &keys.node(id)).await.unwrap().unwrap();
                rec
            }
        };

        // Two sent with the revision they were written at, one without: all three recorded,
        // each with its own token.
        let rev = write(vec![requested(1, now), requested(2, now), requested(3, now)]).await;
        let sent = vec![
            ToLaunch { node: requested(1, now), written_at: Some(rev) },
            ToLaunch { node: requested(2, now), written_at: Some(rev) },
            ToLaunch { node: requested(3, now), written_at: None },
        ];
        assert_eq!(record_started(&ctx, &sent).await, HashSet::from([1, 2, 3]));
        for id in 1..=3 {
            match phase(id).await.state {
                NodePhase::Launching { token, .. } => {
                    assert_eq!(token, fleet_providers::idempotency_token("t", &id.to_string()));
                }
                other => panic!("node {id}: {other:?}"),
            }
        }

        // Node 5 changes after the revision it is sent with: its transaction (shared with 4)
        // records neither, and node 5 keeps its change.
        let rev = write(vec![requested(4, now), requested(5, now)]).await;
        write(vec![NodeRecord { cordoned: true, ..requested(5, now) }]).await;
        let sent = vec![
            ToLaunch { node: requested(4, now), written_at: Some(rev) },
            ToLaunch { node: requested(5, now), written_at: Some(rev) },
        ];
        assert!(record_started(&ctx, &sent).await.is_empty());
        assert!(matches!(phase(4).await.state, NodePhase::Requested { .. }));
        let five = phase(5).await;
        assert!(matches!(five.state, NodePhase::Requested { .. }) && five.cordoned);
    }
}
