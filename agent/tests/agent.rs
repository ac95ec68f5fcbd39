//! The real `fleet-agent` binary against a real etcd (Debian's etcd-server, started on a free
//! loopback port) and a real orchestrator (fleetd's actor tree, on the fake cloud): it registers,
//! passes burn-in on CPU, serves requests with its candle runner, and when killed its lease
//! expires and the orchestrator sees the node unhealthy; a request it was serving is re-queued
//! and served once by another node's agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::model::{Mlp, write_mlp};
use fleet_core::keys::Keys;
use fleet_orchestrator::actors::{Config, Ctx};
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_orchestrator::testing::live::{LiveFleet, fast_config, spec, wait_for as wait};
use fleet_state::lifecycle::node::NodePhase;
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::{AgentRecord, NodeRecord, RequestState, RunnerRecord};
use fleet_state::queue;
use fleet_state::store::etcd::EtcdStore;
use fleet_state::store::{Store, get_json};

const TTL_S: u64 = 2;

struct AgentProc {
    child: Child,
    log: PathBuf,
}

impl AgentProc {
    fn start(dir: &Path, etcd: &str, node: u64, model: &Path) -> AgentProc {
        Self::start_with(dir, etcd, node, model, "")
    }

    fn start_with(dir: &Path, etcd: &str, node: u64, model: &Path, extra: &str) -> AgentProc {
        let cfg = dir.join(format!("agent-{node}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "fleet = \"t\"\nnode = {node}\nendpoints = [\"{etcd}\"]\nlease_ttl = \"{TTL_S}s\"\npoll = \"50ms\"\n\
                 [apps.mlp]\nmodel = \"{}\"\n[burn_in]\ncpu_size = 128\niterations = 2\nmin_cpu_tflops = 0.00001\n{extra}",
                model.display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("agent-{node}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .env_remove("RAYON_NUM_THREADS")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        AgentProc { child, log }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Fleet {
    store: Arc<dyn Store>,
    keys: Keys,
    ctx: Arc<Ctx>,
    etcd: EtcdServer,
    dir: tempfile::TempDir,
    _live: LiveFleet,
}

async fn fleet(runners: u32) -> Fleet {
    let etcd = EtcdServer::start();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(5)).await.unwrap(),
    );
    let config = Config { agent_grace: Duration::from_secs(60), ..fast_config() };
    let live = LiveFleet::start(store.clone(), config, None, &spec("mlp", runners)).await;
    Fleet {
        store,
        keys: live.keys.clone(),
        ctx: live.ctx.clone(),
        etcd,
        dir: tempfile::tempdir().unwrap(),
        _live: live,
    }
}

async fn ready_nodes(f: &Fleet) -> Vec<NodeRecord> {
    let (kvs, _) = f.store.range(&f.keys.nodes()).await.unwrap();
    kvs.iter()
        .map(|kv| kv.json::<NodeRecord>().unwrap())
        .filter(|n| matches!(n.state, NodePhase::Ready { .. }))
        .collect()
}

async fn runners(f: &Fleet) -> Vec<RunnerRecord> {
    let (kvs, _) = f.store.range(&f.keys.runners()).await.unwrap();
    kvs.iter().map(|kv| kv.json().unwrap()).collect()
}

async fn agent(f: &Fleet, node: u64) -> Option<AgentRecord> {
    get_json::<AgentRecord>(&*f.store, &f.keys.agent(node)).await.unwrap().map(|(a, _)| a)
}

fn unhealthy_no_agent(ctx: &Ctx) -> i64 {
    ctx.metrics.nodes_unhealthy.get_or_create(&fleet_orchestrator::metrics::KindLabel::new("no_agent")).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_serves_with_candle_and_its_death_is_seen_within_ttl() {
    let f = fleet(1).await;
    let model = f.dir.path().join("mlp.safetensors");
    write_mlp(&model, &[8, 32, 2], 3).unwrap();
    let node =
        wait("a ready node", Duration::from_secs(20), || async { ready_nodes(&f).await.first().map(|n| n.id) }).await;
    let mut a = AgentProc::start(f.dir.path(), &f.etcd.client_url, node, &model);
    let rec = wait("agent registered", Duration::from_secs(30), || async { agent(&f, node).await }).await;
    assert!(rec.health.ok, "agent unhealthy: {:?}\n{}", rec.health, a.log());
    let burn = rec.health.burn_in.clone().expect("burn-in figures");
    assert_eq!(burn.device, "cpu");
    assert!(burn.passed && burn.tflops > 0.0, "{burn:?}");
    assert_eq!(rec.gpus, 0, "this machine has no GPU");
    // Started without RAYON_NUM_THREADS, the agent runs with it set (it restarts itself so that
    // candle does not read /proc/cpuinfo on every matrix product), under the same pid.
    let environ = std::fs::read(format!("/proc/{}/environ", a.child.id())).unwrap();
    let threads = environ.split(|b| *b == 0).find_map(|v| v.strip_prefix(b"RAYON_NUM_THREADS="));
    let threads: usize = std::str::from_utf8(threads.expect("RAYON_NUM_THREADS set")).unwrap().parse().unwrap();
    assert!(threads >= 1);

    // The runner comes up on the agent (Pending → Starting by the orchestrator, → Idle by the agent).
    wait("runner idle", Duration::from_secs(20), || async {
        runners(&f).await.iter().any(|r| matches!(r.state, RunnerPhase::Idle { .. })).then_some(())
    })
    .await;

    // Requests are executed by the candle runner: the results are the model's outputs.
    let local = Mlp::load(&model, &candle_core::Device::Cpu).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let x: Vec<f32> = (0..8).map(|j| (i * 8 + j) as f32 / 10.0).collect();
        let input = serde_json::json!({ "x": x });
        let id = queue::submit(&*f.store, &f.keys, "mlp", input.clone(), chrono::Utc::now()).await.unwrap();
        ids.push((id, local.infer(&input).unwrap()));
    }
    for (id, want) in &ids {
        let got = wait("request done", Duration::from_secs(20), || async {
            match queue::get(&*f.store, &f.keys, "mlp", *id).await.unwrap().state {
                RequestState::Done { output, .. } => Some(output),
                _ => None,
            }
        })
        .await;
        // The same f32 outputs (JSON carries them as decimals; compare at f32 precision).
        let f32s = |v: &serde_json::Value| -> Vec<f32> {
            v["y"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        };
        assert_eq!(f32s(&got), f32s(want), "request {id}: {got} vs {want}");
    }

    // Kill the agent: its lease expires and the orchestrator sees the node unhealthy within
    // TTL + 1 s.
    assert_eq!(unhealthy_no_agent(&f.ctx), 0);
    let t = Instant::now();
    a.kill();
    wait("node seen unhealthy", Duration::from_secs(TTL_S + 5), || async {
        (unhealthy_no_agent(&f.ctx) == 1).then_some(())
    })
    .await;
    let seen = t.elapsed();
    println!("agent killed → node unhealthy in {seen:?} (lease TTL {TTL_S} s)");
    assert!(seen <= Duration::from_secs(TTL_S + 1), "seen after {seen:?}");
    assert!(agent(&f, node).await.is_none(), "the agent record went with the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_agent_dies_mid_way_is_served_once_elsewhere() {
    let f = fleet(2).await;
    // Big enough that one request (a batch of 128: 8.8 GFLOP) takes a while on the CPU: the
    // agent is killed while it computes.
    let model = f.dir.path().join("big.safetensors");
    write_mlp(&model, &[256, 4096, 4096, 4096, 8], 5).unwrap();
    let nodes = wait("two ready nodes", Duration::from_secs(20), || async {
        let n = ready_nodes(&f).await;
        (n.len() == 2).then(|| (n[0].id, n[1].id))
    })
    .await;
    let mut a = AgentProc::start(f.dir.path(), &f.etcd.client_url, nodes.0, &model);
    let runner_on = |node: u64| {
        let f = &f;
        async move {
            runners(f).await.into_iter().find(|r| r.node() == Some(node) && matches!(r.state, RunnerPhase::Idle { .. }))
        }
    };
    let ra = wait("runner idle on A", Duration::from_secs(30), || runner_on(nodes.0)).await;

    let x: Vec<Vec<f32>> = (0..128).map(|i| (0..256).map(|j| ((i * 7 + j) % 13) as f32 / 13.0).collect()).collect();
    let input = serde_json::json!({ "x": x });
    let id = queue::submit(&*f.store, &f.keys, "mlp", input.clone(), chrono::Utc::now()).await.unwrap();
    // Kill A as soon as it holds the request.
    wait("A claims the request", Duration::from_secs(20), || async {
        matches!(queue::get(&*f.store, &f.keys, "mlp", id).await.unwrap().state, RequestState::Claimed { runner, .. } if runner == ra.id)
            .then_some(())
    })
    .await;
    a.kill();
    assert!(
        !matches!(queue::get(&*f.store, &f.keys, "mlp", id).await.unwrap().state, RequestState::Done { .. }),
        "A finished before it was killed: make the request heavier"
    );

    // B comes up; A's lease expires, the orchestrator re-queues the request, B serves it.
    let _b = AgentProc::start(f.dir.path(), &f.etcd.client_url, nodes.1, &model);
    let rb = wait("runner idle on B", Duration::from_secs(30), || runner_on(nodes.1)).await;
    let t = Instant::now();
    let done = loop {
        let r = queue::get(&*f.store, &f.keys, "mlp", id).await.unwrap();
        if matches!(r.state, RequestState::Done { .. }) {
            break r;
        }
        if t.elapsed() > Duration::from_secs(30) {
            panic!("not served elsewhere: {:?}\nrunners: {:?}\nB's log:\n{}", r.state, runners(&f).await, _b.log());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let RequestState::Done { output, runner, .. } = &done.state else { unreachable!() };
    assert_eq!(*runner, rb.id, "served by B's runner");
    assert_eq!(done.attempts, 2, "claimed twice: by A (lost) and by B");
    let want = Mlp::load(&model, &candle_core::Device::Cpu).unwrap().infer(&input).unwrap();
    let rows = |v: &serde_json::Value| v["y"].as_array().unwrap().len();
    assert_eq!(rows(output), 128);
    assert_eq!(output["y"][17][3].as_f64().map(|v| v as f32), want["y"][17][3].as_f64().map(|v| v as f32));
    assert!(f.ctx.metrics.requests_requeued.get() >= 1);
}

/// A local HTTP server answering as AWS's instance metadata service does (IMDSv2): no notice
/// until `notice` is set, then the instance-action document.
async fn fake_imds(notice: Arc<std::sync::Mutex<Option<String>>>) -> String {
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, put};
    let app = Router::new().route("/latest/api/token", put(|| async { "token-abc" })).route(
        "/latest/meta-data/spot/instance-action",
        get(move |h: HeaderMap| {
            let notice = notice.clone();
            async move {
                if h.get("x-aws-ec2-metadata-token").map(|v| v.as_bytes()) != Some(b"token-abc") {
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                match notice.lock().unwrap().clone() {
                    Some(doc) => (StatusCode::OK, doc),
                    None => (StatusCode::NOT_FOUND, "<html>404 - Not Found</html>".into()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interruption_notice_reaches_the_store_within_one_poll() {
    let f = fleet(1).await;
    let model = f.dir.path().join("mlp.safetensors");
    write_mlp(&model, &[8, 32, 2], 3).unwrap();
    let node =
        wait("a ready node", Duration::from_secs(20), || async { ready_nodes(&f).await.first().map(|n| n.id) }).await;
    let notice = Arc::new(std::sync::Mutex::new(None));
    let imds = fake_imds(notice.clone()).await;
    let poll = Duration::from_millis(500);
    let extra = format!("[interruption]\nsource = \"aws\"\nendpoint = \"{imds}\"\npoll = \"500ms\"\n");
    let a = AgentProc::start_with(f.dir.path(), &f.etcd.client_url, node, &model, &extra);
    wait("agent registered", Duration::from_secs(30), || async { agent(&f, node).await }).await;
    // A few polls with nothing to say.
    tokio::time::sleep(poll * 3).await;
    assert!(agent(&f, node).await.unwrap().health.interruption.is_none(), "{}", a.log());

    *notice.lock().unwrap() = Some(r#"{"action": "terminate", "time": "2026-11-26T08:22:00Z"}"#.into());
    let t = Instant::now();
    let rec = wait("notice in the store", Duration::from_secs(5), || async {
        agent(&f, node).await.filter(|r| r.health.interruption.is_some())
    })
    .await;
    let took = t.elapsed();
    println!("interruption notice → store in {took:?} (poll {poll:?})");
    assert!(took <= poll + Duration::from_millis(200), "took {took:?}");
    let n = rec.health.interruption.unwrap();
    assert_eq!((n.source.as_str(), n.kind.as_str()), ("aws", "terminate"));
    assert_eq!(n.not_before.as_deref(), Some("2026-11-26T08:22:00Z"));
    // The orchestrator sees it as an unhealthy (interrupted) node.
    wait("orchestrator sees the interruption", Duration::from_secs(5), || async {
        let g = f
            .ctx
            .metrics
            .nodes_unhealthy
            .get_or_create(&fleet_orchestrator::metrics::KindLabel::new("interrupted"))
            .get();
        (g == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_too_large_for_the_store_fails_the_request_with_the_reason() {
    let f = fleet(1).await;
    let model = f.dir.path().join("wide.safetensors");
    // One number in, 64 out: 20,000 rows make a small request and a ~25 MB result.
    write_mlp(&model, &[1, 64], 9).unwrap();
    let node =
        wait("a ready node", Duration::from_secs(20), || async { ready_nodes(&f).await.first().map(|n| n.id) }).await;
    let a = AgentProc::start(f.dir.path(), &f.etcd.client_url, node, &model);
    let x: Vec<Vec<f32>> = (0..20_000).map(|i| vec![i as f32]).collect();
    let id = queue::submit(&*f.store, &f.keys, "mlp", serde_json::json!({ "x": x }), chrono::Utc::now()).await.unwrap();
    let why = wait("request failed", Duration::from_secs(30), || async {
        match queue::get(&*f.store, &f.keys, "mlp", id).await.unwrap().state {
            RequestState::Failed { error, .. } => Some(error),
            RequestState::Done { .. } => panic!("a 25 MB result cannot have been stored"),
            _ => None,
        }
    })
    .await;
    assert!(why.contains("the result could not be stored"), "{why}\n{}", a.log());
    // The runner is free again.
    wait("runner idle", Duration::from_secs(10), || async {
        runners(&f).await.iter().any(|r| matches!(r.state, RunnerPhase::Idle { .. })).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_survives_losing_etcd_and_registers_again() {
    let mut f = fleet(1).await;
    let model = f.dir.path().join("mlp.safetensors");
    write_mlp(&model, &[8, 32, 2], 3).unwrap();
    let node =
        wait("a ready node", Duration::from_secs(20), || async { ready_nodes(&f).await.first().map(|n| n.id) }).await;
    let mut a = AgentProc::start(f.dir.path(), &f.etcd.client_url, node, &model);
    wait("agent registered", Duration::from_secs(30), || async { agent(&f, node).await }).await;
    wait("runner idle", Duration::from_secs(20), || async {
        runners(&f).await.iter().any(|r| matches!(r.state, RunnerPhase::Idle { .. })).then_some(())
    })
    .await;

    // etcd away for more than twice the agent's lease TTL.
    f.etcd.stop();
    tokio::time::sleep(Duration::from_secs(2 * TTL_S + 1)).await;
    assert!(a.child.try_wait().unwrap().is_none(), "the agent died without its store:\n{}", a.log());
    f.etcd.restart();

    // It is registered again and serves.
    let rec = wait("registered again", Duration::from_secs(20), || async { agent(&f, node).await }).await;
    assert!(rec.health.ok);
    let id = queue::submit(
        &*f.store,
        &f.keys,
        "mlp",
        serde_json::json!({"x": [0, 1, 2, 3, 4, 5, 6, 7]}),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    wait("served after the outage", Duration::from_secs(30), || async {
        matches!(queue::get(&*f.store, &f.keys, "mlp", id).await.unwrap().state, RequestState::Done { .. })
            .then_some(())
    })
    .await;
    assert!(a.child.try_wait().unwrap().is_none(), "{}", a.log());
}
