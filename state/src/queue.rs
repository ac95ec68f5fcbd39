//! The request queue (fal-style), kept in the store.
//!
//! A request is written under `queue/{app}/{id}` when submitted. A runner claims the oldest queued
//! one with a transaction that (a) checks the request did not change since it was read and (b)
//! writes a claim key on the claimer's lease: two runners can never both win, and when the
//! claimer's node dies its lease ends, the claim key disappears, and [`requeue_orphans`] puts the
//! request back. A result is accepted only from the runner whose claim is still there, and moves
//! the request to `results/{app}/{id}` in the same transaction: served at most once at a time,
//! and never lost.

use fleet_core::keys::{Counter, Keys, id_of};
use fleet_core::{NodeId, RequestId, RunnerId, Time};

use crate::model::{RequestRecord, RequestState};
use crate::store::{Compare, LeaseId, Op, Store, StoreError, StoreResult, allocate_ids, to_json};

mod mirror;
pub use mirror::{Applied as MirrorApplied, QueueMirror};

/// What the API needs to say about submitting.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("request {0} was not found")]
    NotFound(RequestId),
    #[error("runner {runner} no longer holds request {request} (its claim expired and it was queued again)")]
    ClaimLost { runner: RunnerId, request: RequestId },
}

/// Records under the queues that did not decode, or disagreed with their key, since start.
static QUARANTINED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many queue records were quarantined (skipped as unreadable or inconsistent) so far.
pub fn quarantined() -> u64 {
    QUARANTINED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A queue record that decodes and agrees with its key (the app and id in the key are the
/// record's), or `None`: quarantined — counted, logged once per key, skipped — so that one bad
/// value (an agent's token can write under its apps' queues) never stops a reconcile pass, a
/// listing or a claim.
fn checked(keys: &Keys, kv: &crate::store::KeyValue) -> Option<RequestRecord> {
    let why = match kv.json::<RequestRecord>() {
        Ok(rec) => {
            let app = kv.key.strip_prefix(&keys.queues()).and_then(|rest| rest.split('/').next());
            if app == Some(rec.app.as_str()) && id_of(&kv.key) == Some(rec.id) {
                return Some(rec);
            }
            format!("its app {:?} and id {} are not the key's", rec.app, rec.id)
        }
        Err(e) => format!("it does not decode: {e}"),
    };
    static SEEN: std::sync::Mutex<Option<std::collections::HashSet<String>>> = std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(Default::default);
    if seen.len() < 10_000 && seen.insert(kv.key.clone()) {
        QUARANTINED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(key = %kv.key, %why, "queue record quarantined: skipped");
    }
    None
}

/// Queues a request; returns its id.
pub async fn submit(
    store: &dyn Store,
    keys: &Keys,
    app: &str,
    input: serde_json::Value,
    now: Time,
) -> StoreResult<RequestId> {
    submit_as(store, keys, app, input, now, None).await
}

/// [`submit`], recording the submitting token's name as the request's owner.
pub async fn submit_as(
    store: &dyn Store,
    keys: &Keys,
    app: &str,
    input: serde_json::Value,
    now: Time,
    owner: Option<&str>,
) -> StoreResult<RequestId> {
    let id = allocate_ids(store, &keys.counter(Counter::Request), 1).await?;
    let rec = RequestRecord {
        id,
        app: app.into(),
        input,
        submitted_at: now,
        attempts: 0,
        state: RequestState::Queued,
        owner: owner.map(str::to_string),
    };
    store.put(&keys.queued(app, id), to_json(&rec), None).await?;
    Ok(id)
}

/// One request to submit with others ([`submit_group`]).
#[derive(Debug, Clone)]
pub struct Submission {
    pub app: String,
    pub input: serde_json::Value,
    pub owner: Option<String>,
}

/// Submits several requests in one transaction (ids from the counter and every record together:
/// one durable commit for the group, all or nothing), at most `store.max_txn_ops() - 1` of them.
/// Returns their ids in order.
pub async fn submit_group(
    store: &dyn Store,
    keys: &Keys,
    group: &[Submission],
    now: Time,
) -> StoreResult<Vec<RequestId>> {
    if group.is_empty() {
        return Ok(Vec::new());
    }
    let counter = keys.counter(Counter::Request);
    loop {
        let (first, cmp) = match store.get(&counter).await? {
            Some(kv) => (kv.json::<u64>()?, Compare::unchanged(&kv)),
            None => (1, Compare::absent(&counter)),
        };
        let mut ops = Vec::with_capacity(group.len() + 1);
        ops.push(Op::put_json(&counter, &(first + group.len() as u64)));
        for (i, s) in group.iter().enumerate() {
            let id = first + i as u64;
            let rec = RequestRecord {
                id,
                app: s.app.clone(),
                input: s.input.clone(),
                submitted_at: now,
                attempts: 0,
                state: RequestState::Queued,
                owner: s.owner.clone(),
            };
            ops.push(Op::put(keys.queued(&s.app, id), to_json(&rec)));
        }
        if store.txn(vec![cmp], ops).await?.succeeded {
            return Ok((first..first + group.len() as u64).collect());
        }
    }
}

/// The request wherever it is (queue or results).
pub async fn get(store: &dyn Store, keys: &Keys, app: &str, id: RequestId) -> Result<RequestRecord, QueueError> {
    for key in [keys.queued(app, id), keys.result(app, id)] {
        if let Some(kv) = store.get(&key).await? {
            return Ok(kv.json()?);
        }
    }
    Err(QueueError::NotFound(id))
}

/// Removes `app`'s results that finished before `before`; returns how many went. A result that
/// does not decode is left to the quarantine (counted there), never removed blind.
pub async fn expire_results(store: &dyn Store, keys: &Keys, app: &str, before: Time) -> StoreResult<u64> {
    let (kvs, _) = store.range(&keys.results(app)).await?;
    let mut gone = 0;
    for kv in kvs {
        let Ok(r) = kv.json::<RequestRecord>() else { continue };
        let finished = match &r.state {
            RequestState::Done { finished_at, .. } | RequestState::Failed { finished_at, .. } => *finished_at,
            _ => continue,
        };
        if finished < before && store.delete(&kv.key).await? {
            gone += 1;
        }
    }
    Ok(gone)
}

/// Queued and claimed requests of one app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    pub queued: u32,
    pub in_flight: u32,
}

/// Depth per app, from one read of every queue.
pub async fn depths(store: &dyn Store, keys: &Keys) -> StoreResult<std::collections::BTreeMap<String, Depth>> {
    let (kvs, _) = store.range(&keys.queues()).await?;
    let mut out = std::collections::BTreeMap::<String, Depth>::new();
    for kv in kvs {
        let Some(rec) = checked(keys, &kv) else { continue };
        let d = out.entry(rec.app).or_default();
        match rec.state {
            RequestState::Queued => d.queued += 1,
            _ => d.in_flight += 1,
        }
    }
    Ok(out)
}

/// Claims the oldest queued request of `app` for `runner` on `node`, holding it with `lease` (the
/// node agent's). `None` when nothing is queued.
pub async fn claim(
    store: &dyn Store,
    keys: &Keys,
    app: &str,
    runner: RunnerId,
    node: NodeId,
    lease: LeaseId,
    now: Time,
) -> StoreResult<Option<RequestRecord>> {
    loop {
        let (kvs, _) = store.range(&keys.queue(app)).await?;
        let mut contended = false;
        for kv in kvs {
            let Some(rec) = checked(keys, &kv) else { continue };
            if rec.state != RequestState::Queued {
                continue;
            }
            if let Some(rec) = take(store, keys, &kv, rec, (runner, node, lease), now).await? {
                return Ok(Some(rec));
            }
            contended = true;
        }
        if !contended {
            return Ok(None);
        }
    }
}

/// Claims request `id` of `app` if it is still queued (an agent that watches its queue knows
/// which ones are, and reads only the one it claims). `None` when it is not queued any more, or
/// another runner's claim won.
#[allow(clippy::too_many_arguments)]
pub async fn claim_one(
    store: &dyn Store,
    keys: &Keys,
    app: &str,
    id: RequestId,
    runner: RunnerId,
    node: NodeId,
    lease: LeaseId,
    now: Time,
) -> StoreResult<Option<RequestRecord>> {
    let Some(kv) = store.get(&keys.queued(app, id)).await? else { return Ok(None) };
    let Some(rec) = checked(keys, &kv) else { return Ok(None) };
    if rec.state != RequestState::Queued {
        return Ok(None);
    }
    take(store, keys, &kv, rec, (runner, node, lease), now).await
}

/// The claim itself: the queued record `kv` (decoded as `rec`) becomes claimed, and the claim key
/// is written on the claimer's lease, if neither changed since `kv` was read.
async fn take(
    store: &dyn Store,
    keys: &Keys,
    kv: &crate::store::KeyValue,
    mut rec: RequestRecord,
    (runner, node, lease): (RunnerId, NodeId, LeaseId),
    now: Time,
) -> StoreResult<Option<RequestRecord>> {
    rec.state = RequestState::Claimed { runner, node, since: now };
    rec.attempts += 1;
    let claim_key = keys.claim(&rec.app, rec.id);
    let res = store
        .txn(
            vec![Compare::unchanged(kv), Compare::absent(&claim_key)],
            vec![Op::put_json(&kv.key, &rec), Op::put_with_lease(claim_key, to_json(&runner), lease)],
        )
        .await?;
    Ok(res.succeeded.then_some(rec))
}

/// Whether a queue record (as a watch delivers it) is a request waiting for a runner.
pub fn is_queued(keys: &Keys, kv: &crate::store::KeyValue) -> bool {
    checked(keys, kv).is_some_and(|r| r.state == RequestState::Queued)
}

/// Records the result of a claimed request. Refused when `runner`'s claim is gone.
pub async fn complete(
    store: &dyn Store,
    keys: &Keys,
    app: &str,
    id: RequestId,
    runner: RunnerId,
    outcome: Result<serde_json::Value, String>,
    now: Time,
) -> Result<RequestRecord, QueueError> {
    let claim_key = keys.claim(app, id);
    let claim = store.get(&claim_key).await?;
    let held = claim.as_ref().map(|c| c.json::<RunnerId>()).transpose()? == Some(runner);
    let queued = store.get(&keys.queued(app, id)).await?;
    let (Some(claim), Some(kv), true) = (claim, queued, held) else {
        return Err(QueueError::ClaimLost { runner, request: id });
    };
    let mut rec: RequestRecord = kv.json()?;
    let finished_at = now;
    let started_at = match rec.state {
        RequestState::Claimed { since, .. } => Some(since),
        _ => None,
    };
    rec.state = match outcome {
        Ok(output) => RequestState::Done { output, runner, finished_at, started_at },
        Err(error) => RequestState::Failed { error, finished_at, started_at },
    };
    let res = store
        .txn(
            vec![Compare::unchanged(&claim), Compare::unchanged(&kv)],
            vec![Op::delete(&kv.key), Op::delete(claim_key), Op::put_json(keys.result(app, id), &rec)],
        )
        .await?;
    if res.succeeded { Ok(rec) } else { Err(QueueError::ClaimLost { runner, request: id }) }
}

/// Puts back every claimed request whose claim key is gone (its claimer's lease ended) or whose
/// runner is in `lost` (stopped without finishing). Returns how many went back.
pub async fn requeue_orphans(store: &dyn Store, keys: &Keys, lost: &[RunnerId]) -> StoreResult<u32> {
    Ok(requeue_and_count(store, keys, lost, &mut ScanCache::default()).await?.0)
}

/// [`requeue_orphans`] (claims whose lease ended) and [`depths`] from one read of the queues:
/// what a reconcile pass needs, without reading and decoding every request twice.
pub async fn scan(store: &dyn Store, keys: &Keys) -> StoreResult<(std::collections::BTreeMap<String, Depth>, u32)> {
    scan_cached(store, keys, &mut ScanCache::default()).await
}

/// [`scan`], decoding only the records that changed since the last scan with `cache`: a reconcile
/// pass keeps one from pass to pass while its [`QueueMirror`] is being listed.
pub async fn scan_cached(
    store: &dyn Store,
    keys: &Keys,
    cache: &mut ScanCache,
) -> StoreResult<(std::collections::BTreeMap<String, Depth>, u32)> {
    let (n, depths) = requeue_and_count(store, keys, &[], cache).await?;
    Ok((depths, n))
}

/// What a scan of the queues keeps of each record from one scan to the next: its app, id and
/// claimer, and the revision they were read at, in key order (as ranges come). A record whose
/// revision has not changed is not decoded again. Why: a pass decoded every queued request, input
/// included, each time — under 20,000 submits/s over a third of fleetd's worker CPU in `perf`,
/// holding an async worker for as long as the queue was deep. The scan walks the range and the cache
/// together, both in key order: no hashing, and the keys move from one scan's cache to the next.
#[derive(Debug, Default)]
pub struct ScanCache {
    records: Vec<(String, Scanned)>,
}

#[derive(Debug)]
struct Scanned {
    revision: crate::store::Revision,
    /// `None`: quarantined at that revision.
    head: Option<Head>,
}

#[derive(Debug)]
struct Head {
    app: String,
    id: RequestId,
    claimed_by: Option<RunnerId>,
}

impl ScanCache {
    /// How many records it holds (those the last scan read).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn head_of(keys: &Keys, kv: &crate::store::KeyValue) -> Option<Head> {
    checked(keys, kv).map(|rec| Head {
        app: rec.app,
        id: rec.id,
        claimed_by: match rec.state {
            RequestState::Claimed { runner, .. } => Some(runner),
            _ => None,
        },
    })
}

async fn requeue_and_count(
    store: &dyn Store,
    keys: &Keys,
    lost: &[RunnerId],
    cache: &mut ScanCache,
) -> StoreResult<(u32, std::collections::BTreeMap<String, Depth>)> {
    let mut depths = std::collections::BTreeMap::<String, Depth>::new();
    let (kvs, _) = store.range(&keys.queues()).await?;
    let (claims, _) = store.range(&keys.claims()).await?;
    let claimed: std::collections::HashMap<(String, RequestId), &crate::store::KeyValue> = claims
        .iter()
        .filter_map(|c| {
            let id = id_of(&c.key)?;
            let app = c.key.strip_prefix(&keys.claims())?.split('/').next()?.to_string();
            Some(((app, id), c))
        })
        .collect();
    let mut old = std::mem::take(&mut cache.records).into_iter().peekable();
    let mut next: Vec<(String, Scanned)> = Vec::with_capacity(kvs.len());
    let mut n = 0;
    for kv in kvs {
        // Cached keys before this one are gone from the queue.
        while old.peek().is_some_and(|(k, _)| k.as_str() < kv.key.as_str()) {
            old.next();
        }
        let kept = match old.peek() {
            Some((k, e)) if *k == kv.key && e.revision == kv.mod_revision => old.next(),
            _ => None,
        };
        let (key, scanned) = match kept {
            Some(kept) => kept,
            None => (kv.key.clone(), Scanned { revision: kv.mod_revision, head: head_of(keys, &kv) }),
        };
        next.push((key, scanned));
        let Some(head) = &next.last().expect("just pushed").1.head else { continue };
        if !depths.contains_key(&head.app) {
            depths.insert(head.app.clone(), Depth::default());
        }
        let depth = depths.get_mut(&head.app).expect("just inserted");
        let Some(runner) = head.claimed_by else {
            depth.queued += 1;
            continue;
        };
        let claim = claimed.get(&(head.app.clone(), head.id));
        if claim.is_some() && !lost.contains(&runner) {
            depth.in_flight += 1;
            continue;
        }
        // Going back to the queue: the whole record, to write it back.
        let Some(rec) = checked(keys, &kv) else { continue };
        if requeue(store, keys, &kv, rec, claim.copied()).await? {
            n += 1;
            depth.queued += 1;
        } else {
            // Changed meanwhile (completed, or claimed again): the next pass counts it right.
            depth.in_flight += 1;
        }
    }
    cache.records = next;
    Ok((n, depths))
}

/// Puts `rec` (read as `kv`, claimed) back in the queue, dropping `claim` (its claim key as read,
/// `None`: absent), if neither changed since they were read. Whether it went back.
async fn requeue(
    store: &dyn Store,
    keys: &Keys,
    kv: &crate::store::KeyValue,
    mut rec: RequestRecord,
    claim: Option<&crate::store::KeyValue>,
) -> StoreResult<bool> {
    let claim_key = keys.claim(&rec.app, rec.id);
    let mut cmps = vec![Compare::unchanged(kv)];
    let mut ops = vec![];
    match claim {
        Some(c) => {
            cmps.push(Compare::unchanged(c));
            ops.push(Op::delete(claim_key));
        }
        None => cmps.push(Compare::absent(claim_key)),
    }
    let runner = match rec.state {
        RequestState::Claimed { runner, .. } => Some(runner),
        _ => None,
    };
    rec.state = RequestState::Queued;
    ops.push(Op::put_json(&kv.key, &rec));
    let ok = store.txn(cmps, ops).await?.succeeded;
    if ok {
        tracing::info!(request = rec.id, app = %rec.app, runner, "request queued again: its runner is gone");
    }
    Ok(ok)
}

/// What [`scan`] says, from a [`QueueMirror`]'s `depths` and `suspects` instead of a read of
/// every queue: each suspect is read again and put back only if it is still claimed and its
/// claim is still gone (the transaction checks both). Returns the depths with the requeued
/// requests counted as queued, and how many went back.
pub async fn requeue_suspects(
    store: &dyn Store,
    keys: &Keys,
    mut depths: std::collections::BTreeMap<String, Depth>,
    suspects: &[String],
) -> StoreResult<(std::collections::BTreeMap<String, Depth>, u32)> {
    let mut n = 0;
    for key in suspects {
        let Some(kv) = store.get(key).await? else { continue };
        let Some(rec) = checked(keys, &kv) else { continue };
        if !matches!(rec.state, RequestState::Claimed { .. }) {
            continue;
        }
        let app = rec.app.clone();
        // The transaction checks the claim is still absent.
        if !requeue(store, keys, &kv, rec, None).await? {
            continue;
        }
        n += 1;
        if let Some(d) = depths.get_mut(&app)
            && d.in_flight > 0
        {
            d.in_flight -= 1;
            d.queued += 1;
        }
    }
    Ok((depths, n))
}
