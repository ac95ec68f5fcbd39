//! [`HttpStore`]: the [`Store`] of an agent that reaches fleetd's store through its API (the
//! gateway, [`super::gateway`]) instead of etcd. Each call is one HTTP request with the agent's
//! token; "cannot connect" is [`StoreError::Unavailable`], as for etcd, so the agent's retries
//! and re-registration work the same.

use std::time::Duration;

use async_trait::async_trait;
use fleet_core::Secret;

use super::gateway::{Request, Response, WireKv, WireOp};
use super::{Compare, KeyValue, LeaseId, Op, Revision, Store, StoreError, StoreResult, TxnResult, Watch};

#[derive(Clone)]
pub struct HttpStore {
    url: String,
    token: Secret,
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpStore({})", self.url)
    }
}

fn text(v: Vec<u8>, key: &str) -> StoreResult<String> {
    String::from_utf8(v).map_err(|_| StoreError::Invalid(format!("{key}: the gateway carries UTF-8 values only")))
}

impl HttpStore {
    /// `base`: fleetd's API (`http://127.0.0.1:7070`); `token`: the agent's (scope `agent:…`).
    pub fn new(base: &str, token: Secret) -> HttpStore {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        HttpStore { url: format!("{}/v1/store/call", base.trim_end_matches('/')), token, agent }
    }

    async fn call(&self, req: Request) -> StoreResult<Response> {
        let (agent, url, auth) = (self.agent.clone(), self.url.clone(), format!("Bearer {}", self.token.expose()));
        let body = serde_json::to_string(&req).map_err(|e| StoreError::Invalid(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let mut resp = agent
                .post(&url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .send(body)
                .map_err(|e| StoreError::Unavailable(format!("fleetd's store gateway: {e}")))?;
            let status = resp.status().as_u16();
            let text = resp
                .body_mut()
                .with_config()
                .limit(super::gateway::MAX_ANSWER_BYTES)
                .read_to_string()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            match status {
                200 => serde_json::from_str(&text).map_err(|e| StoreError::Invalid(format!("gateway answer: {e}"))),
                _ => Err(serde_json::from_str::<GatewayError>(&text)
                    .map(GatewayError::into_error)
                    .unwrap_or_else(|_| StoreError::Unavailable(format!("gateway answered {status}: {text}")))),
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

/// The gateway's error body: the kind of [`StoreError`] and its detail.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct GatewayError {
    pub kind: String,
    pub detail: String,
    pub lease: Option<LeaseId>,
}

impl GatewayError {
    pub fn from_error(e: &StoreError) -> GatewayError {
        let (kind, detail, lease) = match e {
            StoreError::Unavailable(d) => ("unavailable", d.clone(), None),
            StoreError::LeaseNotFound(l) => ("lease_not_found", String::new(), Some(*l)),
            StoreError::Denied(d) => ("denied", d.clone(), None),
            other => ("invalid", other.to_string(), None),
        };
        GatewayError { kind: kind.into(), detail, lease }
    }

    fn into_error(self) -> StoreError {
        match self.kind.as_str() {
            "unavailable" => StoreError::Unavailable(self.detail),
            "lease_not_found" => StoreError::LeaseNotFound(self.lease.unwrap_or_default()),
            "denied" => StoreError::Denied(self.detail),
            _ => StoreError::Invalid(self.detail),
        }
    }
}

fn unexpected(r: Response) -> StoreError {
    StoreError::Invalid(format!("unexpected gateway answer {r:?}"))
}

#[async_trait]
impl Store for HttpStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        match self.call(Request::Get { key: key.into() }).await? {
            Response::Kv { kv } => Ok(kv.map(WireKv::into_kv)),
            r => Err(unexpected(r)),
        }
    }

    /// Page by page ([`super::gateway::RANGE_PAGE_BYTES`] each); the revision is the first page's.
    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Revision)> {
        let mut out: Vec<KeyValue> = Vec::new();
        let mut first_revision = None;
        loop {
            let after = out.last().map(|kv| kv.key.clone());
            match self.call(Request::Range { prefix: prefix.into(), after }).await? {
                Response::Kvs { kvs, revision, more } => {
                    first_revision.get_or_insert(revision);
                    let got = kvs.len();
                    out.extend(kvs.into_iter().map(WireKv::into_kv));
                    if !more || got == 0 {
                        return Ok((out, first_revision.unwrap_or(revision)));
                    }
                }
                r => return Err(unexpected(r)),
            }
        }
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> StoreResult<Revision> {
        let value = text(value, key)?;
        match self.call(Request::Put { key: key.into(), value, lease }).await? {
            Response::Revision { revision } => Ok(revision),
            r => Err(unexpected(r)),
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        match self.call(Request::Delete { key: key.into() }).await? {
            Response::Deleted { existed } => Ok(existed),
            r => Err(unexpected(r)),
        }
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> StoreResult<TxnResult> {
        let compares = compares.into_iter().map(|c| (c.key, c.mod_revision)).collect();
        let ops = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { value, lease, key } => Ok(WireOp::Put { value: text(value, &key)?, key, lease }),
                Op::Delete { key } => Ok(WireOp::Delete { key }),
            })
            .collect::<StoreResult<_>>()?;
        match self.call(Request::Txn { compares, ops }).await? {
            Response::Txn { succeeded, revision } => Ok(TxnResult { succeeded, revision }),
            r => Err(unexpected(r)),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        match self.call(Request::Grant { ttl_ms: ttl.as_millis() as u64 }).await? {
            Response::Lease { lease } => Ok(lease),
            r => Err(unexpected(r)),
        }
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.call(Request::KeepAlive { lease }).await.map(drop)
    }

    async fn revoke(&self, lease: LeaseId) -> StoreResult<()> {
        self.call(Request::Revoke { lease }).await.map(drop)
    }

    async fn watch(&self, _prefix: &str, _from: Revision) -> StoreResult<Watch> {
        Err(StoreError::Invalid("fleetd's store gateway has no watches: poll with range".into()))
    }
}
