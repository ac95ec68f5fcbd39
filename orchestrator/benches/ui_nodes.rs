//! The dashboard's Nodes page at 10,000 nodes, in Debian's headless chromium (the browser the
//! tests drive): the time from the start of a page load to the first page of the table in the
//! DOM with the fleet's counts (the page's `nodes-rendered` mark, taken when it has drawn), and
//! from a click on a column header to the table re-sorted across every node. The same on a fleet
//! of 10 nodes in the same run is the baseline; the limit is 1 s.
//!
//! fleetd's API (the router fleetd serves, and the dashboard task) runs in this process on the
//! embedded store, holding node and agent records as a fleet of that size writes them; no actor
//! tree runs, so nothing changes them while they are measured.
//!
//! `cargo bench -p fleet-orchestrator --bench ui_nodes` (needs chromium and chromium-driver;
//! `FLEET_UI_BENCH_NODES` sets the size, `FLEET_UI_BENCH_RUNS` the loads measured).

#[path = "../tests/common/browser.rs"]
#[allow(dead_code)] // the tests' screenshots
mod browser;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::{Chromedriver, wait_for};
use fleet_core::keys::Keys;
use fleet_core::{CapacityType, Cloud, OfferingKey, Price};
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::model::{AgentHealth, AgentRecord, CandidateRecord, NodeRecord};
use fleet_state::store::embedded::EmbeddedStore;
use fleet_state::store::{Op, Store, to_json};

const CLOUDS: [(Cloud, &[&str], &str); 5] = [
    (Cloud::Aws, &["us-east-1", "us-west-2", "eu-west-1"], "p5.48xlarge"),
    (Cloud::Gcp, &["us-central1", "europe-west4"], "a3-highgpu-8g"),
    (Cloud::Azure, &["eastus", "westeurope"], "Standard_ND96isr_H100_v5"),
    (Cloud::Lambda, &["us-east-1"], "gpu_8x_h100_sxm5"),
    (Cloud::Runpod, &["US-TX-3"], "8x H100 SXM"),
];

/// fleetd's API on `n` nodes (ready, draining, bootstrapping, terminated; five clouds, spot and
/// on-demand; an agent on each live one), listening on a free port.
async fn fleet(n: u64) -> (String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let keys = Keys::new("bench");
    let now = chrono::Utc::now();
    let mut ops = Vec::new();
    for id in 1..=n {
        let (cloud, regions, instance) = CLOUDS[(id % 5) as usize];
        let offering = OfferingKey {
            cloud,
            region: regions[(id / 5) as usize % regions.len()].to_string(),
            zone: None,
            instance_type: instance.to_string(),
            capacity: if id % 3 == 0 { CapacityType::Spot } else { CapacityType::OnDemand },
        };
        let price = Price::parse_decimal(&format!("{}.{:02}", 18 + id % 80, id % 100)).unwrap();
        let since = now - chrono::TimeDelta::seconds((id * 37 % 86_400) as i64);
        let instance_id = format!("i-{id:08x}");
        let state = match id % 20 {
            0 => NodePhase::Terminated { since },
            1 => NodePhase::Bootstrapping { instance_id, offering: offering.clone(), since },
            2 => NodePhase::Draining {
                instance_id,
                offering: offering.clone(),
                reason: fleet_state::lifecycle::node::DrainReason::ScaleDown,
                since,
            },
            _ => NodePhase::Ready { instance_id, offering: offering.clone(), since },
        };
        let live = !matches!(state, NodePhase::Terminated { .. });
        let node = NodeRecord {
            id,
            app: ["llama-70b", "sdxl", "whisper"][(id % 3) as usize].to_string(),
            state,
            candidates: vec![CandidateRecord { offering, price, slots: 8 }],
            attempt: 0,
            slots: 8,
            price: Some(price),
            billing_since: Some(since),
            billing_until: (!live).then_some(now),
            cordoned: id % 97 == 0,
            leaving: None,
            created_at: since,
        };
        ops.push(Op::put(keys.node(id), to_json(&node)));
        if live && id % 20 != 1 {
            let health =
                AgentHealth { ok: true, runners: (0..(id % 9)).collect(), updated_at: Some(now), ..Default::default() };
            let agent = AgentRecord { node: id, lease: 0, version: "bench".into(), gpus: 8, since, health };
            ops.push(Op::put(keys.agent(id), to_json(&agent)));
        }
    }
    for batch in ops.chunks(store.max_txn_ops().max(1)) {
        store.txn(vec![], batch.to_vec()).await.unwrap();
    }
    let ctx = Arc::new(Ctx::new(
        "bench",
        store.clone(),
        BTreeMap::new(),
        Arc::new(InstanceRunning),
        Config::default(),
        fleet_state::clock::Clock::System,
    ));
    let token = fleet_orchestrator::auth::admin_token(&*store, &keys, dir.path(), now).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = fleet_orchestrator::api::router(ctx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::spawn(fleet_orchestrator::dashboard::run(ctx));
    (addr, token, dir)
}

/// Milliseconds from the start of the page's load to its table drawn, and from a click on the
/// Price header to the table drawn again sorted by price.
async fn measure(c: &fantoccini::Client, addr: &str) -> (f64, f64) {
    c.goto("about:blank").await.unwrap();
    c.goto(&format!("http://{addr}/ui#/nodes")).await.unwrap();
    let load = wait_for(
        c,
        "the node table drawn",
        "const m = performance.getEntriesByName('nodes-rendered'); return m.length ? m[0].startTime : null",
        Duration::from_secs(30),
    )
    .await
    .as_f64()
    .unwrap();
    let sort = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const before = performance.getEntriesByName('nodes-rendered').length;
             const t0 = performance.now();
             document.querySelector('#nodes-table th[data-sort=\"price\"]').click();
             (function check() {
               const m = performance.getEntriesByName('nodes-rendered');
               if (m.length > before) done(m[m.length - 1].startTime - t0); else setTimeout(check, 1);
             })();",
            vec![],
        )
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    (load, sort)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: u64 = std::env::var("FLEET_UI_BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let runs: usize = std::env::var("FLEET_UI_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let t = Instant::now();
        let (big, big_token, _d1) = fleet(n).await;
        let (small, small_token, _d2) = fleet(10).await;
        eprintln!("{n} nodes written to the embedded store in {:.1} s", t.elapsed().as_secs_f64());
        // Wait for the first sample of each (the overview the page starts from).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let driver = Chromedriver::start();
        let mut results = Vec::new();
        for (addr, token, nodes) in [(&small, &small_token, 10u64), (&big, &big_token, n)] {
            let c = driver.browser(1280, 800).await;
            c.goto(&format!("http://{addr}/ui")).await.unwrap();
            c.execute("sessionStorage.setItem('fleet.token', arguments[0]); return true", vec![token.as_str().into()])
                .await
                .unwrap();
            // One load to warm the browser's cache of the page's files, not measured.
            measure(&c, addr).await;
            let (mut loads, mut sorts) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let (l, s) = measure(&c, addr).await;
                loads.push(l);
                sorts.push(s);
            }
            let count = c.execute("return document.getElementById('node-count').textContent", vec![]).await.unwrap();
            let rows = c.execute("return document.querySelectorAll('#nodes-table tbody tr').length", vec![]).await.unwrap();
            let errors = browser::console_errors(&c).await;
            assert!(errors.is_empty(), "console errors: {errors:#?}");
            c.close().await.unwrap();
            println!(
                "{nodes:>6} nodes: page load to table drawn p50 {:.0} ms (max {:.0}), click on Price to table re-sorted p50 {:.0} ms (max {:.0}); the page says \"{}\", {} rows drawn",
                median(loads.clone()),
                loads.iter().cloned().fold(0.0, f64::max),
                median(sorts.clone()),
                sorts.iter().cloned().fold(0.0, f64::max),
                count.as_str().unwrap_or_default(),
                rows
            );
            results.push((median(loads), median(sorts)));
        }
        let (small, big) = (results[0], results[1]);
        println!(
            "at {n} nodes: load {:.0} ms = {:.2}x the 1 s limit, {:.2}x the 10-node page; re-sort {:.0} ms = {:.2}x the limit, {:.2}x the 10-node page",
            big.0,
            big.0 / 1000.0,
            big.0 / small.0,
            big.1,
            big.1 / 1000.0,
            big.1 / small.1
        );
    });
}
