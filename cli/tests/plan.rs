//! `fleetctl plan` as an operator runs it.

use std::process::{Command, Output};

fn fleetctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetctl")).args(args).output().expect("run fleetctl")
}

fn example() -> String {
    format!("{}/../examples/fleet.toml", env!("CARGO_MANIFEST_DIR"))
}

const NOW: &str = "2026-11-25T12:00:00Z";

#[test]
fn plan_json_ranks_and_places_within_budget() {
    let o = fleetctl(&["plan", "-f", &example(), "--queue", "40", "--now", NOW, "-o", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let apps = v.as_array().unwrap();
    assert_eq!(apps.len(), 2);
    let llama = &apps[0];
    assert_eq!(llama["app"], "llama-70b");
    // 40 requests / 8 per runner = 5, plus a buffer of 1.
    assert_eq!(llama["plan"]["decision"]["target"]["desired"], 6);
    assert_eq!(llama["plan"]["decision"]["start"], 6);
    assert_eq!(llama["plan"]["split"]["on_demand"], 1);
    let nodes = llama["plan"]["new_nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    assert_eq!(nodes[0]["capacity"], "on-demand");
    // Ranked offerings: allowed regions only, cheapest effective $/GPU-hour first.
    let ranked = llama["ranked"].as_array().unwrap();
    let mut last = 0i64;
    for r in ranked {
        assert_ne!(r["cloud"], "vast");
        let region = r["region"].as_str().unwrap();
        assert!(region.starts_with("us-") || region.starts_with("ca"), "{region}");
        let p = fleet_core::Money::parse_decimal(r["effective_gpu_price"].as_str().unwrap()).unwrap().micros();
        assert!(p >= last && p <= 6_000_000);
        last = p;
    }
    // The app's hourly cap ($250) holds for the worst failover choice of every node.
    let reserved: i64 = nodes
        .iter()
        .map(|n| fleet_core::Money::parse_decimal(n["reserved_per_hour"].as_str().unwrap()).unwrap().micros())
        .sum();
    assert!(reserved <= 250_000_000, "{reserved}");
}

#[test]
fn fresh_demand_waits_for_the_scaling_delay() {
    let o = fleetctl(&["plan", "-f", &example(), "--queue", "40", "--now", NOW, "--fresh", "--app", "llama-70b"]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("start 0, stop 0"), "{out}");
    assert!(out.contains("scale-up waits for the scaling delay"), "{out}");
}

#[test]
fn bad_spec_lists_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fleet.toml");
    std::fs::write(&f, "[apps.a]\ngpu = \"H10O\"\n[apps.a.scaling]\nmin_concurrency = 9\nmax_concurrency = 3\n")
        .unwrap();
    let o = fleetctl(&["plan", "-f", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8(o.stderr).unwrap();
    assert!(e.contains("has 2 errors; nothing was applied"), "{e}");
    assert!(e.contains("fleet.toml:2:7: apps.a.gpu: unknown GPU 'H10O' (did you mean 'H100'?)"), "{e}");
    assert!(e.contains("fleet.toml:4:19: apps.a.scaling.min_concurrency: 9 is above max_concurrency 3"), "{e}");
    assert!(o.stdout.is_empty());
}

#[test]
fn simulate_matches_fleetsim_byte_for_byte() {
    let scenario = format!("{}/../simulator/examples/poisson.toml", env!("CARGO_MANIFEST_DIR"));
    let o = fleetctl(&["simulate", &scenario, "--seed", "3", "-o", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["scenario"], "poisson");
    assert_eq!(v["seed"], 3);
    assert!(v["requests"].as_u64().unwrap() > 10_000);
    // The same run through the library gives the same report.
    let mut sc = fleet_simulator::scenario::Scenario::load(std::path::Path::new(&scenario)).unwrap();
    sc.seed = 3;
    let lib = fleet_simulator::run(&sc).unwrap().to_json();
    assert_eq!(String::from_utf8(o.stdout).unwrap().trim_end(), lib);
}

#[test]
fn simulate_names_a_missing_scenario_in_one_line() {
    let o = fleetctl(&["simulate", "/nonexistent/scenario.toml"]);
    assert!(!o.status.success());
    let e = String::from_utf8(o.stderr).unwrap();
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("/nonexistent/scenario.toml") && !e.contains("panicked"), "{e}");
}
