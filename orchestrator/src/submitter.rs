//! Group commit for the durable queue: submits arriving together are written in one store
//! transaction (their ids and records, [`fleet_state::queue::submit_group`]), so a burst costs one
//! durable commit instead of two per request. A request is acknowledged only after the commit
//! that holds it: as durable as alone. One writer task takes whatever has queued up while the
//! previous commit ran (up to a transaction's size), so the group grows with the load and a lone
//! request waits for nobody.

use std::sync::Arc;

use fleet_core::RequestId;
use fleet_core::keys::Keys;
use fleet_state::queue::Submission;
use fleet_state::store::{Store, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<StoreResult<RequestId>>;

/// The handle the API submits through.
#[derive(Debug, Clone)]
pub struct Submitter {
    tx: mpsc::Sender<(Submission, Reply)>,
}

impl Submitter {
    /// Starts the writer on `store` (needs a Tokio runtime).
    pub fn start(store: Arc<dyn Store>, keys: Keys, clock: fleet_state::clock::Clock) -> Submitter {
        let (tx, rx) = mpsc::channel(16_384);
        tokio::spawn(write_groups(store, keys, clock, rx));
        Submitter { tx }
    }

    /// Submits one request; its id once the group holding it is committed.
    pub async fn submit(&self, s: Submission) -> StoreResult<RequestId> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((s, reply)).await.map_err(|_| StoreError::Unavailable("the queue writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the queue writer has stopped".into()))?
    }
}

async fn write_groups(
    store: Arc<dyn Store>,
    keys: Keys,
    clock: fleet_state::clock::Clock,
    mut rx: mpsc::Receiver<(Submission, Reply)>,
) {
    // Up to a transaction's size (the embedded store has no limit: 1,024 keeps a commit short).
    let max = store.max_txn_ops().saturating_sub(1).clamp(1, 1024);
    let mut group: Vec<(Submission, Reply)> = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < max {
            match rx.try_recv() {
                Ok(s) => group.push(s),
                Err(_) => break,
            }
        }
        let subs: Vec<Submission> = group.iter().map(|(s, _)| s.clone()).collect();
        let result = fleet_state::queue::submit_group(&*store, &keys, &subs, clock.now()).await;
        match result {
            Ok(ids) => {
                for ((_, reply), id) in group.drain(..).zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(e) => {
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
