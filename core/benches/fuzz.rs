//! The parsers under a million mutated inputs each (`cargo bench -p fleet-core --bench fuzz`):
//! prints cases per second and the panics found (a panic fails the run). CI runs the short
//! versions (`core/tests/fuzz.rs` and the scenario and agent-config fuzz tests).

#[path = "../tests/fuzz_engine.rs"]
mod fuzz_engine;

use std::time::Instant;

use fleet_core::Cloud;
use fleet_core::catalog::{native, skypilot};
use fleet_core::spec::FleetSpec;

fn main() {
    let cases: u64 = std::env::var("FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let src = fleet_core::Source { name: "fuzz".into(), as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap() };
    let mut failed = false;
    let mut report = |what: &str, t: Instant, panics: Vec<Vec<u8>>| {
        let s = t.elapsed().as_secs_f64();
        println!("{what}: {cases} cases in {s:.1} s ({:.0}/s), {} panic(s)", cases as f64 / s, panics.len());
        if !panics.is_empty() {
            failed = true;
            for p in panics.iter().take(3) {
                println!("  {:?}", String::from_utf8_lossy(p));
            }
        }
    };
    let t = Instant::now();
    let p = fuzz_engine::run(11, cases, fuzz_engine::SPEC_SEEDS, |b| {
        let _ = FleetSpec::parse("fuzz.toml", &String::from_utf8_lossy(b));
    });
    report("fleet spec", t, p);
    let t = Instant::now();
    let p = fuzz_engine::run(12, cases, fuzz_engine::CATALOG_SEEDS, |b| {
        let _ = native::read("fuzz.csv", b);
    });
    report("catalog CSV", t, p);
    let t = Instant::now();
    let p = fuzz_engine::run(13, cases, fuzz_engine::SKYPILOT_SEEDS, |b| {
        let _ = skypilot::import(Cloud::Aws, "fuzz.csv", &src, b);
    });
    report("SkyPilot CSV", t, p);
    assert!(!failed, "a parser panicked");
}
