//! An in-memory copy of the fleet's node and runner records, and a mirror of its request queues,
//! kept current by store watches (the informer of kube-runtime), so a reconcile pass reads memory
//! instead of the whole store.
//!
//! Freshness: each entry remembers the revision it was written at, and an event older than what
//! is cached is ignored. The fleet actor writes its own changes through to the cache as soon as
//! the store accepts them, so the next pass sees them even before the watch delivers them: a
//! pass never plans again what the previous one already decided. Changes by other actors (node
//! actors, agents) arrive by the watch a moment later. When a watch breaks (the store away, a
//! lagging watcher) the cache is marked stale, re-listed and watched again; callers make no
//! decision on a stale cache.
//!
//! The queues' mirror ([`QueueMirror`]) only counts and points at suspects: what it says is
//! acted on through transactions that check the store, and while it is re-listed a pass reads
//! the queues from the store instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::keys::{Keys, id_of};
use fleet_state::model::{AgentRecord, NodeRecord, RunnerRecord};
use fleet_state::queue::{Depth, QueueMirror};
use fleet_state::store::{Revision, Store, StoreResult, WatchEvent};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug)]
struct Table<T> {
    /// Listed and watched (false until the first listing, and while a broken watch is redone).
    fresh: bool,
    rows: BTreeMap<u64, (Arc<T>, Revision)>,
    /// Deleted ids with the revision of the deletion (so a late put of an older revision is ignored).
    tombstones: HashMap<u64, Revision>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table { fresh: false, rows: BTreeMap::new(), tombstones: HashMap::new() }
    }
}

impl<T> Table<T> {
    fn put(&mut self, id: u64, rec: T, rev: Revision) {
        if self.tombstones.get(&id).is_some_and(|r| *r >= rev) {
            return;
        }
        match self.rows.get(&id) {
            Some((_, r)) if *r >= rev => {}
            _ => {
                self.rows.insert(id, (Arc::new(rec), rev));
            }
        }
    }

    fn delete(&mut self, id: u64, rev: Revision) {
        if self.rows.get(&id).is_some_and(|(_, r)| *r > rev) {
            return;
        }
        self.rows.remove(&id);
        self.tombstones.insert(id, rev);
    }

    /// Whether the row is cached at `rev` or later, or deleted since: a put of `rev` would change
    /// nothing.
    fn has(&self, id: u64, rev: Revision) -> bool {
        self.rows.get(&id).is_some_and(|(_, r)| *r >= rev) || self.tombstones.get(&id).is_some_and(|r| *r >= rev)
    }

    fn values(&self) -> Vec<Arc<T>> {
        self.rows.values().map(|(t, _)| t.clone()).collect()
    }
}

#[derive(Debug, Default)]
struct Cache {
    nodes: Table<NodeRecord>,
    runners: Table<RunnerRecord>,
    agents: Table<AgentRecord>,
}

impl Cache {
    fn fresh(&self) -> bool {
        self.nodes.fresh && self.runners.fresh && self.agents.fresh
    }
}

/// Whether a change of a record deserves a pass at once (rather than at the next tick).
type Urgent<T> = fn(Option<&T>, Option<&T>) -> bool;

/// An agent appearing, vanishing (its lease expired), turning unhealthy or reporting an
/// interruption: the fleet should look now. Load and runner updates can wait for the tick.
fn agent_urgent(old: Option<&AgentRecord>, new: Option<&AgentRecord>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => a.health.ok != b.health.ok || a.health.interruption != b.health.interruption,
        (None, None) => false,
        _ => true,
    }
}

pub struct Informer {
    cache: Arc<Mutex<Cache>>,
    queues: Arc<Mutex<QueueFeed>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The queues' mirror, and whether it is listed and followed.
#[derive(Debug, Default)]
struct QueueFeed {
    fresh: bool,
    mirror: QueueMirror,
}

impl Drop for Informer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn decode<T: DeserializeOwned>(ev: &WatchEvent) -> Option<(u64, Option<T>, Revision)> {
    let id = id_of(ev.key())?;
    match ev {
        WatchEvent::Put(kv) => match kv.json() {
            Ok(t) => Some((id, Some(t), kv.mod_revision)),
            Err(e) => {
                tracing::error!(key = %kv.key, error = %e, "unreadable record ignored");
                None
            }
        },
        WatchEvent::Delete { mod_revision, .. } => Some((id, None, *mod_revision)),
    }
}

/// Lists `prefix` into the cache, then follows its changes; re-lists when the watch breaks.
async fn follow<T, F>(
    store: Arc<dyn Store>,
    prefix: String,
    cache: Arc<Mutex<Cache>>,
    table: F,
    nudge: Option<(Arc<Notify>, Urgent<T>)>,
) where
    T: DeserializeOwned + Clone + Send + 'static,
    F: Fn(&mut Cache) -> &mut Table<T> + Send + 'static,
{
    loop {
        let listed = async {
            let (kvs, rev) = store.range(&prefix).await?;
            let mut rows = BTreeMap::new();
            for kv in &kvs {
                if let Some(id) = id_of(&kv.key) {
                    // One unreadable record is skipped, not a reason to stop following them all.
                    match kv.json::<T>() {
                        Ok(t) => drop(rows.insert(id, (t, kv.mod_revision))),
                        Err(e) => tracing::error!(key = %kv.key, error = %e, "unreadable record ignored"),
                    }
                }
            }
            let watch = store.watch(&prefix, rev + 1).await?;
            StoreResult::Ok((rows, rev, watch))
        }
        .await;
        let (rows, listed_at, mut watch) = match listed {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "cannot list; retrying");
                table(&mut cache.lock().expect("cache lock")).fresh = false;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        {
            let mut c = cache.lock().expect("cache lock");
            let t = table(&mut c);
            // Rows gone from the listing were deleted meanwhile, unless written through after it.
            t.rows.retain(|id, (_, r)| rows.contains_key(id) || *r > listed_at);
            for (id, (rec, rev)) in rows {
                t.put(id, rec, rev);
            }
            t.tombstones.retain(|_, r| *r > listed_at);
            t.fresh = true;
        }
        // A record its writer already put in the cache (a pass's new nodes and runners) is
        // neither copied out of the watch nor parsed again.
        let written_through = |ev: &WatchEvent| {
            if let WatchEvent::Put(kv) = ev
                && let Some(id) = id_of(&kv.key)
            {
                return table(&mut cache.lock().expect("cache lock")).has(id, kv.mod_revision);
            }
            false
        };
        while let Some(ev) = watch.recv_unless(written_through).await {
            match ev {
                Ok(ev) => {
                    if let Some((id, rec, rev)) = decode::<T>(&ev) {
                        let mut c = cache.lock().expect("cache lock");
                        let t = table(&mut c);
                        let old = t.rows.get(&id).map(|(r, _)| r.clone());
                        match rec {
                            Some(r) => t.put(id, r, rev),
                            None => t.delete(id, rev),
                        }
                        if let Some((n, urgent)) = &nudge {
                            let new = t.rows.get(&id).map(|(r, _)| r.clone());
                            if urgent(old.as_deref(), new.as_deref()) {
                                n.notify_one();
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%prefix, error = %e, "watch lost; listing again");
                    break;
                }
            }
        }
        table(&mut cache.lock().expect("cache lock")).fresh = false;
    }
}

/// Lists the queues and the claims into a [`QueueMirror`], then follows both; lists again when a
/// watch breaks. `nudge` is notified when a request becomes queued (submitted or put back), after
/// the mirror counts it: a pass that the nudge brings sees it.
async fn follow_queues(store: Arc<dyn Store>, keys: Keys, feed: Arc<Mutex<QueueFeed>>, nudge: Option<Arc<Notify>>) {
    loop {
        let listed = async {
            let (queued, q_rev) = store.range(&keys.queues()).await?;
            let (claims, c_rev) = store.range(&keys.claims()).await?;
            let q_watch = store.watch(&keys.queues(), q_rev + 1).await?;
            let c_watch = store.watch(&keys.claims(), c_rev + 1).await?;
            StoreResult::Ok((QueueMirror::listed(&keys, &queued, &claims), q_watch, c_watch))
        }
        .await;
        let (mirror, mut q_watch, mut c_watch) = match listed {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the queues; retrying");
                feed.lock().expect("queue feed lock").fresh = false;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        *feed.lock().expect("queue feed lock") = QueueFeed { fresh: true, mirror };
        loop {
            let ev = tokio::select! {
                ev = q_watch.recv() => ev,
                ev = c_watch.recv() => ev,
            };
            let ev = match ev {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "queue watch lost; listing again");
                    break;
                }
                None => {
                    tracing::warn!("queue watch ended; listing again");
                    break;
                }
            };
            let applied = feed.lock().expect("queue feed lock").mirror.apply(&keys, &ev);
            if applied.queued
                && let Some(n) = &nudge
            {
                n.notify_one();
            }
        }
        feed.lock().expect("queue feed lock").fresh = false;
    }
}

impl Informer {
    /// Starts following the fleet's nodes, runners and agents; returns once all are listed.
    /// `nudge` is notified when an agent appears, vanishes or changes health.
    pub async fn start(store: Arc<dyn Store>, keys: &Keys, nudge: Option<Arc<Notify>>) -> Informer {
        let cache = Arc::new(Mutex::new(Cache::default()));
        let queues = Arc::new(Mutex::new(QueueFeed::default()));
        let agents_nudge = nudge.clone().map(|n| (n, agent_urgent as Urgent<AgentRecord>));
        let tasks = vec![
            tokio::spawn(follow_queues(store.clone(), keys.clone(), queues.clone(), nudge)),
            tokio::spawn(follow(store.clone(), keys.nodes(), cache.clone(), |c: &mut Cache| &mut c.nodes, None)),
            tokio::spawn(follow(store.clone(), keys.runners(), cache.clone(), |c: &mut Cache| &mut c.runners, None)),
            tokio::spawn(follow(
                store.clone(),
                keys.agents(),
                cache.clone(),
                |c: &mut Cache| &mut c.agents,
                agents_nudge,
            )),
        ];
        let inf = Informer { cache, queues, tasks };
        // Wait a little for both listings (when the store is away the cache stays stale and
        // passes wait for it).
        for _ in 0..500 {
            if inf.is_fresh() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        inf
    }

    /// False while a listing is missing or a watch is being re-established.
    pub fn is_fresh(&self) -> bool {
        self.cache.lock().expect("cache lock").fresh()
    }

    /// Depth per app and the suspects of lost claims (see [`QueueMirror`]); `None` while the
    /// queues are being listed (callers then read the store).
    pub fn queues(&self) -> Option<(BTreeMap<String, Depth>, Vec<String>)> {
        let feed = self.queues.lock().expect("queue feed lock");
        feed.fresh.then(|| (feed.mirror.depths(), feed.mirror.suspects()))
    }

    /// Shared, immutable snapshots of the records (cheap to take).
    pub fn nodes(&self) -> Vec<Arc<NodeRecord>> {
        self.cache.lock().expect("cache lock").nodes.values()
    }

    pub fn runners(&self) -> Vec<Arc<RunnerRecord>> {
        self.cache.lock().expect("cache lock").runners.values()
    }

    /// The live agents (an agent's record goes with its lease).
    pub fn agents(&self) -> Vec<Arc<AgentRecord>> {
        self.cache.lock().expect("cache lock").agents.values()
    }

    /// Writes through a node record the store accepted at `rev`.
    pub fn put_node(&self, rec: NodeRecord, rev: Revision) {
        self.cache.lock().expect("cache lock").nodes.put(rec.id, rec, rev);
    }

    pub fn put_runner(&self, rec: RunnerRecord, rev: Revision) {
        self.cache.lock().expect("cache lock").runners.put(rec.id, rec, rev);
    }

    pub fn delete_runner(&self, id: u64, rev: Revision) {
        self.cache.lock().expect("cache lock").runners.delete(id, rev);
    }

    pub fn delete_node(&self, id: u64, rev: Revision) {
        self.cache.lock().expect("cache lock").nodes.delete(id, rev);
    }
}
