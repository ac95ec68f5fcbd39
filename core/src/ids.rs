//! The names every crate gives the same things: a node, a runner, a request, a moment.
//!
//! Declared once here so that the planner (`fleet-policies`), the store records (`fleet-state`),
//! the daemon and the agent cannot drift apart.

use chrono::{DateTime, Utc};

/// A moment in UTC, as records and decisions carry it.
pub type Time = DateTime<Utc>;
/// A node's number (the store key's id).
pub type NodeId = u64;
/// A runner's number (the store key's id).
pub type RunnerId = u64;
/// A request's number within its app's queue.
pub type RequestId = u64;
