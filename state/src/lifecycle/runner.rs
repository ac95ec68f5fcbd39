//! A runner: one copy of an app's model serving requests on a node.
//!
//! ```text
//! Pending ──Start──▶ Starting ──Started──▶ Idle ⇄ Busy (Claim / Complete)
//!                        │                   │
//!                        └──────Stop─────────┴──Stop──▶ Stopping ──Stopped──▶ Stopped
//! ```
//!
//! The autoscaler stops only idle runners; a busy one is stopped only to move it (consolidation)
//! and then drains: Stopping claims nothing new, and its agent reports Stopped once the requests
//! in flight have finished. A runner whose node or agent is lost goes straight to Stopped and its
//! in-flight requests are handed back to the queue by the caller (the transition says how many).

use fleet_core::{NodeId, Time};
use serde::{Deserialize, Serialize};

use super::InvalidTransition;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RunnerPhase {
    /// Assigned to a node that is not ready yet.
    Pending {
        node: NodeId,
    },
    /// Loading the model.
    Starting {
        node: NodeId,
        since: Time,
    },
    Idle {
        node: NodeId,
        since: Time,
    },
    Busy {
        node: NodeId,
        in_flight: u32,
        since: Time,
    },
    Stopping {
        node: NodeId,
        since: Time,
    },
    Stopped {
        since: Time,
        lost_requests: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RunnerEvent {
    Start,
    Started,
    StartFailed,
    /// A request was claimed (compare-and-swap won); `max` is the app's max_multiplexing.
    Claim {
        max: u32,
    },
    Complete,
    Stop,
    Stopped,
    /// The node or its agent is gone.
    Lost,
}

impl RunnerPhase {
    pub fn name(&self) -> &'static str {
        match self {
            RunnerPhase::Pending { .. } => "Pending",
            RunnerPhase::Starting { .. } => "Starting",
            RunnerPhase::Idle { .. } => "Idle",
            RunnerPhase::Busy { .. } => "Busy",
            RunnerPhase::Stopping { .. } => "Stopping",
            RunnerPhase::Stopped { .. } => "Stopped",
        }
    }

    pub fn in_flight(&self) -> u32 {
        match self {
            RunnerPhase::Busy { in_flight, .. } => *in_flight,
            _ => 0,
        }
    }
}

impl RunnerEvent {
    pub fn name(&self) -> &'static str {
        match self {
            RunnerEvent::Start => "Start",
            RunnerEvent::Started => "Started",
            RunnerEvent::StartFailed => "StartFailed",
            RunnerEvent::Claim { .. } => "Claim",
            RunnerEvent::Complete => "Complete",
            RunnerEvent::Stop => "Stop",
            RunnerEvent::Stopped => "Stopped",
            RunnerEvent::Lost => "Lost",
        }
    }
}

/// The one transition function of a runner.
pub fn transition(state: &RunnerPhase, event: RunnerEvent, now: Time) -> Result<RunnerPhase, InvalidTransition> {
    use RunnerEvent as E;
    use RunnerPhase as S;
    let invalid =
        |hint: &'static str| InvalidTransition { machine: "runner", state: state.name(), event: event.name(), hint };
    Ok(match (state, &event) {
        (S::Pending { node }, E::Start) => S::Starting { node: *node, since: now },
        (S::Starting { node, .. }, E::Started) => S::Idle { node: *node, since: now },
        (S::Starting { .. }, E::StartFailed) => S::Stopped { since: now, lost_requests: 0 },
        (S::Idle { node, .. }, E::Claim { max }) if *max >= 1 => S::Busy { node: *node, in_flight: 1, since: now },
        (S::Busy { node, in_flight, since }, E::Claim { max }) if in_flight < max => {
            S::Busy { node: *node, in_flight: in_flight + 1, since: *since }
        }
        (S::Idle { .. } | S::Busy { .. }, E::Claim { .. }) => {
            return Err(invalid("the runner is at max_multiplexing; leave the request queued for another runner"));
        }
        (S::Busy { node, in_flight: 1, .. }, E::Complete) => S::Idle { node: *node, since: now },
        (S::Busy { node, in_flight, since }, E::Complete) => {
            S::Busy { node: *node, in_flight: in_flight - 1, since: *since }
        }
        (S::Pending { .. }, E::Stop) => S::Stopped { since: now, lost_requests: 0 },
        (S::Starting { node, .. } | S::Idle { node, .. }, E::Stop) => S::Stopping { node: *node, since: now },
        // A busy runner drains: it claims nothing more, and its agent reports Stopped once the
        // requests in flight have finished (their results are still written).
        (S::Busy { node, .. }, E::Stop) => S::Stopping { node: *node, since: now },
        (S::Stopping { .. }, E::Complete) => state.clone(),
        (S::Stopping { .. }, E::Stop) => state.clone(),
        (S::Stopping { .. }, E::Stopped) => S::Stopped { since: now, lost_requests: 0 },
        (S::Stopped { .. }, E::Stop | E::Stopped | E::Lost) => state.clone(),
        (S::Stopped { .. }, _) => return Err(invalid("the runner is stopped; start a new one")),
        (s, E::Lost) => S::Stopped { since: now, lost_requests: s.in_flight() },
        (_, E::Start) => return Err(invalid("only a pending runner starts")),
        (_, E::Started | E::StartFailed) => return Err(invalid("only a starting runner takes start results")),
        (_, E::Claim { .. }) => return Err(invalid("only a ready (idle or busy) runner claims requests")),
        (_, E::Complete) => return Err(invalid("only a busy runner completes requests")),
        (_, E::Stopped) => return Err(invalid("request the stop first (Stop)")),
    })
}

#[cfg(test)]
mod tests;
