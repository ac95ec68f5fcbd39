//! The top of the tree: keeps one [`FleetActor`] running, restarting it (with backoff) when it
//! fails, and gives up — stopping, so the daemon exits and its own supervisor (systemd) decides —
//! when it fails too often.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::fleet::{FleetActor, FleetArgs, FleetMsg};
use super::{Ctx, RestartBudget, backoff};

pub struct RootActor;

pub enum RootMsg {
    /// The fleet actor running now.
    Fleet(RpcReplyPort<ActorRef<FleetMsg>>),
}

pub struct RootState {
    ctx: Arc<Ctx>,
    fleet: ActorRef<FleetMsg>,
    restarts: RestartBudget,
}

async fn spawn_fleet(myself: &ActorRef<RootMsg>, ctx: &Arc<Ctx>) -> Result<ActorRef<FleetMsg>, ActorProcessingErr> {
    let (r, _) = Actor::spawn_linked(None, FleetActor, FleetArgs { ctx: ctx.clone() }, myself.get_cell()).await?;
    Ok(r)
}

#[ractor::async_trait]
impl Actor for RootActor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = Arc<Ctx>;

    async fn pre_start(&self, myself: ActorRef<RootMsg>, ctx: Arc<Ctx>) -> Result<RootState, ActorProcessingErr> {
        let fleet = spawn_fleet(&myself, &ctx).await?;
        Ok(RootState { ctx, fleet, restarts: RestartBudget::default() })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RootMsg>,
        msg: RootMsg,
        st: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Fleet(reply) => {
                let _ = reply.send(st.fleet.clone());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        evt: SupervisionEvent,
        st: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = &evt
            && cell.get_id() == st.fleet.get_id()
        {
            // Its subtree goes with it; the new fleet actor rebuilds it from the store.
            cell.stop_children(Some("fleet actor failed".into()));
            st.ctx.metrics.actor_restarts.get_or_create(&crate::metrics::KindLabel::new("fleet")).inc();
            if !st.restarts.allow(10, Duration::from_secs(600)) {
                tracing::error!(error = %err, "fleet actor failed 11 times in 10 minutes; stopping");
                myself.stop(Some(format!("fleet actor keeps failing: {err}")));
                return Ok(());
            }
            let wait = backoff(&st.ctx.config, st.restarts.recent());
            tracing::error!(error = %err, restart_in = ?wait, "fleet actor failed; restarting");
            tokio::time::sleep(wait).await;
            st.fleet = spawn_fleet(&myself, &st.ctx).await?;
        }
        Ok(())
    }
}
