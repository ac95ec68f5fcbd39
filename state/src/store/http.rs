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
    /// For watches: no overall timeout (a watch lasts), but one between reads well above the
    /// gateway's keep-alive lines, so a silent connection is noticed.
    watcher: ureq::Agent,
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
        let watcher = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        HttpStore { url: format!("{}/v1/store/call", base.trim_end_matches('/')), token, agent, watcher }
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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

    pub fn into_error(self) -> StoreError {
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

    /// A streamed answer read on a thread of its own, line by line; the watch ends with an error
    /// when the gateway says so, the connection drops, or nothing (not even a keep-alive line)
    /// came for [`super::gateway::WATCH_SILENCE`].
    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<Watch> {
        use std::io::BufRead;
        let url = self.url.replace("/v1/store/call", "/v1/store/watch");
        let (agent, auth) = (self.watcher.clone(), format!("Bearer {}", self.token.expose()));
        let body = serde_json::to_string(&super::gateway::WatchRequest { prefix: prefix.into(), from })
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let resp = tokio::task::spawn_blocking(move || -> StoreResult<_> {
            let mut resp = agent
                .post(&url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .send(body)
                .map_err(|e| StoreError::Unavailable(format!("fleetd's store gateway: {e}")))?;
            let status = resp.status().as_u16();
            if status != 200 {
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                return Err(serde_json::from_str::<GatewayError>(&text)
                    .map(GatewayError::into_error)
                    .unwrap_or_else(|_| StoreError::Unavailable(format!("gateway answered {status}: {text}"))));
            }
            Ok(resp)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        let (tx, rx) = Watch::channel(256);
        std::thread::Builder::new()
            .name("store-watch".into())
            .spawn(move || {
                let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
                let silence = Silence::new(reader, super::gateway::WATCH_SILENCE);
                let lost = |why: String| Err(StoreError::Unavailable(format!("the gateway's watch ended: {why}")));
                for line in std::io::BufReader::new(silence).lines() {
                    let line = match line {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = tx.blocking_send(lost(e.to_string()));
                            return;
                        }
                    };
                    if tx.is_closed() {
                        return;
                    }
                    if line.trim().is_empty() {
                        continue;
                    }
                    let ev = match serde_json::from_str::<super::gateway::WireWatchEvent>(&line) {
                        Ok(ev) => ev.into_event(),
                        Err(e) => Err(StoreError::Invalid(format!("gateway watch line: {e}"))),
                    };
                    let end = ev.is_err();
                    if tx.blocking_send(ev).is_err() || end {
                        return;
                    }
                }
                let _ = tx.blocking_send(lost("the connection closed".into()));
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start a watch thread: {e}")))?;
        Ok(rx)
    }
}

/// A reader that fails when a read waits longer than `limit` (ureq's own timeouts are for a
/// whole body; a watch's body never ends). The read happens on a helper thread per call.
struct Silence<R> {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    ask: std::sync::mpsc::Sender<usize>,
    limit: Duration,
    _r: std::marker::PhantomData<R>,
}

impl<R: std::io::Read + Send + 'static> Silence<R> {
    fn new(mut inner: R, limit: Duration) -> Silence<R> {
        let (ask, asks) = std::sync::mpsc::channel::<usize>();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(n) = asks.recv() {
                let mut buf = vec![0; n];
                let r = inner.read(&mut buf).map(|got| {
                    buf.truncate(got);
                    buf
                });
                let end = matches!(&r, Ok(b) if b.is_empty()) || r.is_err();
                if tx.send(r).is_err() || end {
                    return;
                }
            }
        });
        Silence { rx, ask, limit, _r: std::marker::PhantomData }
    }
}

impl<R> std::io::Read for Silence<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Error, ErrorKind};
        self.ask.send(buf.len()).map_err(|_| Error::new(ErrorKind::BrokenPipe, "reader gone"))?;
        match self.rx.recv_timeout(self.limit) {
            Ok(Ok(b)) => {
                buf[..b.len()].copy_from_slice(&b);
                Ok(b.len())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::new(ErrorKind::TimedOut, format!("nothing from the gateway for {:?}", self.limit))),
        }
    }
}
