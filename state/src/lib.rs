//! fleet-state: what fleetd and the agent share, so that both sides of every store operation are
//! the same code.
//!
//! - [`store`]: the `Store` trait (etcd semantics) with its etcd (feature `etcd`), embedded and
//!   gateway-client implementations.
//! - [`model`]: the records kept in the store; [`queue`]: the request queue protocol on top of it.
//! - [`lifecycle`]: node and runner lifecycles as explicit state machines.
//! - [`work`]: what one node is asked to do (its runners, its apps' queues), followed by watching.
//! - [`clock`]: "now" for records and decisions; [`events`]: the fleet's decisions with reasons.

pub mod clock;
pub mod events;
pub mod lifecycle;
pub mod model;
pub mod queue;
pub mod store;
pub mod work;
