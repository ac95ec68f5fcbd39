//! The store on a real etcd cluster (v3 API through etcd-client).
//!
//! Each call clones the client (cheap: channels are shared) because etcd-client's methods take
//! `&mut self`. Errors: a gRPC "lease not found" becomes [`StoreError::LeaseNotFound`], a
//! compacted watch [`StoreError::Compacted`], anything that looks like the cluster being away
//! [`StoreError::Unavailable`] (callers retry those).

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as ECompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

use super::{Compare, KeyValue, LeaseId, Op, Revision, Store, StoreError, StoreResult, TxnResult, Watch, WatchEvent};
use fleet_core::Secret;

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl EtcdStore {
    /// The underlying client (shares its connection), for what the `Store` trait does not cover (users and roles, elections).
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdStore({})", self.endpoints.join(","))
    }
}

/// Credentials for an etcd with authentication on.
#[derive(Debug, Clone)]
pub struct EtcdAuth {
    pub user: String,
    pub password: Secret,
}

fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    // etcd says "requested lease not found" over gRPC, the client "lease not found" on keep-alives.
    if e.to_string().contains("lease not found") {
        return StoreError::LeaseNotFound(0);
    }
    match e {
        E::GRpcStatus(s) => {
            let msg = s.message().to_string();
            if msg.contains("lease not found") {
                StoreError::LeaseNotFound(0)
            } else if msg.contains("compacted") {
                StoreError::Compacted { requested: 0, oldest: 0 }
            } else if s.code() == tonic::Code::PermissionDenied || msg.contains("permission denied") {
                StoreError::Denied(msg)
            } else if matches!(
                s.code(),
                tonic_code::UNAVAILABLE | tonic_code::DEADLINE_EXCEEDED | tonic_code::UNKNOWN | tonic_code::CANCELLED
            ) {
                StoreError::Unavailable(msg)
            } else {
                StoreError::Invalid(msg)
            }
        }
        E::TransportError(t) => StoreError::Unavailable(t.to_string()),
        E::IoError(io) => StoreError::Unavailable(io.to_string()),
        E::LeaseKeepAliveError(m) | E::WatchError(m) => StoreError::Unavailable(m),
        e => StoreError::Invalid(e.to_string()),
    }
}

/// gRPC status codes fleet treats as "the cluster is away".
mod tonic_code {
    use tonic::Code;
    pub const UNAVAILABLE: Code = Code::Unavailable;
    pub const DEADLINE_EXCEEDED: Code = Code::DeadlineExceeded;
    pub const UNKNOWN: Code = Code::Unknown;
    pub const CANCELLED: Code = Code::Cancelled;
}

/// Keys per page of a range read.
const RANGE_PAGE: i64 = 2_000;

/// The client refused an answer over gRPC's message size limit.
fn too_large(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::OutOfRange || s.message().contains("message length too large")
        }
        _ => false,
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn kv_of(kv: &etcd_client::KeyValue) -> StoreResult<KeyValue> {
    let key = kv.key_str().map_err(|e| StoreError::Invalid(format!("non-UTF-8 key: {e}")))?.to_string();
    Ok(KeyValue {
        key,
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
        create_revision: kv.create_revision(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://host:port`), failing after `timeout` if none answers.
    pub async fn connect(endpoints: &[String], auth: Option<EtcdAuth>, timeout: Duration) -> StoreResult<EtcdStore> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(5), timeout);
        if let Some(a) = auth {
            opts = opts.with_user(a.user, a.password.expose());
        }
        let client = tokio::time::timeout(timeout, Client::connect(endpoints, Some(opts)))
            .await
            .map_err(|_| StoreError::Unavailable(format!("no answer from {} within {timeout:?}", endpoints.join(","))))?
            .map_err(map_err)?;
        Ok(EtcdStore { client, endpoints: endpoints.to_vec() })
    }
}

/// A request that never reached a member (the member the client picked is down): safe to send
/// again, and the client's balancer picks another member.
fn not_sent(e: &etcd_client::Error) -> bool {
    let s = e.to_string();
    s.contains("tcp connect error") || s.contains("Connection refused") || s.contains("error trying to connect")
}

impl EtcdStore {
    /// Runs `f` on the client, again (up to twice per endpoint) while the request could not be
    /// sent: one dead member of a cluster must not fail a third of the daemon's calls.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let tries = 2 * self.endpoints.len().max(1);
        let mut i = 0;
        loop {
            match f(self.client.clone()).await {
                Err(e) if not_sent(&e) && i + 1 < tries => {
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
                }
                r => return r,
            }
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let resp = self.call(|mut c| async move { c.get(key, None).await }).await.map_err(map_err)?;
        resp.kvs().first().map(kv_of).transpose()
    }

    /// In pages of at most `RANGE_PAGE` keys, all read at the first page's revision (one
    /// consistent snapshot): one response for 100,000 records would exceed gRPC's message size
    /// limit (4 MiB by default). A page that still does (large values: a queue of big inputs) is
    /// asked again with half the keys, down to one key, which always fits (etcd refuses a value
    /// over its 1.5 MiB request limit); the next page starts at the full size again.
    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Revision)> {
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut rev = 0;
        let mut limit = RANGE_PAGE;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(limit);
            if rev > 0 {
                opts = opts.with_revision(rev);
            }
            let answer = self
                .call(|mut c| {
                    let (from, opts) = (from.clone(), opts.clone());
                    async move { c.get(from, Some(opts)).await }
                })
                .await;
            let resp = match answer {
                Err(e) if limit > 1 && too_large(&e) => {
                    limit = (limit / 2).max(1);
                    continue;
                }
                other => other.map_err(map_err)?,
            };
            limit = RANGE_PAGE;
            if rev == 0 {
                rev = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                out.push(kv_of(kv)?);
            }
            match (resp.more(), resp.kvs().last()) {
                (true, Some(last)) => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, rev)),
            }
        }
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> StoreResult<Revision> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let resp = self
            .call(|mut c| {
                let (value, opts) = (value.clone(), opts.clone());
                async move { c.put(key, value, opts).await }
            })
            .await
            .map_err(|e| match map_err(e) {
                StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease.unwrap_or(0)),
                e => e,
            })?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let resp = self.call(|mut c| async move { c.delete(key, None).await }).await.map_err(map_err)?;
        Ok(resp.deleted() > 0)
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> StoreResult<TxnResult> {
        let lease = ops.iter().find_map(|o| match o {
            Op::Put { lease, .. } => *lease,
            Op::Delete { .. } => None,
        });
        let cmps: Vec<ECompare> =
            compares.into_iter().map(|c| ECompare::mod_revision(c.key, CompareOp::Equal, c.mod_revision)).collect();
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|o| match o {
                Op::Put { key, value, lease } => TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l))),
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let resp = self
            .call(|mut c| {
                let txn = Txn::new().when(cmps.clone()).and_then(ops.clone());
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|e| match map_err(e) {
                StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease.unwrap_or(0)),
                e => e,
            })?;
        Ok(TxnResult { succeeded: resp.succeeded(), revision: resp.header().map_or(0, |h| h.revision()) })
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let resp = self.call(|mut c| async move { c.lease_grant(secs, None).await }).await.map_err(map_err)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        let with_id = |e| match map_err(e) {
            StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease),
            e => e,
        };
        let (mut keeper, mut stream) =
            self.call(|mut c| async move { c.lease_keep_alive(lease).await }).await.map_err(with_id)?;
        keeper.keep_alive().await.map_err(with_id)?;
        match stream.message().await.map_err(with_id)? {
            // etcd answers a keep-alive of an unknown lease with TTL 0.
            Some(r) if r.ttl() > 0 => Ok(()),
            Some(_) => Err(StoreError::LeaseNotFound(lease)),
            None => Err(StoreError::Unavailable("keep-alive stream closed".into())),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> StoreResult<()> {
        match self.call(|mut c| async move { c.lease_revoke(lease).await }).await.map_err(map_err) {
            Ok(_) | Err(StoreError::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<Watch> {
        let mut opts = WatchOptions::new().with_prefix();
        if from > 0 {
            opts = opts.with_start_revision(from);
        }
        let mut stream = self
            .call(|mut c| {
                let opts = opts.clone();
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await
            .map_err(map_err)?;
        let (tx, rx) = Watch::channel(256);
        tokio::spawn(async move {
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let _ = tx.send(Err(StoreError::Unavailable("watch stream closed".into()))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(map_err(e))).await;
                        return;
                    }
                };
                if msg.compact_revision() > 0 {
                    let _ =
                        tx.send(Err(StoreError::Compacted { requested: from, oldest: msg.compact_revision() })).await;
                    return;
                }
                if msg.canceled() {
                    let _ =
                        tx.send(Err(StoreError::Unavailable(format!("watch canceled: {}", msg.cancel_reason())))).await;
                    return;
                }
                // A response's events go together (they are a transaction's, or consecutive ones).
                let mut batch = Vec::with_capacity(msg.events().len());
                for ev in msg.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let out = match ev.event_type() {
                        EventType::Put => kv_of(kv).map(WatchEvent::Put),
                        EventType::Delete => {
                            kv_of(kv).map(|k| WatchEvent::Delete { key: k.key, mod_revision: k.mod_revision })
                        }
                    };
                    match out {
                        Ok(ev) => batch.push(ev),
                        Err(e) => {
                            // What came before the unreadable event, then the error.
                            let _ = tx.send_batch(batch).await;
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
                if tx.send_batch(batch).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }
}
