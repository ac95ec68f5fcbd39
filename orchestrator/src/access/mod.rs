//! Agents' store credentials, least privilege: each node's agent may touch only its own health
//! key and log tail, the runners assigned to its node, and the queues of the apps it serves.
//!
//! - [`etcd`]: one etcd user and role per node (fleetd on etcd with authentication on).
//! - [`gateway`]: one gateway token per node, and the gateway's server side that checks each
//!   call (fleetd on its embedded store, `local` nodes).

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod gateway;

use async_trait::async_trait;

/// Gives each node's agent only the store access its work needs: its own health key, the
/// runner records assigned to its node, and the queues of the apps it serves.
#[async_trait]
pub trait AgentAccess: Send + Sync + std::fmt::Debug {
    /// Creates (or resets) the agent user of `node`, allowed to serve `apps`; returns its
    /// user name and password.
    async fn credentials(&self, node: u64, apps: &[String]) -> Result<(String, fleet_core::Secret), String>;
    /// Lets the agent of `node` update runner `runner` (assigned to it).
    async fn grant_runner(&self, node: u64, runner: u64) -> Result<(), String>;
    async fn revoke_runner(&self, node: u64, runner: u64) -> Result<(), String>;
    /// Deletes the node's agent user (the node is gone).
    async fn forget_node(&self, node: u64) -> Result<(), String>;
}
