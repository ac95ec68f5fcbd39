//! fleet-core: the model every other crate shares.
//!
//! - [`cloud`], [`gpu`], [`instance`], [`offering`]: what can be rented, where, how.
//! - [`money`]: exact dollars (integer micro-dollars), never `f64`.
//! - [`catalog`]: prices, built in or imported from SkyPilot catalogs, and queries over them.
//! - [`names`]: normalising names and suggesting the closest known one.
//! - [`artifact`]: model artefacts: content-addressed chunks named by a manifest's digest.
//! - [`spec`]: the fleet spec (TOML), checked as a whole with positioned errors.
//! - [`keys`]: the store key layout, in one place.
//! - [`ids`]: node, runner and request numbers and [`Time`]; [`Secret`]: credentials never printed.

pub mod accounts;
pub mod artifact;
pub mod catalog;
pub mod charts;
pub mod cloud;
pub mod exit;
pub mod gpu;
pub mod ids;
pub mod instance;
pub mod keys;
pub mod money;
pub mod names;
pub mod offering;
mod secret;
pub mod spec;

pub use catalog::{Catalog, CatalogError, Query, SortKey};
pub use cloud::Cloud;
pub use gpu::{GpuFamily, GpuModel, GpuSelector};
pub use ids::{NodeId, RequestId, RunnerId, Time};
pub use instance::{InstanceType, Interconnect};
pub use money::{Money, MoneyOverflow, Price};
pub use offering::{Availability, CapacityType, Offering, OfferingKey, Source};
pub use secret::Secret;
