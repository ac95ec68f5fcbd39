//! The simulator against the real orchestrator: the same small scenario (one offering, requests on
//! a fixed schedule, the same delays) through `fleetsim` and through fleetd's actor tree on the
//! fake cloud in paused tokio time. They must agree on launches and on cost within 2 %.

use std::time::Duration;

use fleet_core::{CapacityType, Cloud, Money};
use fleet_orchestrator::actors::Config;
use fleet_orchestrator::sim_agents::SimAgentConfig;
use fleet_orchestrator::testing::harness::{CloudSetup, Harness, h100x8};
use fleet_simulator::scenario::Scenario;
use fleet_state::lifecycle::node::NodePhase;

const REQUESTS: u64 = 40;
const EVERY_S: u64 = 15;
const PRICE: &str = "3.60";
/// 1,000 context tokens at 10,000/s + 100 generated at 50/s.
const SERVICE: Duration = Duration::from_millis(2100);
const BOOT: Duration = Duration::from_secs(30);
const MODEL_LOAD: Duration = Duration::from_secs(5);

fn spec(gpus: u32) -> String {
    format!(
        "[fleet]\nname = \"test\"\n[apps.a]\ngpu = \"H100\"\ngpus = {gpus}\n[apps.a.scaling]\nmax_concurrency = 2\nkeep_alive = \"60s\"\n"
    )
}

fn simulate() -> (u64, Money) {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    std::fs::write(
        p("catalog.csv"),
        format!("cloud,region,zone,instance_type,gpu,gpu_count,vcpus,memory_gib,interconnect,capacity,usd_per_hour,source,as_of\nlambda,us-east-1,,gpu_1x_h100_sxm5,H100-SXM,1,26,225,,on-demand,{PRICE},test,2026-11-25\n"),
    )
    .unwrap();
    std::fs::write(p("fleet.toml"), spec(1)).unwrap();
    let mut trace = String::from("TIMESTAMP,ContextTokens,GeneratedTokens\n");
    for i in 0..REQUESTS {
        let t = i * EVERY_S;
        trace += &format!("2023-11-16 10:{:02}:{:02}.0000000,1000,100\n", t / 60, t % 60);
    }
    std::fs::write(p("trace.csv"), trace).unwrap();
    let sc = format!(
        "name = \"crosscheck\"\nspec = \"fleet.toml\"\ncatalog = [\"catalog.csv\"]\nduration = \"20m\"\ntick = \"1s\"\n\
         [demand]\napp = \"a\"\ntrace = \"trace.csv\"\n\
         [service]\nprefill_tokens_per_s = 10000.0\ndecode_tokens_per_s = 50.0\nmodel_load = \"{}s\"\n\
         [clouds.default]\nprovision_delay = \"0s\"\nprovision_jitter = \"0s\"\nboot = \"{}s\"\n",
        MODEL_LOAD.as_secs(),
        BOOT.as_secs()
    );
    std::fs::write(p("scenario.toml"), sc).unwrap();
    let scenario = Scenario::load(&p("scenario.toml")).unwrap_or_else(|e| panic!("{e}"));
    let r = fleet_simulator::run(&scenario).unwrap();
    assert_eq!(r.served, REQUESTS);
    (r.nodes_launched, r.cost)
}

async fn orchestrate() -> (u64, Money) {
    let offering = h100x8(Cloud::Lambda, "us-east-1", PRICE, CapacityType::OnDemand);
    let clouds = vec![CloudSetup::new(Cloud::Lambda, vec![offering])];
    let config = Config { node_poll: Duration::from_secs(1), ..Config::default() };
    let agents = SimAgentConfig { load_time: MODEL_LOAD, service_time: SERVICE, ..SimAgentConfig::default() };
    let h = Harness::start(clouds, config, agents, None).await;
    // Eight GPUs per runner on the 8-GPU offering: one runner per node, as in the simulation.
    h.apply(&spec(8)).await;
    let start = tokio::time::Instant::now();
    for i in 0..REQUESTS {
        tokio::time::sleep_until(start + Duration::from_secs(i * EVERY_S)).await;
        h.submit("a", 1).await;
    }
    let settled = h
        .run_until(Duration::from_secs(600), || async {
            h.live_instances() == 0 && h.nodes().await.iter().all(|n| matches!(n.state, NodePhase::Terminated { .. }))
        })
        .await;
    assert!(settled, "scaled back to zero");
    assert_eq!(h.agents.completed().len() as u64, REQUESTS);
    let nodes = h.nodes().await;
    let launched = nodes.iter().filter(|n| n.billing_since.is_some()).count() as u64;
    let now = h.ctx.clock.now();
    (launched, nodes.iter().map(|n| n.cost_until(now)).sum())
}

#[tokio::test(start_paused = true)]
async fn simulator_and_orchestrator_agree_on_launches_and_cost() {
    let (sim_launches, sim_cost) = simulate();
    let (real_launches, real_cost) = orchestrate().await;
    println!("simulator: {sim_launches} launches, {sim_cost}; orchestrator: {real_launches} launches, {real_cost}");
    assert_eq!(sim_launches, real_launches, "launches");
    let (a, b) = (sim_cost.micros() as f64, real_cost.micros() as f64);
    let diff = (a - b).abs() / a.max(b);
    assert!(diff < 0.02, "cost differs by {:.2} %: simulator {sim_cost}, orchestrator {real_cost}", diff * 100.0);
}
