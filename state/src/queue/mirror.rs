//! The queues as a reconcile pass needs them (depth per app, and which claimed requests may have
//! lost their claimer), kept in memory from the store's watch events.
//!
//! Why: a pass that reads the queues reads every queued request, each time. At 20,000 submits/s
//! the queue holds 100,000 requests after five seconds, and a pass every 50 ms copying them out of
//! the store (under its lock, so submits wait) took over a third of the machine in `perf`, and the
//! submit latency's p99 with it. Fed by the watch, the work is per change, once: a submitted
//! request is decoded when it arrives and counted, and a pass reads a few counters and the claimed
//! requests (at most the runners' capacity), however deep the queues are.
//!
//! The mirror only points at suspects; the decision is the store's: a suspect goes back to the
//! queue only by a transaction that checks its record and its claim are as a fresh read says
//! ([`super::requeue_suspects`]), so a mirror a moment behind the store (its two watches, one for
//! the queues and one for the claims, need not be in step) costs at most a failed transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use fleet_core::keys::Keys;

use super::{Depth, Head, head_of};
use crate::store::{KeyValue, WatchEvent};

/// See the module doc. Build it with [`QueueMirror::listed`] from one listing of the queues and
/// one of the claims, then [`apply`](QueueMirror::apply) the events of watches started right
/// after those listings, in the order they come.
#[derive(Debug, Default)]
pub struct QueueMirror {
    /// Every record under the queues by key: its head, or `None` when quarantined (counted
    /// nowhere, like a scan skips it).
    records: HashMap<String, Option<Head>>,
    /// The claim keys there are.
    claims: HashSet<String>,
    /// Per app with records: queued ones, and claimed ones (`in_flight`).
    depths: BTreeMap<String, Depth>,
    /// The claimed records' keys, each with the key of the claim that should hold it.
    claimed: BTreeMap<String, String>,
}

/// What an event changed that a pass may want to act on at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// A request became queued: submitted, or put back.
    pub queued: bool,
}

impl QueueMirror {
    /// The mirror of one listing of `keys.queues()` and one of `keys.claims()`.
    pub fn listed(keys: &Keys, queues: &[KeyValue], claims: &[KeyValue]) -> QueueMirror {
        let mut m = QueueMirror::default();
        for kv in queues {
            m.put_record(keys, kv);
        }
        m.claims = claims.iter().map(|c| c.key.clone()).collect();
        m
    }

    /// Applies one watch event of the queues or of the claims (others are ignored).
    pub fn apply(&mut self, keys: &Keys, ev: &WatchEvent) -> Applied {
        let key = ev.key();
        if key.starts_with(&keys.queues()) {
            return match ev {
                WatchEvent::Put(kv) => self.put_record(keys, kv),
                WatchEvent::Delete { .. } => {
                    self.forget(key);
                    Applied::default()
                }
            };
        }
        if key.starts_with(&keys.claims()) {
            match ev {
                WatchEvent::Put(kv) => drop(self.claims.insert(kv.key.clone())),
                WatchEvent::Delete { key, .. } => drop(self.claims.remove(key)),
            }
        }
        Applied::default()
    }

    /// Depth per app, as a scan of the queues would count before putting anything back.
    pub fn depths(&self) -> BTreeMap<String, Depth> {
        self.depths.clone()
    }

    /// The keys of claimed records whose claim is gone: their claimer's lease ended (or the
    /// claims' watch is a moment behind; the requeue's transaction tells which).
    pub fn suspects(&self) -> Vec<String> {
        self.claimed.iter().filter(|(_, claim)| !self.claims.contains(*claim)).map(|(k, _)| k.clone()).collect()
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn put_record(&mut self, keys: &Keys, kv: &KeyValue) -> Applied {
        let was_queued = self.forget(&kv.key);
        let head = head_of(keys, kv);
        let queued = head.as_ref().is_some_and(|h| h.claimed_by.is_none());
        if let Some(h) = &head {
            let d = match self.depths.get_mut(&h.app) {
                Some(d) => d,
                None => self.depths.entry(h.app.clone()).or_default(),
            };
            match h.claimed_by {
                None => d.queued += 1,
                Some(_) => {
                    d.in_flight += 1;
                    self.claimed.insert(kv.key.clone(), keys.claim(&h.app, h.id));
                }
            }
        }
        self.records.insert(kv.key.clone(), head);
        Applied { queued: queued && !was_queued }
    }

    /// Takes the record at `key` out of the counts; whether it was queued.
    fn forget(&mut self, key: &str) -> bool {
        let Some(Some(h)) = self.records.remove(key) else { return false };
        let Some(d) = self.depths.get_mut(&h.app) else { return false };
        match h.claimed_by {
            None => d.queued = d.queued.saturating_sub(1),
            Some(_) => {
                d.in_flight = d.in_flight.saturating_sub(1);
                self.claimed.remove(key);
            }
        }
        if *d == Depth::default() {
            self.depths.remove(&h.app);
        }
        h.claimed_by.is_none()
    }
}
