//! The embedded store: etcd's semantics in-process, persisted to one redb file, for running fleetd
//! with no set-up. One daemon per file (redb refuses a second opener).
//!
//! Every key lives in memory (a `BTreeMap`, so prefix reads are ordered) and on disk; a write
//! goes to disk first (one record appended to the store's log and fsynced, shared by the writes
//! staged together: group commit, see `Inner::write`) and to memory only once durable, so readers
//! never see a change the disk does not have. The log is applied to the redb file in checkpoints,
//! off the writers' path (see `wal`), and whatever of it a stop left is applied on the next open.
//! Leases and their TTLs are persisted; after a restart each lease gets its full TTL again (as etcd does after a leader
//! change), so a restart never expires a lease early. Lease deadlines use tokio's clock, so tests
//! with paused time control expiry.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

mod wal;

use super::{Compare, KeyValue, LeaseId, Op, Revision, Store, StoreError, StoreResult, TxnResult, Watch, WatchEvent};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LEASES: TableDefinition<i64, u64> = TableDefinition::new("leases");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const NEXT_LEASE: &str = "next_lease";

/// Watch events kept for watchers resuming from an older revision (older: re-list).
const HISTORY: usize = 8_192;
/// Minimum lease TTL, like etcd's (leases shorter than a round of keep-alives flap).
const MIN_TTL: Duration = Duration::from_secs(1);
/// redb's page cache (see [`EmbeddedStore::open`]).
const REDB_CACHE: usize = 4 << 20;
/// How long [`EmbeddedStore::open`] waits for a file in use to be let go of.
const OPEN_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmbeddedStore({})", self.inner.path.display())
    }
}

struct Inner {
    path: PathBuf,
    dir: PathBuf,
    /// The checkpointed state: applied from the log (see [`wal`]), read only when opening.
    db: Arc<Database>,
    /// Changes are checked and staged one at a time under this lock (no disk), then committed in
    /// groups. The state lock is held only to check and to install, never across a commit's
    /// fsync, so reads and watches never wait on the disk (they see committed changes only).
    writer: Mutex<Staged>,
    /// The log, appended to by one commit at a time (the commit loop holds it for the whole
    /// commit, the install in memory included, so changes install in the order they were logged).
    log: Mutex<wal::Log>,
    /// A checkpoint under way (applying closed log segments to redb), joined when the store
    /// closes so that the file is free to open again by then.
    checkpointing: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// One lease grant at a time (each its own redb transaction: grants are rare and small).
    granting: Mutex<()>,
    /// What is durable, for the writers waiting on it.
    durable: Arc<watch::Sender<Durable>>,
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    lease_changed: Arc<Notify>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The checkpoint holds the redb file: the store is closed only once it is done.
        if let Some(t) = self.checkpointing.get_mut().map(Option::take).unwrap_or(None) {
            let _ = t.join();
        }
    }
}

struct Entry {
    value: Vec<u8>,
    mod_revision: Revision,
    create_revision: Revision,
    lease: Option<LeaseId>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct State {
    revision: Revision,
    next_lease: LeaseId,
    kv: BTreeMap<String, Entry>,
    leases: HashMap<LeaseId, Lease>,
    /// The latest events, as the batches they were sent in (not copied one by one), at least
    /// [`HISTORY`] of them: for watchers resuming from an older revision.
    history: VecDeque<Arc<Vec<WatchEvent>>>,
    /// Events in `history`.
    history_events: usize,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

// Record encoding in the file (and in the log): mod revision, create revision, lease (0 = none),
// then the value.
fn encode_into(e: &Entry, b: &mut Vec<u8>) {
    b.extend_from_slice(&e.mod_revision.to_le_bytes());
    b.extend_from_slice(&e.create_revision.to_le_bytes());
    b.extend_from_slice(&e.lease.unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&e.value);
}

fn decode(key: &str, b: &[u8]) -> StoreResult<Entry> {
    if b.len() < 24 {
        return Err(StoreError::Corrupt { key: key.into(), detail: format!("record of {} bytes", b.len()) });
    }
    let n = |i: usize| i64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let lease = n(16);
    Ok(Entry {
        mod_revision: n(0),
        create_revision: n(8),
        lease: (lease != 0).then_some(lease),
        value: b[24..].to_vec(),
    })
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` (file `fleet.redb`). Must be called inside a tokio
    /// runtime: a task expires leases.
    pub fn open(dir: &Path) -> StoreResult<EmbeddedStore> {
        private_dir(dir).map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("fleet.redb");
        // Every key is also in memory (reads never touch redb), and only the checkpoint writes to it
        // (off the writers' path, see `wal`): its cache serves that alone. 4 MiB (at 16 MiB, the
        // pages read to load memory at open stayed cached: ~15 MB of RSS at 100,000 runners).
        //
        // A store that was just dropped may still hold the file for a moment: its last reference can
        // be the lease task's, which upgrades its weak one to look at the leases, or a fleetd that
        // is stopping still closes it. So a file in use is tried again for a while before the
        // answer is that another fleetd has it.
        let deadline = std::time::Instant::now() + OPEN_WAIT;
        let db = loop {
            match Database::builder().set_cache_size(REDB_CACHE).create(&path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(StoreError::Io(format!(
                        "{} is in use by another fleetd: stop it, or give this one another --data-dir",
                        path.display()
                    )));
                }
                Err(e) => return Err(StoreError::Io(format!("cannot open {}: {e}", path.display()))),
            }
        };
        // The store holds token digests, agent credentials and every record: its owner's only.
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| StoreError::Io(format!("cannot restrict {}: {e}", path.display())))?;
        let mut state = State {
            revision: 0,
            next_lease: 1,
            kv: BTreeMap::new(),
            leases: HashMap::new(),
            history: VecDeque::new(),
            history_events: 0,
        };
        {
            let w = db.begin_write().map_err(io)?;
            w.open_table(KV).map_err(io)?;
            w.open_table(LEASES).map_err(io)?;
            w.open_table(META).map_err(io)?;
            w.commit().map_err(io)?;
        }
        // What the log holds that redb does not yet (a stop comes between checkpoints) goes in
        // first, so memory loads from redb alone.
        let newest_segment = wal::checkpoint(&db, dir, u64::MAX, true)?;
        let log = wal::Log::create(dir, newest_segment + 1)?;
        let now = Instant::now();
        {
            let r = db.begin_read().map_err(io)?;
            let meta = r.open_table(META).map_err(io)?;
            state.revision = meta.get(REVISION).map_err(io)?.map(|v| v.value()).unwrap_or(0);
            state.next_lease = meta.get(NEXT_LEASE).map_err(io)?.map(|v| v.value()).unwrap_or(1);
            for item in r.open_table(LEASES).map_err(io)?.iter().map_err(io)? {
                let (id, ttl_ms) = item.map_err(io)?;
                let ttl = Duration::from_millis(ttl_ms.value());
                state.leases.insert(id.value(), Lease { ttl, deadline: now + ttl, keys: BTreeSet::new() });
            }
            // redb hands the keys over in order, and a map built from them at once packs its
            // nodes full (inserted one by one, each node is split half-empty: ~14 MB more at
            // 100,000 runners).
            let mut kv = Vec::new();
            for item in r.open_table(KV).map_err(io)?.iter().map_err(io)? {
                let (k, v) = item.map_err(io)?;
                let key = k.value().to_string();
                let e = decode(&key, v.value())?;
                if let Some(l) = e.lease {
                    match state.leases.get_mut(&l) {
                        Some(lease) => {
                            lease.keys.insert(key.clone());
                        }
                        // Its lease ended but the deletion did not reach the file: it ends now.
                        None => continue,
                    }
                }
                kv.push((key, e));
            }
            state.kv = BTreeMap::from_iter(kv);
        }
        let (events, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            path,
            dir: dir.to_path_buf(),
            db: Arc::new(db),
            writer: Mutex::new(Staged {
                revision: state.revision,
                durable: state.revision,
                overlay: HashMap::new(),
                ending: HashSet::new(),
                batches: Vec::new(),
                epoch: 0,
                committing: false,
            }),
            log: Mutex::new(log),
            checkpointing: Mutex::new(None),
            granting: Mutex::new(()),
            durable: Arc::new(watch::channel(Durable { epoch: 0, revision: state.revision, failure: None }).0),
            state: Mutex::new(state),
            events,
            lease_changed: Arc::new(Notify::new()),
        });
        tokio::spawn(expire_leases(Arc::downgrade(&inner)));
        Ok(EmbeddedStore { inner })
    }
}

/// Ends leases whose deadline passed. Holds only a weak reference, so dropping the store stops it.
async fn expire_leases(inner: Weak<Inner>) {
    loop {
        let weak = {
            let Some(inner) = inner.upgrade() else { return };
            let now = Instant::now();
            let expired: Vec<LeaseId> = {
                let st = inner.state.lock().expect("store lock");
                st.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect()
            };
            for id in expired {
                if let Err(e) = inner.end_lease(id, Some(now)).await {
                    tracing::error!(lease = id, error = %e, "could not expire lease; retrying");
                }
            }
            let next = inner.state.lock().expect("store lock").leases.values().map(|l| l.deadline).min();
            // Wait for the next deadline or a lease change, whichever first.
            let changed = inner.lease_changed.clone();
            let notified = changed.notified();
            let sleep = async {
                match next {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // Release the strong reference while waiting.
            let inner_weak = Arc::downgrade(&inner);
            drop(inner);
            tokio::select! {
                _ = notified => {}
                _ = sleep => {}
            }
            inner_weak
        };
        if weak.upgrade().is_none() {
            return;
        }
    }
}

/// A key as the staged changes leave it: its revisions and lease (`None`: deleted).
#[derive(Clone, Copy)]
struct Meta {
    mod_revision: Revision,
    create_revision: Revision,
    lease: Option<LeaseId>,
}

/// Changes checked and given their revisions, not yet in the file ([`Inner::write`]).
struct Staged {
    /// The newest revision given out (staged or durable).
    revision: Revision,
    /// The newest revision in the file and in memory.
    durable: Revision,
    /// Keys changed by staged changes, with the staged revision that last changed each: what a
    /// plan sees before what is in memory.
    overlay: HashMap<String, (Revision, Option<Meta>)>,
    /// Leases whose end is staged: no staged put may take them.
    ending: HashSet<LeaseId>,
    /// Staged changes not yet taken by a committer, in revision order.
    batches: Vec<Batch>,
    /// Counts failed commits; a change staged before one that failed fails too (its checks may
    /// have seen what never reached the file).
    epoch: u64,
    /// A commit loop is running (on the blocking pool): it takes what is staged next.
    committing: bool,
}

/// What has reached the file, for writers waiting on it (see [`Inner::write`]).
#[derive(Clone, Debug)]
struct Durable {
    epoch: u64,
    revision: Revision,
    failure: Option<StoreError>,
}

struct Batch {
    revision: Revision,
    lease_end: Option<LeaseId>,
    writes: Vec<(String, Option<Entry>)>,
    events: Vec<WatchEvent>,
}

/// What a plan sees: the staged changes over what is in memory.
struct View<'a> {
    st: &'a State,
    staged: &'a Staged,
}

impl View<'_> {
    fn entry(&self, key: &str) -> Option<Meta> {
        match self.staged.overlay.get(key) {
            Some((_, m)) => *m,
            None => self.st.kv.get(key).map(|e| Meta {
                mod_revision: e.mod_revision,
                create_revision: e.create_revision,
                lease: e.lease,
            }),
        }
    }

    fn revision(&self) -> Revision {
        self.staged.revision
    }

    fn lease(&self, id: LeaseId) -> Option<&Lease> {
        if self.staged.ending.contains(&id) {
            return None;
        }
        self.st.leases.get(&id)
    }

    /// The keys on lease `id`, staged changes included.
    fn lease_keys(&self, id: LeaseId) -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = match self.st.leases.get(&id) {
            Some(l) => l.keys.iter().filter(|k| self.entry(k).is_some_and(|m| m.lease == Some(id))).cloned().collect(),
            None => BTreeSet::new(),
        };
        keys.extend(
            self.staged
                .overlay
                .iter()
                .filter(|(_, (_, m))| m.is_some_and(|m| m.lease == Some(id)))
                .map(|(k, _)| k.clone()),
        );
        keys
    }
}

impl Inner {
    /// Applies the ops `plan` makes of the store as it is (memory, with the changes staged before
    /// it) as one revision, durable and installed when this returns. `Ok(None)`: `plan` said no
    /// (a failed compare).
    ///
    /// Group commit: a change is checked and staged under the writer lock (a few microseconds,
    /// no disk), then waits, asynchronously, until a commit holds it. One commit loop at a time,
    /// on Tokio's blocking pool, takes every change staged by then into one file transaction:
    /// one fsync for all of them, so changes made at the same time by different callers (a
    /// thousand node actors recording their launches) cost one commit between them, each still
    /// durable before it returns, and no async worker ever waits on the disk. Memory and
    /// watchers get the changes after the fsync, in revision order (reads see durable changes
    /// only).
    async fn write(
        self: &Arc<Self>,
        lease_end: Option<LeaseId>,
        plan: impl FnOnce(&View<'_>) -> StoreResult<Option<Vec<Op>>>,
    ) -> StoreResult<Option<Revision>> {
        let (answer, wait_for, epoch) = 'staging: {
            let mut staged = self.writer.lock().expect("store writer lock");
            let st = self.state.lock().expect("store lock");
            let view = View { st: &st, staged: &staged };
            let seen = view.revision();
            let ops = plan(&view)?;
            let Some(ops) = ops else {
                // The answer is as of `seen`: it stands once that is durable.
                break 'staging (None, seen, staged.epoch);
            };
            let rev = seen + 1;
            let mut events = Vec::with_capacity(ops.len());
            let mut writes: Vec<(String, Option<Entry>)> = Vec::with_capacity(ops.len());
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        let create_revision = view.entry(&key).map_or(rev, |m| m.create_revision);
                        events.push(WatchEvent::Put(KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            mod_revision: rev,
                            create_revision,
                            lease,
                        }));
                        let e = Entry { value, mod_revision: rev, create_revision, lease };
                        writes.push((key, Some(e)));
                    }
                    Op::Delete { key } => {
                        if view.entry(&key).is_some() {
                            events.push(WatchEvent::Delete { key: key.clone(), mod_revision: rev });
                            writes.push((key, None));
                        }
                    }
                }
            }
            drop(st);
            if writes.is_empty() && lease_end.is_none() {
                break 'staging (Some(seen), seen, staged.epoch);
            }
            for (key, e) in &writes {
                let meta = e.as_ref().map(|e| Meta {
                    mod_revision: e.mod_revision,
                    create_revision: e.create_revision,
                    lease: e.lease,
                });
                staged.overlay.insert(key.clone(), (rev, meta));
            }
            if let Some(l) = lease_end {
                staged.ending.insert(l);
            }
            staged.revision = rev;
            staged.batches.push(Batch { revision: rev, lease_end, writes, events });
            if !staged.committing {
                staged.committing = true;
                let inner = self.clone();
                tokio::task::spawn_blocking(move || commit_loop(inner));
            }
            (Some(rev), rev, staged.epoch)
        };
        self.wait_durable(wait_for, epoch).await?;
        Ok(answer)
    }

    /// Returns once revision `rev` (staged in `epoch`) is durable; the commit's error if it
    /// failed. Something staged past what is durable always has a commit loop running for it.
    async fn wait_durable(&self, rev: Revision, epoch: u64) -> StoreResult<()> {
        let mut rx = self.durable.subscribe();
        let d = rx
            .wait_for(|d| d.epoch != epoch || d.revision >= rev)
            .await
            .map_err(|_| StoreError::Unavailable("the store was closed".into()))?
            .clone();
        if d.epoch != epoch {
            return Err(d.failure.unwrap_or_else(|| StoreError::Io("a commit failed".into())));
        }
        Ok(())
    }

    /// Commits every staged change in one log record (one fsync), then installs them in memory and
    /// tells watchers, in revision order. On failure every staged change fails (later ones were
    /// checked against the failed ones) and staging starts again from what is durable. Returns
    /// what is durable now, for the waiting writers (`None`: nothing was staged).
    fn commit_staged(&self) -> Option<Durable> {
        let mut log = self.log.lock().expect("store log lock");
        let batches = std::mem::take(&mut self.writer.lock().expect("store writer lock").batches);
        let last = batches.last().map(|b| b.revision)?;
        // Every staged change took a revision (a lease's end without keys too): the log keeps
        // each, so none is given out twice after a restart.
        if let Err(e) = log.append(&batches) {
            tracing::error!(error = %e, changes = batches.len(), "store commit failed: the staged changes are refused");
            let mut staged = self.writer.lock().expect("store writer lock");
            staged.batches.clear();
            staged.overlay.clear();
            staged.ending.clear();
            staged.revision = staged.durable;
            staged.epoch += 1;
            return Some(Durable { epoch: staged.epoch, revision: staged.durable, failure: Some(e) });
        }
        let mut ended = Vec::new();
        {
            let mut st = self.state.lock().expect("store lock");
            for b in batches {
                if let Some(l) = b.lease_end {
                    st.leases.remove(&l);
                    ended.push(l);
                }
                st.revision = b.revision;
                if b.writes.is_empty() {
                    continue;
                }
                for (key, e) in b.writes {
                    if let Some(old) = st.kv.get(&key).and_then(|e| e.lease)
                        && let Some(l) = st.leases.get_mut(&old)
                    {
                        l.keys.remove(&key);
                    }
                    match e {
                        Some(e) => {
                            if let Some(l) = e.lease.and_then(|l| st.leases.get_mut(&l)) {
                                l.keys.insert(key.clone());
                            }
                            st.kv.insert(key, e);
                        }
                        None => {
                            st.kv.remove(&key);
                        }
                    }
                }
                let events = Arc::new(b.events);
                st.history_events += events.len();
                st.history.push_back(events.clone());
                while st.history.front().is_some_and(|f| st.history_events - f.len() >= HISTORY) {
                    let gone = st.history.pop_front().map_or(0, |f| f.len());
                    st.history_events -= gone;
                }
                // No receivers is fine: nobody watches.
                let _ = self.events.send(events);
            }
        }
        if log.full() {
            self.checkpoint_closed(&mut log);
        }
        drop(log);
        let mut staged = self.writer.lock().expect("store writer lock");
        staged.durable = last;
        staged.overlay.retain(|_, (rev, _)| *rev > last);
        for l in ended {
            staged.ending.remove(&l);
        }
        Some(Durable { epoch: staged.epoch, revision: last, failure: None })
    }

    /// Closes the full log segment and, unless one is under way, starts a checkpoint of every
    /// closed segment into redb on a thread of its own (the commits carry on meanwhile: they only
    /// append to the new segment). A failed checkpoint leaves its segments for the next one, or
    /// for the next open.
    fn checkpoint_closed(&self, log: &mut wal::Log) {
        let mut running = self.checkpointing.lock().expect("store checkpoint lock");
        if running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Some(done) = running.take() {
            let _ = done.join();
        }
        let below = match log.rotate() {
            Ok(seq) => seq,
            Err(e) => {
                // The full segment keeps taking appends; the next commit tries again.
                tracing::error!(error = %e, "cannot start a new store log segment");
                return;
            }
        };
        let (db, dir) = (self.db.clone(), self.dir.clone());
        let spawned = std::thread::Builder::new().name("store-checkpoint".into()).spawn(move || {
            let t = std::time::Instant::now();
            match wal::checkpoint(&db, &dir, below, false) {
                Ok(_) => tracing::debug!(took = ?t.elapsed(), "store log checkpointed into {}", dir.display()),
                Err(e) => tracing::error!(error = %e, "store log checkpoint failed: its segments stay, for the next checkpoint or open"),
            }
        });
        match spawned {
            Ok(t) => *running = Some(t),
            Err(e) => tracing::error!(error = %e, "cannot start a store log checkpoint"),
        }
    }

    /// Ends a lease and deletes its keys; with `if_due`, only if its deadline is still ≤ that time
    /// (a keep-alive may have come in between).
    async fn end_lease(self: &Arc<Self>, id: LeaseId, if_due: Option<Instant>) -> StoreResult<()> {
        let mut n = 0;
        let ended = self
            .write(Some(id), |view| {
                let Some(lease) = view.lease(id) else { return Ok(None) };
                if if_due.is_some_and(|t| lease.deadline > t) {
                    return Ok(None);
                }
                let keys = view.lease_keys(id);
                n = keys.len();
                Ok(Some(keys.into_iter().map(Op::delete).collect()))
            })
            .await?;
        if ended.is_some() {
            tracing::debug!(lease = id, keys = n, "lease ended");
        }
        Ok(())
    }

    fn check_lease(view: &View<'_>, ops: &[Op]) -> StoreResult<()> {
        for op in ops {
            if let Op::Put { lease: Some(l), .. } = op
                && view.lease(*l).is_none()
            {
                return Err(StoreError::LeaseNotFound(*l));
            }
        }
        Ok(())
    }
}

/// Commits what is staged until nothing is (on the blocking pool; one loop at a time, see
/// [`Inner::write`]), telling waiting writers what is durable after each commit. The last word
/// goes out after the loop lets go of the store, so that a store dropped by its last writer is
/// closed (its file free to open again) by the time that writer hears back.
fn commit_loop(inner: Arc<Inner>) {
    let tell = |tx: &watch::Sender<Durable>, d: Durable| {
        // Never backwards: a later loop may have told a newer revision already.
        tx.send_if_modified(|cur| {
            let newer = d.epoch > cur.epoch || (d.epoch == cur.epoch && d.revision > cur.revision);
            if newer {
                *cur = d;
            }
            newer
        });
    };
    loop {
        let done = inner.commit_staged();
        let more = {
            let mut staged = inner.writer.lock().expect("store writer lock");
            if staged.batches.is_empty() {
                staged.committing = false;
            }
            staged.committing
        };
        if more {
            if let Some(d) = done {
                tell(&inner.durable, d);
            }
            continue;
        }
        let tx = inner.durable.clone();
        drop(inner);
        if let Some(d) = done {
            tell(&tx, d);
        }
        return;
    }
}

/// Runs a blocking commit: on a multi-threaded Tokio runtime in `block_in_place` (the worker's
/// other tasks move to another thread meanwhile), else directly (a current-thread runtime, or
/// none).
fn off_the_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn kv_of(key: &str, e: &Entry) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: e.value.clone(),
        mod_revision: e.mod_revision,
        create_revision: e.create_revision,
        lease: e.lease,
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let st = self.inner.state.lock().expect("store lock");
        Ok(st.kv.get(key).map(|e| kv_of(key, e)))
    }

    async fn range(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Revision)> {
        let st = self.inner.state.lock().expect("store lock");
        let kvs = st
            .kv
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| kv_of(k, e))
            .collect();
        Ok((kvs, st.revision))
    }

    async fn range_page(&self, prefix: &str, after: Option<&str>, max_bytes: usize) -> StoreResult<super::Page> {
        let st = self.inner.state.lock().expect("store lock");
        let start = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a),
            _ => std::ops::Bound::Included(prefix),
        };
        let kvs = st
            .kv
            .range::<str, _>((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| kv_of(k, e));
        Ok(super::Page::cut(kvs, None, max_bytes, st.revision))
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> StoreResult<Revision> {
        let ops = vec![Op::Put { key: key.to_string(), value, lease }];
        let rev = self
            .inner
            .write(None, move |st| {
                Inner::check_lease(st, &ops)?;
                Ok(Some(ops))
            })
            .await?;
        Ok(rev.expect("a put always applies"))
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let mut existed = false;
        self.inner
            .write(None, |st| {
                existed = st.entry(key).is_some();
                Ok(Some(vec![Op::delete(key)]))
            })
            .await?;
        Ok(existed)
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> StoreResult<TxnResult> {
        let mut keys = BTreeSet::new();
        if let Some(dup) = ops.iter().find(|o| !keys.insert(o.key())) {
            return Err(StoreError::Invalid(format!("key {} appears twice in one transaction", dup.key())));
        }
        let mut seen = 0;
        let applied = self
            .inner
            .write(None, |st| {
                seen = st.revision();
                let holds = compares.iter().all(|c| st.entry(&c.key).map_or(0, |m| m.mod_revision) == c.mod_revision);
                if !holds {
                    return Ok(None);
                }
                Inner::check_lease(st, &ops)?;
                Ok(Some(ops))
            })
            .await?;
        Ok(match applied {
            Some(revision) => TxnResult { succeeded: true, revision },
            None => TxnResult { succeeded: false, revision: seen },
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<LeaseId> {
        let ttl = ttl.max(MIN_TTL);
        // Its own file transaction, one writer of the file at a time; the fsync without the state
        // lock.
        let writer = self.inner.granting.lock().expect("store grant lock");
        let id = self.inner.state.lock().expect("store lock").next_lease;
        off_the_workers(|| {
            let w = self.inner.db.begin_write().map_err(io)?;
            {
                w.open_table(LEASES).map_err(io)?.insert(id, ttl.as_millis() as u64).map_err(io)?;
                w.open_table(META).map_err(io)?.insert(NEXT_LEASE, id + 1).map_err(io)?;
            }
            w.commit().map_err(io)
        })?;
        {
            let mut st = self.inner.state.lock().expect("store lock");
            st.next_lease = id + 1;
            st.leases.insert(id, Lease { ttl, deadline: Instant::now() + ttl, keys: BTreeSet::new() });
        }
        drop(writer);
        self.inner.lease_changed.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> StoreResult<()> {
        let mut st = self.inner.state.lock().expect("store lock");
        let now = Instant::now();
        match st.leases.get_mut(&lease) {
            // Past its deadline but not reaped yet: it has ended all the same.
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(())
            }
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> StoreResult<()> {
        self.inner.end_lease(lease, None).await?;
        self.inner.lease_changed.notify_one();
        Ok(())
    }

    /// One fsync per transaction whatever its size: no limit.
    fn max_txn_ops(&self) -> usize {
        usize::MAX
    }

    async fn watch(&self, prefix: &str, from: Revision) -> StoreResult<Watch> {
        let (tx, rx) = Watch::channel(256);
        let st = self.inner.state.lock().expect("store lock");
        // Subscribe under the lock: nothing is applied between the replay and the live feed.
        let mut live = self.inner.events.subscribe();
        let mut backlog = Vec::new();
        if from > 0 && from <= st.revision {
            let oldest = st.history.iter().flat_map(|b| b.first()).next().map_or(st.revision + 1, WatchEvent::revision);
            if from < oldest {
                return Err(StoreError::Compacted { requested: from, oldest });
            }
            backlog.extend(
                st.history
                    .iter()
                    .flat_map(|b| b.iter())
                    .filter(|e| e.revision() >= from && e.key().starts_with(prefix))
                    .cloned(),
            );
        }
        drop(st);
        let prefix: Arc<str> = prefix.into();
        tokio::spawn(async move {
            if tx.send_batch(backlog).await.is_err() {
                return;
            }
            loop {
                match live.recv().await {
                    // The commit's events as they are kept: the watcher copies the ones it
                    // takes (a plan's 20,000 runner records were copied here for every watcher
                    // of the prefix, ~3 MB of new memory each).
                    Ok(batch) => {
                        if batch.iter().any(|e| e.key().starts_with(&*prefix))
                            && tx.send_shared(batch, prefix.clone()).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(Err(StoreError::Unavailable(format!("watch fell {n} revisions behind")))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = tx.send(Err(StoreError::Unavailable("the store was closed".into()))).await;
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// Creates `dir` (and its parents) if needed and makes it its owner's only (0700): it holds the
/// store and the admin token.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}
