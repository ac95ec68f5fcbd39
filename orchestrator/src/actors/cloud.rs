//! One cloud account: routes launch orders and node syncs to the region actor of each node's
//! offering, creating region actors as regions come into use and restarting them when they fail.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use fleet_core::Cloud;
use fleet_providers::Provider;
use fleet_state::model::{NodeRecord, RunnerRecord};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::fleet::FleetMsg;
use super::region::{RegionActor, RegionArgs, RegionMsg, ToLaunch};
use super::{Ctx, RestartBudget};

pub struct CloudActor;

#[derive(Debug)]
pub enum CloudMsg {
    /// Launch (or, after a restart, re-launch with the same token) these nodes' current
    /// candidates.
    Launch(Vec<ToLaunch>),
    /// The node's latest record and runners; its node actor is created if missing.
    SyncNode { node: Box<NodeRecord>, runners: Vec<Arc<RunnerRecord>> },
    /// One `list` call for both: ready nodes of this cloud that have no actor (a node whose
    /// instance is missing gets its actor back, which asks the cloud about it), and, when
    /// `collect` is given, orphan collection (instances of this fleet whose node is not one of
    /// the known ids — records that may hold an instance — are terminated once seen so for the
    /// grace period).
    Audit { nodes: Vec<NodeRecord>, collect: Option<(Arc<KnownNodes>, std::time::Duration)> },
    /// For chaos tests: panics in the handler.
    #[cfg(feature = "testing")]
    Crash(String),
}

pub struct CloudArgs {
    pub ctx: Arc<Ctx>,
    pub cloud: Cloud,
    pub provider: Arc<dyn Provider>,
    pub fleet: ActorRef<FleetMsg>,
}

pub struct CloudState {
    args: CloudArgs,
    regions: BTreeMap<String, ActorRef<RegionMsg>>,
    restarts: HashMap<String, RestartBudget>,
    /// Instances with no node record, and since when this daemon has seen them so (shared with
    /// the collection task).
    orphans: Arc<std::sync::Mutex<HashMap<String, tokio::time::Instant>>>,
}

impl CloudState {
    async fn region(
        &mut self,
        myself: &ActorRef<CloudMsg>,
        region: &str,
    ) -> Result<ActorRef<RegionMsg>, ActorProcessingErr> {
        if let Some(r) = self.regions.get(region) {
            return Ok(r.clone());
        }
        let args = RegionArgs {
            ctx: self.args.ctx.clone(),
            region: region.to_string(),
            provider: self.args.provider.clone(),
            fleet: self.args.fleet.clone(),
        };
        let (r, _) = Actor::spawn_linked(None, RegionActor, args, myself.get_cell()).await?;
        self.regions.insert(region.to_string(), r.clone());
        Ok(r)
    }
}

/// The node records that may hold an instance (by node id), and the instance each holds once it
/// has one.
pub type KnownNodes = HashMap<String, Option<String>>;

/// Whether a listed instance of the fleet is one no record accounts for: its node has no record
/// that may hold an instance, or the record holds another instance (a leftover of an earlier
/// launch attempt of that node).
pub fn is_orphan(i: &fleet_providers::Instance, known: &KnownNodes) -> bool {
    match i.node_id().and_then(|n| known.get(n)) {
        None => true,
        Some(Some(held)) => *held != i.id,
        Some(None) => false,
    }
}

/// One orphan collection over the fleet's listed instances: terminates those no record accounts
/// for ([`is_orphan`]), once seen so for `grace` (a launch whose record this daemon has not read
/// yet is never that old). Records are written before every launch, so an orphan is an instance
/// whose record is gone, a node the cloud kept after it was deemed terminated, or an earlier
/// attempt's instance beside the one the record holds.
async fn collect_orphans(
    provider: &dyn Provider,
    cloud: Cloud,
    ctx: &Ctx,
    live: &[fleet_providers::Instance],
    known: &KnownNodes,
    grace: std::time::Duration,
    orphans: &std::sync::Mutex<HashMap<String, tokio::time::Instant>>,
) {
    let now = tokio::time::Instant::now();
    let mut due = Vec::new();
    {
        let mut seen = orphans.lock().expect("orphans lock");
        let unknown: HashSet<&str> = live.iter().filter(|i| is_orphan(i, known)).map(|i| i.id.as_str()).collect();
        seen.retain(|id, _| unknown.contains(id.as_str()));
        for id in unknown {
            let since = *seen.entry(id.to_string()).or_insert(now);
            if now.duration_since(since) >= grace {
                due.push(id.to_string());
            }
        }
    }
    for id in due {
        match provider.terminate(&id).await {
            Ok(()) => {
                tracing::warn!(%cloud, instance = %id, "orphan instance terminated (no node record holds it)");
                let inst = live.iter().find(|i| i.id == id);
                let node = inst.and_then(|i| i.node_id()).and_then(|n| n.parse().ok());
                let why = match inst.and_then(|i| i.node_id()).and_then(|n| known.get(n)) {
                    Some(Some(held)) => format!("node's record holds {held}: a leftover of an earlier launch attempt"),
                    _ => "no node record holds it".to_string(),
                };
                let ev = fleet_state::events::NewEvent {
                    kind: fleet_state::events::EventKind::OrphanCollected,
                    app: inst.and_then(|i| i.tags.get(fleet_providers::TAG_APP).cloned()),
                    node,
                    message: format!("{cloud} instance {id} terminated: {why}"),
                };
                crate::events::emit(ctx, ev).await;
                ctx.metrics.orphans_terminated.get_or_create(&crate::metrics::KindLabel::new(&cloud.to_string())).inc();
                orphans.lock().expect("orphans lock").remove(&id);
            }
            Err(e) => {
                tracing::warn!(%cloud, instance = %id, error = %e, "orphan not terminated; next collection retries")
            }
        }
    }
}

#[ractor::async_trait]
impl Actor for CloudActor {
    type Msg = CloudMsg;
    type State = CloudState;
    type Arguments = CloudArgs;

    async fn pre_start(&self, _myself: ActorRef<CloudMsg>, args: CloudArgs) -> Result<CloudState, ActorProcessingErr> {
        tracing::info!(cloud = %args.cloud, provider = %args.provider.name(), "cloud actor started");
        Ok(CloudState { args, regions: BTreeMap::new(), restarts: HashMap::new(), orphans: Default::default() })
    }

    async fn handle(
        &self,
        myself: ActorRef<CloudMsg>,
        msg: CloudMsg,
        st: &mut CloudState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CloudMsg::Launch(nodes) => {
                let mut by_region: BTreeMap<String, Vec<ToLaunch>> = BTreeMap::new();
                for l in nodes {
                    let Some(region) = l.node.offering().map(|o| o.region.clone()) else { continue };
                    by_region.entry(region).or_default().push(l);
                }
                for (region, nodes) in by_region {
                    st.region(&myself, &region).await?.send_message(RegionMsg::Launch(nodes))?;
                }
            }
            CloudMsg::SyncNode { node, runners } => {
                let Some(region) = node.offering().map(|o| o.region.clone()) else { return Ok(()) };
                st.region(&myself, &region).await?.send_message(RegionMsg::SyncNode { node: *node, runners })?;
            }
            CloudMsg::Audit { nodes, collect } => {
                let (provider, orphans, ctx, cloud) =
                    (st.args.provider.clone(), st.orphans.clone(), st.args.ctx.clone(), st.args.cloud);
                let me = myself.clone();
                tokio::spawn(async move {
                    let live = match provider.list().await {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::warn!(%cloud, error = %e, "audit: cannot list instances");
                            return;
                        }
                    };
                    let ids: HashSet<&str> = live.iter().map(|i| i.id.as_str()).collect();
                    for n in nodes {
                        if n.state.instance_id().is_some_and(|id| !ids.contains(id)) {
                            let _ = me.send_message(CloudMsg::SyncNode { node: Box::new(n), runners: vec![] });
                        }
                    }
                    if let Some((known, grace)) = collect {
                        collect_orphans(&*provider, cloud, &ctx, &live, &known, grace, &orphans).await;
                    }
                });
            }
            #[cfg(feature = "testing")]
            CloudMsg::Crash(why) => panic!("cloud actor {} asked to crash: {why}", st.args.cloud),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<CloudMsg>,
        evt: SupervisionEvent,
        st: &mut CloudState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = &evt {
            let Some(region) = st.regions.iter().find(|(_, r)| r.get_id() == cell.get_id()).map(|(k, _)| k.clone())
            else {
                return Ok(());
            };
            st.regions.remove(&region);
            cell.stop_children(Some("supervisor restarts this subtree".into()));
            st.args.ctx.metrics.actor_restarts.get_or_create(&crate::metrics::KindLabel::new("region")).inc();
            if !st.restarts.entry(region.clone()).or_default().allow(5, std::time::Duration::from_secs(300)) {
                return Err(format!("region actor {} {region} keeps failing; last: {err}", st.args.cloud).into());
            }
            // Re-created on the next message for the region (the next reconcile sends one).
            tracing::error!(cloud = %st.args.cloud, %region, error = %err, "region actor failed; it is re-created on the next reconcile");
            // Its launches in flight are re-sent by the fleet's next pass.
            let _ = st.args.fleet.send_message(FleetMsg::ForgetLaunches);
        }
        Ok(())
    }
}
