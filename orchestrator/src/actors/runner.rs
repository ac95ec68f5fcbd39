//! One runner: starts it once its node is ready, gives it up when it does not come up or its
//! node is lost, and once it is stopped hands its requests back to the queue and forgets it.
//! The agent on the node does the loading and serving (`Starting → Idle ⇄ Busy`, `Stopping →
//! Stopped`); this actor does the orchestrator's side of the lifecycle.

use std::sync::Arc;

use fleet_core::RunnerId;
use fleet_state::lifecycle::runner::{RunnerEvent, RunnerPhase, transition};
use fleet_state::model::{RunnerRecord, update};
use fleet_state::queue;
use fleet_state::store::StoreError;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::Ctx;

pub struct RunnerActor;

#[derive(Debug)]
pub enum RunnerMsg {
    Sync {
        runner: RunnerRecord,
        node_ready: bool,
        node_draining: bool,
        node_gone: bool,
    },
    /// For chaos tests: panics in the handler.
    #[cfg(feature = "testing")]
    Crash(String),
}

pub struct RunnerArgs {
    pub ctx: Arc<Ctx>,
    pub id: RunnerId,
}

async fn apply(ctx: &Ctx, id: RunnerId, ev: RunnerEvent) -> Result<Option<RunnerRecord>, StoreError> {
    let now = ctx.clock.now();
    update(&*ctx.store, &ctx.keys.runner(id), |cur: &RunnerRecord| {
        let state = transition(&cur.state, ev.clone(), now).ok()?;
        Some(RunnerRecord { state, ..cur.clone() })
    })
    .await
}

/// Returns false once the actor has nothing more to do: the runner is gone, or serving.
async fn step(
    ctx: &Ctx,
    r: &RunnerRecord,
    node_ready: bool,
    draining: bool,
    node_gone: bool,
) -> Result<bool, StoreError> {
    let now = ctx.clock.now();
    let age = |since: &fleet_core::Time| (now - *since).to_std().unwrap_or_default();
    let next = match &r.state {
        RunnerPhase::Stopped { .. } => None,
        _ if node_gone => Some(RunnerEvent::Lost),
        // A draining node's runners stop once they are idle (busy ones finish first).
        RunnerPhase::Pending { .. } if draining => Some(RunnerEvent::Lost),
        RunnerPhase::Starting { .. } | RunnerPhase::Idle { .. } if draining => Some(RunnerEvent::Stop),
        RunnerPhase::Pending { .. } if node_ready => Some(RunnerEvent::Start),
        RunnerPhase::Starting { since, .. } if age(since) > ctx.config.runner_start_timeout => {
            tracing::warn!(runner = r.id, "runner did not come up in time");
            Some(RunnerEvent::StartFailed)
        }
        RunnerPhase::Stopping { since, .. } if age(since) > ctx.config.runner_stop_timeout => {
            Some(RunnerEvent::Stopped)
        }
        _ => return Ok(true),
    };
    // The node's agent may update this runner from now on (where agents have their own users).
    if let (Some(RunnerEvent::Start), Some(access), Some(node)) = (&next, &ctx.access, r.node()) {
        access.grant_runner(node, r.id).await.map_err(|e| StoreError::Unavailable(format!("runner access: {e}")))?;
    }
    let rec = match next {
        Some(ev) => apply(ctx, r.id, ev).await?,
        None => Some(r.clone()),
    };
    if let Some(rec) = rec
        && let RunnerPhase::Stopped { .. } = rec.state
    {
        // Whatever it was serving goes back to the queue before the runner is forgotten.
        queue::requeue_orphans(&*ctx.store, &ctx.keys, &[r.id]).await?;
        ctx.store.txn(vec![], r.delete_ops(&ctx.keys)).await?;
        if let (Some(access), Some(node)) = (&ctx.access, r.node())
            && let Err(e) = access.revoke_runner(node, r.id).await
        {
            tracing::warn!(runner = r.id, error = %e, "runner access not revoked");
        }
        return Ok(false);
    }
    Ok(true)
}

#[ractor::async_trait]
impl Actor for RunnerActor {
    type Msg = RunnerMsg;
    type State = RunnerArgs;
    type Arguments = RunnerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RunnerMsg>,
        args: RunnerArgs,
    ) -> Result<RunnerArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<RunnerMsg>,
        msg: RunnerMsg,
        st: &mut RunnerArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RunnerMsg::Sync { runner, node_ready, node_draining, node_gone } => {
                match step(&st.ctx, &runner, node_ready, node_draining, node_gone).await {
                    Ok(true) => {}
                    Ok(false) => myself.stop(Some("nothing to do".into())),
                    Err(e) => tracing::warn!(runner = st.id, error = %e, "runner step failed; next sync retries"),
                }
            }
            #[cfg(feature = "testing")]
            RunnerMsg::Crash(why) => panic!("runner actor {} asked to crash: {why}", st.id),
        }
        Ok(())
    }
}
