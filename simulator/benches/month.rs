//! Wall time and events per second for a 30-day month built from the Azure code trace, on a fleet
//! capped at 1,000 GPUs (125 runners of 8 × H100).
//!
//!   cargo bench -p fleet-simulator --bench month

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_core::Catalog;
use fleet_core::spec::FleetSpec;
use fleet_simulator::scenario::{CloudModel, Demand, DemandSource, Policy, Scenario, ServiceModel};

const SPEC: &str = r#"
[apps.llm]
gpu = "H100"
gpus = 8
[apps.llm.placement]
spot = "auto"
base_on_demand = 8
[apps.llm.scaling]
min_concurrency = 4
max_concurrency = 125
concurrency_buffer_perc = 10
max_multiplexing = 1
keep_alive = "10m"
scaling_delay = "30s"
"#;

fn main() {
    let Some(data) = fleet_core::catalog::shared_data_dir() else { return };
    let trace: PathBuf = data.join("traces/azure_llm_2023/AzureLLMInferenceTrace_code.csv");
    let sc = Scenario {
        name: "month-code-1000-gpus".into(),
        policy: Policy::Spec,
        spec: FleetSpec::parse("bench.toml", SPEC).unwrap(),
        seed: 1,
        duration: Duration::from_secs(
            std::env::var("FLEET_BENCH_DAYS").ok().and_then(|d| d.parse().ok()).unwrap_or(30) * 86_400,
        ),
        tick: Duration::from_secs(10),
        slo_wait: Duration::from_secs(30),
        unavailable_ttl: Duration::from_secs(600),
        consolidation_horizon: Some(Duration::from_secs(3600)),
        catalog: Vec::new(),
        demands: vec![Demand {
            app: "llm".into(),
            source: DemandSource::Trace { path: trace, tile: true },
            time_scale: 1.0,
            rate_scale: 4.0,
            diurnal_amplitude: 0.5,
            service: None,
            weights_gb: None,
        }],
        // A large model on 8 GPUs, one request at a time: slow decode, so demand needs ~100 runners.
        service: ServiceModel {
            prefill_tokens_per_s: 10_000.0,
            decode_tokens_per_s: 4.0,
            model_load: Duration::from_secs(120),
        },
        default_cloud: CloudModel { ice_probability: 0.05, preemptions_per_hour: 0.02, ..CloudModel::default() },
        clouds: Default::default(),
        capacity: Default::default(),
        weights: None,
    };
    let _ = Arc::new(Catalog::builtin().clone());
    let start = Instant::now();
    let r = fleet_simulator::run(&sc).unwrap();
    let wall = start.elapsed();
    println!(
        "{}: {} requests, {} served, {} events in {:.2} s = {:.2} M events/s; cost {}, lower bound {}, ×{:.2}; peak burn {}/h; {} nodes, {} preemptions, {} failovers",
        sc.name,
        r.requests,
        r.served,
        r.events,
        wall.as_secs_f64(),
        r.events as f64 / wall.as_secs_f64() / 1e6,
        r.cost,
        r.lower_bound,
        r.cost_over_lower_bound,
        r.max_burn_per_hour,
        r.nodes_launched,
        r.preemptions,
        r.failovers,
    );
}
