//! [`Counted`]: a store that counts what its user reads — calls, keys and bytes returned by gets
//! and ranges, events delivered by watches — for the benchmark and tests that hold an agent's
//! read rate to not growing with the fleet.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;

use super::{Compare, KeyValue, LeaseId, Op, Page, Revision, Store, StoreResult, TxnResult, Watch};

/// What was read through a [`Counted`] store so far.
#[derive(Debug, Default)]
pub struct Reads {
    pub gets: AtomicU64,
    pub ranges: AtomicU64,
    /// Keys returned by gets and ranges.
    pub keys: AtomicU64,
    /// Bytes of the values returned by gets and ranges, and carried by watch events.
    pub bytes: AtomicU64,
    pub watches: AtomicU64,
    pub events: AtomicU64,
}

/// A snapshot of [`Reads`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadCount {
    pub gets: u64,
    pub ranges: u64,
    pub keys: u64,
    pub bytes: u64,
    pub watches: u64,
    pub events: u64,
}

impl Reads {
    pub fn snapshot(&self) -> ReadCount {
        ReadCount {
            gets: self.gets.load(Relaxed),
            ranges: self.ranges.load(Relaxed),
            keys: self.keys.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            watches: self.watches.load(Relaxed),
            events: self.events.load(Relaxed),
        }
    }

    fn kvs<'a>(&self, kvs: impl Iterator<Item = &'a KeyValue>) {
        for kv in kvs {
            self.keys.fetch_add(1, Relaxed);
            self.bytes.fetch_add(kv.value.len() as u64, Relaxed);
        }
    }
}

/// `inner`, counting reads into `reads`.
#[derive(Debug, Clone)]
pub struct Counted {
    pub inner: Arc<dyn Store>,
    pub reads: Arc<Reads>,
}

impl Counted {
    pub fn new(inner: Arc<dyn Store>) -> Counted {
        Counted { inner, reads: Arc::new(Reads::default()) }
    }
}

#[async_trait]
impl Store for Counted {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.reads.gets.fetch_add(1, Relaxed);
        let kv = self.inner.get(key).await?;
        self.reads.kvs(kv.iter());
        Ok(kv)
    }

    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Revision)> {
        self.reads.ranges.fetch_add(1, Relaxed);
        let (kvs, rev) = self.inner.range(prefix).await?;
        self.reads.kvs(kvs.iter());
        Ok((kvs, rev))
    }

    async fn range_page(&self, prefix: &str, after: Option<&str>, max_bytes: usize) -> StoreResult<Page> {
        self.reads.ranges.fetch_add(1, Relaxed);
        let page = self.inner.range_page(prefix, after, max_bytes).await?;
        self.reads.kvs(page.kvs.iter());
        Ok(page)
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> StoreResult<Revision> {
        self.inner.put(key, value, lease).await
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.inner.delete(key).await
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> StoreResult<TxnResult> {
        self.inner.txn(compares, ops).await
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        self.inner.grant_lease(ttl).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        self.inner.keep_alive(lease).await
    }

    async fn revoke(&self, lease: LeaseId) -> StoreResult<()> {
        self.inner.revoke(lease).await
    }

    /// The events pass through a task that counts them.
    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<Watch> {
        self.reads.watches.fetch_add(1, Relaxed);
        let mut inner = self.inner.watch(prefix, from).await?;
        let (tx, rx) = Watch::channel(64);
        let reads = self.reads.clone();
        tokio::spawn(async move {
            while let Some(ev) = inner.recv().await {
                reads.events.fetch_add(1, Relaxed);
                if let Ok(super::WatchEvent::Put(kv)) = &ev {
                    reads.bytes.fetch_add(kv.value.len() as u64, Relaxed);
                }
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }
}
