//! What one node is asked to do, learned by watching: the runners placed on it and the requests
//! queued for its apps. A node agent that read the fleet's whole `runners/` prefix and its apps'
//! whole queues on a timer would cost the store more with every node added (at 12,500 nodes,
//! ~62,000 full-range reads a second); [`NodeWork`] reads them once, then follows changes:
//!
//! - the node's index `placed/{node}/` ([`Keys::placed`]: fleetd writes an entry with each runner
//!   record, in the same transaction, and deletes it with the record);
//! - each of its runners' records (one watch per runner: fleetd starts and stops them there);
//! - each of its apps' queues (a request's key, as it is queued, claimed, finished).
//!
//! What it reads is then proportional to what changes for this node, not to the fleet's size.
//! A watch that is lost (the store restarted, the watcher fell behind, the gateway went away)
//! starts everything over: read once, watch again. Until the first read the view says so
//! ([`View::synced`]), and an agent keeps what it has loaded meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::keys::{Keys, id_of};
use fleet_core::{NodeId, RequestId, RunnerId};
use tokio::sync::{Notify, mpsc};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use crate::model::RunnerRecord;
use crate::queue::is_queued;
use crate::store::{Revision, Store, StoreError, StoreResult, WatchEvent};

/// What the node is asked to do, as last seen.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The runners placed on this node, by id.
    pub runners: BTreeMap<RunnerId, RunnerRecord>,
    /// Requests waiting in each of the node's apps' queues, oldest first.
    pub queued: BTreeMap<String, BTreeSet<RequestId>>,
    /// False until the first read, and again while lost watches are being set up anew: an
    /// empty view then means "not known", not "nothing to do".
    pub synced: bool,
}

/// Follows one node's work (see the module's doc); stops when dropped.
pub struct NodeWork {
    view: Arc<Mutex<View>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for NodeWork {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NodeWork {
    /// Starts following the work of `node` for `apps` (the apps it has models for).
    pub fn start(store: Arc<dyn Store>, keys: Keys, node: NodeId, apps: Vec<String>) -> NodeWork {
        let view = Arc::new(Mutex::new(View::default()));
        let changed = Arc::new(Notify::new());
        let task = tokio::spawn(follow_forever(store, keys, node, apps, view.clone(), changed.clone()));
        NodeWork { view, changed, task }
    }

    /// What is known now.
    pub fn view(&self) -> View {
        self.view.lock().expect("work view").clone()
    }

    /// Resolves when the view changed since the last call (at once if it did meanwhile).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Drops a request from the view after a claim found it taken (another runner won, or it
    /// is no longer queued): the watch brings it back if it is queued again.
    pub fn forget_queued(&self, app: &str, id: RequestId) {
        if let Some(q) = self.view.lock().expect("work view").queued.get_mut(app) {
            q.remove(&id);
        }
    }
}

/// Where a watch event comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Index,
    Runner(RunnerId),
    Queue(String),
}

type Events = mpsc::Sender<(Source, StoreResult<WatchEvent>)>;

async fn follow_forever(
    store: Arc<dyn Store>,
    keys: Keys,
    node: NodeId,
    apps: Vec<String>,
    view: Arc<Mutex<View>>,
    changed: Arc<Notify>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Err(e) = follow(&*store, &keys, node, &apps, &view, &changed).await;
        // A watch lost after it had been set up is set up again soon; a store that keeps
        // refusing is asked less and less often.
        let was_synced = std::mem::replace(&mut view.lock().expect("work view").synced, false);
        if was_synced {
            backoff = Duration::from_millis(200);
        }
        tracing::warn!(node, error = %e, retry_in = ?backoff, "watching this node's work was interrupted; reading it again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Reads the node's work once, then applies watch events until one is lost (the error).
async fn follow(
    store: &dyn Store,
    keys: &Keys,
    node: NodeId,
    apps: &[String],
    view: &Mutex<View>,
    changed: &Notify,
) -> StoreResult<Infallible> {
    let (tx, mut rx) = mpsc::channel::<(Source, StoreResult<WatchEvent>)>(1024);
    let mut set = JoinSet::new();
    let mut watched: HashMap<RunnerId, AbortHandle> = HashMap::new();
    let mut fresh = View::default();

    // The index first, then each runner's record (watched from the index's revision on: a change
    // in between comes again as an event, applied over what was read).
    let (placed, rev) = store.range(&keys.placed(node)).await?;
    for id in placed.iter().filter_map(|kv| id_of(&kv.key)) {
        if let Some(kv) = store.get(&keys.runner(id)).await?
            && let Some(r) = mine(&kv, node)
        {
            fresh.runners.insert(id, r);
        }
        let w = watch(&mut set, store, keys.runner(id), rev + 1, Source::Runner(id), &tx).await?;
        watched.insert(id, w);
    }
    watch(&mut set, store, keys.placed(node), rev + 1, Source::Index, &tx).await?;
    for app in apps {
        let (kvs, rev) = store.range(&keys.queue(app)).await?;
        let q: BTreeSet<RequestId> =
            kvs.iter().filter(|kv| is_queued(keys, kv)).filter_map(|kv| id_of(&kv.key)).collect();
        fresh.queued.insert(app.clone(), q);
        watch(&mut set, store, keys.queue(app), rev + 1, Source::Queue(app.clone()), &tx).await?;
    }
    fresh.synced = true;
    *view.lock().expect("work view") = fresh;
    changed.notify_one();

    loop {
        let Some(first) = rx.recv().await else {
            return Err(StoreError::Unavailable("every watch ended".into()));
        };
        // Everything that arrived together, then one wake-up.
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut new_runners = Vec::new();
        {
            let mut v = view.lock().expect("work view");
            for (source, ev) in batch {
                let ev = ev?;
                match (source, ev) {
                    (Source::Index, WatchEvent::Put(kv)) => {
                        if let Some(id) = id_of(&kv.key)
                            && !watched.contains_key(&id)
                        {
                            new_runners.push((id, kv.mod_revision));
                        }
                    }
                    (Source::Index, WatchEvent::Delete { key, .. }) => {
                        if let Some(id) = id_of(&key) {
                            v.runners.remove(&id);
                            if let Some(w) = watched.remove(&id) {
                                w.abort();
                            }
                        }
                    }
                    (Source::Runner(id), WatchEvent::Put(kv)) => match mine(&kv, node) {
                        Some(r) => {
                            v.runners.insert(id, r);
                        }
                        None => {
                            v.runners.remove(&id);
                        }
                    },
                    (Source::Runner(id), WatchEvent::Delete { .. }) => {
                        v.runners.remove(&id);
                    }
                    (Source::Queue(app), WatchEvent::Put(kv)) => {
                        let q = v.queued.entry(app).or_default();
                        if let Some(id) = id_of(&kv.key) {
                            if is_queued(keys, &kv) {
                                q.insert(id);
                            } else {
                                q.remove(&id);
                            }
                        }
                    }
                    (Source::Queue(app), WatchEvent::Delete { key, .. }) => {
                        if let (Some(q), Some(id)) = (v.queued.get_mut(&app), id_of(&key)) {
                            q.remove(&id);
                        }
                    }
                }
            }
        }
        // A runner placed here just now: its record was written in the index entry's transaction,
        // so watching it from that revision delivers the record itself first.
        for (id, rev) in new_runners {
            let w = watch(&mut set, store, keys.runner(id), rev, Source::Runner(id), &tx).await?;
            watched.insert(id, w);
        }
        changed.notify_one();
    }
}

async fn watch(
    set: &mut JoinSet<()>,
    store: &dyn Store,
    prefix: String,
    from: Revision,
    source: Source,
    tx: &Events,
) -> StoreResult<AbortHandle> {
    let mut w = store.watch(&prefix, from).await?;
    let tx = tx.clone();
    Ok(set.spawn(async move {
        while let Some(ev) = w.recv().await {
            let lost = ev.is_err();
            if tx.send((source.clone(), ev)).await.is_err() || lost {
                return;
            }
        }
        let _ = tx.send((source, Err(StoreError::Unavailable("the watch ended".into())))).await;
    }))
}

/// A live runner record of this node (one stopped, one that does not decode, or one that names
/// another node, is not).
fn mine(kv: &crate::store::KeyValue, node: NodeId) -> Option<RunnerRecord> {
    let r: RunnerRecord = kv.json().ok()?;
    (r.node() == Some(node)).then_some(r)
}
