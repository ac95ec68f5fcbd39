//! `fleetctl demo` end to end: it starts fleetd with five simulated clouds at the built-in
//! catalog's prices, and shows what fleet is for: the cheapest offering chosen and explained, a
//! capacity error failed over, a spot notice answered by a replacement before the cloud takes the
//! node, a budget holding back a scale-up, back to zero nodes, and the bill beside one
//! hyperscaler's on-demand price; then a chat completion streamed from a generated model by a
//! real agent — in 80 columns, leaving nothing running. Needs fleetd and fleet-agent beside
//! fleetctl (`cargo build --workspace`, which scripts/test does before the tests).

use std::process::Command;

use fleet_core::Money;

#[test]
fn demo_shows_the_money_failover_spot_and_budget_and_scales_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["demo", "--dir"])
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
    let line = |start: &str| {
        stdout
            .lines()
            .skip_while(|l| !l.starts_with(&format!("  {start} ")))
            .enumerate()
            .take_while(|(i, l)| *i == 0 || l.starts_with("      "))
            .map(|(_, l)| l)
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(stdout.contains("requests   40 answered (0 failed), 27 chat / 13 embed"), "{stdout}");
    assert!(line("left").contains("0 instances running"), "{stdout}");
    // The language model: a completion streamed through the OpenAI-compatible endpoint by a real
    // agent, measured, and its node gone after.
    let streamed = line("streamed:");
    assert!(streamed.len() > "streamed: \"\"".len(), "some text streamed: {stdout}");
    let figures = stdout.lines().find(|l| l.contains("tokens in") && l.contains("chunks")).unwrap_or_default();
    assert!(figures.starts_with("  24 tokens in"), "max_tokens 24, counted by usage: {stdout}");
    assert!(stdout.contains("scaled to zero: its node terminated"), "{stdout}");
    // The cheapest offering is chosen first, explained, refused for capacity, and failed over.
    assert!(stdout.contains("cheapest mix for 1 runner(s)"), "the plan says why: {stdout}");
    assert!(stdout.contains("> launch failed: node") && stdout.contains("failing over to"), "{stdout}");
    let failover = line("failover");
    assert!(failover.contains("refused for capacity") && !failover.contains("failover   0 "), "{failover}");
    // The spot notice: drained, and a node launched in its place within the cloud's two minutes.
    assert!(stdout.contains("spot interruption notice"), "{stdout}");
    assert!(line("spot").contains("launched in its place"), "{}", line("spot"));
    // The budget held a scale-up back (embed's own $2/h cap), and the burn never passed the
    // fleet's $14/h cap.
    assert!(stdout.contains("> budget: app embed"), "{stdout}");
    let said = stdout.split("> budget: app embed").nth(1).unwrap_or_default();
    let said: String = said
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("      "))
        .flat_map(|(_, l)| l.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(said.contains("under the app embed budget $2.00/hour"), "the cap is named: {said}");
    let budget = line("budget");
    let held: u32 = budget.split("held back ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(held >= 1, "{budget}");
    let max_burn: Money = budget.rsplit('$').next().unwrap().trim().parse().unwrap();
    assert!(max_burn > Money::ZERO && max_burn <= Money::from_dollars(14), "{budget}");
    // Several clouds' real prices; the bill beside the hyperscaler's, and cheaper.
    let nodes = line("nodes");
    let launched: usize = nodes.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(launched >= 3, "{nodes}");
    let bill: Money = line("bill").split_whitespace().nth(1).unwrap().trim_start_matches('$').parse().unwrap();
    let vs = line("vs aws");
    let compared: Money = vs.split_whitespace().nth(2).unwrap().trim_start_matches('$').parse().unwrap();
    assert!(bill > Money::ZERO && compared > bill, "{vs} / {bill}");
    let ratio: f64 = vs.split(": ").last().unwrap().split('x').next().unwrap().parse().unwrap();
    assert!(ratio > 1.5, "{vs}");
    // The fake clouds' own records: every instance fleet launched is terminated.
    let mut instances = 0;
    for f in std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()) {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.starts_with("fake-") && name.ends_with(".json") {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap();
            for i in v["instances"].as_object().unwrap().values() {
                instances += 1;
                assert_eq!(i["state"], "terminated", "{name}: {i}");
            }
        }
    }
    assert_eq!(instances, launched, "{nodes}");
}

/// `-o json` (listed in `--help` for every command) works: progress on stderr, the summary as
/// JSON on stdout. `-o csv` is refused in one line.
#[test]
fn demo_summarises_as_json_with_progress_on_stderr() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["demo", "--requests", "12", "--seconds", "3", "-o", "json"])
        .env_remove("FLEET_SERVER")
        .env_remove("FLEET_TOKEN")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["requests"]["answered"], 12, "{v}");
    assert_eq!(v["nodes"]["left_running"], 0);
    assert!(v["nodes"]["launched"].as_u64().unwrap() >= 1 && v["cost"].is_string(), "{v}");
    assert_eq!(v["compared"]["cloud"], "aws", "{v}");
    assert!(stderr.contains("sending 12 requests") && stderr.contains("summary"), "{stderr}");
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
