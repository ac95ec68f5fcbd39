//! fleet-policies: the decisions `fleetd` and `fleetsim` both run. Pure: no I/O, no wall clock
//! (time is an argument), deterministic, and explainable (every exclusion has a reason).
//!
//! - [`placement`]: which offerings to try for a new node, cheapest effective $/GPU-hour first,
//!   with failover order and the reason each other offering was excluded.
//! - [`autoscale`]: fal-style runner counts (min/max concurrency, buffer, multiplexing,
//!   keep-alive, scaling delay, scale to zero) and which runners to stop.
//! - [`spot`]: the on-demand base and spot for the rest, with fallback while spot is unavailable.
//! - [`budget`]: hard $/hour and $/month caps, per app and fleet-wide.
//! - [`consolidate`]: when moving an app's runners to fewer or cheaper nodes pays.
//! - [`plan`]: all of the above for a whole fleet in one call.

pub mod autoscale;
pub mod budget;
pub mod coldstart;
pub mod consolidate;
pub mod placement;
pub mod plan;
pub mod sizing;
pub mod spot;

pub use chrono::{DateTime, Utc};
