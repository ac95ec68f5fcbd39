//! The agent's footprint and speed (a bench binary, not criterion: whole-process measurements).
//! `cargo bench -p fleet-agent --bench agent`
//!
//! - burn-in: `fleet-agent burn-in` on this machine's CPU (f32, 1024² and 2048²) as it reports;
//! - RSS of a running agent (real etcd, one runner of a [256, 1024, 1024, 16] MLP): idle after
//!   registering, and at its peak while serving a stream of requests (batches of 4), with the
//!   requests served per second.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::model::write_mlp;
use fleet_core::keys::Keys;
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::{RequestState, RunnerRecord};
use fleet_state::queue;
use fleet_state::store::Store;
use fleet_state::store::etcd::EtcdStore;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_fleet-agent");
    for size in ["1024", "2048"] {
        let out = Command::new(bin)
            .args(["burn-in", "--cpu-size", size, "--iterations", "8", "-o", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        println!(
            "burn-in {}: {:.3} TFLOP/s ({} {}², {} products)",
            v[0]["device"],
            v[0]["tflops"].as_f64().unwrap(),
            v[0]["dtype"],
            size,
            v[0]["iterations"]
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let etcd = EtcdServer::start();
        let store: Arc<dyn Store> = Arc::new(
            EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(5)).await.unwrap(),
        );
        let keys = Keys::new("b");
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.safetensors");
        write_mlp(&model, &[256, 1024, 1024, 16], 1).unwrap();
        let cfg = dir.path().join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "fleet = \"b\"\nnode = 1\nendpoints = [\"{}\"]\nlease_ttl = \"5s\"\npoll = \"20ms\"\n[apps.m]\nmodel = \"{}\"\nmax_concurrency = 2\n[burn_in]\ncpu_size = 256\n",
                etcd.client_url,
                model.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        while store.get(&keys.agent(1)).await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!("agent RSS idle (registered, no runner): {:.1} MiB", rss_mib(pid));

        // A runner assigned to the node, as the orchestrator would.
        let now = chrono::Utc::now();
        let r = RunnerRecord {
            state: RunnerPhase::Starting { node: 1, since: now },
            ..RunnerRecord::placed(1, "m", 1, now)
        };
        store.txn(vec![], r.put_ops(&keys)).await.unwrap();
        loop {
            let (v, _) = fleet_state::store::get_json::<RunnerRecord>(&*store, &keys.runner(1)).await.unwrap().unwrap();
            if matches!(v.state, RunnerPhase::Idle { .. }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!("agent RSS with its runner loaded, idle: {:.1} MiB", rss_mib(pid));

        let n = 200;
        let x: Vec<Vec<f32>> = (0..4).map(|i| (0..256).map(|j| ((i + j) % 7) as f32).collect()).collect();
        let t = Instant::now();
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(queue::submit(&*store, &keys, "m", serde_json::json!({ "x": x }), chrono::Utc::now()).await.unwrap());
        }
        let mut peak: f64 = 0.0;
        loop {
            peak = peak.max(rss_mib(pid));
            let d = queue::depths(&*store, &keys).await.unwrap();
            if d.get("m").is_none_or(|d| d.queued == 0 && d.in_flight == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in &ids {
            assert!(matches!(queue::get(&*store, &keys, "m", *id).await.unwrap().state, RequestState::Done { .. }));
        }
        let secs = t.elapsed().as_secs_f64();
        println!("agent RSS peak under load: {peak:.1} MiB; {n} requests (batch 4) in {secs:.2} s = {:.0} requests/s", n as f64 / secs);
        let _ = child.kill();
        let _ = child.wait();
    });
}
