//! The real `fleet-agent` binary against a real etcd (Debian's etcd-server, started on a free
//! loopback port) and a real orchestrator (fleetd's actor tree, on the fake cloud): it registers,
//! passes burn-in on CPU, serves requests with its candle runner, and when killed its lease
//! expires and the orchestrator sees the node unhealthy; a request it was serving is re-queued
//! and served once by another node's agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_agent::model::{Mlp, write_mlp};
use fleet_core::keys::Keys;
use fleet_core::{CapacityType, Cloud, Offering};
use fleet_orchestrator::actors::root::RootActor;
use fleet_orchestrator::actors::{Config, Ctx, InstanceRunning};
use fleet_orchestrator::clock::Clock;
use fleet_orchestrator::lifecycle::node::NodeState;
use fleet_orchestrator::lifecycle::runner::RunnerState;
use fleet_orchestrator::model::{AgentRecord, NodeRecord, RequestState, RunnerRecord, apply_spec};
use fleet_orchestrator::queue;
use fleet_orchestrator::store::etcd::EtcdStore;
use fleet_orchestrator::store::{Store, get_json};
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_orchestrator::testing::harness::h100x8;
use fleet_providers::Provider;
use fleet_providers::fake::{FakeConfig, FakeProvider};
use ractor::Actor;

const TTL_S: u64 = 2;

/// One H100 per node, so each runner gets a node of its own.
fn h100x1() -> Offering {
    let mut o = h100x8(Cloud::Lambda, "us-east-1", "2.5", CapacityType::OnDemand);
    o.instance.name = "gpu_1x_h100_sxm5".into();
    o.instance.gpu_count = 1;
    o
}

struct AgentProc {
    child: Child,
    log: PathBuf,
}

impl AgentProc {
    fn start(dir: &Path, etcd: &str, node: u64, model: &Path) -> AgentProc {
        let cfg = dir.join(format!("agent-{node}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "fleet = \"t\"\nnode = {node}\nendpoints = [\"{etcd}\"]\nlease_ttl = \"{TTL_S}s\"\npoll = \"50ms\"\n\
                 [apps.mlp]\nmodel = \"{}\"\n[burn_in]\ncpu_size = 64\niterations = 2\n",
                model.display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("agent-{node}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_fleet-agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
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
    _etcd: EtcdServer,
    dir: tempfile::TempDir,
}

async fn fleet(runners: u32) -> Fleet {
    let etcd = EtcdServer::start();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.client_url), None, Duration::from_secs(5)).await.unwrap(),
    );
    let keys = Keys::new("t");
    let mut fc = FakeConfig::new(Cloud::Lambda, "t", vec![h100x1()]);
    fc.boot_after = Some(Duration::from_millis(100));
    let fake = Arc::new(FakeProvider::new(fc));
    let mut providers: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
    providers.insert(Cloud::Lambda, fake);
    let config = Config {
        reconcile_every: Duration::from_millis(200),
        node_poll: Duration::from_millis(100),
        agent_grace: Duration::from_secs(60),
        ..Config::default()
    };
    let ctx = Arc::new(Ctx::new("t", store.clone(), providers, Arc::new(InstanceRunning), config, Clock::System));
    let spec = format!(
        "[fleet]\nname = \"t\"\n[apps.mlp]\ngpu = \"H100\"\ngpus = 1\n[apps.mlp.scaling]\nmin_concurrency = {runners}\nmax_concurrency = {runners}\nkeep_alive = \"1h\"\n"
    );
    apply_spec(&*store, &keys, "t", &spec, chrono::Utc::now()).await.unwrap();
    let (_root, _) = Actor::spawn(None, RootActor, ctx.clone()).await.unwrap();
    Fleet { store, keys, ctx, _etcd: etcd, dir: tempfile::tempdir().unwrap() }
}

async fn wait<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ready_nodes(f: &Fleet) -> Vec<NodeRecord> {
    let (kvs, _) = f.store.range(&f.keys.nodes()).await.unwrap();
    kvs.iter()
        .map(|kv| kv.json::<NodeRecord>().unwrap())
        .filter(|n| matches!(n.state, NodeState::Ready { .. }))
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
    let mut a = AgentProc::start(f.dir.path(), &f._etcd.client_url, node, &model);
    let rec = wait("agent registered", Duration::from_secs(30), || async { agent(&f, node).await }).await;
    assert!(rec.health.ok, "agent unhealthy: {:?}\n{}", rec.health, a.log());
    let burn = rec.health.burn_in.clone().expect("burn-in figures");
    assert_eq!(burn.device, "cpu");
    assert!(burn.passed && burn.tflops > 0.0, "{burn:?}");
    assert_eq!(rec.gpus, 0, "this machine has no GPU");

    // The runner comes up on the agent (Pending → Starting by the orchestrator, → Idle by the agent).
    wait("runner idle", Duration::from_secs(20), || async {
        runners(&f).await.iter().any(|r| matches!(r.state, RunnerState::Idle { .. })).then_some(())
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
