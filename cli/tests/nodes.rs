//! `fleetctl get nodes` / `describe node` against fleetd's real API (served in-process on a
//! loopback port, embedded store): what the agents report shows, and so does an unhealthy node.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::{CapacityType, Cloud};
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_orchestrator::testing::harness::h100x8;
use fleet_state::clock::Clock;
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::model::{
    AgentHealth, AgentRecord, BurnInReport, CandidateRecord, GpuReport, InterruptionNotice, NodeRecord,
};
use fleet_state::store::embedded::EmbeddedStore;
use fleet_state::store::{Store, to_json};

static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn fleetctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .env("FLEET_TOKEN", TOKEN.get().map(String::as_str).unwrap_or_default())
        .env_remove("FLEET_CONFIG")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_show_what_their_agents_report() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let ctx = Arc::new(Ctx::new(
        "t",
        store.clone(),
        BTreeMap::new(),
        Arc::new(InstanceRunning),
        Config::default(),
        Clock::System,
    ));
    let now = chrono::Utc::now();
    let long_ago = now - chrono::Duration::minutes(10);
    let o = h100x8(Cloud::Lambda, "us-east-1", "20", CapacityType::OnDemand);
    for id in [1, 2] {
        let n = NodeRecord {
            id,
            app: "llm".into(),
            state: NodePhase::Ready { instance_id: format!("i-{id}"), offering: o.key(), since: long_ago },
            candidates: vec![CandidateRecord { offering: o.key(), price: o.price, slots: 8 }],
            attempt: 0,
            slots: 8,
            price: Some(o.price),
            billing_since: Some(long_ago),
            billing_until: None,
            cordoned: false,
            leaving: None,
            created_at: long_ago,
        };
        store.put(&ctx.keys.node(id), to_json(&n), None).await.unwrap();
    }
    // Node 1's agent reports 8 GPUs, a passed burn-in, two runners and a spot notice; node 2 has none.
    let gpu = |index| GpuReport {
        index,
        name: "NVIDIA H100 80GB HBM3".into(),
        model: Some("H100-SXM".into()),
        memory_total_mib: 81_559,
        memory_used_mib: Some(1_024),
        utilization_pct: Some(97),
        temperature_c: Some(61),
        ecc_uncorrected: Some(0),
        throttling: vec![],
    };
    let health = AgentHealth {
        ok: true,
        push_addr: None,
        push_cert_sha256: None,
        reason: None,
        hardware: None,
        devices: (0..8).map(gpu).collect(),
        burn_in: Some(BurnInReport {
            device: "cuda:3".into(),
            dtype: "bf16".into(),
            size: 8192,
            iterations: 50,
            tflops: 771.4,
            expected_tflops: Some(989.0),
            required_tflops: 494.5,
            passed: true,
            at: now,
        }),
        runners: vec![11, 12],
        in_flight: 1,
        interruption: Some(InterruptionNotice {
            source: "aws".into(),
            kind: "terminate".into(),
            not_before: Some("2026-11-26T09:00:00Z".into()),
            noticed_at: now,
        }),
        updated_at: Some(now),
        cold_starts: vec![fleet_state::model::ColdStart {
            runner: 11,
            app: "llm".into(),
            model: Some(format!("sha256:{}", "ab".repeat(32))),
            fetch_s: 12.5,
            load_s: 3.25,
            bytes_origin: 2_000_000_000,
            bytes_peers: 14_000_000_000,
            bytes_cached: 0,
            first_token_s: Some(0.75),
            at: now,
        }],
    };
    let agent = AgentRecord { node: 1, lease: 7, version: "0.1.0".into(), gpus: 8, since: now, health };
    store.put(&ctx.keys.agent(1), to_json(&agent), None).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let token = fleet_orchestrator::auth::admin_token(&*store, &ctx.keys, dir.path(), now).await.unwrap();
    TOKEN.set(token).unwrap();
    let app = fleet_orchestrator::api::router(ctx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let u = url.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || fleetctl(&["get", "nodes", "--server", &u])).await.unwrap();
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("BURN-IN") && lines[0].contains("HEALTH"), "{out}");
    let one = lines.iter().find(|l| l.trim_start().starts_with("1 ")).expect("node 1");
    assert!(
        one.contains("771.4 TFLOP/s cuda:3") && one.contains("unhealthy: the cloud announced 'terminate'"),
        "{one}"
    );
    assert!(one.contains("lambda/us-east-1/lambda-8xh100"), "{one}");
    let two = lines.iter().find(|l| l.trim_start().starts_with("2 ")).expect("node 2");
    assert!(two.contains("unhealthy: no live agent"), "{two}");

    let u = url.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || fleetctl(&["describe", "node", "1", "--server", &u])).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("NVIDIA H100 80GB HBM3") && out.contains("81559"), "{out}");
    assert_eq!(out.matches("NVIDIA H100 80GB HBM3").count(), 8, "{out}");
    assert!(out.contains("Runners:      11, 12") && out.contains("In flight:    1"), "{out}");
    assert!(out.contains("Interruption: aws 'terminate' (not before 2026-11-26T09:00:00Z"), "{out}");
    assert!(
        out.contains("runner 11 (llm): fetch 12.50 s (2000.0 MB from the origin, 14000.0 from peers, 0.0 cached), load 3.25 s, first token 0.75 s, model sha256:abababababab"),
        "{out}"
    );
    assert!(out.contains("required 494.5, expected 989, passed"), "{out}");
    assert!(out.contains("Events:\n  (none)"), "{out}");

    // The node's events, in `describe node` and `get events --node 1`; what a cloud's error body
    // carried into a message never reaches the terminal as control sequences.
    use fleet_state::events::{EventKind, NewEvent, record};
    let failed = NewEvent {
        kind: EventKind::LaunchFailed,
        app: Some("llm".into()),
        node: Some(1),
        message: "aws/us-east-1/p5.48xlarge refused: capacity \u{1b}[2J\u{1b}]0;owned\u{7}gone; failing over".into(),
    };
    record(&*store, &ctx.keys, now, failed).await.unwrap();
    let other = NewEvent { kind: EventKind::Ready, app: Some("llm".into()), node: Some(2), message: "node two".into() };
    record(&*store, &ctx.keys, now, other).await.unwrap();
    let u = url.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || fleetctl(&["describe", "node", "1", "--server", &u])).await.unwrap();
    assert!(ok, "{err}");
    let events = out.split("Events:").nth(1).unwrap();
    assert!(events.contains("launch-failed") && events.contains("capacity gone; failing over"), "{out}");
    assert!(!events.contains("node two") && !out.contains('\u{1b}'), "{out}");
    let u = url.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || fleetctl(&["get", "events", "--node", "2", "--server", &u])).await.unwrap();
    assert!(ok, "{err}");
    assert!(out.starts_with("TIME") && out.contains("ready") && out.contains("node two"), "{out}");
    assert!(!out.contains("launch-failed"), "{out}");

    // An agent on a machine without a GPU (every `--local` and demo node): a CPU burn-in, which
    // has no expected TFLOP/s, and no devices.
    let mut cpu = agent.clone();
    cpu.health.devices.clear();
    cpu.health.burn_in = Some(BurnInReport {
        device: "cpu".into(),
        dtype: "f32".into(),
        size: 512,
        iterations: 5,
        tflops: 0.2,
        expected_tflops: None,
        required_tflops: 0.05,
        passed: true,
        at: now,
    });
    store.put(&ctx.keys.agent(1), to_json(&cpu), None).await.unwrap();
    let u = url.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || fleetctl(&["describe", "node", "1", "--server", &u])).await.unwrap();
    assert!(ok, "describe node on a CPU agent: {err}");
    assert!(out.contains("f32 512×512 ×5: required 0.05, expected -, passed"), "{out}");
    assert!(out.contains("GPUs:         0 (CPU only)"), "{out}");
    store.put(&ctx.keys.agent(1), to_json(&agent), None).await.unwrap();

    let u = url.clone();
    let (ok, out, _) =
        tokio::task::spawn_blocking(move || fleetctl(&["get", "nodes", "-o", "json", "--server", &u])).await.unwrap();
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["agent"]["health"]["devices"].as_array().unwrap().len(), 8);

    // A node that does not exist: one clear line and a non-zero exit.
    let u = url.clone();
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || fleetctl(&["describe", "node", "99", "--server", &u])).await.unwrap();
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("fleetd answered 404: node 99 not found"), "{err}");
}
