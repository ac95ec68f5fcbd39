//! The store: where fleetd keeps everything it must not forget (nodes, runners, requests, the spec).
//!
//! One small trait with etcd's semantics, narrowed to what fleet uses: linearizable reads and
//! writes with a global revision, multi-key transactions guarded by compare-on-revision (the only
//! way fleet changes a record someone else may change), leases that delete their keys when not kept
//! alive, and prefix watches that can resume from a revision. Two implementations pass the same
//! suite (`suite`, feature `testing`): `etcd::EtcdStore` (etcd-client against a real cluster;
//! feature `etcd`, whose build needs protoc) and [`embedded::EmbeddedStore`] (redb file +
//! in-process leases and watches, for zero set-up). [`http::HttpStore`] is the client of fleetd's
//! store gateway, for agents that cannot reach etcd.
//!
//! The key layout is [`fleet_core::keys`].

pub mod counted;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod gateway;
pub mod http;
#[cfg(any(test, feature = "testing"))]
pub mod suite;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// The store's global revision: every change bumps it by one; a key remembers the revision that
/// last changed it. 0 means "absent" in comparisons.
pub type Revision = i64;
pub type LeaseId = i64;

#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the last change to this key.
    pub mod_revision: Revision,
    /// Revision at which the key was created.
    pub create_revision: Revision,
    pub lease: Option<LeaseId>,
}

impl fmt::Debug for KeyValue {
    // Values may be large; show their size, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("mod_revision", &self.mod_revision)
            .field("lease", &self.lease)
            .finish()
    }
}

impl KeyValue {
    pub fn json<T: DeserializeOwned>(&self) -> StoreResult<T> {
        serde_json::from_slice(&self.value)
            .map_err(|e| StoreError::Corrupt { key: self.key.clone(), detail: e.to_string() })
    }
}

/// A guard of a transaction: the key's last change happened at `revision` (0: the key is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub mod_revision: Revision,
}

impl Compare {
    pub fn unchanged(kv: &KeyValue) -> Compare {
        Compare { key: kv.key.clone(), mod_revision: kv.mod_revision }
    }

    pub fn absent(key: impl Into<String>) -> Compare {
        Compare { key: key.into(), mod_revision: 0 }
    }

    pub fn at(key: impl Into<String>, mod_revision: Revision) -> Compare {
        Compare { key: key.into(), mod_revision }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8>, lease: Option<LeaseId> },
    Delete { key: String },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value, lease } => write!(f, "Put({key}, {} bytes, lease {lease:?})", value.len()),
            Op::Delete { key } => write!(f, "Delete({key})"),
        }
    }
}

impl Op {
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Op {
        Op::Put { key: key.into(), value, lease: None }
    }

    /// `value` as JSON. Serializing fleet's own records cannot fail (no maps with non-string keys).
    pub fn put_json<T: Serialize>(key: impl Into<String>, value: &T) -> Op {
        Op::put(key, to_json(value))
    }

    pub fn put_with_lease(key: impl Into<String>, value: Vec<u8>, lease: LeaseId) -> Op {
        Op::Put { key: key.into(), value, lease: Some(lease) }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("fleet's records serialize to JSON")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResult {
    /// All compares held and every op was applied; otherwise nothing was.
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Events under a prefix, in revision order. Ends with `Err` when the watch is lost (the store
/// went away, or the watcher fell too far behind): re-read the prefix and watch again.
///
/// The events travel in the batches they were committed in (one channel message for a
/// transaction's 20,000 records, where one message per event cost a cross-thread wake-up each)
/// and are handed out one by one. A store that keeps its commits' events in memory shares them
/// ([`WatchSender::send_shared`]): each event is copied only when handed out, by the watcher, and
/// not at all when [`Watch::recv_unless`] passes it over.
pub struct Watch {
    rx: mpsc::Receiver<Feed>,
    buf: std::collections::VecDeque<WatchEvent>,
    /// A shared batch being handed out: the batch, the next event's index, the watched prefix.
    shared: Option<(Arc<Vec<WatchEvent>>, usize, Arc<str>)>,
}

/// What a [`WatchSender`] sends.
enum Feed {
    Events(Vec<WatchEvent>),
    /// A batch as the store keeps it, of which the watcher wants the events under the prefix.
    Shared(Arc<Vec<WatchEvent>>, Arc<str>),
    Lost(StoreError),
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("buffered", &self.buf.len()).finish_non_exhaustive()
    }
}

/// Feeds a [`Watch`]. Its sends fail once the watch is dropped: the feeder can stop.
#[derive(Clone, Debug)]
pub struct WatchSender(mpsc::Sender<Feed>);

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Feed::Events(evs) => write!(f, "Events({})", evs.len()),
            Feed::Shared(evs, prefix) => write!(f, "Shared({}, {prefix:?})", evs.len()),
            Feed::Lost(e) => write!(f, "Lost({e})"),
        }
    }
}

/// The [`Watch`] a [`WatchSender`] fed was dropped.
#[derive(Debug)]
pub struct WatchClosed;

fn feed(ev: StoreResult<WatchEvent>) -> Feed {
    match ev {
        Ok(e) => Feed::Events(vec![e]),
        Err(e) => Feed::Lost(e),
    }
}

impl WatchSender {
    /// One event, or the error that ends the watch.
    pub async fn send(&self, ev: StoreResult<WatchEvent>) -> Result<(), WatchClosed> {
        self.0.send(feed(ev)).await.map_err(|_| WatchClosed)
    }

    /// Events committed together, in revision order (nothing is sent for none).
    pub async fn send_batch(&self, evs: Vec<WatchEvent>) -> Result<(), WatchClosed> {
        if evs.is_empty() {
            return Ok(());
        }
        self.0.send(Feed::Events(evs)).await.map_err(|_| WatchClosed)
    }

    /// A commit's events as the store keeps them, of which the watcher gets those under
    /// `prefix`, each copied as it is handed out.
    pub async fn send_shared(&self, evs: Arc<Vec<WatchEvent>>, prefix: Arc<str>) -> Result<(), WatchClosed> {
        self.0.send(Feed::Shared(evs, prefix)).await.map_err(|_| WatchClosed)
    }

    /// [`WatchSender::send`] from a thread outside the runtime.
    pub fn blocking_send(&self, ev: StoreResult<WatchEvent>) -> Result<(), WatchClosed> {
        self.0.blocking_send(feed(ev)).map_err(|_| WatchClosed)
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl Watch {
    /// A watch and its feeder; `batches` messages may wait in between.
    pub fn channel(batches: usize) -> (WatchSender, Watch) {
        let (tx, rx) = mpsc::channel(batches);
        (WatchSender(tx), Watch { rx, buf: std::collections::VecDeque::new(), shared: None })
    }

    /// The next event; `None` once the feeder is gone (after its error, if it had one). Cancel
    /// safe: an event is handed out only by the call that returns it.
    pub async fn recv(&mut self) -> Option<StoreResult<WatchEvent>> {
        self.recv_unless(|_| false).await
    }

    /// [`Watch::recv`], passing over (without copying them) the events `skip` says the watcher
    /// has no use for.
    pub async fn recv_unless(&mut self, mut skip: impl FnMut(&WatchEvent) -> bool) -> Option<StoreResult<WatchEvent>> {
        loop {
            while let Some(ev) = self.buf.pop_front() {
                if !skip(&ev) {
                    return Some(Ok(ev));
                }
            }
            if let Some((evs, next, prefix)) = &mut self.shared {
                while let Some(ev) = evs.get(*next) {
                    *next += 1;
                    if ev.key().starts_with(&**prefix) && !skip(ev) {
                        return Some(Ok(ev.clone()));
                    }
                }
                self.shared = None;
            }
            match self.rx.recv().await? {
                Feed::Events(evs) => self.buf.extend(evs),
                Feed::Shared(evs, prefix) => self.shared = Some((evs, 0, prefix)),
                Feed::Lost(e) => return Some(Err(e)),
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unreachable: {0}; fleetd keeps retrying — check that etcd is up and the endpoints are right")]
    Unavailable(String),
    #[error("lease {0} does not exist (it expired or was revoked): grant a new one and re-register")]
    LeaseNotFound(LeaseId),
    #[error(
        "revision {requested} is compacted (oldest kept: {oldest}): re-read the prefix and watch from its revision"
    )]
    Compacted { requested: Revision, oldest: Revision },
    #[error("record {key} is not readable: {detail}; it was written by an incompatible fleetd, or by hand")]
    Corrupt { key: String, detail: String },
    #[error("the store refused the request: {0}")]
    Invalid(String),
    #[error("the store denied access: {0}; check this process's etcd user and the permissions of its role")]
    Denied(String),
    #[error("the store's data could not be read or written: {0}")]
    Io(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One page of a range read ([`Store::range_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
    /// Keys of the range follow the last of `kvs`.
    pub more: bool,
}

impl Page {
    /// The page of `kvs` (in key order) after `after`, up to `max_bytes` of keys and values.
    pub fn cut(kvs: impl Iterator<Item = KeyValue>, after: Option<&str>, max_bytes: usize, revision: Revision) -> Page {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for kv in kvs.skip_while(|kv| after.is_some_and(|a| kv.key.as_str() <= a)) {
            let size = kv.key.len() + kv.value.len();
            if !out.is_empty() && bytes + size > max_bytes {
                more = true;
                break;
            }
            bytes += size;
            out.push(kv);
        }
        Page { kvs: out, revision, more }
    }
}

/// The operations fleet needs from a consistent key-value store. Implementations are cheap to
/// share (`Arc<dyn Store>`) and safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The key's current value, or `None`.
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Every key starting with `prefix`, in key order, and the store revision the read saw
    /// (watch from `revision + 1` to miss nothing after it).
    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Revision)>;

    /// The keys starting with `prefix` and greater than `after` (from the first when `None`), in
    /// key order, until their keys and values add up to `max_bytes` (always at least one key),
    /// with the revision the read saw and whether more follow. For readers that must bound one
    /// answer (the store gateway's HTTP responses). The default reads the whole range.
    async fn range_page(&self, prefix: &str, after: Option<&str>, max_bytes: usize) -> StoreResult<Page> {
        let (kvs, revision) = self.range(prefix).await?;
        Ok(Page::cut(kvs.into_iter(), after, max_bytes, revision))
    }

    /// Puts unconditionally; returns the new revision. With `lease`, the key is deleted when the
    /// lease ends (`LeaseNotFound` if it already has).
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> StoreResult<Revision>;

    /// Deletes the key; `true` if it existed.
    async fn delete(&self, key: &str) -> StoreResult<bool>;

    /// If every compare holds, applies every op atomically (one new revision); otherwise applies
    /// nothing. A key may appear in at most one op.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> StoreResult<TxnResult>;

    /// A lease that ends `ttl` after its last keep-alive (stores may round `ttl` up to their
    /// minimum, etcd's is about 2 s). Keys attached to it are deleted when it ends.
    async fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId>;

    /// Refreshes the lease to its full TTL; `LeaseNotFound` once it has ended.
    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()>;

    /// Ends the lease now, deleting its keys. Ok if it has already ended.
    async fn revoke(&self, lease: LeaseId) -> StoreResult<()>;

    /// Changes under `prefix` with revision ≥ `from` (0: from now on), in order.
    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<Watch>;

    /// The most ops one transaction may hold (etcd's default `--max-txn-ops` is 128).
    fn max_txn_ops(&self) -> usize {
        128
    }
}

/// Reads a JSON record.
pub async fn get_json<T: DeserializeOwned>(store: &dyn Store, key: &str) -> StoreResult<Option<(T, KeyValue)>> {
    match store.get(key).await? {
        Some(kv) => Ok(Some((kv.json()?, kv))),
        None => Ok(None),
    }
}

/// Reserves `n` consecutive ids of a counter key (compare-and-swap, retried on contention);
/// returns the first. Ids start at 1.
pub async fn allocate_ids(store: &dyn Store, key: &str, n: u64) -> StoreResult<u64> {
    Ok(allocate_many(store, &[(key, n)]).await?[0])
}

/// [`allocate_ids`] for several counters in one transaction; returns each one's first id.
pub async fn allocate_many(store: &dyn Store, wanted: &[(&str, u64)]) -> StoreResult<Vec<u64>> {
    loop {
        let mut firsts = Vec::with_capacity(wanted.len());
        let mut cmps = Vec::with_capacity(wanted.len());
        let mut ops = Vec::with_capacity(wanted.len());
        for (key, n) in wanted {
            let (next, cmp) = match store.get(key).await? {
                Some(kv) => (kv.json::<u64>()?, Compare::unchanged(&kv)),
                None => (1, Compare::absent(*key)),
            };
            firsts.push(next);
            cmps.push(cmp);
            ops.push(Op::put_json(*key, &(next + n)));
        }
        if store.txn(cmps, ops).await?.succeeded {
            return Ok(firsts);
        }
    }
}
