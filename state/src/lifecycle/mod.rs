//! Lifecycles as explicit state machines (firecracker-style): each state is an enum variant
//! carrying what is true in it, each input an event, and one `transition` function decides. An
//! event a state cannot take is an error that says what to do, and leaves the state unchanged.

pub mod node;
pub mod runner;

/// An event the state cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{machine} in state {state} cannot take {event}: {hint}")]
pub struct InvalidTransition {
    pub machine: &'static str,
    pub state: &'static str,
    pub event: &'static str,
    pub hint: &'static str,
}
