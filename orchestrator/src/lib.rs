//! fleet-orchestrator: the `fleetd` daemon.
//!
//! What fleetd shares with the agent (the store, records, queue protocol, lifecycles, clock) is
//! the `fleet-state` crate; this crate is what only the daemon does:
//!
//! - [`reconcile`]: records → the planner's view (pure); [`actors`]: the supervision tree that
//!   reconciles and carries out decisions.
//! - [`access`]: agents' least-privilege store credentials (etcd users or gateway tokens) and the
//!   gateway's server side; [`api`] and [`auth`]: the HTTP API and its tokens; [`tls`].
//! - [`bootstrap`]: getting an agent onto a launched node (SSH or local).
//! - [`clouds`]: the providers of the spec's cloud accounts; [`sim_agents`]: the simulated agents
//!   of `fleetd --fake-clouds`.
//! - [`informer`]: a watched cache of records; [`leader`]: one acting daemon per fleet.
//! - [`events`]: recording each decision with its reason; [`metrics`]: Prometheus metrics; [`crashpoint`]: where the crash test kills fleetd.
//! - `testing` (feature `testing`): real etcd and sshd harnesses, the fake-cloud harness.

pub mod access;
pub mod actors;
pub mod admission;
pub mod allocator;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod clouds;
pub mod coldstart;
pub mod crashpoint;
pub mod dashboard;
pub mod events;
pub mod informer;
pub mod leader;
pub mod metrics;
pub mod openai;
pub mod push;
pub mod reconcile;
pub mod serve;
pub mod serving;
pub mod sim_agents;
pub mod submitter;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod ui;
