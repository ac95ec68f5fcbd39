//! The fleet's events: each decision fleetd takes about a node or an app, with its reason, kept
//! in the store under [`Keys::events`] (`fleetctl get events`, `describe node`).
//!
//! Events are numbered by a counter like nodes and requests, so the store's order is the order
//! they happened in, and every fleetd (and a restarted one) appends to one history. The history
//! is bounded: writing event `n` deletes event `n - HISTORY` in the same transaction, so the
//! store holds at most [`HISTORY`] of them whatever the fleet does.
//!
//! An event is a record of what was decided, not a part of the decision: a failed write is
//! logged by the caller and the decision stands.

use fleet_core::keys::{Counter, Keys};
use fleet_core::{NodeId, Time};
use serde::{Deserialize, Serialize};

use crate::lifecycle::node::{DrainReason, NodeEvent};
use crate::model::NodeRecord;
use crate::store::{Compare, Op, Store, StoreResult};

/// How many events the store keeps (the oldest go first).
pub const HISTORY: u64 = 10_000;

/// The longest message kept (cloud error bodies can be long); longer ones are cut with "…".
pub const MAX_MESSAGE: usize = 1_000;

/// What happened. The names are what `fleetctl get events` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The plan asked for a node: for which app, how many runners, which offerings and why.
    Planned,
    /// The cloud answered a launch with an instance.
    Launched,
    /// A launch was refused; the node fails over to its next offering, or fails.
    LaunchFailed,
    /// The node's agent is healthy: it takes runners.
    Ready,
    BootstrapFailed,
    /// The node takes no new work and goes once its runners are done (the reason says why).
    Draining,
    Terminating,
    /// The cloud confirmed the instance is gone; billing stopped.
    Terminated,
    /// The cloud lost the instance without fleet asking (spot reclaimed, deleted outside fleet).
    InstanceLost,
    /// Demand fleet could not place (clouds, regions, GPU, quota, budget, scaling delay).
    NotPlaced,
    /// A budget cap held back a scale-up or wound an app down.
    BudgetHeld,
    /// A consolidation move started on the node (the saving and what the move costs).
    Consolidating,
    /// An instance fleet launched but no node accounts for was terminated.
    OrphanCollected,
    /// How the node's SSH host key was trusted (reported by the cloud, or pinned at first contact).
    HostKey,
    /// An operator's action (cordon, uncordon, drain).
    Operator,
    /// The clouds' live prices moved at a refresh: how many offerings, the largest moves, and
    /// what fleet's live nodes now pay against what they would pay if launched now.
    PriceChanged,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        EventKind::Planned,
        EventKind::Launched,
        EventKind::LaunchFailed,
        EventKind::Ready,
        EventKind::BootstrapFailed,
        EventKind::Draining,
        EventKind::Terminating,
        EventKind::Terminated,
        EventKind::InstanceLost,
        EventKind::NotPlaced,
        EventKind::BudgetHeld,
        EventKind::Consolidating,
        EventKind::OrphanCollected,
        EventKind::HostKey,
        EventKind::Operator,
        EventKind::PriceChanged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Planned => "planned",
            EventKind::Launched => "launched",
            EventKind::LaunchFailed => "launch-failed",
            EventKind::Ready => "ready",
            EventKind::BootstrapFailed => "bootstrap-failed",
            EventKind::Draining => "draining",
            EventKind::Terminating => "terminating",
            EventKind::Terminated => "terminated",
            EventKind::InstanceLost => "instance-lost",
            EventKind::NotPlaced => "not-placed",
            EventKind::BudgetHeld => "budget-held",
            EventKind::Consolidating => "consolidating",
            EventKind::OrphanCollected => "orphan-collected",
            EventKind::HostKey => "host-key",
            EventKind::Operator => "operator",
            EventKind::PriceChanged => "price-changed",
        }
    }
}

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: u64,
    pub at: Time,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    pub message: String,
}

/// An event to record (the id comes from the store's counter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub app: Option<String>,
    pub node: Option<NodeId>,
    pub message: String,
}

impl NewEvent {
    pub fn node(kind: EventKind, rec: &NodeRecord, message: impl Into<String>) -> NewEvent {
        NewEvent { kind, app: Some(rec.app.clone()), node: Some(rec.id), message: message.into() }
    }

    pub fn app(kind: EventKind, app: &str, message: impl Into<String>) -> NewEvent {
        NewEvent { kind, app: Some(app.to_string()), node: None, message: message.into() }
    }
}

/// Appends `ev` at `at`; returns its id. Trims the event [`HISTORY`] places back in the same
/// transaction.
pub async fn record(store: &dyn Store, keys: &Keys, at: Time, ev: NewEvent) -> StoreResult<u64> {
    Ok(record_many_keeping(store, keys, vec![(at, ev)], HISTORY).await?[0])
}

/// Appends `evs` in order (each at its time); returns their ids, consecutive. One compare-and-swap
/// for the ids and as few transactions as the store takes for the records, each trimming the
/// events [`HISTORY`] places back from its own: a burst of decisions (a plan's 1,000 new nodes)
/// costs a few commits rather than two per event.
pub async fn record_many(store: &dyn Store, keys: &Keys, evs: Vec<(Time, NewEvent)>) -> StoreResult<Vec<u64>> {
    record_many_keeping(store, keys, evs, HISTORY).await
}

async fn record_many_keeping(
    store: &dyn Store,
    keys: &Keys,
    evs: Vec<(Time, NewEvent)>,
    history: u64,
) -> StoreResult<Vec<u64>> {
    if evs.is_empty() {
        return Ok(Vec::new());
    }
    // Two operations per event at most (its put, the trim), never split across transactions; no
    // more events per transaction than `history`, so none trims one written beside it; 1,024
    // keeps a commit short. The first transaction also moves the counter (compared), so a burst
    // of events costs one commit where the store takes them all.
    let per_txn = ((store.max_txn_ops().saturating_sub(1)) / 2).clamp(1, 1024).min(history.max(1) as usize);
    let records = |first: u64, evs: &[(Time, NewEvent)]| -> Vec<Op> {
        let mut ops = Vec::with_capacity(2 * evs.len());
        for (id, (at, ev)) in (first..).zip(evs) {
            let mut message = ev.message.clone();
            if message.len() > MAX_MESSAGE {
                let mut cut = MAX_MESSAGE;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push('…');
            }
            let rec = EventRecord { id, at: *at, kind: ev.kind, app: ev.app.clone(), node: ev.node, message };
            ops.push(Op::put_json(keys.event(id), &rec));
            if id > history {
                ops.push(Op::delete(keys.event(id - history)));
            }
        }
        ops
    };
    let counter = keys.counter(Counter::Event);
    let n = evs.len() as u64;
    let head = &evs[..evs.len().min(per_txn)];
    let first = loop {
        let (first, cmp) = match store.get(&counter).await? {
            Some(kv) => (kv.json::<u64>()?, Compare::unchanged(&kv)),
            None => (1, Compare::absent(counter.clone())),
        };
        let mut ops = vec![Op::put_json(counter.clone(), &(first + n))];
        ops.extend(records(first, head));
        if store.txn(vec![cmp], ops).await?.succeeded {
            break first;
        }
    };
    for (i, chunk) in evs.chunks(per_txn).enumerate().skip(1) {
        store.txn(vec![], records(first + (i * per_txn) as u64, chunk)).await?;
    }
    Ok((first..first + n).collect())
}

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    pub app: Option<String>,
    pub node: Option<NodeId>,
    /// Only events with a larger id (for following the history).
    pub after: Option<u64>,
    /// At most this many, the newest (all when `None`).
    pub last: Option<usize>,
}

impl EventFilter {
    pub fn matches(&self, e: &EventRecord) -> bool {
        self.app.as_ref().is_none_or(|a| e.app.as_ref() == Some(a))
            && self.node.is_none_or(|n| e.node == Some(n))
            && self.after.is_none_or(|a| e.id > a)
    }
}

/// The events `filter` selects, oldest first. A value that does not decode (only fleetd writes
/// here, but a store is a shared thing) is skipped, never an error for the whole history.
pub async fn list(store: &dyn Store, keys: &Keys, filter: &EventFilter) -> StoreResult<Vec<EventRecord>> {
    let (kvs, _) = store.range(&keys.events()).await?;
    let mut out: Vec<EventRecord> =
        kvs.iter().filter_map(|kv| kv.json::<EventRecord>().ok()).filter(|e| filter.matches(e)).collect();
    if let Some(n) = filter.last
        && out.len() > n
    {
        out.drain(..out.len() - n);
    }
    Ok(out)
}

/// What a drain reason means, in words.
pub fn drain_reason(r: &DrainReason) -> &'static str {
    match r {
        DrainReason::ScaleDown => "idle past its keep-alive (scale down)",
        DrainReason::Operator => "an operator asked",
        DrainReason::SpotInterruption => "the cloud sent a spot interruption notice",
        DrainReason::AgentLost => "its agent stopped renewing its lease",
        DrainReason::AppRemoved => "its app was removed from the spec",
        DrainReason::OfferingGone => "its offering is no longer one the plan may use (catalog or spec changed)",
        DrainReason::HardwareFault => "its hardware is not what was rented (see the agent's health)",
    }
}

/// The event for a node lifecycle step `ev` that turned a node into `after` (None where the step
/// is not worth an event of its own: the launch call starting, a drain finishing).
pub fn node_step(after: &NodeRecord, ev: &NodeEvent) -> Option<NewEvent> {
    let offering =
        |i: usize| after.candidates.get(i).map(|c| format!("{} at {}/h", c.offering, c.price.hourly().cents()));
    let (kind, message) = match ev {
        NodeEvent::LaunchStarted { .. } | NodeEvent::Drained => return None,
        NodeEvent::Launched { instance_id } => {
            let on = offering(after.attempt).unwrap_or_else(|| "an offering no longer known".into());
            let tried = match after.attempt {
                0 => String::new(),
                1 => " after 1 refused offering".into(),
                n => format!(" after {n} refused offerings"),
            };
            (EventKind::Launched, format!("instance {instance_id} launched on {on}{tried}"))
        }
        NodeEvent::LaunchFailed { reason, retry: true } => {
            let failed = offering(after.attempt.saturating_sub(1)).unwrap_or_default();
            let next = offering(after.attempt).unwrap_or_default();
            (EventKind::LaunchFailed, format!("{failed} refused: {reason}; failing over to {next}"))
        }
        NodeEvent::LaunchFailed { reason, retry: false } => {
            let failed = offering(after.attempt).unwrap_or_default();
            (EventKind::LaunchFailed, format!("{failed} refused: {reason}; no offering left, the node failed"))
        }
        NodeEvent::BootstrapSucceeded => (EventKind::Ready, "agent healthy: the node takes runners".to_string()),
        NodeEvent::BootstrapFailed { reason } => (EventKind::BootstrapFailed, reason.clone()),
        NodeEvent::Drain { reason } => (EventKind::Draining, format!("draining: {}", drain_reason(reason))),
        NodeEvent::Terminate => (EventKind::Terminating, "terminating the instance".to_string()),
        NodeEvent::TerminateConfirmed => {
            let bill = match (after.billing_since, after.billing_until) {
                (Some(since), Some(until)) => format!(
                    "; billed {} for {} s",
                    after.cost_until(until).cents(),
                    (until - since).num_seconds().max(0)
                ),
                _ => String::new(),
            };
            (EventKind::Terminated, format!("the cloud confirmed the instance gone{bill}"))
        }
        NodeEvent::InstanceGone => (
            EventKind::InstanceLost,
            "the cloud reports the instance gone without fleet asking (spot capacity reclaimed, or deleted outside fleet)"
                .to_string(),
        ),
    };
    Some(NewEvent::node(kind, after, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    fn t(s: i64) -> Time {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[tokio::test]
    async fn many_events_take_consecutive_ids_and_trim_the_history_as_single_ones_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let keys = Keys::new("t");
        let ev =
            |i: i64| (t(i), NewEvent { kind: EventKind::Launched, app: None, node: None, message: format!("{i}") });
        assert_eq!(record_many_keeping(&store, &keys, vec![ev(0)], 5).await.unwrap(), [1]);
        let before = store.range(&keys.events()).await.unwrap().1;
        let ids = record_many_keeping(&store, &keys, (1..13).map(ev).collect(), 5).await.unwrap();
        assert_eq!(ids, (2..=13).collect::<Vec<_>>());
        let all = list(&store, &keys, &EventFilter::default()).await.unwrap();
        assert_eq!(
            all.iter().map(|e| (e.id, e.message.as_str())).collect::<Vec<_>>(),
            [(9, "8"), (10, "9"), (11, "10"), (12, "11"), (13, "12")]
        );
        // 12 / 5 = 3 transactions, the first with the ids' allocation.
        assert_eq!(store.range(&keys.events()).await.unwrap().1, before + 3);
        assert!(record_many(&store, &keys, vec![]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn events_append_in_order_filter_and_keep_a_bounded_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let keys = Keys::new("t");
        const HISTORY: u64 = 50;
        for i in 0..HISTORY + 5 {
            let ev = NewEvent {
                kind: if i % 2 == 0 { EventKind::Launched } else { EventKind::NotPlaced },
                app: Some(if i % 3 == 0 { "a" } else { "b" }.into()),
                node: (i % 2 == 0).then_some(i),
                message: format!("event {i}"),
            };
            assert_eq!(record_many_keeping(&store, &keys, vec![(t(i as i64), ev)], HISTORY).await.unwrap(), [i + 1]);
        }
        let all = list(&store, &keys, &EventFilter::default()).await.unwrap();
        assert_eq!(all.len() as u64, HISTORY, "the oldest five were trimmed");
        assert_eq!(all[0].id, 6);
        assert_eq!(all[0].message, "event 5");
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));

        let f = EventFilter { app: Some("a".into()), after: Some(HISTORY - 10), ..Default::default() };
        let a = list(&store, &keys, &f).await.unwrap();
        assert!(!a.is_empty() && a.iter().all(|e| e.app.as_deref() == Some("a") && e.id > HISTORY - 10));
        let f = EventFilter { node: Some(HISTORY), last: Some(1), ..Default::default() };
        let n = list(&store, &keys, &f).await.unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].node, Some(HISTORY));
        let f = EventFilter { last: Some(3), ..Default::default() };
        let last: Vec<u64> = list(&store, &keys, &f).await.unwrap().iter().map(|e| e.id).collect();
        assert_eq!(last, vec![HISTORY + 3, HISTORY + 4, HISTORY + 5]);
    }

    #[tokio::test]
    async fn long_messages_are_cut_on_a_character_boundary_and_bad_values_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let keys = Keys::new("t");
        let long = "é".repeat(MAX_MESSAGE);
        record(&store, &keys, t(0), NewEvent::app(EventKind::NotPlaced, "a", long)).await.unwrap();
        store.put(&keys.event(99), b"not json".to_vec(), None).await.unwrap();
        let all = list(&store, &keys, &EventFilter::default()).await.unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].message.len() <= MAX_MESSAGE + '…'.len_utf8() && all[0].message.ends_with('…'));
    }
}
