//! Least privilege for agents on etcd with authentication on: one user and one role per node,
//! `fleet-{fleet}-agent-{node}`, allowed
//!
//! - read and write its own health key `agents/{node}` (attached to its lease) and its log tail
//!   `agentlogs/{node}`,
//! - read the runner records (no secrets in them) and write only the runners assigned to its
//!   node (granted one by one as they are assigned, revoked when they go),
//! - read and write the queue, claims and results of the apps it serves.
//!
//! Nothing else: not other nodes' records, not the spec, not the pinned host keys, not other
//! apps' requests. The daemon's own etcd user needs the root role to manage these users.

use async_trait::async_trait;
use etcd_client::{Client, Permission};
use fleet_core::Secret;
use fleet_core::keys::Keys;
use fleet_state::store::etcd::EtcdStore;
use rand::Rng;

use super::AgentAccess;

#[derive(Clone)]
pub struct EtcdAgentAccess {
    client: Client,
    fleet: String,
    keys: Keys,
}

impl std::fmt::Debug for EtcdAgentAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdAgentAccess({})", self.fleet)
    }
}

fn err(what: &str) -> impl Fn(etcd_client::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl EtcdAgentAccess {
    /// `admin` must be logged in with the root role.
    pub fn new(admin: &EtcdStore, fleet: &str) -> EtcdAgentAccess {
        EtcdAgentAccess { client: admin.client(), fleet: fleet.to_string(), keys: Keys::new(fleet) }
    }

    pub fn user(&self, node: u64) -> String {
        format!("fleet-{}-agent-{node}", self.fleet)
    }
}

#[async_trait]
impl AgentAccess for EtcdAgentAccess {
    async fn credentials(&self, node: u64, apps: &[String]) -> Result<(String, Secret), String> {
        let mut c = self.client.clone();
        let name = self.user(node);
        let password: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect();
        // Re-bootstrapping a node resets its password (the old one goes with the old config).
        match c.user_add(name.as_str(), password.as_str(), None).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("already exists") => {
                c.user_change_password(name.as_str(), password.as_str()).await.map_err(err("etcd user password"))?;
            }
            Err(e) => return Err(format!("etcd user {name}: {e}")),
        }
        match c.role_add(name.as_str()).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(format!("etcd role {name}: {e}")),
        }
        let k = &self.keys;
        let mut perms = vec![
            Permission::read_write(k.agent(node)),
            Permission::read_write(k.agent_log(node)),
            Permission::read(k.runners()).with_prefix(),
            Permission::read(k.placed(node)).with_prefix(),
        ];
        for app in apps {
            perms.push(Permission::read_write(k.queue(app)).with_prefix());
            perms.push(Permission::read_write(format!("{}{app}/", k.claims())).with_prefix());
            perms.push(Permission::read_write(k.results(app)).with_prefix());
            // Peers: who holds which chunks, and the region's origin claims. etcd roles cannot
            // say "only your own node's key" under a prefix; a node writing another's holder
            // record can only make peers ask it, and every chunk is checked by its digest.
            perms.push(Permission::read_write(k.holders(app)).with_prefix());
            perms.push(Permission::read_write(k.origin_fetches(app)).with_prefix());
        }
        for p in perms {
            c.role_grant_permission(name.as_str(), p).await.map_err(err("etcd role permission"))?;
        }
        c.user_grant_role(name.as_str(), name.as_str()).await.map_err(err("etcd user role"))?;
        Ok((name, Secret::new(password)))
    }

    async fn grant_runner(&self, node: u64, runner: u64) -> Result<(), String> {
        let mut c = self.client.clone();
        c.role_grant_permission(self.user(node), Permission::read_write(self.keys.runner(runner)))
            .await
            .map_err(err("etcd runner permission"))?;
        Ok(())
    }

    async fn revoke_runner(&self, node: u64, runner: u64) -> Result<(), String> {
        let mut c = self.client.clone();
        match c.role_revoke_permission(self.user(node), self.keys.runner(runner), None).await {
            Ok(_) => Ok(()),
            // Already gone (or the role is): nothing to revoke.
            Err(e) if e.to_string().contains("not found") || e.to_string().contains("not granted") => Ok(()),
            Err(e) => Err(format!("etcd runner permission: {e}")),
        }
    }

    async fn forget_node(&self, node: u64) -> Result<(), String> {
        let mut c = self.client.clone();
        let name = self.user(node);
        for r in [c.user_delete(name.as_str()).await.map(|_| ()), c.role_delete(name.as_str()).await.map(|_| ())] {
            if let Err(e) = r
                && !e.to_string().contains("not found")
            {
                return Err(format!("etcd user {name}: {e}"));
            }
        }
        Ok(())
    }
}
