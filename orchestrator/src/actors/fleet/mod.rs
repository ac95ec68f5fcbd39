//! The root of the tree below the daemon: reconciles desired state (spec + the planner's output)
//! with actual state (store + clouds), every `reconcile_every` and at once after a launch fails.
//!
//! The actor is only the plumbing (messages, timers, supervision of the cloud actors); each part
//! of the work is a file of its own:
//!
//! - `pass`: one reconcile pass, `reconcile(state, ctx) -> Result<Action>` in the manner of
//!   kube-runtime, and its error policy (backoff with jitter).
//! - `health`: nodes whose agent is missing, unwell or interrupted; drains after a grace.
//! - `launch`: the launch gate: one probing launch per unproven offering, skipping offerings
//!   that refused meanwhile, walking to the next candidate after a failure.
//! - [`write`]: the plan written to the store (node records before any launch call).
//! - `prices`: every provider's offerings gathered again every `prices_every`.
//!
//! Each pass is idempotent: it reads everything it acts on from the store, and every write is a
//! compare-and-swap, so running it twice (or after a crash) does nothing twice.

mod health;
mod launch;
mod pass;
mod prices;
mod write;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use fleet_core::spec::FleetSpec;
use fleet_core::{Catalog, Cloud, NodeId, OfferingKey, Time};
use fleet_policies::placement::{OfferingId, PlacementIndex, UnavailableCache};
use fleet_providers::ProviderError;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::cloud::{CloudActor, CloudMsg};
use super::{Ctx, RestartBudget, backoff};
use crate::informer::Informer;
use crate::reconcile::Unhealthy;
pub use pass::Action;

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
    #[cfg(feature = "testing")]
    Crash(String),
}

pub struct FleetArgs {
    pub ctx: Arc<Ctx>,
}

/// The applied spec with what was derived from it.
pub(super) struct Applied {
    pub(super) revision: i64,
    pub(super) spec: Arc<FleetSpec>,
    pub(super) index: PlacementIndex,
    pub(super) ids: HashMap<OfferingKey, OfferingId>,
}

pub struct FleetState {
    pub(super) ctx: Arc<Ctx>,
    /// Nodes and runners, in memory, current by watch (and by this actor's own writes).
    pub(super) informer: Informer,
    /// The queue records as the last pass read them: a pass decodes only those that changed.
    pub(super) queue_scan: fleet_state::queue::ScanCache,
    pub(super) catalog: Arc<Catalog>,
    pub(super) applied: Option<Applied>,
    pub(super) unavailable: UnavailableCache,
    pub(super) pending_since: HashMap<String, Time>,
    /// When each node of an app with a pinned model was first seen with no runner
    /// ([`crate::coldstart::annotate`]; a restarted fleetd starts counting again).
    pub(super) empty_since: HashMap<NodeId, Time>,
    /// Each pinned app's cold-start model as last learned (logged when it changes).
    pub(super) cold_models: HashMap<String, fleet_policies::coldstart::ColdStartModel>,
    /// What each app's autoscaler has learned of its demand (`keep_alive = "auto"`, `predict`).
    pub(super) demand: HashMap<String, fleet_policies::autoscale::DemandHistory>,
    pub(super) clouds: BTreeMap<Cloud, ActorRef<CloudMsg>>,
    pub(super) restarts: HashMap<Cloud, RestartBudget>,
    /// Nodes with a launch order out (so a reconcile does not send a second one).
    pub(super) launching: HashSet<NodeId>,
    /// Offerings that launched recently: launches go to them in parallel.
    pub(super) proven: HashMap<OfferingKey, Time>,
    /// Offerings not proven, with one launch in flight probing them; other nodes wait for its
    /// answer, so a pool without capacity costs one refused call, not one per node.
    pub(super) probing: HashSet<OfferingKey>,
    pub(super) waiting: HashSet<NodeId>,
    pub(super) failed_passes: u32,
    pub(super) passes: u64,
    /// What each node actor was last sent (see [`sync_print`]).
    pub(super) synced: HashMap<NodeId, u64>,
    /// Ready nodes not fit to serve, as of the last pass.
    pub(super) unhealthy: BTreeMap<NodeId, Unhealthy>,
    /// Nodes whose agent has registered (a later absence means its lease expired).
    pub(super) agent_seen: HashSet<NodeId>,
    /// Since when each unhealthy node has been so.
    pub(super) unhealthy_since: HashMap<NodeId, Time>,
    /// Since when this daemon has seen the store without a break (None while it cannot).
    pub(super) view_since: Option<Time>,
    /// When results past their app's `result_ttl` were last removed (once a minute).
    pub(super) results_expired_at: Option<Time>,
    /// Per app, what the last event said about demand not placed (an event is recorded when
    /// this changes, not every pass).
    pub(super) unplaced_said: HashMap<String, String>,
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

/// One pass with its error policy and metrics; says when the next periodic pass is due.
async fn run_pass(st: &mut FleetState) -> Action {
    let started = tokio::time::Instant::now();
    let ctx = st.ctx.clone();
    let action = match pass::reconcile(st, &ctx).await {
        Ok(action) => {
            st.failed_passes = 0;
            action
        }
        Err(e) => {
            st.failed_passes += 1;
            ctx.metrics.reconcile_errors.inc();
            let action = pass::error_policy(&e, st.failed_passes, &ctx);
            tracing::warn!(error = %e, retry_in = ?action.requeue_after, "reconcile failed");
            action
        }
    };
    ctx.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
    ctx.metrics.reconcile_count.inc();
    action
}

#[ractor::async_trait]
impl Actor for FleetActor {
    type Msg = FleetMsg;
    type State = FleetState;
    type Arguments = FleetArgs;

    async fn pre_start(&self, myself: ActorRef<FleetMsg>, args: FleetArgs) -> Result<FleetState, ActorProcessingErr> {
        let ctx = args.ctx;
        let catalog = Arc::new(prices::gather(&ctx).await);
        *ctx.offerings.write().expect("offerings lock") = catalog.clone();
        let mut clouds = BTreeMap::new();
        for cloud in ctx.providers.keys() {
            clouds.insert(*cloud, spawn_cloud(&myself, &ctx, *cloud).await?);
        }
        let informer = Informer::start(ctx.store.clone(), &ctx.keys, Some(ctx.nudge.clone())).await;
        if let Err(e) = index_placements(&*ctx.store, &ctx.keys).await {
            tracing::warn!(error = %e, "runners of an older fleetd not indexed yet; the next start tries again");
        }
        myself.send_message(FleetMsg::Tick)?;
        prices::spawn_refresh(&myself, &ctx);
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
            queue_scan: Default::default(),
            catalog,
            applied: None,
            unavailable: UnavailableCache::default(),
            pending_since: HashMap::new(),
            empty_since: HashMap::new(),
            cold_models: HashMap::new(),
            demand: HashMap::new(),
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
            results_expired_at: None,
            unplaced_said: HashMap::new(),
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
                let action = run_pass(st).await;
                myself.send_after(action.requeue_after, || FleetMsg::Tick);
            }
            // An extra pass: the periodic one stays scheduled as it was.
            FleetMsg::Nudge => drop(run_pass(st).await),
            FleetMsg::Launched { node, offering, ok } => {
                st.launching.remove(&node);
                st.probing.remove(&offering);
                if ok {
                    st.proven.insert(offering, st.ctx.clock.now());
                }
                launch::release_waiting(st).await?;
            }
            FleetMsg::LaunchFailed { node, offering, error } => {
                st.launching.remove(&node);
                st.probing.remove(&offering);
                launch::on_launch_failed(st, node, error).await?;
                launch::release_waiting(st).await?;
            }
            FleetMsg::Prices(catalog) => {
                if let Some(moved) = prices::apply(st, catalog) {
                    let ev = fleet_state::events::NewEvent {
                        kind: fleet_state::events::EventKind::PriceChanged,
                        app: None,
                        node: None,
                        message: moved,
                    };
                    crate::events::emit(&st.ctx, ev).await;
                }
            }
            FleetMsg::ForgetLaunches => {
                st.launching.clear();
                st.probing.clear();
            }
            #[cfg(feature = "testing")]
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

/// Runner records written by a fleetd from before the per-node index (`placed/{node}/`) get
/// their entries, so their agents, which watch only the index, see them. Idempotent.
async fn index_placements(
    store: &dyn fleet_state::store::Store,
    keys: &fleet_core::keys::Keys,
) -> Result<u32, fleet_state::store::StoreError> {
    use fleet_state::store::{Compare, Op};
    let (kvs, _) = store.range(&keys.runners()).await?;
    let mut added = 0;
    for kv in kvs {
        let Ok(r) = kv.json::<fleet_state::model::RunnerRecord>() else { continue };
        let Some(node) = r.placed_on.or(r.node()) else { continue };
        let entry = keys.placement(node, r.id);
        // Only while the record is as read (a runner deleted meanwhile gets no entry).
        let res =
            store.txn(vec![Compare::unchanged(&kv), Compare::absent(&entry)], vec![Op::put_json(entry, &r.id)]).await?;
        added += u32::from(res.succeeded);
    }
    if added > 0 {
        tracing::info!(added, "runners indexed by node for their agents");
    }
    Ok(added)
}

#[cfg(test)]
mod index_tests {
    use fleet_state::model::RunnerRecord;
    use fleet_state::store::{Store, to_json};

    #[tokio::test]
    async fn runners_of_an_older_fleetd_get_their_index_entries_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = fleet_state::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
        let keys = fleet_core::keys::Keys::new("t");
        let now = chrono::Utc::now();
        // As an older fleetd wrote them: the record alone, without `placed_on`.
        let mut old = RunnerRecord::placed(1, "a", 5, now);
        old.placed_on = None;
        store.put(&keys.runner(1), to_json(&old), None).await.unwrap();
        store.txn(vec![], RunnerRecord::placed(2, "a", 6, now).put_ops(&keys)).await.unwrap();
        assert_eq!(super::index_placements(&store, &keys).await.unwrap(), 1);
        assert!(store.get(&keys.placement(5, 1)).await.unwrap().is_some());
        assert_eq!(super::index_placements(&store, &keys).await.unwrap(), 0, "idempotent");
    }
}
