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

/// `-o json` (listed in `--help` for every command) works: progress on stderr, the summary as
/// JSON on stdout. `-o csv` is refused in one line.
#[test]
fn demo_summarises_as_json_with_progress_on_stderr() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["demo", "--requests", "10", "-o", "json"])
        .env_remove("FLEET_SERVER")
        .env_remove("FLEET_TOKEN")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["requests"]["answered"], 10, "{v}");
    assert_eq!(v["nodes"]["left_running"], 0);
    assert!(v["nodes"]["launched"].as_u64().unwrap() >= 1 && v["cost"].is_string(), "{v}");
    assert!(stderr.contains("submitted 10 requests") && stderr.contains("summary"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl")).args(["demo", "-o", "csv"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.trim().lines().count() == 1 && err.contains("table, json or yaml"), "{err}");
}

/// `fleetctl logs node ID`: the tail of a local node's real agent log, published through the
/// store; a node with no agent log is a clear 404.
#[test]
fn logs_show_a_node_agents_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetctl")).with_file_name("fleetd");
    assert!(bin.is_file(), "fleetd beside fleetctl (cargo build --workspace)");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut fleetd = Command::new(&bin)
        .args(["--fleet", "demo", "--local", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .args(["--reconcile-every", "0.2", "--node-poll", "0.3"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let ctl = |args: &[&str]| {
        let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap_or_default();
        Command::new(env!("CARGO_BIN_EXE_fleetctl"))
            .args(args)
            .env("FLEET_SERVER", &url)
            .env("FLEET_TOKEN", token.trim())
            .env("HOME", "/nonexistent")
            .env_remove("FLEET_CONFIG")
            .output()
            .unwrap()
    };
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "[fleet]\nname = \"demo\"\n[apps.chat]\ngpu = \"H100\"\ngpus = 1\n[apps.chat.scaling]\nmin_concurrency = 1\nmax_concurrency = 1\nkeep_alive = \"1h\"\n",
    )
    .unwrap();
    let start = std::time::Instant::now();
    let mut applied = false;
    let mut seen = String::new();
    while start.elapsed() < std::time::Duration::from_secs(60) {
        if !applied {
            applied = ctl(&["apply", "-f", spec.to_str().unwrap()]).status.success();
        } else {
            let o = ctl(&["logs", "node", "1", "--tail", "100"]);
            seen = String::from_utf8_lossy(&o.stdout).into_owned();
            if seen.contains("runner loaded") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let _ = Command::new("kill").args(["-TERM", &fleetd.id().to_string()]).status();
    let _ = fleetd.wait();
    // The local node outlives fleetd (as a machine would): stop it.
    let instances = std::fs::read_to_string(dir.path().join("local/instances.json")).unwrap_or_default();
    if let Ok(serde_json::Value::Array(rs)) = serde_json::from_str::<serde_json::Value>(&instances) {
        for r in rs {
            let _ = Command::new("kill").arg(r["pid"].to_string()).status();
        }
    }
    assert!(seen.contains("registered") && seen.contains("runner loaded"), "{seen}");
    assert!(seen.lines().all(|l| !l.contains('\u{1b}')), "no terminal colours in the tail: {seen}");
}
