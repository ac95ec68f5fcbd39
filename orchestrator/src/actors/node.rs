//! One launched node: checks its instance every `node_poll`, bootstraps it, notices when the cloud
//! loses it, drains and terminates it, and supervises its runners' actors.
//!
//! A node record only reaches Terminated on the cloud's word (terminated / not found): the actor
//! keeps calling `terminate` (idempotent) and `get` until then.

use std::collections::HashMap;
use std::sync::Arc;

use fleet_core::{NodeId, RunnerId};
use fleet_providers::{InstanceState, Provider, ProviderError};
use fleet_state::lifecycle::node::{DrainReason, NodeEvent, NodePhase, transition};
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::{NodeRecord, RunnerRecord, update};
use fleet_state::store::StoreError;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::Ctx;
use super::runner::{RunnerActor, RunnerArgs, RunnerMsg};

pub struct NodeActor;

#[derive(Debug)]
pub enum NodeMsg {
    /// Check the instance and move the lifecycle on.
    Poll,
    /// The latest record and the runners on this node, from the fleet's reconcile.
    Sync { node: Box<NodeRecord>, runners: Vec<Arc<RunnerRecord>> },
    /// For chaos tests: panics in the handler.
    #[cfg(feature = "testing")]
    Crash(String),
}

pub struct NodeArgs {
    pub ctx: Arc<Ctx>,
    pub id: NodeId,
    pub provider: Arc<dyn Provider>,
}

pub struct NodeState {
    args: NodeArgs,
    runners: HashMap<RunnerId, ActorRef<RunnerMsg>>,
    /// Runners on this node not yet stopped, as of the last sync.
    live_runners: usize,
    /// The last sync found every runner serving (or none), and the last poll found the node
    /// ready with its instance running: nothing to do until something changes.
    runners_settled: bool,
    running: bool,
    /// When a poll first found the bootstrapping node's instance running (the end of its boot,
    /// as near as the poll interval tells; unknown to an actor started after that).
    booted_at: Option<fleet_core::Time>,
}

fn gone(e: &ProviderError) -> bool {
    matches!(e, ProviderError::NotFound { .. })
}

/// Applies `ev` to the node record (compare-and-swap); returns the record as it now is.
async fn apply(ctx: &Ctx, id: NodeId, ev: NodeEvent) -> Result<Option<NodeRecord>, StoreError> {
    let now = ctx.clock.now();
    let after = update(&*ctx.store, &ctx.keys.node(id), |cur: &NodeRecord| {
        let state = transition(&cur.state, ev.clone(), now).ok()?;
        if state == cur.state {
            return None;
        }
        let billing_until = match state {
            NodePhase::Terminated { .. } if cur.billing_since.is_some() => Some(now),
            _ => cur.billing_until,
        };
        Some(NodeRecord { state, billing_until, ..cur.clone() })
    })
    .await?;
    if let Some(rec) = &after {
        crate::events::node(ctx, rec, &ev).await;
    }
    Ok(after)
}

/// A ready node's instance went without fleet asking: on spot, the cloud took the capacity back
/// (with no notice, or one the agent never saw). The fleet avoids that offering for a while.
fn reclaimed(ctx: &Ctx, rec: &NodeRecord) {
    if let Some(o) = rec.offering()
        && o.capacity == fleet_core::CapacityType::Spot
    {
        ctx.reclaimed.lock().expect("reclaimed lock").push(o.clone());
        ctx.nudge.notify_one();
    }
}

/// What to do about host keys before bootstrapping a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStep {
    /// Verify the host against these (the cloud's word).
    Verify(Vec<String>),
    /// The cloud reports keys but has none for the instance yet: ask again at the next poll.
    Wait,
    /// Pin the key seen at first contact (the cloud reports none, or none came within the wait).
    FirstContact,
}

/// Decides from the cloud's answer to `host_keys` after `waited` since the instance came up.
pub fn host_key_step(
    reported: &Result<Option<Vec<String>>, ProviderError>,
    waited: std::time::Duration,
    wait: std::time::Duration,
) -> HostKeyStep {
    match reported {
        Ok(None) => HostKeyStep::FirstContact,
        Ok(Some(keys)) if !keys.is_empty() => HostKeyStep::Verify(keys.clone()),
        // None yet, or the cloud could not say now: wait while the wait lasts.
        Ok(Some(_)) | Err(_) if waited < wait => HostKeyStep::Wait,
        Ok(Some(_)) | Err(_) => HostKeyStep::FirstContact,
    }
}

impl NodeState {
    /// Puts the keys the cloud reports for `inst` into it (unless a key is already recorded for
    /// the node, which bootstrap then insists on). False: wait for them (next poll).
    async fn host_keys(
        &self,
        inst: &mut fleet_providers::Instance,
        waited: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let ctx = &self.args.ctx;
        if ctx.store.get(&ctx.keys.host_key(self.args.id)).await?.is_some() {
            return Ok(true);
        }
        let reported = self.args.provider.host_keys(&inst.id).await;
        if let Err(e) = &reported {
            tracing::debug!(node = self.args.id, error = %e, "host keys not read; next poll asks again");
        }
        Ok(match host_key_step(&reported, waited, ctx.config.host_key_wait) {
            HostKeyStep::Verify(keys) => {
                inst.ssh_host_keys = keys;
                true
            }
            HostKeyStep::Wait => false,
            HostKeyStep::FirstContact => true,
        })
    }

    /// One step of the lifecycle. Returns false once the node is Terminated (the actor stops).
    async fn poll(&mut self) -> Result<bool, StoreError> {
        let ctx = self.args.ctx.clone();
        let id = self.args.id;
        let Some((rec, _)) = fleet_state::store::get_json::<NodeRecord>(&*ctx.store, &ctx.keys.node(id)).await? else {
            return Ok(false);
        };
        let now = ctx.clock.now();
        let p = &*self.args.provider;
        self.running = false;
        match &rec.state {
            NodePhase::Bootstrapping { instance_id, since, .. } => match p.get(instance_id).await {
                Err(e) if gone(&e) => drop(apply(&ctx, id, NodeEvent::InstanceGone).await?),
                Ok(i) if i.state == InstanceState::Terminated => drop(apply(&ctx, id, NodeEvent::InstanceGone).await?),
                Ok(mut inst) => {
                    if inst.state == InstanceState::Running && self.booted_at.is_none() {
                        self.booted_at = Some(now);
                    }
                    if self.host_keys(&mut inst, (now - *since).to_std().unwrap_or_default()).await? {
                        match ctx.bootstrap.bootstrap(&rec, &inst).await {
                            Ok(true) => {
                                tracing::info!(node = id, instance = %instance_id, "node ready");
                                if apply(&ctx, id, NodeEvent::BootstrapSucceeded).await?.is_some() {
                                    crate::metrics::observe_node_ready(
                                        &ctx.metrics,
                                        &rec,
                                        self.booted_at,
                                        ctx.clock.now(),
                                    );
                                }
                                crate::crashpoint::hit("node.ready");
                            }
                            Ok(false) if (now - *since).to_std().unwrap_or_default() > ctx.config.bootstrap_timeout => {
                                let reason = format!("not ready after {:?}", ctx.config.bootstrap_timeout);
                                apply(&ctx, id, NodeEvent::BootstrapFailed { reason }).await?;
                            }
                            Ok(false) => {}
                            Err(reason) => {
                                tracing::warn!(node = id, %reason, "bootstrap failed");
                                apply(&ctx, id, NodeEvent::BootstrapFailed { reason }).await?;
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(node = id, error = %e, "instance check failed; next poll retries"),
            },
            NodePhase::Ready { instance_id, .. } => match p.get(instance_id).await {
                Err(e) if gone(&e) => {
                    tracing::warn!(node = id, instance = %instance_id, "the cloud lost the instance");
                    apply(&ctx, id, NodeEvent::InstanceGone).await?;
                    reclaimed(&ctx, &rec);
                }
                Ok(i) if i.state == InstanceState::Terminated => {
                    tracing::warn!(node = id, instance = %instance_id, "instance terminated by the cloud");
                    apply(&ctx, id, NodeEvent::InstanceGone).await?;
                    reclaimed(&ctx, &rec);
                }
                Ok(_) => self.running = true,
                Err(_) => {}
            },
            NodePhase::Draining { .. } => {
                if self.live_runners == 0 {
                    apply(&ctx, id, NodeEvent::Drained).await?;
                    return Box::pin(self.poll()).await;
                }
            }
            NodePhase::Failed { instance_id: Some(_), .. } => {
                apply(&ctx, id, NodeEvent::Terminate).await?;
                return Box::pin(self.poll()).await;
            }
            NodePhase::Terminating { instance_id, .. } => {
                crate::crashpoint::hit("terminate.started");
                if let Err(e) = p.terminate(instance_id).await {
                    tracing::warn!(node = id, error = %e, "terminate failed; retrying");
                    return Ok(true);
                }
                crate::crashpoint::hit("terminate.answered");
                match p.get(instance_id).await {
                    Err(e) if gone(&e) => drop(apply(&ctx, id, NodeEvent::TerminateConfirmed).await?),
                    Ok(i) if i.state == InstanceState::Terminated => {
                        tracing::info!(node = id, instance = %instance_id, "terminated");
                        apply(&ctx, id, NodeEvent::TerminateConfirmed).await?;
                    }
                    _ => return Ok(true),
                }
                crate::crashpoint::hit("terminate.confirmed");
                // Gone: its agent's store user goes too, and any lease it held through the gateway.
                for lease in ctx.gateway_leases.forget(id) {
                    if let Err(e) = ctx.store.revoke(lease).await {
                        tracing::debug!(node = id, lease, error = %e, "gateway lease not revoked (expired?)");
                    }
                }
                if let Some(access) = &ctx.access
                    && let Err(e) = access.forget_node(id).await
                {
                    tracing::warn!(node = id, error = %e, "agent user not deleted");
                }
            }
            NodePhase::Terminated { .. } => return Ok(false),
            NodePhase::Requested { .. } | NodePhase::Launching { .. } | NodePhase::Failed { instance_id: None, .. } => {
            }
        }
        Ok(true)
    }
}

#[ractor::async_trait]
impl Actor for NodeActor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(&self, myself: ActorRef<NodeMsg>, args: NodeArgs) -> Result<NodeState, ActorProcessingErr> {
        myself.send_message(NodeMsg::Poll)?;
        Ok(NodeState {
            args,
            runners: HashMap::new(),
            live_runners: usize::MAX,
            runners_settled: false,
            running: false,
            booted_at: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        st: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Poll => {
                let keep = match st.poll().await {
                    Ok(k) => k,
                    Err(e) => {
                        tracing::warn!(node = st.args.id, error = %e, "node step failed; next poll retries");
                        true
                    }
                };
                if !keep {
                    myself.stop(Some("terminated".into()));
                } else if st.running && st.runners_settled && st.runners.is_empty() {
                    // A ready node whose runners serve needs no actor: the fleet sends a sync (and
                    // a new actor is made) when its record or runners change, or when the cloud's
                    // instance list no longer shows it.
                    myself.stop(Some("settled".into()));
                } else {
                    myself.send_after(st.args.ctx.config.node_poll, || NodeMsg::Poll);
                }
            }
            NodeMsg::Sync { node, runners } => {
                st.live_runners = runners.iter().filter(|r| !matches!(r.state, RunnerPhase::Stopped { .. })).count();
                st.runners_settled = matches!(node.state, NodePhase::Ready { .. })
                    && runners.iter().all(|r| matches!(r.state, RunnerPhase::Idle { .. } | RunnerPhase::Busy { .. }));
                let node_ready = matches!(node.state, NodePhase::Ready { .. });
                let node_draining = matches!(node.state, NodePhase::Draining { .. });
                // A node drained because its agent is lost cannot stop its runners: they are lost
                // (their requests go back to the queue), not waited for.
                let node_gone = matches!(
                    node.state,
                    NodePhase::Terminating { .. }
                        | NodePhase::Terminated { .. }
                        | NodePhase::Failed { .. }
                        | NodePhase::Draining { reason: DrainReason::AgentLost | DrainReason::HardwareFault, .. }
                );
                for r in runners {
                    // A serving runner needs nothing from the orchestrator (its agent serves,
                    // the planner stops it when idle): no actor unless one is already there.
                    let settled = matches!(r.state, RunnerPhase::Idle { .. } | RunnerPhase::Busy { .. });
                    if settled && !node_draining && !node_gone && !st.runners.contains_key(&r.id) {
                        continue;
                    }
                    let actor = match st.runners.get(&r.id) {
                        Some(a) => a.clone(),
                        None => {
                            let args = RunnerArgs { ctx: st.args.ctx.clone(), id: r.id };
                            let (a, _) = Actor::spawn_linked(None, RunnerActor, args, myself.get_cell()).await?;
                            st.runners.insert(r.id, a.clone());
                            a
                        }
                    };
                    let _ = actor.send_message(RunnerMsg::Sync {
                        runner: (*r).clone(),
                        node_ready,
                        node_draining,
                        node_gone,
                    });
                }
                if st.running && st.runners_settled && st.runners.is_empty() {
                    myself.stop(Some("settled".into()));
                }
            }
            #[cfg(feature = "testing")]
            NodeMsg::Crash(why) => panic!("node actor {} asked to crash: {why}", st.args.id),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<NodeMsg>,
        evt: SupervisionEvent,
        st: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match &evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = st.runners.iter().find(|(_, r)| r.get_id() == cell.get_id()).map(|(k, _)| *k) {
                    st.runners.remove(&id);
                    cell.stop_children(Some("supervisor restarts this subtree".into()));
                    st.args.ctx.metrics.actor_restarts.get_or_create(&crate::metrics::KindLabel::new("runner")).inc();
                    tracing::error!(runner = id, error = %err, "runner actor failed; restarted on the next sync");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => st.runners.retain(|_, r| r.get_id() != cell.get_id()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn host_keys_are_verified_where_reported_waited_for_then_pinned_at_first_contact() {
        let wait = Duration::from_secs(300);
        let early = Duration::from_secs(10);
        let late = Duration::from_secs(301);
        let k = vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA".to_string()];
        assert_eq!(host_key_step(&Ok(Some(k.clone())), late, wait), HostKeyStep::Verify(k));
        assert_eq!(host_key_step(&Ok(None), early, wait), HostKeyStep::FirstContact, "the cloud reports none");
        assert_eq!(host_key_step(&Ok(Some(vec![])), early, wait), HostKeyStep::Wait, "not published yet");
        assert_eq!(host_key_step(&Ok(Some(vec![])), late, wait), HostKeyStep::FirstContact);
        let e = Err(ProviderError::Transient { detail: "503".into() });
        assert_eq!(host_key_step(&e, early, wait), HostKeyStep::Wait);
        assert_eq!(host_key_step(&e, late, wait), HostKeyStep::FirstContact);
    }
}
