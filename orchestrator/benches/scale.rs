//! fleetd at scale on the fake provider: 10 apps × 1,250 ready nodes × 8 runners (12,500 nodes,
//! 100,000 runners) in steady state, then a demand change (+10 % runners on every app). Measures:
//! the first pass over that state (actor tree built), a steady pass, the time from the demand
//! change (the new spec written) until the fake cloud has received every launch call of the change
//! *and* every new runner record is in the store (seen by a watch), with where that time goes, and
//! the process's resident memory.
//!
//! `FLEET_BENCH_NODES_PER_APP` (default 1250) scales it down for a quick run; `FLEET_BENCH_STORE=etcd`
//! runs it on a real etcd (started on loopback) instead of the embedded store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::keys::{Counter, Keys};
use fleet_core::{CapacityType, Cloud};
use fleet_orchestrator::actors::root::RootActor;
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_orchestrator::testing::harness::h100x8;
use fleet_providers::Provider;
use fleet_providers::fake::{FakeConfig, FakeProvider};
use fleet_state::clock::Clock;
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::{CandidateRecord, NodeRecord, RunnerRecord, apply_spec};
use fleet_state::store::embedded::EmbeddedStore;
use fleet_state::store::{Op, Store, to_json};
use ractor::Actor;

// The allocator fleetd runs with (see main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APPS: usize = 10;
const RUNNERS_PER_NODE: u64 = 8;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn spec(min: u64) -> String {
    let mut s = String::from("[fleet]\nname = \"bench\"\n");
    for a in 0..APPS {
        s += &format!(
            "[apps.app{a}]\ngpu = \"H100\"\ngpus = 1\n[apps.app{a}.scaling]\nmin_concurrency = {min}\nmax_concurrency = {}\nkeep_alive = \"1h\"\n",
            min * 2
        );
    }
    s
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t.elapsed()
}

fn main() {
    // As fleetd runs (see its main).
    fleet_orchestrator::allocator::restart_with_options();
    tracing_subscriber::fmt()
        // Each pass's phases (debug) are the profile of where the time goes.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,fleet_orchestrator::actors::fleet::pass=debug".into()),
        )
        .init();
    let per_app: u64 = std::env::var("FLEET_BENCH_NODES_PER_APP").ok().and_then(|v| v.parse().ok()).unwrap_or(1250);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        // FLEET_BENCH_STORE=etcd: a real etcd in its own process (the daemon then holds only its
        // own state, as in production); default: the embedded store, inside this process.
        let _etcd;
        let store_is_etcd = std::env::var("FLEET_BENCH_STORE").as_deref() == Ok("etcd");
        let store: Arc<dyn Store> = if store_is_etcd {
            let server = fleet_orchestrator::testing::etcd::EtcdServer::start();
            let s = fleet_state::store::etcd::EtcdStore::connect(
                std::slice::from_ref(&server.client_url),
                None,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            _etcd = Some(server);
            Arc::new(s)
        } else {
            _etcd = None;
            Arc::new(EmbeddedStore::open(dir.path()).unwrap())
        };
        println!("store: {store:?}");
        let keys = Keys::new("bench");
        let clock = Clock::System;
        let now = clock.now();
        let offering = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
        let fake = Arc::new(FakeProvider::new(FakeConfig::new(Cloud::Lambda, "bench", vec![offering.clone()])));

        // Steady state, written directly: every node ready, every runner idle.
        let t = Instant::now();
        let mut ops = Vec::new();
        let (mut node_id, mut runner_id) = (1u64, 1u64);
        for a in 0..APPS {
            for _ in 0..per_app {
                // The fake cloud runs the instances the records name.
                let app = format!("app{a}");
                let req = fleet_providers::LaunchRequest::new("bench", &node_id.to_string(), &app, offering.key());
                let inst = fake.launch(&req).await.unwrap();
                let rec = NodeRecord {
                    id: node_id,
                    app,
                    state: NodePhase::Ready { instance_id: inst.id, offering: offering.key(), since: now },
                    candidates: vec![CandidateRecord { offering: offering.key(), price: offering.price, slots: 8 }],
                    attempt: 0,
                    slots: 8,
                    price: Some(offering.price),
                    billing_since: Some(now),
                    billing_until: None,
                    cordoned: false,
                    leaving: None,
                    created_at: now,
                };
                ops.push(Op::put(keys.node(node_id), to_json(&rec)));
                for _ in 0..RUNNERS_PER_NODE {
                    let r = RunnerRecord {
                        state: RunnerPhase::Idle { node: node_id, since: now },
                        ..RunnerRecord::placed(runner_id, &rec.app, node_id, now)
                    };
                    ops.extend(r.put_ops(&keys));
                    runner_id += 1;
                }
                node_id += 1;
            }
        }
        fake.boot_all();
        ops.push(Op::put_json(keys.counter(Counter::Node), &node_id));
        ops.push(Op::put_json(keys.counter(Counter::Runner), &runner_id));
        let max = store.max_txn_ops();
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            store.txn(vec![], ops.by_ref().take(max).collect()).await.unwrap();
        }
        let nodes = node_id - 1;
        let runners = runner_id - 1;
        println!("setup: {nodes} nodes, {runners} runners written in {:?}", t.elapsed());
        let min = per_app * RUNNERS_PER_NODE;
        apply_spec(&*store, &keys, "bench", &spec(min), now).await.unwrap();
        // The daemon starts on that state as it would after a restart: the embedded store is
        // opened again from its file (the setup's own buffers are gone).
        drop(ops);
        let store: Arc<dyn Store> = if store_is_etcd {
            store
        } else {
            drop(store);
            let t = Instant::now();
            let s = EmbeddedStore::open(dir.path()).unwrap();
            println!("store opened again (its log applied to the file, every key loaded): {:?}", t.elapsed());
            Arc::new(s)
        };

        let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
        providers.insert(Cloud::Lambda, fake.clone());
        let config = Config {
            reconcile_every: Duration::from_secs(3600),
            node_poll: Duration::from_secs(3600),
            ..Config::default()
        };
        let ctx = Arc::new(Ctx::new("bench", store.clone(), providers, Arc::new(InstanceRunning), config, clock));
        let metrics = ctx.metrics.clone();
        let rss_before = rss_mib();
        let (_root, _) = Actor::spawn(None, RootActor, ctx.clone()).await.unwrap();
        let passes = || metrics.reconcile_seconds_count();
        let first = wait_for("first pass", Duration::from_secs(600), || passes() >= 1).await;
        println!("first pass over {nodes} nodes / {runners} runners (actor tree built): {first:?} after start");
        tokio::time::sleep(Duration::from_secs(2)).await;

        // A steady pass: nothing to change.
        let before = passes();
        let t = Instant::now();
        ctx.nudge.notify_one();
        let steady = wait_for("steady pass", Duration::from_secs(600), || passes() > before).await;
        assert_eq!(metrics.nodes_requested.get(), 0, "steady state needs no new node");
        println!("steady pass: {steady:?} ({:?} since nudge)", t.elapsed());

        // The demand change: +10 % runners for every app.
        let extra_nodes = (per_app / 10).max(1);
        let new_min = min + extra_nodes * RUNNERS_PER_NODE;
        let want = extra_nodes * APPS as u64;
        let want_runners = want * RUNNERS_PER_NODE;
        // New runner records, counted as the store announces them (a key created, not updated).
        let (_, rev) = store.range("/bench-revision-probe/").await.unwrap();
        let mut watch = store.watch(&keys.runners(), rev + 1).await.unwrap();
        let runners_done = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let (done, mut created) = (runners_done.clone(), 0u64);
        tokio::spawn(async move {
            while let Some(Ok(ev)) = watch.recv().await {
                if let fleet_state::store::WatchEvent::Put(kv) = ev
                    && kv.create_revision == kv.mod_revision
                {
                    created += 1;
                    if created == want_runners {
                        *done.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                }
            }
        });
        let (calls_before, launches_before) = (fake.call_count(), fake.launch_count());
        let t = Instant::now();
        let fake_t0 = fake.elapsed();
        apply_spec(&*store, &keys, "bench", &spec(new_min), clock.now()).await.unwrap();
        ctx.nudge.notify_one();
        wait_for("launch calls and runner records", Duration::from_secs(600), || {
            fake.launch_count() >= launches_before + want as usize && runners_done.lock().unwrap().is_some()
        })
        .await;
        // The clock stops at the later of the two events, each taken where it happened: the
        // fake's own record of the last launch call, the watch's receipt of the last runner.
        let launches: Vec<Duration> = fake
            .timed_calls()
            .into_iter()
            .skip(calls_before)
            .filter(|(_, c)| matches!(c, fleet_providers::fake::Call::Launch { .. }))
            .map(|(at, _)| at - fake_t0)
            .collect();
        assert!(launches.len() as u64 >= want, "{} launch calls for {want} nodes", launches.len());
        let last_launch = launches[want as usize - 1];
        let last_runner = runners_done.lock().unwrap().unwrap() - t;
        let decided = last_launch.max(last_runner);
        println!(
            "demand change (+{want_runners} runners on {APPS} apps): {want} launch calls received by the cloud and \
             {want_runners} runner records written in {decided:?} (last launch call {last_launch:?}, last runner \
             record {last_runner:?}; first launch call {:?}) — goal < 100 ms: {:.2}× the goal",
            launches[0],
            decided.as_secs_f64() / 0.1
        );
        let rss = rss_mib();
        println!(
            "RSS: {rss:.0} MiB (before the actor tree: {rss_before:.0} MiB) — goal < 200 MB: {:.2}× the goal",
            rss * 1.048_576 / 200.0
        );
    });
}
