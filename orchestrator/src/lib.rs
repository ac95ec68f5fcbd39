//! fleet-orchestrator: the `fleetd` daemon.
//!
//! So far only [`lifecycle`]: the node and runner state machines, as plain data and one
//! transition function each. The actor tree, store, reconciler, queue and API come with the
//! orchestrator issue; the `fleetd` binary is added with them, so that no binary exists that
//! pretends to run a fleet.

pub mod lifecycle;
