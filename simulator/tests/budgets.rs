//! Budgets are caps at every tick, with consolidation on: random demand, random caps, random
//! capacity errors and preemptions, random consolidation horizons, fleet's cost policies
//! (predict, keep_alive = "auto", spot = "auto") on the built-in catalog. Launches happen only at
//! ticks, so the burn after each tick's launches is the most the fleet ever burns.

use std::time::Duration;

use fleet_core::Money;
use fleet_core::spec::FleetSpec;
use fleet_simulator::scenario::{CloudModel, Demand, DemandSource, Policy, Scenario, ServiceModel};
use proptest::prelude::*;

fn scenario(seed: u64, rate: f64, cap: u32, horizon_min: u64, ice: f64, preempt: f64) -> Scenario {
    with_budget(seed, rate, &format!("max_per_hour = \"{cap}\""), horizon_min, ice, preempt)
}

fn with_budget(seed: u64, rate: f64, budget: &str, horizon_min: u64, ice: f64, preempt: f64) -> Scenario {
    let spec = format!(
        "[budget]\n{budget}\n[apps.llm]\ngpu = \"H100\"\ngpus = 1\n[apps.llm.placement]\n\
         clouds = [\"aws\", \"gcp\", \"lambda\", \"runpod\"]\nspot = \"auto\"\n[apps.llm.scaling]\n\
         max_concurrency = 40\nmax_multiplexing = 4\nkeep_alive = \"auto\"\npredict = true\n"
    );
    Scenario {
        name: format!("budget-{seed}"),
        policy: Policy::Spec,
        spec: FleetSpec::parse("budget.toml", &spec).unwrap(),
        seed,
        duration: Duration::from_secs(3 * 3600),
        tick: Duration::from_secs(10),
        slo_wait: Duration::from_secs(30),
        unavailable_ttl: Duration::from_secs(300),
        consolidation_horizon: Some(Duration::from_secs(horizon_min * 60)),
        catalog: Vec::new(),
        demands: vec![Demand {
            app: "llm".into(),
            source: DemandSource::Poisson { rate_per_s: rate, context_tokens: 1000, generated_tokens: 200 },
            time_scale: 1.0,
            rate_scale: 1.0,
            diurnal_amplitude: 0.9,
            service: None,
            weights_gb: None,
        }],
        service: ServiceModel::default(),
        default_cloud: CloudModel { ice_probability: ice, preemptions_per_hour: preempt, ..CloudModel::default() },
        clouds: Default::default(),
        capacity: Default::default(),
        weights: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_hourly_cap_holds_at_every_tick_with_consolidation_on(
        seed in 0u64..10_000,
        rate in 0.2f64..6.0,
        cap in 4u32..60,
        horizon_min in 1u64..240,
        ice in 0.0f64..0.6,
        preempt in 0.0f64..3.0,
    ) {
        let sc = scenario(seed, rate, cap, horizon_min, ice, preempt);
        let r = fleet_simulator::run(&sc).unwrap();
        let cap = Money::parse_decimal(&cap.to_string()).unwrap();
        prop_assert!(r.max_burn_per_hour <= cap, "burned {}/h against a {cap}/h cap", r.max_burn_per_hour);
        prop_assert!(r.nodes_launched > 0);
    }

    /// The monthly cap is enforced, not only respected when planning: as the month's money runs
    /// out the fleet stops launching and winds down (min_concurrency 0: no overrun is allowed),
    /// so what the run spent in the month never passes the cap — through failovers, preemptions
    /// and consolidation.
    #[test]
    fn the_monthly_cap_holds_over_the_month(
        seed in 0u64..10_000,
        rate in 0.5f64..6.0,
        cap in 2u32..20,
        ice in 0.0f64..0.6,
        preempt in 0.0f64..3.0,
    ) {
        let budget = format!("max_per_month = \"{cap}\"");
        let sc = with_budget(seed, rate, &budget, 60, ice, preempt);
        let r = fleet_simulator::run(&sc).unwrap();
        let cap = Money::parse_decimal(&cap.to_string()).unwrap();
        prop_assert!(r.cost <= cap, "spent {} in the month against a {cap} cap", r.cost);
    }
}

/// The monthly property is not vacuous: with demand enough, such a run spends most of its
/// month's money (uncapped, it would spend twice the cap or more) and is then held at the cap.
#[test]
fn a_monthly_cap_is_reached_and_held() {
    let free = fleet_simulator::run(&with_budget(7, 6.0, "max_per_hour = \"1000\"", 60, 0.2, 1.0)).unwrap();
    let r = fleet_simulator::run(&with_budget(7, 6.0, "max_per_month = \"5\"", 60, 0.2, 1.0)).unwrap();
    let cap = Money::parse_decimal("5").unwrap();
    assert!(free.cost > cap.times(2), "uncapped, the run spends {}", free.cost);
    assert!(r.cost <= cap && r.cost >= Money::parse_decimal("3.5").unwrap(), "spent {} of {cap}", r.cost);
}

/// The property above is not vacuous: across such runs consolidation does move nodes, and the
/// caps do hold launches back.
#[test]
fn such_runs_consolidate_and_meet_their_caps() {
    let (mut moves, mut held) = (0, 0);
    for seed in 0..6 {
        let r = fleet_simulator::run(&scenario(seed, 8.0, 12, 120, 0.4, 1.0)).unwrap();
        moves += r.consolidations;
        held += r.budget_events;
        assert!(r.max_burn_per_hour <= Money::parse_decimal("12").unwrap());
    }
    assert!(moves > 0 && held > 0, "consolidations {moves}, budget events {held}");
}
