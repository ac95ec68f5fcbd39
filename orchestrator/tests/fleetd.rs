//! The real `fleetd` binary: starts on embedded defaults, serves its API over HTTP, runs requests
//! on simulated clouds, stops cleanly on SIGTERM, and finds its state again after a restart.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Fleetd;
use fleet_orchestrator::testing::http::http;

fn start_fleetd(dir: &std::path::Path) -> Fleetd {
    let args = ["--fleet", "test", "--fake-clouds", "lambda", "--fake-speed", "20"]
        .into_iter()
        .chain(["--reconcile-every", "0.2", "--node-poll", "0.3", "--data-dir"])
        .map(String::from)
        .chain([dir.display().to_string()])
        .collect::<Vec<_>>();
    Fleetd::start(&args, None)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON ({e}): {body}"))
}

const SPEC: &str = r#"
[fleet]
name = "test"

[apps.llm]
gpu = "H100"
gpus = 1

[apps.llm.scaling]
max_concurrency = 2
keep_alive = "3s"
"#;

#[test]
fn fleetd_serves_requests_stops_on_sigterm_and_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start_fleetd(dir.path());
    let (s, b) = d.call("PUT", "/v1/spec", SPEC);
    assert_eq!(s, 200, "{b}");
    let (s, b) = d.call("PUT", "/v1/spec", "[fleet]\nname = 1");
    assert_eq!(s, 400, "{b}");
    assert!(json(&b)["error"].as_str().unwrap().contains("spec:"), "{b}");

    let mut ids = Vec::new();
    for i in 0..5 {
        let (s, b) = d.call("POST", "/v1/apps/llm/requests", &format!(r#"{{"input": {{"n": {i}}}}}"#));
        assert_eq!(s, 202, "{b}");
        ids.push(json(&b)["id"].as_u64().unwrap());
    }
    let start = Instant::now();
    let done = |d: &Fleetd| {
        ids.iter().all(|id| {
            let (_, b) = d.call("GET", &format!("/v1/apps/llm/requests/{id}"), "");
            json(&b)["state"]["state"] == "done"
        })
    };
    while !done(&d) {
        assert!(start.elapsed() < Duration::from_secs(60), "requests not served within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, m) = d.call("GET", "/metrics", "");
    assert!(m.contains("fleet_launches_total{cloud=\"lambda\",kind=\"called\"}"), "{m}");
    // Started without them, fleetd runs with mimalloc's huge pages off and no purge delay (it
    // restarted itself).
    let environ = std::fs::read(format!("/proc/{}/environ", d.child.id())).unwrap();
    let var = |name: &str| {
        environ.split(|b| *b == 0).find_map(|v| v.strip_prefix(format!("{name}=").as_bytes())).map(<[u8]>::to_vec)
    };
    assert_eq!(var("MIMALLOC_ALLOW_THP").as_deref(), Some(&b"0"[..]));
    assert_eq!(var("MIMALLOC_PURGE_DELAY").as_deref(), Some(&b"0"[..]));

    // SIGTERM: a clean, prompt exit.
    let pid = d.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "fleetd did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}: {}", d.log());
    assert!(d.saw("stopped", Duration::from_secs(5)), "{}", d.log());

    // Same data dir: the spec and the results are still there.
    let d2 = start_fleetd(dir.path());
    let (s, b) = d2.call("GET", "/v1/spec", "");
    assert_eq!((s, json(&b)["toml"].as_str()), (200, Some(SPEC)));
    assert!(done(&d2), "results survive a restart");
    assert_eq!(d2.token, d.token, "the admin token is made once and kept");
}

/// The API is never open: the admin token fleetd made at its first start is private to its
/// owner and needed for every call but /healthz and /metrics; off loopback fleetd refuses to
/// serve without TLS unless told `--insecure-no-tls`; with a certificate it serves HTTPS.
#[test]
fn the_api_needs_a_token_and_tls_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_fleetd(dir.path());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin.token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "admin.token mode {mode:o}");
    }
    let (s, b) = http(&d.addr, "GET", "/v1/nodes", "").unwrap();
    assert_eq!(s, 401, "{b}");
    assert!(json(&b)["error"].as_str().unwrap().contains("admin.token"), "{b}");
    assert_eq!(http(&d.addr, "GET", "/metrics", "").unwrap().0, 200);
    assert_eq!(d.call("GET", "/v1/nodes", "").0, 200);

    // Off loopback without TLS: refused at start, with what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_fleetd"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("refusing to serve the API on 0.0.0.0:0 without TLS") && err.contains("--tls-cert"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // A key that is not one: one clear line, no key material.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetd"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&bad)
        .arg("--tls-key")
        .arg(&bad)
        .arg("--data-dir")
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tls-cert"), "{err}");
}

#[test]
fn fleetd_says_its_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetd")).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("fleetd {}", env!("CARGO_PKG_VERSION")));
}

/// The data directory holds the store and the admin token: its owner's only (0700, the store and
/// the token 0600), and fleetd refuses an admin token file others can read.
#[test]
fn the_data_dir_is_private_and_a_readable_admin_token_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = start_fleetd(&dir);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("fleet.redb")), 0o600);
    assert_eq!(mode(&dir.join("admin.token")), 0o600);
    f.kill();
    // Someone loosened the token: fleetd will not start on it, and says what to do.
    std::fs::set_permissions(dir.join("admin.token"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetd"))
        .args(["--fleet", "test", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("admin.token can be read by others (mode 644)") && err.contains("chmod 600"), "{err}");
}

/// Simulated clouds outlive a fleetd restart as real ones do: a ready node is still ready after
/// it, not "lost by the cloud" (its offering marked, a replacement launched), and its simulated
/// agent reports the offering's GPUs, its runners and a log.
#[test]
fn a_restart_on_simulated_clouds_keeps_their_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_fleetd(dir.path());
    let spec = SPEC.replace("keep_alive = \"3s\"", "min_concurrency = 1\nkeep_alive = \"1h\"\nmax_multiplexing = 4");
    assert_eq!(d.call("PUT", "/v1/spec", &spec).0, 200);
    let ready = |d: &Fleetd| {
        let nodes = d.get("/v1/nodes");
        nodes.as_array().unwrap().iter().filter(|n| n["state"]["state"] == "ready").count()
    };
    let start = Instant::now();
    while ready(&d) < 1 || d.get("/v1/nodes")[0]["agent"]["health"]["runners"].as_array().is_none_or(|r| r.is_empty()) {
        assert!(start.elapsed() < Duration::from_secs(60), "no ready node with a runner: {}", d.get("/v1/nodes"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let node = d.get("/v1/nodes")[0].clone();
    let gpus = node["agent"]["gpus"].as_u64().unwrap();
    assert!(gpus >= 1 && node["agent"]["health"]["devices"].as_array().unwrap().len() as u64 == gpus, "{node}");
    let (s, log) = d.call("GET", "/v1/nodes/1/logs", "");
    assert_eq!(s, 200, "{log}");
    assert!(log.contains("runner") && log.contains("serving"), "{log}");
    d.kill();

    let d2 = start_fleetd(dir.path());
    std::thread::sleep(Duration::from_secs(3));
    let events = d2.get("/v1/events");
    let kinds: Vec<&str> = events.as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(!kinds.contains(&"instance-lost"), "{events}");
    assert_eq!(kinds.iter().filter(|k| **k == "launched").count(), 1, "no replacement: {events}");
    assert_eq!(ready(&d2), 1, "{}", d2.get("/v1/nodes"));
}

/// Every counter the README lists is exported from the start, at zero, before anything happened
/// (a series that appears only once incremented breaks rate() and alerts on absence).
#[test]
fn the_readme_counters_are_there_at_zero_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = start_fleetd(dir.path());
    let (s, m) = d.call("GET", "/metrics", "");
    assert_eq!(s, 200);
    for series in [
        "fleet_launches_total{cloud=\"lambda\",kind=\"called\"} 0",
        "fleet_launch_failures_total{cloud=\"lambda\",kind=\"insufficient-capacity\"} 0",
        "fleet_orphans_terminated_total{kind=\"lambda\"} 0",
        "fleet_actor_restarts_total{kind=\"node\"} 0",
        "fleet_events_total{kind=\"launch-failed\"} 0",
        "fleet_requests_requeued_total 0",
        "fleet_consolidations_total 0",
        "fleet_removed_app_nodes_total 0",
        "fleet_offering_gone_nodes_total 0",
    ] {
        assert!(m.contains(series), "{series} missing from:\n{m}");
    }
}

/// Duration flags take a finite number of seconds up to a year, and a re-creation is no shorter
/// than a cold start: anything else is refused at start, naming the flag, before the store is
/// opened. (Until 2026-12-03 `--reconcile-every 1e30` or `inf` panicked converting to a
/// `Duration` after the store was open, and NaN was taken as the least value.)
#[test]
fn duration_flags_must_be_finite_seconds_and_a_re_creation_no_shorter_than_a_cold_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (flags, says) in [
        (&["--reconcile-every", "1e30"][..], "--reconcile-every"),
        (&["--leader-ttl", "inf"], "give a number from 0 to"),
        (&["--node-poll", "NaN"], "--node-poll"),
        (&["--header-read-timeout-seconds=-1"], "--header-read-timeout-seconds"),
        (&["--consolidation-horizon-seconds", "soon"], "is not a number of seconds"),
        (&["--fake-speed", "0"], "is not a speed-up factor"),
        (
            &["--recreate-seconds", "100", "--cold-start-seconds", "180"],
            "--recreate-seconds 100 is less than --cold-start-seconds 180",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetd"))
            .args(["--fleet", "test", "--listen", "127.0.0.1:0"])
            .args(flags)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says) && !err.contains("panicked"), "{flags:?}: {err}");
        assert!(!data.exists(), "{flags:?}: the store was opened");
    }
}

/// `--fake-capacity` names an offering of the simulated clouds and a count; anything else is
/// refused at start with what to write, before anything runs.
#[test]
fn fake_capacity_must_name_a_simulated_offering_and_a_count() {
    let dir = tempfile::tempdir().unwrap();
    for (value, says) in [
        ("lambda/us-east-1/gpu_1x_h100_pcie/on-demandd=0", "did you mean lambda/us-east-1/gpu_1x_h100_pcie/on-demand"),
        ("nebius/eu-north1/gpu-h100-sxm_1gpu-16vcpu-200gb/spot=0", "is not an offering of the simulated clouds"),
        ("lambda/us-east-1/gpu_1x_h100_pcie/on-demand", "write OFFERING=N"),
        ("lambda/us-east-1/gpu_1x_h100_pcie/on-demand=many", "`many` is not a count of instances"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetd"))
            .args(["--fleet", "test", "--fake-clouds", "lambda", "--fake-capacity", value, "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{value}: {err}");
    }
}
