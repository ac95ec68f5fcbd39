//! Short fuzz runs (CI) of the core parsers: the fleet spec and the catalog CSVs (fleet's own and
//! SkyPilot's). The million-case runs: `cargo bench -p fleet-core --bench fuzz`.

mod fuzz_engine;

use fleet_core::Cloud;
use fleet_core::catalog::{native, skypilot};
use fleet_core::spec::FleetSpec;

use fuzz_engine::{CATALOG_SEEDS, SKYPILOT_SEEDS, SPEC_SEEDS};

#[test]
fn the_spec_parser_never_panics() {
    let panics = fuzz_engine::run(1, 20_000, SPEC_SEEDS, |b| {
        let _ = FleetSpec::parse("fuzz.toml", &String::from_utf8_lossy(b));
    });
    fuzz_engine::assert_no_panic("FleetSpec::parse", &panics);
}

#[test]
fn the_catalog_readers_never_panic() {
    let panics = fuzz_engine::run(2, 20_000, CATALOG_SEEDS, |b| {
        let _ = native::read("fuzz.csv", b);
    });
    fuzz_engine::assert_no_panic("native catalog reader", &panics);
    let src = fleet_core::Source { name: "fuzz".into(), as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap() };
    let panics = fuzz_engine::run(3, 20_000, SKYPILOT_SEEDS, |b| {
        let _ = skypilot::import(Cloud::Aws, "fuzz.csv", &src, b);
    });
    fuzz_engine::assert_no_panic("SkyPilot catalog import", &panics);
}
