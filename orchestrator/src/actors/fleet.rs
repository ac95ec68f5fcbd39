//! The root of the tree: reconciles desired state (spec + the planner's output) with actual state
//! (store + clouds), every `reconcile_every` and at once after a launch fails.
//!
//! Each reconcile is idempotent: it reads everything it acts on from the store, and every write
//! is a compare-and-swap, so running it twice (or after a crash) does nothing twice. An error
//! ends the pass; the next one comes after a backoff with jitter (the error policy).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use fleet_core::keys::Counter;
use fleet_core::spec::FleetSpec;
use fleet_core::{Catalog, Cloud, Offering, OfferingKey};
use fleet_policies::placement::{OfferingId, PlacementIndex, UnavailableCache, UnavailableReason};
use fleet_policies::plan::{self, FleetPlan, PlanOptions};
use fleet_providers::ProviderError;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::cloud::{CloudActor, CloudMsg};
use super::{Ctx, RestartBudget, backoff};
use crate::informer::Informer;
use crate::lifecycle::node::{DrainReason, NodeEvent, NodeState, Time, transition};
use crate::lifecycle::runner::{self, NodeId, RunnerEvent, RunnerState};
use crate::model::{CandidateRecord, NodeRecord, RunnerRecord, update_at};
use crate::queue;
use crate::reconcile::{Unhealthy, drains, fleet_state, offering_ids, unhealthy_nodes};
use crate::store::{Op, StoreError, to_json};

pub struct FleetActor;

#[derive(Debug)]
pub enum FleetMsg {
    /// The periodic pass (schedules the next one).
    Tick,
    /// An extra pass now (does not schedule another).
    Nudge,
    /// A region's launch attempt for `node` ended.
    LaunchFailed { node: NodeId, offering: OfferingKey, error: ProviderError },
    /// The launch ended well, or no longer matters (`offering` proved to have capacity when `ok`).
    Launched { node: NodeId, offering: OfferingKey, ok: bool },
    /// Offerings gathered again from every provider (live prices and availability).
    Prices(Arc<Catalog>),
    /// Launch orders in flight were lost with a failed actor: the next pass re-sends them
    /// (the idempotency token makes a re-sent launch find the instance the first one made).
    ForgetLaunches,
    /// For chaos tests: panics in the handler.
    Crash(String),
}

pub struct FleetArgs {
    pub ctx: Arc<Ctx>,
}

/// The applied spec with what was derived from it.
struct Applied {
    revision: i64,
    spec: Arc<FleetSpec>,
    index: PlacementIndex,
    ids: HashMap<OfferingKey, OfferingId>,
}

pub struct FleetState {
    ctx: Arc<Ctx>,
    /// Nodes and runners, in memory, current by watch (and by this actor's own writes).
    informer: Informer,
    catalog: Arc<Catalog>,
    applied: Option<Applied>,
    unavailable: UnavailableCache,
    pending_since: HashMap<String, Time>,
    clouds: BTreeMap<Cloud, ActorRef<CloudMsg>>,
    restarts: HashMap<Cloud, RestartBudget>,
    /// Nodes with a launch order out (so a reconcile does not send a second one).
    launching: HashSet<NodeId>,
    /// Offerings that launched recently: launches go to them in parallel.
    proven: HashMap<OfferingKey, Time>,
    /// Offerings not proven, with one launch in flight probing them; other nodes wait for its
    /// answer, so a pool without capacity costs one refused call, not one per node.
    probing: HashSet<OfferingKey>,
    waiting: HashSet<NodeId>,
    failed_passes: u32,
    passes: u64,
    /// What each node actor was last sent (see [`sync_print`]).
    synced: HashMap<NodeId, u64>,
    /// Ready nodes not fit to serve, as of the last pass.
    unhealthy: BTreeMap<NodeId, Unhealthy>,
    /// Nodes whose agent has registered (a later absence means its lease expired).
    agent_seen: HashSet<NodeId>,
    /// Since when each unhealthy node has been so.
    unhealthy_since: HashMap<NodeId, Time>,
    /// Since when this daemon has seen the store without a break (None while it cannot).
    view_since: Option<Time>,
}

/// Settled ready nodes are audited (one `list` per cloud) this often, in passes.
const FULL_SYNC_EVERY: u64 = 10;

/// Identifies a node's record and runners as of one pass: the informer replaces a record's `Arc`
/// whenever it changes, so the addresses change with the content.
fn sync_print(n: &Arc<NodeRecord>, runners: &[&Arc<RunnerRecord>]) -> u64 {
    // FNV-1a over the addresses: cheap, and only compared with itself.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |x: usize| h = (h ^ x as u64).wrapping_mul(0x0100_0000_01b3);
    mix(Arc::as_ptr(n) as usize);
    for r in runners {
        mix(Arc::as_ptr(*r) as usize);
    }
    h
}

/// Offerings of every provider, live where the provider can, else the built-in catalog's rows of
/// that cloud.
async fn gather_catalog(ctx: &Ctx) -> Catalog {
    let mut all: Vec<Offering> = Vec::new();
    for (cloud, p) in &ctx.providers {
        match p.offerings().await {
            Ok(o) => all.extend(o),
            Err(e) => {
                tracing::warn!(%cloud, error = %e, "offerings unavailable; using the built-in catalog for this cloud");
                all.extend(Catalog::builtin().offerings().iter().filter(|o| o.cloud == *cloud).cloned());
            }
        }
    }
    Catalog::new(all)
}

async fn spawn_cloud(
    myself: &ActorRef<FleetMsg>,
    ctx: &Arc<Ctx>,
    cloud: Cloud,
) -> Result<ActorRef<CloudMsg>, ActorProcessingErr> {
    let provider = ctx.providers[&cloud].clone();
    let args = super::cloud::CloudArgs { ctx: ctx.clone(), cloud, provider, fleet: myself.clone() };
    let (r, _) = Actor::spawn_linked(None, CloudActor, args, myself.get_cell()).await?;
    Ok(r)
}

#[ractor::async_trait]
impl Actor for FleetActor {
    type Msg = FleetMsg;
    type State = FleetState;
    type Arguments = FleetArgs;

    async fn pre_start(&self, myself: ActorRef<FleetMsg>, args: FleetArgs) -> Result<FleetState, ActorProcessingErr> {
        let ctx = args.ctx;
        let catalog = Arc::new(gather_catalog(&ctx).await);
        let mut clouds = BTreeMap::new();
        for cloud in ctx.providers.keys() {
            clouds.insert(*cloud, spawn_cloud(&myself, &ctx, *cloud).await?);
        }
        let informer = Informer::start(ctx.store.clone(), &ctx.keys, Some(ctx.nudge.clone())).await;
        myself.send_message(FleetMsg::Tick)?;
        // Prices move (spot above all): gather every provider's offerings again now and then, off
        // the reconcile pass (a billing catalog takes seconds to page through).
        let (every, me, c) = (ctx.config.prices_every, myself.clone(), ctx.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let catalog = Arc::new(gather_catalog(&c).await);
                if me.send_message(FleetMsg::Prices(catalog)).is_err() {
                    return;
                }
            }
        });
        // Nudges become passes, at most one per 50 ms (a burst of submits is one pass).
        let (nudge, me) = (ctx.nudge.clone(), myself.clone());
        tokio::spawn(async move {
            loop {
                nudge.notified().await;
                if me.send_message(FleetMsg::Nudge).is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        });
        Ok(FleetState {
            ctx,
            informer,
            catalog,
            applied: None,
            unavailable: UnavailableCache::default(),
            pending_since: HashMap::new(),
            clouds,
            restarts: HashMap::new(),
            launching: HashSet::new(),
            proven: HashMap::new(),
            probing: HashSet::new(),
            waiting: HashSet::new(),
            failed_passes: 0,
            passes: 0,
            synced: HashMap::new(),
            unhealthy: BTreeMap::new(),
            agent_seen: HashSet::new(),
            unhealthy_since: HashMap::new(),
            view_since: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<FleetMsg>,
        msg: FleetMsg,
        st: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FleetMsg::Tick => {
                let started = tokio::time::Instant::now();
                let next = match reconcile(st).await {
                    Ok(()) => {
                        st.failed_passes = 0;
                        st.ctx.config.reconcile_every
                    }
                    Err(e) => {
                        st.failed_passes += 1;
                        st.ctx.metrics.reconcile_errors.inc();
                        let wait = backoff(&st.ctx.config, st.failed_passes);
                        tracing::warn!(error = %e, retry_in = ?wait, "reconcile failed");
                        wait
                    }
                };
                st.ctx.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
                st.ctx.metrics.reconcile_count.inc();
                myself.send_after(next, || FleetMsg::Tick);
            }
            FleetMsg::Nudge => {
                let started = tokio::time::Instant::now();
                if let Err(e) = reconcile(st).await {
                    st.ctx.metrics.reconcile_errors.inc();
                    tracing::warn!(error = %e, "reconcile failed; the next tick retries");
                }
                st.ctx.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
                st.ctx.metrics.reconcile_count.inc();
            }
            FleetMsg::Launched { node, offering, ok } => {
                st.launching.remove(&node);
                st.probing.remove(&offering);
                if ok {
                    st.proven.insert(offering, st.ctx.clock.now());
                }
                release_waiting(st).await?;
            }
            FleetMsg::LaunchFailed { node, offering, error } => {
                st.launching.remove(&node);
                st.probing.remove(&offering);
                on_launch_failed(st, node, error).await?;
                release_waiting(st).await?;
            }
            FleetMsg::Prices(catalog) => {
                st.catalog = catalog;
                // Offering ids are positions in the catalog: the placement index goes with it.
                if let Some(a) = &mut st.applied {
                    a.index = PlacementIndex::new(st.catalog.clone(), &a.spec);
                    a.ids = offering_ids(&a.index);
                }
                tracing::debug!(offerings = st.catalog.len(), "offerings refreshed");
            }
            FleetMsg::ForgetLaunches => {
                st.launching.clear();
                st.probing.clear();
            }
            FleetMsg::Crash(why) => panic!("fleet actor asked to crash: {why}"),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<FleetMsg>,
        evt: SupervisionEvent,
        st: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = &evt {
            let err = err.to_string();
            let Some(cloud) = st.clouds.iter().find(|(_, r)| r.get_id() == cell.get_id()).map(|(c, _)| *c) else {
                return Ok(());
            };
            st.clouds.remove(&cloud);
            cell.stop_children(Some("supervisor restarts this subtree".into()));
            st.ctx.metrics.actor_restarts.get_or_create(&crate::metrics::KindLabel::new("cloud")).inc();
            let budget = st.restarts.entry(cloud).or_default();
            if !budget.allow(5, std::time::Duration::from_secs(300)) {
                // Escalate: a cloud actor that keeps failing takes the fleet actor down, and its
                // own supervisor (the daemon) decides.
                return Err(format!("cloud actor {cloud} failed 6 times in 5 minutes; last: {err}").into());
            }
            let wait = backoff(&st.ctx.config, budget.recent());
            tracing::error!(%cloud, error = %err, restart_in = ?wait, "cloud actor failed; restarting");
            tokio::time::sleep(wait).await;
            let r = spawn_cloud(&myself, &st.ctx, cloud).await?;
            st.clouds.insert(cloud, r);
            // In-flight launches of that cloud died with it; the next reconcile re-sends them.
            st.launching.clear();
            st.probing.clear();
        }
        Ok(())
    }
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
    for label in ["no_agent", "reported", "interrupted"] {
        let n = now.values().filter(|u| u.label() == label).count();
        st.ctx.metrics.nodes_unhealthy.get_or_create(&crate::metrics::KindLabel::new(label)).set(n as i64);
    }
    st.unhealthy = now;
}

async fn on_launch_failed(st: &mut FleetState, node: NodeId, error: ProviderError) -> Result<(), StoreError> {
    let now = st.ctx.clock.now();
    let ttl = st.ctx.config.unavailable_ttl;
    let why = match &error {
        ProviderError::InsufficientCapacity { .. } => Some(UnavailableReason::InsufficientCapacity),
        ProviderError::QuotaExceeded { .. } => Some(UnavailableReason::QuotaExceeded),
        _ => None,
    };
    if let (Some(why), Some(key)) = (why, error.unavailable_offering()) {
        st.unavailable.mark(key.clone(), why, now, ttl);
    }
    // Walk to the next candidate at once (the region already advanced the record).
    if let Some((rec, _)) = crate::store::get_json::<NodeRecord>(&*st.ctx.store, &st.ctx.keys.node(node)).await?
        && matches!(rec.state, NodeState::Requested { .. })
    {
        dispatch_launch(st, rec).await?;
    }
    Ok(())
}

/// Nodes that waited for a probe go now (or wait for the next one).
async fn release_waiting(st: &mut FleetState) -> Result<(), StoreError> {
    for id in std::mem::take(&mut st.waiting) {
        if let Some((rec, _)) = crate::store::get_json::<NodeRecord>(&*st.ctx.store, &st.ctx.keys.node(id)).await?
            && matches!(rec.state, NodeState::Requested { .. } | NodeState::Launching { .. })
        {
            dispatch_launch(st, rec).await?;
        }
    }
    Ok(())
}

/// Sends the node's launch to its cloud: first past candidates that refused meanwhile (the
/// record's attempt moves on; none left → Failed), and only one at a time to an offering that has
/// not launched recently.
async fn dispatch_launch(st: &mut FleetState, mut rec: NodeRecord) -> Result<(), StoreError> {
    if st.launching.contains(&rec.id) {
        return Ok(());
    }
    let now = st.ctx.clock.now();
    if matches!(rec.state, NodeState::Requested { .. }) {
        let from = rec.attempt;
        let skip_to = (from..rec.candidates.len())
            .find(|i| st.unavailable.covering_key(&rec.candidates[*i].offering, now).is_none())
            .unwrap_or(rec.candidates.len());
        if skip_to != from {
            let updated = update_at(&*st.ctx.store, &st.ctx.keys.node(rec.id), |cur: &NodeRecord| {
                if cur.attempt != from || !matches!(cur.state, NodeState::Requested { .. }) {
                    return None;
                }
                if skip_to >= cur.candidates.len() {
                    let reason = "every candidate offering refused capacity or quota".to_string();
                    let state = NodeState::Failed { instance_id: None, reason, since: now };
                    return Some(NodeRecord { state, ..cur.clone() });
                }
                Some(NodeRecord { attempt: skip_to, ..cur.clone() })
            })
            .await?;
            if let Some((r, rev)) = &updated {
                st.informer.put_node(r.clone(), *rev);
            }
            match updated {
                Some((r, _)) if matches!(r.state, NodeState::Requested { .. }) && r.attempt == skip_to => rec = r,
                _ => return Ok(()),
            }
        }
    }
    let Some(offering) = rec.offering().cloned() else { return Ok(()) };
    let ttl = chrono::Duration::from_std(st.ctx.config.unavailable_ttl).unwrap_or_default();
    let proven = st.proven.get(&offering).is_some_and(|t| now - *t < ttl);
    if !proven {
        if st.probing.contains(&offering) {
            st.waiting.insert(rec.id);
            return Ok(());
        }
        st.probing.insert(offering.clone());
    }
    let cloud = offering.cloud;
    let Some(actor) = st.clouds.get(&cloud) else {
        tracing::warn!(node = rec.id, %cloud, "no actor for the cloud right now; the next reconcile retries");
        st.probing.remove(&offering);
        return Ok(());
    };
    st.launching.insert(rec.id);
    if actor.send_message(CloudMsg::Launch(rec)).is_err() {
        tracing::warn!(%cloud, "cloud actor is gone; the next reconcile retries");
    }
    Ok(())
}

async fn load_spec(st: &mut FleetState) -> Result<(), StoreError> {
    let key = st.ctx.keys.spec();
    let Some(kv) = st.ctx.store.get(&key).await? else {
        st.applied = None;
        return Ok(());
    };
    if st.applied.as_ref().is_some_and(|a| a.revision == kv.mod_revision) {
        return Ok(());
    }
    let stored: crate::model::StoredSpec = kv.json()?;
    let spec = FleetSpec::parse("store:spec", &stored.toml)
        .map_err(|e| StoreError::Corrupt { key: key.clone(), detail: e.to_string() })?;
    let index = PlacementIndex::new(st.catalog.clone(), &spec);
    let ids = offering_ids(&index);
    tracing::info!(revision = kv.mod_revision, apps = spec.apps.len(), "spec applied");
    st.applied = Some(Applied { revision: kv.mod_revision, spec: Arc::new(spec), index, ids });
    Ok(())
}

/// One pass of the reconcile loop.
async fn reconcile(st: &mut FleetState) -> Result<(), StoreError> {
    let ctx = st.ctx.clone();
    let store = &*ctx.store;
    let keys = &ctx.keys;
    let now = ctx.clock.now();
    load_spec(st).await?;
    st.unavailable.expire(now);
    let reclaimed = std::mem::take(&mut *ctx.reclaimed.lock().expect("reclaimed lock"));
    for o in reclaimed {
        tracing::warn!(offering = %o, "spot capacity reclaimed without notice: offering avoided for a while");
        st.unavailable.mark(o, UnavailableReason::Preempted, now, ctx.config.unavailable_ttl);
    }

    if !st.informer.is_fresh() {
        // No decision on a stale view: a missed change could mean a double launch.
        st.view_since = None;
        return Err(StoreError::Unavailable("the node and runner cache is being re-listed".into()));
    }
    let view_since = *st.view_since.get_or_insert(now);
    let mut phases = Phases::new();
    let nodes = st.informer.nodes();
    let runners = st.informer.runners();
    phases.mark("snapshot");
    let (mut depths, requeued) = queue::scan(store, keys).await?;
    if requeued > 0 {
        ctx.metrics.requests_requeued.inc_by(u64::from(requeued));
    }
    // Every app of the spec shows in the metrics, idle ones with zeros.
    for app in st.applied.iter().flat_map(|a| a.spec.apps.iter()) {
        depths.entry(app.name.clone()).or_default();
    }
    phases.mark("queue");
    crate::metrics::observe(&ctx.metrics, &nodes, &runners, &depths, now);
    let agents = st.informer.agents();
    st.agent_seen.extend(agents.iter().map(|a| a.node));
    if st.passes.is_multiple_of(FULL_SYNC_EVERY) {
        let live: HashSet<NodeId> = nodes.iter().map(|n| n.id).collect();
        st.agent_seen.retain(|id| live.contains(id));
    }
    note_health(st, unhealthy_nodes(&nodes, &agents, &st.agent_seen, now, ctx.config.agent_grace));
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
            && matches!(r.state, NodeState::Draining { .. })
        {
            tracing::warn!(node = id, ?reason, "node drained: a replacement is planned, then it is terminated");
            // A reclaimed spot offering is avoided for a while: its replacement goes elsewhere.
            if matches!(reason, DrainReason::SpotInterruption)
                && let Some(o) = r.offering()
                && o.capacity == fleet_core::CapacityType::Spot
            {
                st.unavailable.mark(o.clone(), UnavailableReason::Preempted, now, ctx.config.unavailable_ttl);
            }
            st.informer.put_node(r, rev);
        }
    }
    phases.mark("metrics");

    // Carry existing nodes forward: launches not in flight, node actors that should exist.
    let mut audit: BTreeMap<fleet_core::Cloud, Vec<NodeRecord>> = BTreeMap::new();
    let mut by_node: HashMap<NodeId, Vec<&Arc<RunnerRecord>>> = HashMap::with_capacity(nodes.len());
    for r in &runners {
        by_node.entry(r.node().unwrap_or(0)).or_default().push(r);
    }
    for n in &nodes {
        match &n.state {
            NodeState::Requested { .. } | NodeState::Launching { .. } => dispatch_launch(st, (**n).clone()).await?,
            NodeState::Terminated { .. } | NodeState::Failed { instance_id: None, .. } => {}
            _ => {
                let Some(cloud) = n.offering().map(|o| o.cloud) else { continue };
                let rs: &[&Arc<RunnerRecord>] = by_node.get(&n.id).map_or(&[], Vec::as_slice);
                // A ready node whose record and runners did not change, and whose runners all
                // serve, needs nothing from its actor: skip it.
                let settled = matches!(n.state, NodeState::Ready { .. })
                    && rs.iter().all(|r| matches!(r.state, RunnerState::Idle { .. } | RunnerState::Busy { .. }));
                let print = sync_print(n, rs);
                if settled && st.synced.get(&n.id) == Some(&print) {
                    // Nothing changed: its actor (if any) has nothing to do; the audit below
                    // checks that the cloud still runs it.
                    if st.passes.is_multiple_of(FULL_SYNC_EVERY) {
                        audit.entry(cloud).or_default().push((**n).clone());
                    }
                    continue;
                }
                if settled && !st.synced.contains_key(&n.id) {
                    // First seen settled (the daemon just started): one list call per cloud
                    // confirms its instance instead of an actor per node (12,500 actors at once
                    // at scale); a missing instance brings its actor.
                    audit.entry(cloud).or_default().push((**n).clone());
                    st.synced.insert(n.id, print);
                    continue;
                }
                let rs: Vec<Arc<RunnerRecord>> = rs.iter().map(|r| Arc::clone(r)).collect();
                if let Some(actor) = st.clouds.get(&cloud)
                    && actor.send_message(CloudMsg::SyncNode { node: (**n).clone(), runners: rs }).is_ok()
                {
                    st.synced.insert(n.id, print);
                }
            }
        }
    }
    // Orphan collection rides on the audit's list call: every instance of the fleet must belong
    // to a record that may hold one (the view is fresh here: a stale one returned above).
    let collect = st.passes.is_multiple_of(FULL_SYNC_EVERY).then(|| {
        let known: Arc<HashSet<String>> = Arc::new(
            nodes
                .iter()
                // A failed launch that left no instance id holds none: an instance of its node
                // (a launch that timed out but went through) is an orphan too.
                .filter(|n| {
                    !matches!(n.state, NodeState::Terminated { .. } | NodeState::Failed { instance_id: None, .. })
                })
                .map(|n| n.id.to_string())
                .collect(),
        );
        (known, ctx.config.orphan_grace)
    });
    for (cloud, actor) in &st.clouds {
        let nodes = audit.remove(cloud).unwrap_or_default();
        if nodes.is_empty() && collect.is_none() {
            continue;
        }
        let _ = actor.send_message(CloudMsg::Audit { nodes, collect: collect.clone() });
    }
    phases.mark("sync");
    st.passes += 1;
    let live: HashSet<NodeId> = nodes.iter().filter(|n| n.is_live()).map(|n| n.id).collect();
    st.synced.retain(|id, _| live.contains(id));
    // Runners whose node will never host them (launch given up, node gone): stopped here.
    let node_state: HashMap<NodeId, &NodeState> = nodes.iter().map(|n| (n.id, &n.state)).collect();
    for (node, rs) in &by_node {
        let orphaned = match node_state.get(node) {
            None => true,
            Some(s) => matches!(s, NodeState::Terminated { .. } | NodeState::Failed { instance_id: None, .. }),
        };
        if orphaned {
            for r in rs {
                retire_runner(&ctx, &st.informer, r, now).await?;
            }
        }
    }
    // Failed launches that never made an instance cost nothing and are forgotten.
    for n in nodes.iter().filter(|n| matches!(n.state, NodeState::Failed { instance_id: None, .. })) {
        if !by_node.contains_key(&n.id) {
            let kv = store.get(&keys.node(n.id)).await?;
            if let Some(kv) = kv {
                let res = store.txn(vec![crate::store::Compare::unchanged(&kv)], vec![Op::delete(&kv.key)]).await?;
                if res.succeeded {
                    st.informer.delete_node(n.id, res.revision);
                }
            }
        }
    }

    phases.mark("orphans");
    let Some(applied) = &st.applied else { return Ok(()) };
    let state =
        fleet_state(&applied.index, &applied.ids, &nodes, &runners, &depths, &st.pending_since, &st.unavailable, now);
    phases.mark("state");
    let plan = plan::plan(&applied.index, &applied.spec, &state, &PlanOptions::default());
    phases.mark("plan");
    let (new_nodes, runner_ops) = carry_out(st, &plan, &nodes, now).await?;
    phases.mark("write");
    for rec in new_nodes {
        dispatch_launch(st, rec).await?;
    }
    phases.mark("dispatch");
    write_all(store, &st.informer, runner_ops).await?;
    phases.mark("runners");
    phases.log(nodes.len(), runners.len());
    Ok(())
}

/// Where a reconcile pass spends its time (logged at debug, or at warn when a pass is slow).
struct Phases {
    start: std::time::Instant,
    last: std::time::Instant,
    marks: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    fn new() -> Phases {
        let now = std::time::Instant::now();
        Phases { start: now, last: now, marks: Vec::new() }
    }

    fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.marks.push((name, now - self.last));
        self.last = now;
    }

    fn log(&self, nodes: usize, runners: usize) {
        let total = self.start.elapsed();
        let parts: Vec<String> =
            self.marks.iter().map(|(n, d)| format!("{n}={:.1}ms", d.as_secs_f64() * 1e3)).collect();
        if total > std::time::Duration::from_secs(1) {
            tracing::warn!(?total, nodes, runners, phases = %parts.join(" "), "slow reconcile pass");
        } else {
            tracing::debug!(?total, nodes, runners, phases = %parts.join(" "), "reconcile pass");
        }
    }
}

/// Stops a runner that cannot run any more and hands its requests back.
async fn retire_runner(ctx: &Ctx, informer: &Informer, r: &RunnerRecord, now: Time) -> Result<(), StoreError> {
    let key = ctx.keys.runner(r.id);
    if !matches!(r.state, RunnerState::Stopped { .. }) {
        update_at(&*ctx.store, &key, |cur: &RunnerRecord| {
            let next = runner::transition(&cur.state, RunnerEvent::Lost, now).ok()?;
            Some(RunnerRecord { state: next, ..cur.clone() })
        })
        .await?;
    }
    queue::requeue_orphans(&*ctx.store, &ctx.keys, &[r.id]).await?;
    let res = ctx.store.txn(vec![], vec![Op::delete(&key)]).await?;
    informer.delete_runner(r.id, res.revision);
    Ok(())
}

/// Writes what the plan decided: runner stops, runners on existing nodes, new nodes (each with its
/// runners, in one transaction, before any launch call), releases. Returns the new nodes.
async fn carry_out(
    st: &mut FleetState,
    plan: &FleetPlan,
    nodes: &[Arc<NodeRecord>],
    now: Time,
) -> Result<(Vec<NodeRecord>, Vec<(Op, Written)>), StoreError> {
    let ctx = st.ctx.clone();
    let store = &*ctx.store;
    let keys = &ctx.keys;
    let Some(applied) = &st.applied else { return Ok((vec![], vec![])) };
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
        let ids = crate::store::allocate_many(store, &[(&rk, runners_wanted), (&nk, nodes_wanted)]).await?;
        (ids[0], ids[1])
    } else {
        (0, 0)
    };
    // New node records go to the store before their launch orders; runner records right after
    // (a node whose runners were lost to a crash in between is a node with free slots, which the
    // next plan fills).
    let mut node_ops: Vec<(Op, Written)> = Vec::new();
    let mut runner_ops: Vec<(Op, Written)> = Vec::new();
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
        let mut new_runner = |node: NodeId| {
            let rec = RunnerRecord {
                id: next_runner,
                app: ap.app.clone(),
                state: RunnerState::Pending { node },
                created_at: now,
            };
            next_runner += 1;
            (Op::put(keys.runner(rec.id), to_json(&rec)), Written::Runner(rec))
        };
        for (node, n) in &ap.on_existing {
            runner_ops.extend((0..*n).map(|_| new_runner(*node)));
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
                state: NodeState::Requested { since: now },
                candidates,
                attempt: 0,
                slots,
                price: None,
                billing_since: None,
                billing_until: None,
                cordoned: false,
                created_at: now,
            };
            node_ops.push((Op::put(keys.node(id), to_json(&rec)), Written::Node(rec.clone())));
            runner_ops.extend((0..np.runners).map(|_| new_runner(id)));
            created.push(rec);
        }
        if !ap.new_nodes.is_empty() {
            tracing::info!(app = %ap.app, nodes = ap.new_nodes.len(), "nodes requested");
        }
        for id in &ap.release_nodes {
            let Some(n) = nodes.iter().find(|n| n.id == *id) else { continue };
            if !matches!(n.state, NodeState::Ready { .. } | NodeState::Bootstrapping { .. }) {
                continue;
            }
            let done = update_at(store, &keys.node(*id), |cur: &NodeRecord| {
                let ev = match cur.state {
                    NodeState::Ready { .. } => NodeEvent::Drain { reason: DrainReason::ScaleDown },
                    _ => NodeEvent::Terminate,
                };
                let next = transition(&cur.state, ev, now).ok()?;
                Some(NodeRecord { state: next, ..cur.clone() })
            })
            .await?;
            if let Some((rec, rev)) = done {
                if matches!(rec.state, NodeState::Draining { .. }) {
                    crate::crashpoint::hit("node.draining");
                }
                st.informer.put_node(rec, rev);
            }
        }
        for u in &ap.unplaced {
            tracing::debug!(app = %ap.app, runners = u.runners, why = %u.why, "runners not placed");
        }
    }
    let built = std::time::Instant::now();
    write_all(store, &st.informer, node_ops).await?;
    if !created.is_empty() {
        crate::crashpoint::hit("plan.written");
        tracing::debug!(nodes = created.len(), write = ?built.elapsed(), "plan written");
    }
    ctx.metrics.nodes_requested.inc_by(created.len() as u64);
    ctx.metrics.set_budgets(&applied.spec, nodes, now);
    Ok((created, runner_ops))
}

/// Writes fresh records in as few transactions as the store allows (the ids are new: there is
/// nothing to compare against), and into the cache.
async fn write_all(
    store: &dyn crate::store::Store,
    informer: &Informer,
    ops: Vec<(Op, Written)>,
) -> Result<(), StoreError> {
    let max = store.max_txn_ops().max(1);
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let batch: Vec<(Op, Written)> = ops.by_ref().take(max).collect();
        write_batch(store, informer, batch).await?;
    }
    Ok(())
}

/// A record written by a plan, to write through to the cache once the store has it.
enum Written {
    Node(NodeRecord),
    Runner(RunnerRecord),
}

/// Writes one batch of fresh records in one transaction and into the cache.
async fn write_batch(
    store: &dyn crate::store::Store,
    informer: &Informer,
    batch: Vec<(Op, Written)>,
) -> Result<(), StoreError> {
    let (ops, recs): (Vec<Op>, Vec<Written>) = batch.into_iter().unzip();
    let res = store.txn(vec![], ops).await?;
    for w in recs {
        match w {
            Written::Node(n) => informer.put_node(n, res.revision),
            Written::Runner(r) => informer.put_runner(r, res.revision),
        }
    }
    Ok(())
}
