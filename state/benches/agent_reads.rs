//! What one agent reads from the store, at 10 and at 1,000 agents.
//!
//! A fleet of N nodes (one runner each, spread over 10 apps) on the embedded store, behind a
//! store that counts what is read ([`Counted`]). Two protocols:
//!
//! - **poll** (what agents did before): every 200 ms, read the fleet's whole `runners/` prefix
//!   and claim from the app's queue by reading it whole. Measured as one poll of every agent on
//!   the idle fleet (keys read per agent per poll), times 5 polls a second.
//! - **watch** ([`NodeWork`], what agents do now): read the node's index, its runner and its
//!   app's queue once, then follow watches; claim a known request by reading it alone. Measured
//!   under load: 100 requests/s over the 10 apps for 5 s, each claimed and completed by an
//!   agent (runner record Busy, then Idle, as a real agent writes it).
//!
//! The figure: keys and events read per agent per second, and how it changes from 10 to 1,000
//! agents (the goal: it does not grow).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::keys::Keys;
use fleet_state::lifecycle::runner::{RunnerEvent, RunnerPhase, transition};
use fleet_state::model::{RunnerRecord, update};
use fleet_state::queue;
use fleet_state::store::counted::{Counted, ReadCount};
use fleet_state::store::embedded::EmbeddedStore;
use fleet_state::store::{LeaseId, Store};
use fleet_state::work::NodeWork;

const APPS: u64 = 10;
const RATE: u64 = 100;
const SECONDS: u64 = 5;

fn app(node: u64) -> String {
    format!("app{}", node % APPS)
}

/// A fleet of `n` nodes, one Idle runner each (runner id = node id).
async fn fleet(n: u64) -> (tempfile::TempDir, Arc<dyn Store>, Keys) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let keys = Keys::new("bench");
    let now = chrono::Utc::now();
    let mut ops = Vec::new();
    for node in 1..=n {
        let r = RunnerRecord {
            state: RunnerPhase::Idle { node, since: now },
            ..RunnerRecord::placed(node, &app(node), node, now)
        };
        ops.extend(r.put_ops(&keys));
    }
    for chunk in ops.chunks(store.max_txn_ops().clamp(2, 1000) & !1) {
        store.txn(vec![], chunk.to_vec()).await.unwrap();
    }
    (dir, store, keys)
}

fn per_agent(d: ReadCount, agents: u64, seconds: f64) -> (f64, f64, f64, f64) {
    let a = agents as f64 * seconds;
    (d.keys as f64 / a, d.events as f64 / a, d.gets as f64 / a, d.ranges as f64 / a)
}

fn delta(a: ReadCount, b: ReadCount) -> ReadCount {
    ReadCount {
        gets: b.gets - a.gets,
        ranges: b.ranges - a.ranges,
        keys: b.keys - a.keys,
        bytes: b.bytes - a.bytes,
        watches: b.watches - a.watches,
        events: b.events - a.events,
    }
}

/// One poll of every agent, as agents polled before: keys read per agent per second at 5 polls/s.
async fn poll(n: u64) -> f64 {
    let (_dir, inner, keys) = fleet(n).await;
    let counted = Counted::new(inner.clone());
    let lease = inner.grant_lease(Duration::from_secs(60)).await.unwrap();
    for node in 1..=n {
        let (kvs, _) = counted.range(&keys.runners()).await.unwrap();
        let mine =
            kvs.iter().filter_map(|kv| kv.json::<RunnerRecord>().ok()).filter(|r| r.node() == Some(node)).count();
        assert_eq!(mine, 1);
        let got = queue::claim(&counted, &keys, &app(node), node, node, lease, chrono::Utc::now()).await.unwrap();
        assert!(got.is_none(), "the queue is empty");
    }
    let (keys_per_agent, ..) = per_agent(counted.reads.snapshot(), n, 1.0);
    keys_per_agent * 5.0
}

/// An agent: claims what its view says is queued, one at a time, and completes it at once.
async fn agent(store: Arc<dyn Store>, keys: Keys, node: u64, lease: LeaseId, work: NodeWork) {
    let app = app(node);
    let event = |ev: RunnerEvent| {
        let (store, keys) = (store.clone(), keys.clone());
        async move {
            let t = chrono::Utc::now();
            update(&*store, &keys.runner(node), |cur: &RunnerRecord| {
                Some(RunnerRecord { state: transition(&cur.state, ev.clone(), t).ok()?, ..cur.clone() })
            })
            .await
            .unwrap();
        }
    };
    loop {
        work.changed().await;
        let view = work.view();
        for id in view.queued.get(&app).cloned().unwrap_or_default() {
            work.forget_queued(&app, id);
            let now = chrono::Utc::now();
            if queue::claim_one(&*store, &keys, &app, id, node, node, lease, now).await.unwrap().is_some() {
                event(RunnerEvent::Claim { max: 1 }).await;
                queue::complete(&*store, &keys, &app, id, node, Ok(serde_json::json!({})), now).await.unwrap();
                event(RunnerEvent::Complete).await;
            }
        }
    }
}

/// Agents watching, under load: (keys, events, gets, ranges) per agent per second, and the
/// one-time first read per agent in keys.
async fn watch(n: u64) -> ((f64, f64, f64, f64), f64) {
    let (_dir, inner, keys) = fleet(n).await;
    let counted = Counted::new(inner.clone());
    let reads = counted.reads.clone();
    let store: Arc<dyn Store> = Arc::new(counted);
    let mut works = Vec::new();
    for node in 1..=n {
        works.push(NodeWork::start(store.clone(), keys.clone(), node, vec![app(node)]));
    }
    while works.iter().any(|w| !w.view().synced) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_read = reads.snapshot().keys as f64 / n as f64;
    let mut tasks = Vec::new();
    for (i, work) in works.into_iter().enumerate() {
        let node = i as u64 + 1;
        let lease = inner.grant_lease(Duration::from_secs(120)).await.unwrap();
        tasks.push(tokio::spawn(agent(store.clone(), keys.clone(), node, lease, work)));
    }
    let before = reads.snapshot();
    let t = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    for i in 0..RATE * SECONDS {
        tick.tick().await;
        queue::submit(&*inner, &keys, &format!("app{}", i % APPS), serde_json::json!({"i": i}), chrono::Utc::now())
            .await
            .unwrap();
    }
    loop {
        let d = queue::depths(&*inner, &keys).await.unwrap();
        if d.values().all(|d| d.queued == 0 && d.in_flight == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t.elapsed().as_secs_f64();
    let after = reads.snapshot();
    for t in tasks {
        t.abort();
    }
    (per_agent(delta(before, after), n, elapsed), first_read)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        println!("agent store reads: {APPS} apps, {RATE} requests/s for {SECONDS} s (watch); idle fleet (poll)");
        let mut rows = Vec::new();
        for n in [10u64, 1000] {
            let p = poll(n).await;
            let ((k, e, g, r), first) = watch(n).await;
            println!(
                "  {n:>5} agents  poll: {p:>10.1} keys/agent/s   watch: {k:>6.2} keys + {e:>6.2} events/agent/s ({g:.2} gets, {r:.3} ranges; first read {first:.1} keys)"
            );
            rows.push((n, p, k + e));
        }
        let (small, large) = (rows[0], rows[1]);
        println!(
            "  from {} to {} agents: poll reads {:.1}× as much per agent, watch {:.2}×",
            small.0,
            large.0,
            large.1 / small.1,
            large.2 / small.2
        );
    });
}
