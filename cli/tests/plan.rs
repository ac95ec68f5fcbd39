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

#[test]
fn an_app_allowing_two_gpu_families_ranks_by_the_price_of_the_work() {
    // An A100 bills $1.19/h, an H100 $1.54/h; the A100 does a third of the work ($3.77 per
    // H100-hour): the H100 ranks first and takes the node, and the table says why.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.csv");
    std::fs::write(
        &catalog,
        "cloud,region,zone,instance_type,gpu,gpu_count,vcpus,memory_gib,interconnect,capacity,usd_per_hour,source,as_of\n\
         runpod,us,us-ks-1,1x_A100-80GB,A100-80GB,1,16,125,,on-demand,1.19,test,2026-11-25\n\
         runpod,us,us-ks-1,1x_H100-SXM,H100-SXM,1,16,125,,on-demand,1.54,test,2026-11-25\n",
    )
    .unwrap();
    let spec = dir.path().join("fleet.toml");
    std::fs::write(&spec, "[fleet]\nname = \"x\"\n[apps.llm]\ngpu = [\"H100\", \"A100-80GB\"]\ngpus = 1\n").unwrap();
    let args = ["plan", "-f", spec.to_str().unwrap(), "--catalog", catalog.to_str().unwrap(), "--queue", "1"];
    let o = fleetctl(&[&args[..], &["--offline", "--now", NOW, "-o", "json"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ranked = v[0]["ranked"].as_array().unwrap();
    let got: Vec<(&str, &str, &str)> = ranked
        .iter()
        .map(|r| {
            (
                r["instance"]["gpu"].as_str().unwrap(),
                r["effective_gpu_price"].as_str().unwrap(),
                r["effective_work_price"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("H100-SXM", "1.54", "1.54"), ("A100-80GB", "1.19", "3.772147")], "{ranked:?}");
    let first = &v[0]["plan"]["new_nodes"][0]["candidates"][0];
    assert_eq!(first["node_price"], "1.54", "{first}");
    let o = fleetctl(&[&args[..], &["--offline", "--now", NOW]].concat());
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("PER H100-HOUR") && t.contains("$3.77"), "{t}");
}
