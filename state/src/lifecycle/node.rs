//! A node: one rented instance, from the decision to rent it until the cloud confirms it is gone.
//!
//! ```text
//! Requested ──LaunchStarted──▶ Launching ──Launched──▶ Bootstrapping ──BootstrapSucceeded──▶ Ready
//!     ▲                          │                         │                                  │
//!     └──LaunchFailed(retry)─────┘                         │BootstrapFailed                   │Drain
//!                                │LaunchFailed(no retry)   ▼                                  ▼
//!                                └──────────────────────▶ Failed ──Terminate──▶ Terminating ◀─Drained── Draining
//!                                                                                  │
//!                                                                 TerminateConfirmed / InstanceGone
//!                                                                                  ▼
//!                                                                             Terminated
//! ```
//!
//! The rule that keeps money from leaking: a state that may have an instance (Launching's outcome
//! unknown, Bootstrapping, Ready, Draining, Failed with an instance, Terminating) only reaches
//! Terminated through the cloud's confirmation (`TerminateConfirmed`) or its report that the
//! instance is gone (`InstanceGone`), never by forgetting.

use fleet_core::{OfferingKey, Time};
use serde::{Deserialize, Serialize};

use super::InvalidTransition;

/// Why a node is drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainReason {
    ScaleDown,
    Operator,
    SpotInterruption,
    AgentLost,
    /// Its app is no longer in the applied spec.
    AppRemoved,
    /// Its offering is no longer one the plan may use (it left the catalog, or its cloud, region
    /// or GPU left the spec): its runners are placed elsewhere, then it goes.
    OfferingGone,
    /// The machine is not what was rented (its agent says: fewer GPUs, another model, ECC
    /// errors, persistent throttling).
    HardwareFault,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum NodePhase {
    /// Decided; no launch call made yet.
    Requested {
        since: Time,
    },
    /// A launch call is in flight (its outcome decides whether an instance exists).
    Launching {
        offering: OfferingKey,
        token: String,
        since: Time,
    },
    Bootstrapping {
        instance_id: String,
        offering: OfferingKey,
        since: Time,
    },
    Ready {
        instance_id: String,
        offering: OfferingKey,
        since: Time,
    },
    /// No new work; existing work finishes or moves.
    Draining {
        instance_id: String,
        offering: OfferingKey,
        reason: DrainReason,
        since: Time,
    },
    /// Termination requested; waiting for the cloud to confirm.
    Terminating {
        instance_id: String,
        since: Time,
    },
    /// The cloud confirmed: nothing bills any more.
    Terminated {
        since: Time,
    },
    /// Gave up on this node. With an instance, it must still be terminated.
    Failed {
        instance_id: Option<String>,
        reason: String,
        since: Time,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum NodeEvent {
    LaunchStarted {
        offering: OfferingKey,
        token: String,
    },
    Launched {
        instance_id: String,
    },
    /// `retry`: try another offering (capacity/quota); otherwise the node fails.
    LaunchFailed {
        reason: String,
        retry: bool,
    },
    BootstrapSucceeded,
    BootstrapFailed {
        reason: String,
    },
    Drain {
        reason: DrainReason,
    },
    /// The node's work is finished or moved.
    Drained,
    Terminate,
    TerminateConfirmed,
    /// The cloud reports the instance gone (preempted, deleted outside fleet).
    InstanceGone,
}

impl NodePhase {
    pub fn name(&self) -> &'static str {
        match self {
            NodePhase::Requested { .. } => "Requested",
            NodePhase::Launching { .. } => "Launching",
            NodePhase::Bootstrapping { .. } => "Bootstrapping",
            NodePhase::Ready { .. } => "Ready",
            NodePhase::Draining { .. } => "Draining",
            NodePhase::Terminating { .. } => "Terminating",
            NodePhase::Terminated { .. } => "Terminated",
            NodePhase::Failed { .. } => "Failed",
        }
    }

    /// The instance this node may be paying for.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            NodePhase::Bootstrapping { instance_id, .. }
            | NodePhase::Ready { instance_id, .. }
            | NodePhase::Draining { instance_id, .. }
            | NodePhase::Terminating { instance_id, .. } => Some(instance_id),
            NodePhase::Failed { instance_id, .. } => instance_id.as_deref(),
            _ => None,
        }
    }

    /// Whether runners may be placed here.
    pub fn accepts_work(&self) -> bool {
        matches!(self, NodePhase::Ready { .. })
    }
}

impl NodeEvent {
    pub fn name(&self) -> &'static str {
        match self {
            NodeEvent::LaunchStarted { .. } => "LaunchStarted",
            NodeEvent::Launched { .. } => "Launched",
            NodeEvent::LaunchFailed { .. } => "LaunchFailed",
            NodeEvent::BootstrapSucceeded => "BootstrapSucceeded",
            NodeEvent::BootstrapFailed { .. } => "BootstrapFailed",
            NodeEvent::Drain { .. } => "Drain",
            NodeEvent::Drained => "Drained",
            NodeEvent::Terminate => "Terminate",
            NodeEvent::TerminateConfirmed => "TerminateConfirmed",
            NodeEvent::InstanceGone => "InstanceGone",
        }
    }
}

/// The one transition function of a node.
pub fn transition(state: &NodePhase, event: NodeEvent, now: Time) -> Result<NodePhase, InvalidTransition> {
    use NodeEvent as E;
    use NodePhase as S;
    let invalid =
        |hint: &'static str| InvalidTransition { machine: "node", state: state.name(), event: event.name(), hint };
    Ok(match (state, &event) {
        (S::Requested { .. }, E::LaunchStarted { offering, token }) => {
            S::Launching { offering: offering.clone(), token: token.clone(), since: now }
        }
        // Nothing was launched: nothing to pay for.
        (S::Requested { .. }, E::Terminate) => S::Terminated { since: now },
        (S::Launching { offering, .. }, E::Launched { instance_id }) => {
            S::Bootstrapping { instance_id: instance_id.clone(), offering: offering.clone(), since: now }
        }
        (S::Launching { .. }, E::LaunchFailed { retry: true, .. }) => S::Requested { since: now },
        (S::Launching { .. }, E::LaunchFailed { retry: false, reason }) => {
            S::Failed { instance_id: None, reason: reason.clone(), since: now }
        }
        (S::Launching { .. }, E::Terminate) => {
            return Err(invalid(
                "wait for the launch call to answer (or relaunch with the same token to learn the instance), then terminate",
            ));
        }
        (S::Bootstrapping { instance_id, offering, .. }, E::BootstrapSucceeded) => {
            S::Ready { instance_id: instance_id.clone(), offering: offering.clone(), since: now }
        }
        (S::Bootstrapping { instance_id, .. }, E::BootstrapFailed { reason }) => {
            S::Failed { instance_id: Some(instance_id.clone()), reason: reason.clone(), since: now }
        }
        (S::Ready { instance_id, offering, .. }, E::Drain { reason }) => S::Draining {
            instance_id: instance_id.clone(),
            offering: offering.clone(),
            reason: reason.clone(),
            since: now,
        },
        // A second drain (say a spot notice while scaling down) keeps the first reason and time.
        (S::Draining { .. }, E::Drain { .. }) => state.clone(),
        (S::Draining { instance_id, .. }, E::Drained) => {
            S::Terminating { instance_id: instance_id.clone(), since: now }
        }
        (
            S::Bootstrapping { instance_id, .. } | S::Ready { instance_id, .. } | S::Draining { instance_id, .. },
            E::Terminate,
        ) => S::Terminating { instance_id: instance_id.clone(), since: now },
        (S::Failed { instance_id: Some(id), .. }, E::Terminate) => {
            S::Terminating { instance_id: id.clone(), since: now }
        }
        (S::Failed { instance_id: None, .. }, E::Terminate) => S::Terminated { since: now },
        // Terminate is idempotent: callers retry until the cloud confirms.
        (S::Terminating { .. }, E::Terminate) => state.clone(),
        (S::Terminating { .. }, E::TerminateConfirmed) => S::Terminated { since: now },
        (
            S::Bootstrapping { .. }
            | S::Ready { .. }
            | S::Draining { .. }
            | S::Terminating { .. }
            | S::Failed { instance_id: Some(_), .. },
            E::InstanceGone,
        ) => S::Terminated { since: now },
        (S::Terminated { .. }, E::Terminate | E::TerminateConfirmed | E::InstanceGone) => state.clone(),
        (S::Terminated { .. }, _) => return Err(invalid("the node is gone; request a new node instead")),
        (_, E::TerminateConfirmed) => return Err(invalid("request termination first (Terminate)")),
        (_, E::Launched { .. } | E::LaunchFailed { .. }) => {
            return Err(invalid("only a launching node takes launch results"));
        }
        (_, E::LaunchStarted { .. }) => return Err(invalid("only a requested node starts a launch")),
        (_, E::BootstrapSucceeded | E::BootstrapFailed { .. }) => {
            return Err(invalid("only a bootstrapping node takes bootstrap results"));
        }
        (_, E::Drain { .. }) => return Err(invalid("only a ready node can be drained; terminate it instead")),
        (_, E::Drained) => return Err(invalid("only a draining node can finish draining")),
        (_, E::InstanceGone) => return Err(invalid("this state has no instance to lose")),
    })
}

#[cfg(test)]
mod tests;
