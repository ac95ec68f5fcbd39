//! fleet-orchestrator: the `fleetd` daemon.
//!
//! - [`lifecycle`]: node and runner lifecycles as explicit state machines.
//! - [`store`]: the `Store` trait (etcd semantics) with etcd and embedded implementations.

pub mod lifecycle;
pub mod store;
pub mod testing;
