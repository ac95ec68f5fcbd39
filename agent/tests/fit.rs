//! The agent holds its machine to what was rented (`[rented]` in its config), with a scripted
//! GPU backend (no GPU here): healthy while the GPUs match, then — when one disappears — it
//! publishes itself unhealthy with a `hardware` reason in its store record, which fleetd acts on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_agent::config::AgentConfig;
use fleet_agent::gpu::Discovery;
use fleet_agent::gpu::fit::Scripted;
use fleet_agent::serve::Agent;
use fleet_core::GpuModel;
use fleet_core::keys::Keys;
use fleet_state::model::{AgentHealth, AgentRecord, GpuReport};
use fleet_state::store::embedded::EmbeddedStore;
use fleet_state::store::{Store, get_json};

fn h100(index: u32) -> GpuReport {
    GpuReport {
        index,
        name: "NVIDIA H100 80GB HBM3".into(),
        model: Some(GpuModel::H100Sxm.name().into()),
        memory_total_mib: 81_559,
        ecc_uncorrected: Some(0),
        ..GpuReport::default()
    }
}

fn found(n: u32) -> Discovery {
    Discovery { gpus: (0..n).map(h100).collect(), cuda_driver: Some("13.0".into()), nvml: true, notes: vec![] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_machine_loses_a_gpu_reports_a_hardware_fault() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let cfg = AgentConfig::parse(
        "agent.toml",
        "fleet = \"t\"\nnode = 3\nendpoints = [\"http://127.0.0.1:1\"]\nlease_ttl = \"5s\"\n\
         [rented]\ngpu_model = \"H100-SXM\"\ngpus = 2\ncheck_every = \"100ms\"\n",
        None,
    )
    .unwrap();
    // Two H100s at first; then one is gone (fell off the bus).
    let backend = Arc::new(Scripted(Mutex::new(vec![found(2), found(2), found(1)])));
    let health = AgentHealth { ok: true, ..AgentHealth::default() };
    let _agent = Agent::start(cfg, store.clone(), 2, health, backend);
    let keys = Keys::new("t");
    let t = std::time::Instant::now();
    let rec = loop {
        if let Some((a, _)) = get_json::<AgentRecord>(&*store, &keys.agent(3)).await.unwrap()
            && a.health.hardware.is_some()
        {
            break a;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no hardware fault published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!rec.health.ok);
    let why = rec.health.hardware.unwrap();
    assert!(why.contains("rented as 2× H100") && why.contains("1 GPU"), "{why}");
    assert_eq!(rec.health.devices.len(), 1, "the devices published are the ones found");
}
