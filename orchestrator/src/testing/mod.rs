//! Helpers for tests that run real components, and simulated agents (used by this crate's tests,
//! its benchmark, and `fleetd --fake-clouds`).

pub mod etcd;
pub mod harness;
pub mod http;
pub mod live;
pub mod sim_agent;
pub mod sshd;
