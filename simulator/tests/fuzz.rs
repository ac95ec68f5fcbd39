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
    ] {
        let e = fleet_simulator::scenario::Scenario::parse("s.toml", &text, &base).unwrap_err().to_string();
        assert!(e.contains(says), "{says}: {e}");
    }
}
