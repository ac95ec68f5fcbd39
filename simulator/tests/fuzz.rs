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
    ];
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let panics = fuzz_engine::run(4, 10_000, &seeds, |b| {
        let _ = fleet_simulator::scenario::Scenario::parse("fuzz.toml", &String::from_utf8_lossy(b), &base);
    });
    fuzz_engine::assert_no_panic("Scenario::parse", &panics);
}
