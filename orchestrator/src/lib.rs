//! fleet-orchestrator: the `fleetd` daemon.
//!
//! - [`lifecycle`]: node and runner lifecycles as explicit state machines.
//! - [`store`]: the `Store` trait (etcd semantics) with etcd and embedded implementations.
//! - [`model`]: the records kept in the store; [`queue`]: the request queue on top of it.
//! - [`reconcile`]: records → the planner's view (pure); [`actors`]: the supervision tree that
//!   reconciles and carries out decisions.
//! - [`metrics`]: Prometheus metrics; [`clock`]: "now" for records and decisions.

pub mod actors;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod clock;
pub mod clouds;
pub mod crashpoint;
pub mod informer;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod reconcile;
pub mod store;
pub mod testing;
pub mod tls;
