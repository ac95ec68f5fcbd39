//! One reconcile pass (kube-runtime's `reconcile(obj, ctx) -> Result<Action>`): load the spec,
//! take the cached view of nodes and runners, check health, carry existing nodes forward (launches
//! not in flight, node actors that should exist, the audit and orphan collection), plan, write the
//! plan, send its launches. Its [`error_policy`] decides when a failed pass is tried again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fleet_core::NodeId;
use fleet_core::spec::FleetSpec;
use fleet_policies::autoscale::{DemandHistory, DemandSample};
use fleet_policies::placement::{PlacementIndex, UnavailableReason};
use fleet_policies::plan::{self, PlanOptions};
use fleet_state::lifecycle::node::{DrainReason, NodeEvent, NodePhase, transition};
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::{NodeRecord, RunnerRecord};
use fleet_state::queue;
use fleet_state::store::{Op, StoreError};

use super::{Applied, FleetState, health, launch, write};
use crate::actors::cloud::CloudMsg;
use crate::actors::{Ctx, backoff};
use crate::reconcile::{fleet_view, offering_ids};

/// What the actor does after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The next periodic pass comes this long after this one (nudges may bring one sooner).
    pub requeue_after: Duration,
}

impl Action {
    pub fn requeue(after: Duration) -> Action {
        Action { requeue_after: after }
    }
}

/// The error policy: a failed pass is tried again after a backoff with jitter that grows with
/// the failures in a row (a store that is down is not hammered), and nothing else changes.
pub(super) fn error_policy(_error: &StoreError, failed_passes: u32, ctx: &Ctx) -> Action {
    Action::requeue(backoff(&ctx.config, failed_passes))
}

/// Settled ready nodes are audited (one `list` per cloud) this often, in passes.
pub(super) const FULL_SYNC_EVERY: u64 = 10;

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

/// The applied spec, parsed and indexed again only when its store revision moved.
async fn load_spec(st: &mut FleetState) -> Result<(), StoreError> {
    let key = st.ctx.keys.spec();
    let Some(kv) = st.ctx.store.get(&key).await? else {
        st.applied = None;
        return Ok(());
    };
    if st.applied.as_ref().is_some_and(|a| a.revision == kv.mod_revision) {
        return Ok(());
    }
    let stored: fleet_state::model::StoredSpec = kv.json()?;
    let spec = FleetSpec::parse("store:spec", &stored.toml)
        .map_err(|e| StoreError::Corrupt { key: key.clone(), detail: e.to_string() })?;
    let index = PlacementIndex::new(st.catalog.clone(), &spec);
    let ids = offering_ids(&index);
    tracing::info!(revision = kv.mod_revision, apps = spec.apps.len(), "spec applied");
    st.applied = Some(Applied { revision: kv.mod_revision, spec: Arc::new(spec), index, ids });
    Ok(())
}

/// One pass of the reconcile loop: idempotent by contract (see the module doc of `fleet`).
pub(super) async fn reconcile(st: &mut FleetState, ctx: &Ctx) -> Result<Action, StoreError> {
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
    let (mut depths, requeued) = match st.informer.queues() {
        Some((depths, suspects)) => {
            // The scan's cache is for when the mirror is being listed; not kept meanwhile.
            st.queue_scan = Default::default();
            queue::requeue_suspects(store, keys, depths, &suspects).await?
        }
        None => queue::scan_cached(store, keys, &mut st.queue_scan).await?,
    };
    ctx.metrics.quarantined.set(i64::try_from(queue::quarantined()).unwrap_or(i64::MAX));
    if requeued > 0 {
        ctx.metrics.requests_requeued.inc_by(u64::from(requeued));
    }
    // Every app of the spec shows in the metrics, idle ones with zeros.
    for app in st.applied.iter().flat_map(|a| a.spec.apps.iter()) {
        depths.entry(app.name.clone()).or_default();
    }
    if st.results_expired_at.is_none_or(|t| now - t >= chrono::Duration::seconds(60))
        && let Some(applied) = &st.applied
    {
        for app in &applied.spec.apps {
            let ttl = chrono::Duration::from_std(app.requests.result_ttl).unwrap_or(chrono::Duration::MAX);
            let gone = queue::expire_results(store, keys, &app.name, now - ttl).await?;
            if gone > 0 {
                tracing::info!(app = %app.name, results = gone, "results past result_ttl removed");
                ctx.metrics.results_expired.inc_by(gone);
            }
        }
        st.results_expired_at = Some(now);
    }
    phases.mark("queue");
    health::check(st, ctx, &nodes, view_since, now).await?;
    phases.mark("health");
    // What the pass decides first, the metrics of what it saw after, whatever the outcome: a
    // demand change's writes do not wait on every node's gauges (12,500 label sets, ~15 ms).
    let outcome = decide(st, ctx, &nodes, &runners, &depths, &mut phases, now).await;
    crate::metrics::observe(&ctx.metrics, &nodes, &runners, &depths, now);
    crate::metrics::observe_cold_starts(&ctx.metrics, &st.informer.agents());
    phases.mark("metrics");
    phases.log(nodes.len(), runners.len());
    outcome
}

/// The pass's decisions on one snapshot of the records: nodes carried forward, orphans, the plan
/// and its writes.
async fn decide(
    st: &mut FleetState,
    ctx: &Ctx,
    nodes: &[Arc<NodeRecord>],
    runners: &[Arc<RunnerRecord>],
    depths: &BTreeMap<String, queue::Depth>,
    phases: &mut Phases,
    now: fleet_core::Time,
) -> Result<Action, StoreError> {
    let store = &*ctx.store;
    let keys = &ctx.keys;

    if st.passes == 0 {
        // After a (re)start the launch gate knows only what the records say.
        for (offering, at) in launch::launched_recently(nodes, now, ctx.config.unavailable_ttl) {
            let t = st.proven.entry(offering).or_insert(at);
            *t = (*t).max(at);
        }
    }
    // Carry existing nodes forward: launches not in flight, node actors that should exist.
    let mut audit: BTreeMap<fleet_core::Cloud, Vec<NodeRecord>> = BTreeMap::new();
    let mut by_node: HashMap<NodeId, Vec<&Arc<RunnerRecord>>> = HashMap::with_capacity(nodes.len());
    for r in runners {
        by_node.entry(r.node().unwrap_or(0)).or_default().push(r);
    }
    let mut out = launch::Outbox::default();
    for n in nodes {
        match &n.state {
            NodePhase::Requested { .. } | NodePhase::Launching { .. } => {
                launch::dispatch(st, (**n).clone(), None, &mut out).await?;
            }
            NodePhase::Terminated { .. } | NodePhase::Failed { instance_id: None, .. } => {}
            _ => {
                let Some(cloud) = n.offering().map(|o| o.cloud) else { continue };
                let rs: &[&Arc<RunnerRecord>] = by_node.get(&n.id).map_or(&[], Vec::as_slice);
                // A ready node whose record and runners did not change, and whose runners all
                // serve, needs nothing from its actor: skip it.
                let settled = matches!(n.state, NodePhase::Ready { .. })
                    && rs.iter().all(|r| matches!(r.state, RunnerPhase::Idle { .. } | RunnerPhase::Busy { .. }));
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
                    && actor.send_message(CloudMsg::SyncNode { node: Box::new((**n).clone()), runners: rs }).is_ok()
                {
                    st.synced.insert(n.id, print);
                }
            }
        }
    }
    // Existing nodes' launches go now, not when the pass ends (the outbox would send them on
    // drop, after the plan's writes).
    out.send();
    // Orphan collection rides on the audit's list call: every instance of the fleet must belong
    // to a record that may hold one (the view is fresh here: a stale one returned above).
    let collect = st.passes.is_multiple_of(FULL_SYNC_EVERY).then(|| {
        let known: Arc<crate::actors::cloud::KnownNodes> = Arc::new(
            nodes
                .iter()
                // A failed launch that left no instance id holds none: an instance of its node
                // (a launch that timed out but went through) is an orphan too.
                .filter(|n| {
                    !matches!(n.state, NodePhase::Terminated { .. } | NodePhase::Failed { instance_id: None, .. })
                })
                .map(|n| (n.id.to_string(), n.state.instance_id().map(str::to_string)))
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
    let node_state: HashMap<NodeId, &NodePhase> = nodes.iter().map(|n| (n.id, &n.state)).collect();
    for (node, rs) in &by_node {
        let orphaned = match node_state.get(node) {
            None => true,
            Some(s) => matches!(s, NodePhase::Terminated { .. } | NodePhase::Failed { instance_id: None, .. }),
        };
        if orphaned {
            for r in rs {
                write::retire_runner(ctx, &st.informer, r, now).await?;
            }
        }
    }
    // Failed launches that never made an instance cost nothing and are forgotten.
    for n in nodes.iter().filter(|n| matches!(n.state, NodePhase::Failed { instance_id: None, .. })) {
        if !by_node.contains_key(&n.id) {
            let kv = store.get(&keys.node(n.id)).await?;
            if let Some(kv) = kv {
                let res =
                    store.txn(vec![fleet_state::store::Compare::unchanged(&kv)], vec![Op::delete(&kv.key)]).await?;
                if res.succeeded {
                    st.informer.delete_node(n.id, res.revision);
                }
            }
        }
    }

    phases.mark("orphans");
    let next = Action::requeue(ctx.config.reconcile_every);
    let Some(applied) = &st.applied else { return Ok(next) };
    // Nodes of apps no longer in the spec: nothing plans for them, so they go here (drained: their
    // runners finish what they serve), never left running unaccounted for. Nodes still launching
    // are caught once they are up.
    // So do nodes whose offering the plan may no longer use (it left the catalog, or the spec
    // no longer enables its cloud): not capacity the plan counts, so their runners are replaced
    // elsewhere as demand asks, and they are drained, never left billing unplanned.
    for n in nodes {
        let app_gone = !applied.spec.apps.iter().any(|a| a.name == n.app);
        let offering_gone = n.offering().is_some_and(|o| !applied.ids.contains_key(o));
        let reason = match (app_gone, offering_gone) {
            (true, _) => DrainReason::AppRemoved,
            (false, true) => DrainReason::OfferingGone,
            (false, false) => continue,
        };
        let ev = match n.state {
            NodePhase::Ready { .. } => NodeEvent::Drain { reason: reason.clone() },
            NodePhase::Bootstrapping { .. } => NodeEvent::Terminate,
            _ => continue,
        };
        let done = fleet_state::model::update_at(store, &keys.node(n.id), |cur: &NodeRecord| {
            let next = transition(&cur.state, ev.clone(), now).ok()?;
            Some(NodeRecord { state: next, ..cur.clone() })
        })
        .await?;
        if let Some((rec, rev)) = done {
            crate::events::node(ctx, &rec, &ev).await;
            if matches!(reason, DrainReason::AppRemoved) {
                tracing::warn!(node = n.id, app = %n.app, price = ?n.price, "app removed from the spec: its node goes");
                ctx.metrics.removed_app_nodes.inc();
            } else {
                tracing::warn!(node = n.id, app = %n.app, offering = ?n.offering(), price = ?n.price,
                    "the node's offering is no longer one the plan may use: its node goes");
                ctx.metrics.offering_gone_nodes.inc();
            }
            st.informer.put_node(rec, rev);
        }
    }
    let mut state = fleet_view(&applied.ids, nodes, runners, depths, &st.pending_since, &st.unavailable, now);
    let (recreate, cold_start) = (ctx.config.recreate, ctx.config.cold_start);
    for (app, view) in state.apps.iter_mut() {
        // Taken out for the pass, put back with this pass's sample by `remember_demand`.
        let mut h = st.demand.remove(app).unwrap_or_default();
        (h.recreate, h.cold_start) = (recreate, cold_start);
        view.demand = h;
    }
    // Apps with a pinned model: their cold starts as their agents reported them, for
    // cold-start-aware placement and scale-down.
    if applied.spec.apps.iter().any(|a| a.model.is_some()) {
        let agents = st.informer.agents();
        let agent_refs: Vec<&fleet_state::model::AgentRecord> = agents.iter().map(|a| a.as_ref()).collect();
        let by_node: HashMap<u64, &fleet_state::model::AgentRecord> = agent_refs.iter().map(|a| (a.node, *a)).collect();
        let node_refs: Vec<&NodeRecord> = nodes.iter().map(|n| n.as_ref()).collect();
        for app in applied.spec.apps.iter().filter(|a| a.model.is_some()) {
            let Some(view) = state.apps.get_mut(&app.name) else { continue };
            view.cold_start = crate::coldstart::learn(
                app,
                &agent_refs,
                &node_refs,
                ctx.config.cold_start,
                ctx.config.consolidation_horizon,
            );
            if let Some(m) = view.cold_start {
                crate::coldstart::annotate(view, app, &by_node, &mut st.empty_since, now);
                if st.cold_models.insert(app.name.clone(), m) != Some(m) {
                    tracing::info!(app = %app.name, size_gb = m.size_gb, origin_gb_per_s = m.origin_gb_per_s,
                        peer_gb_per_s = m.peer_gb_per_s, disk_gb_per_s = m.disk_gb_per_s,
                        provision_and_boot_s = m.provision_and_boot.as_secs_f64(), egress_per_gb = %m.egress_per_gb,
                        "cold-start model learned from the agents' reports: placement and scale-down weigh it");
                }
            }
        }
        let live: std::collections::HashSet<u64> = nodes.iter().map(|n| n.id).collect();
        st.empty_since.retain(|id, _| live.contains(id));
    }
    phases.mark("state");
    let opts = PlanOptions { consolidation_horizon: ctx.config.consolidation_horizon, ..PlanOptions::default() };
    let plan = plan::plan(&applied.index, &applied.spec, &state, &opts);
    let arrived = ctx.arrivals.lock().expect("arrivals lock").clone();
    remember_demand(&mut st.demand, &plan, state.apps, &arrived, now);
    phases.mark("plan");
    let (new_nodes, runner_ops) = write::carry_out(st, &plan, nodes, now).await?;
    phases.mark("write");
    let mut out = launch::Outbox::default();
    for (rec, rev) in new_nodes {
        launch::dispatch(st, rec, rev, &mut out).await?;
    }
    out.send();
    // Let the cloud and region actors take the launches now: woken by this task, they wait in
    // its worker's next-task slot (which no other worker steals) until it yields, and what
    // follows (10,000 runner records built and staged) would hold them ~20-40 ms.
    tokio::task::yield_now().await;
    phases.mark("dispatch");
    let runner_ops =
        runner_ops.await.map_err(|e| StoreError::Io(format!("building the plan's runner records: {e}")))?;
    write::write_all(store, &st.informer, runner_ops).await?;
    phases.mark("runners");
    Ok(next)
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

/// Puts each app's demand history back with this pass's sample (desired runners, arrivals,
/// queue depth); apps gone from the plan are forgotten.
fn remember_demand(
    demand: &mut HashMap<String, DemandHistory>,
    plan: &plan::FleetPlan,
    mut views: std::collections::BTreeMap<String, plan::AppView>,
    arrived: &HashMap<String, u64>,
    now: fleet_core::Time,
) {
    for ap in &plan.apps {
        let Some(view) = views.remove(&ap.app) else { continue };
        let mut h = view.demand;
        h.record(DemandSample {
            at: now,
            desired: ap.decision.target.wanted,
            arrived: arrived.get(&ap.app).copied().unwrap_or(0),
            queued: view.queued,
            in_flight: view.in_flight,
            in_flight_work: ap.in_flight_work,
        });
        demand.insert(ap.app.clone(), h);
    }
    demand.retain(|app, _| plan.apps.iter().any(|a| a.app == *app));
}
