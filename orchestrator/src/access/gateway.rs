//! The store gateway's server side: each call of an agent's token ([`fleet_state::store::gateway`],
//! the wire protocol) checked against the same least privilege as an agent's etcd role
//! ([`super::etcd`]): its own `agents/{node}`, every runner record read-only and the runners
//! assigned to its node writable, the queue, claims and results of its apps. Nothing else.

use fleet_core::keys::Keys;
use fleet_state::model::RunnerRecord;
use fleet_state::store::gateway::{Request, Response, WireKv, WireOp};
use fleet_state::store::{Compare, LeaseId, Op, Store, StoreError, TxnResult};

/// What an agent's token is for.
#[derive(Debug, Clone)]
pub struct AgentGrant {
    pub node: u64,
    pub apps: Vec<String>,
}

/// Leases granted through the gateway, by node, oldest first: an agent may keep alive, revoke and
/// attach keys to its own leases only. Kept in memory: after a fleetd restart an agent's
/// keep-alive is refused, and it registers again with a new lease (its old one expires).
///
/// Bounded, so no agent token can fill the store with leases: a TTL within
/// [`LEASE_TTL_MIN`]..=[`LEASE_TTL_MAX`], and at most [`LEASES_PER_NODE`] per node (a grant
/// beyond that revokes the node's oldest: an agent holds one, plus one while it registers
/// again). A node that is gone has its leases revoked ([`GatewayLeases::forget`]).
#[derive(Debug, Default)]
pub struct GatewayLeases(std::sync::Mutex<std::collections::HashMap<u64, Vec<LeaseId>>>);

pub const LEASE_TTL_MIN: std::time::Duration = std::time::Duration::from_secs(1);
pub const LEASE_TTL_MAX: std::time::Duration = std::time::Duration::from_secs(60);
pub const LEASES_PER_NODE: usize = 2;

impl GatewayLeases {
    fn owns(&self, node: u64, lease: LeaseId) -> bool {
        self.0.lock().expect("lease map").get(&node).is_some_and(|s| s.contains(&lease))
    }
    /// Records `lease`; returns the node's leases beyond the bound (oldest), to be revoked.
    fn add(&self, node: u64, lease: LeaseId) -> Vec<LeaseId> {
        let mut map = self.0.lock().expect("lease map");
        let held = map.entry(node).or_default();
        held.push(lease);
        let over = held.len().saturating_sub(LEASES_PER_NODE);
        held.drain(..over).collect()
    }
    fn remove(&self, node: u64, lease: LeaseId) {
        if let Some(s) = self.0.lock().expect("lease map").get_mut(&node) {
            s.retain(|l| *l != lease);
        }
    }
    /// The node is gone: its leases, to be revoked.
    pub fn forget(&self, node: u64) -> Vec<LeaseId> {
        self.0.lock().expect("lease map").remove(&node).unwrap_or_default()
    }
    /// Leases held for `node` (tests, metrics).
    pub fn held(&self, node: u64) -> usize {
        self.0.lock().expect("lease map").get(&node).map_or(0, Vec::len)
    }
}

impl AgentGrant {
    fn app_prefixes(&self, keys: &Keys) -> Vec<String> {
        self.apps.iter().flat_map(|a| [keys.queue(a), format!("{}{a}/", keys.claims()), keys.results(a)]).collect()
    }

    /// Who holds which chunks of the apps' models, and the region's origin claims: read all,
    /// write only this node's holder records (and claims, which say which node made them).
    fn peer_prefixes(&self, keys: &Keys) -> Vec<String> {
        self.apps.iter().flat_map(|a| [keys.holders(a), keys.origin_fetches(a)]).collect()
    }

    fn may_write_peer_key(&self, keys: &Keys, key: &str) -> bool {
        let own = format!("/{}", fleet_core::keys::id_segment(self.node));
        self.apps.iter().any(|a| {
            (key.starts_with(&keys.holders(a)) && key.ends_with(&own)) || key.starts_with(&keys.origin_fetches(a))
        })
    }

    /// Whether the agent may read `key` (or, for ranges, every key under the prefix).
    pub fn may_read(&self, keys: &Keys, key: &str) -> bool {
        key == keys.agent(self.node)
            || key.starts_with(&keys.placed(self.node))
            || key == keys.agent_log(self.node)
            || key.starts_with(&keys.runners())
            || self.app_prefixes(keys).iter().any(|p| key.starts_with(p.as_str()))
            || self.peer_prefixes(keys).iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Whether the agent may write `key`: runner records only where the runner is on its node.
    async fn may_write(&self, store: &dyn Store, keys: &Keys, key: &str) -> Result<bool, StoreError> {
        if key == keys.agent(self.node)
            || key == keys.agent_log(self.node)
            || self.app_prefixes(keys).iter().any(|p| key.starts_with(p.as_str()))
            || self.may_write_peer_key(keys, key)
        {
            return Ok(true);
        }
        if key.starts_with(&keys.runners()) {
            let Some(kv) = store.get(key).await? else { return Ok(false) };
            let r: RunnerRecord = kv.json()?;
            return Ok(r.node() == Some(self.node));
        }
        Ok(false)
    }
}

fn denied(key: &str) -> StoreError {
    StoreError::Denied(format!("this agent's token does not cover {key}"))
}

/// Carries out one call for an agent, within its grant.
pub async fn handle(
    store: &dyn Store,
    keys: &Keys,
    leases: &GatewayLeases,
    grant: &AgentGrant,
    req: Request,
) -> Result<Response, StoreError> {
    let own = |lease: LeaseId| {
        if leases.owns(grant.node, lease) { Ok(()) } else { Err(StoreError::LeaseNotFound(lease)) }
    };
    Ok(match req {
        Request::Get { key } => {
            if !grant.may_read(keys, &key) {
                return Err(denied(&key));
            }
            Response::Kv { kv: store.get(&key).await?.map(WireKv::from_kv).transpose()? }
        }
        Request::Range { prefix, after } => {
            if !grant.may_read(keys, &prefix) {
                return Err(denied(&prefix));
            }
            let page =
                store.range_page(&prefix, after.as_deref(), fleet_state::store::gateway::RANGE_PAGE_BYTES).await?;
            Response::Kvs {
                kvs: page.kvs.into_iter().map(WireKv::from_kv).collect::<Result<_, _>>()?,
                revision: page.revision,
                more: page.more,
            }
        }
        Request::Put { key, value, lease } => {
            if !grant.may_write(store, keys, &key).await? {
                return Err(denied(&key));
            }
            lease.map(own).transpose()?;
            Response::Revision { revision: store.put(&key, value.into_bytes(), lease).await? }
        }
        Request::Delete { key } => {
            if !grant.may_write(store, keys, &key).await? {
                return Err(denied(&key));
            }
            Response::Deleted { existed: store.delete(&key).await? }
        }
        Request::Txn { compares, ops } => {
            for (key, _) in &compares {
                if !grant.may_read(keys, key) {
                    return Err(denied(key));
                }
            }
            let mut store_ops = Vec::with_capacity(ops.len());
            for op in ops {
                let key = match &op {
                    WireOp::Put { key, .. } | WireOp::Delete { key } => key.clone(),
                };
                if !grant.may_write(store, keys, &key).await? {
                    return Err(denied(&key));
                }
                if let WireOp::Put { lease: Some(l), .. } = &op {
                    own(*l)?;
                }
                store_ops.push(match op {
                    WireOp::Put { key, value, lease } => Op::Put { key, value: value.into_bytes(), lease },
                    WireOp::Delete { key } => Op::Delete { key },
                });
            }
            let compares = compares.into_iter().map(|(k, r)| Compare::at(k, r)).collect();
            let TxnResult { succeeded, revision } = store.txn(compares, store_ops).await?;
            Response::Txn { succeeded, revision }
        }
        Request::Grant { ttl_ms } => {
            let ttl = std::time::Duration::from_millis(ttl_ms);
            if !(LEASE_TTL_MIN..=LEASE_TTL_MAX).contains(&ttl) {
                return Err(StoreError::Denied(format!(
                    "a lease TTL of {ttl_ms} ms is outside what an agent may ask ({} to {} s); set the agent's lease_ttl within it",
                    LEASE_TTL_MIN.as_secs(),
                    LEASE_TTL_MAX.as_secs()
                )));
            }
            let lease = store.grant_lease(ttl).await?;
            for old in leases.add(grant.node, lease) {
                // Its keys go with it; the agent that held it has registered again on the new one.
                if let Err(e) = store.revoke(old).await {
                    tracing::debug!(node = grant.node, lease = old, error = %e, "old gateway lease not revoked (expired?)");
                }
            }
            Response::Lease { lease }
        }
        Request::KeepAlive { lease } => {
            own(lease)?;
            store.keep_alive(lease).await?;
            Response::Done
        }
        Request::Revoke { lease } => {
            own(lease)?;
            store.revoke(lease).await?;
            leases.remove(grant.node, lease);
            Response::Done
        }
    })
}

/// Agents' credentials as gateway tokens (the `local` provider's nodes, and SSH-bootstrapped
/// nodes of a fleetd on its embedded store): one token per node, `agent-{node}`, revoked when
/// the node is gone. Runner permissions follow the runner records, so granting is a no-op.
#[derive(Debug)]
pub struct GatewayAccess {
    pub store: std::sync::Arc<dyn Store>,
    pub keys: fleet_core::keys::Keys,
}

#[async_trait::async_trait]
impl super::AgentAccess for GatewayAccess {
    async fn credentials(&self, node: u64, apps: &[String]) -> Result<(String, fleet_core::Secret), String> {
        let name = format!("agent-{node}");
        // A node bootstrapped again gets a new token; the old one goes.
        crate::auth::revoke(&*self.store, &self.keys, &name).await.map_err(|e| e.to_string())?;
        let scope = crate::auth::Scope::Agent { node, apps: apps.to_vec() };
        let token = crate::auth::issue(&*self.store, &self.keys, &name, scope, chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        Ok((name, fleet_core::Secret::new(token)))
    }
    async fn grant_runner(&self, _node: u64, _runner: u64) -> Result<(), String> {
        Ok(())
    }
    async fn revoke_runner(&self, _node: u64, _runner: u64) -> Result<(), String> {
        Ok(())
    }
    async fn forget_node(&self, node: u64) -> Result<(), String> {
        crate::auth::revoke(&*self.store, &self.keys, &format!("agent-{node}"))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
