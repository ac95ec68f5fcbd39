//! Scenario files under mutated inputs (a short run; see `core/benches/fuzz.rs` for the engine):
//! bad input is an error, never a panic.

#[path = "../../core/tests/fuzz_engine.rs"]
mod fuzz_engine;

#[test]
fn the_scenario_parser_never_panics() {
    let seeds = [
        include_str!("../examples/poisson-cost.toml"),
        include_str!("../examples/diurnal-cost.toml"),
        include_str!("../examples/fleet-cost.toml"),
        include_str!("../examples/two-apps-cost.toml"),
    ];
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let panics = fuzz_engine::run(4, 10_000, &seeds, |b| {
        let _ = fleet_simulator::scenario::Scenario::parse("fuzz.toml", &String::from_utf8_lossy(b), &base);
    });
    fuzz_engine::assert_no_panic("Scenario::parse", &panics);
}

/// Durations, rates and scales are bounded with errors that name the field and the bound: a
/// scenario cannot ask for more than a run's clock or memory can hold.
#[test]
fn out_of_range_durations_and_rates_are_refused_by_name() {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let ok = "spec = \"fleet-cost.toml\"\nduration = \"2h\"\n[demand]\napp = \"llm\"\npoisson_rate = 2.0\n";
    fleet_simulator::scenario::Scenario::parse("s.toml", ok, &base).unwrap();
    for (text, says) in [
        (ok.replace("[demand]", "[clouds.default]\nboot = \"99999999h\"\n[demand]"), "clouds.default.boot"),
        (ok.replace("[demand]", "slo_wait = \"60d\"\n[demand]"), "slo_wait: '60d' is longer than a run can be"),
        (ok.replace("poisson_rate = 2.0", "poisson_rate = 1e12"), "poisson_rate"),
        (format!("{ok}rate_scale = 1e300\n"), "demand.rate_scale: must be a positive number, at most 10000"),
        (format!("{ok}time_scale = 0.0\n"), "demand.time_scale"),
        (
            ok.replace("[demand]", "[clouds.default]\npreemptions_per_hour = 1e9\n[demand]"),
            "preemptions_per_hour: must be 0 to 3600",
        ),
        // Until 2026-12-03 these were clamped to 0..1 without a word.
        (format!("{ok}diurnal_amplitude = 2.0\n"), "demand.diurnal_amplitude: 2 is outside 0 to 1"),
        (format!("{ok}diurnal_amplitude = -0.5\n"), "demand.diurnal_amplitude: -0.5 is outside 0 to 1"),
        (format!("{ok}diurnal_amplitude = nan\n"), "demand.diurnal_amplitude: NaN is outside 0 to 1"),
        // A tick as long as the run decided once, before any demand, and served nothing.
        (ok.replace("[demand]", "tick = \"2h\"\n[demand]"), "tick: '2h' is not shorter than the duration ('2h')"),
        (format!("{ok}context_tokens = 4000000000\n"), "demand.context_tokens: 4000000000 tokens; at most 10000000"),
        (format!("{ok}generated_tokens = 10000001\n"), "demand.generated_tokens: 10000001 tokens"),
    ] {
        let e = fleet_simulator::scenario::Scenario::parse("s.toml", &text, &base).unwrap_err().to_string();
        assert!(e.contains(says), "{says}: {e}");
    }
}

/// A demand too large for one run's memory is refused by name before any request is drawn
/// (until 2026-12-03 the engine aborted on a failed allocation, or ran out of memory).
#[test]
fn a_demand_larger_than_a_run_can_hold_is_refused_before_it_is_drawn() {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.csv");
    std::fs::write(
        &trace,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0,10,10\n2023-11-16 18:00:01.0,10,10\n",
    )
    .unwrap();
    let poisson = "spec = \"fleet-cost.toml\"\nduration = \"49d\"\n[demand]\napp = \"llm\"\npoisson_rate = 100000\n";
    let tiled = format!(
        "spec = \"fleet-cost.toml\"\nduration = \"49d\"\n[demand]\napp = \"llm\"\ntrace = {:?}\ntile = true\nrate_scale = 100\n",
        trace.display().to_string()
    );
    for text in [poisson.to_string(), tiled] {
        let sc = fleet_simulator::scenario::Scenario::parse("s.toml", &text, &base).unwrap();
        let e = fleet_simulator::run(&sc).unwrap_err().to_string();
        assert!(e.contains("the demand on app 'llm' would draw about") && e.contains("at most 150000000"), "{e}");
    }
    // The same trace, tiled over an hour: 3,600 s at 2 requests a second × 100 fits.
    let hour = format!(
        "spec = \"fleet-cost.toml\"\nduration = \"1h\"\n[demand]\napp = \"llm\"\ntrace = {:?}\ntile = true\nrate_scale = 100\n",
        trace.display().to_string()
    );
    let sc = fleet_simulator::scenario::Scenario::parse("s.toml", &hour, &base).unwrap();
    let r = fleet_simulator::run(&sc).unwrap();
    assert!(r.requests > 700_000, "{}", r.requests);
}
