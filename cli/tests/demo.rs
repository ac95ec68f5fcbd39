//! `fleetctl demo` end to end: it starts fleetd and real agents on local nodes, serves a burst
//! of requests, scales back to zero, prints a correct summary in 80 columns, and leaves nothing
//! running. Needs fleetd and fleet-agent beside fleetctl (`cargo build --workspace`, which
//! scripts/test does before the tests).

use std::process::Command;

#[test]
fn demo_serves_a_burst_scales_to_zero_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["demo", "--requests", "30", "--dir"])
        .arg(dir.path())
        .env_remove("FLEET_SERVER")
        .env_remove("FLEET_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(dir.path().join("fleetd.log")).unwrap_or_default();
    assert!(out.status.success(), "{stdout}\n{stderr}\nfleetd.log:\n{log}");
    for l in stdout.lines() {
        assert!(l.chars().count() <= 80, "wider than 80 columns: {l:?}");
    }
    assert!(stdout.contains("requests   30 answered (0 failed), 18 chat / 12 embed"), "{stdout}");
    assert!(stdout.contains("0 left running"), "{stdout}");
    // The summary's node count is what fleetd's records say, and every node really ran an agent
    // that served through the gateway with candle.
    let line = stdout.lines().find(|l| l.trim_start().starts_with("nodes")).unwrap();
    let launched: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(launched >= 2, "{line}");
    let nodes: Vec<_> = std::fs::read_dir(dir.path().join("local"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(nodes.len(), launched, "{line}");
    let served = nodes
        .iter()
        .filter(|n| std::fs::read_to_string(n.path().join("agent.log")).unwrap_or_default().contains("runner loaded"))
        .count();
    assert!(served >= 2, "agents that loaded a model: {served}");
    // Nothing left: no agent process of this demo runs.
    let instances = std::fs::read_to_string(dir.path().join("local/instances.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&instances).unwrap();
    for r in v.as_array().unwrap() {
        let pid = r["pid"].as_u64().unwrap();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        assert!(cwd.is_none_or(|c| c.to_str() != r["dir"].as_str()), "node process {pid} still runs");
    }
}

#[test]
fn demo_refuses_json_output_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl")).args(["demo", "-o", "json"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.trim().lines().count() == 1 && err.contains("table only"), "{err}");
}
