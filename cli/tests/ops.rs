//! Every fleetctl command against fleetd's real API (served here on loopback, over HTTP and over
//! HTTPS) on a running fleet (actor tree, embedded store, fake cloud, simulated agents): each
//! command's happy path and one bad input (one clear line on stderr, exit code ≠ 0).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::keys::Keys;
use fleet_orchestrator::sim_agents::{SimAgentConfig, SimAgents};
use fleet_orchestrator::testing::live::{LiveFleet, fast_config, spec};
use fleet_state::clock::Clock;
use fleet_state::store::Store;
use fleet_state::store::embedded::EmbeddedStore;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn fleetctl(env: &[(&str, &str)], args: &[&str]) -> Out {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetctl"));
    c.args(args)
        .env_remove("FLEET_TOKEN")
        .env_remove("FLEET_SERVER")
        .env_remove("FLEET_CONFIG")
        .env("HOME", "/nonexistent");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    Out {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// Runs fleetctl off the async runtime.
async fn ctl(env: Vec<(String, String)>, args: &[&str]) -> Out {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        fleetctl(&env, &args)
    })
    .await
    .unwrap()
}

/// A failure: exit ≠ 0 and one line on stderr containing `what`, no panic.
fn fails_with(o: &Out, what: &str) {
    assert!(!o.ok, "expected a failure, got: {}", o.stdout);
    assert_eq!(o.stderr.trim().lines().count(), 1, "one line: {}", o.stderr);
    assert!(o.stderr.contains(what), "wanted `{what}` in: {}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
}

struct Running {
    _fleet: LiveFleet,
    _agents: SimAgents,
    _dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    url: String,
    dir: std::path::PathBuf,
}

async fn running(tls: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let fleet = LiveFleet::start(store.clone(), fast_config(), None, &spec("llm", 1)).await;
    let cfg = SimAgentConfig {
        poll: Duration::from_millis(50),
        load_time: Duration::from_millis(100),
        service_time: Duration::from_millis(100),
        ..SimAgentConfig::default()
    };
    let agents = SimAgents::spawn(store.clone(), Keys::new("t"), Clock::System, cfg);
    let token =
        fleet_orchestrator::auth::admin_token(&*store, &fleet.keys, dir.path(), chrono::Utc::now()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = fleet_orchestrator::api::router(fleet.ctx.clone());
    let url = if tls {
        let (cert, key) = self_signed(dir.path());
        let cfg = fleet_orchestrator::tls::server_config(&cert, &key).unwrap();
        let l = fleet_orchestrator::tls::TlsListener::new(listener, cfg).unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("https://localhost:{}", addr.port())
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    };
    let env = vec![("FLEET_TOKEN".to_string(), token), ("FLEET_SERVER".to_string(), url.clone())];
    Running { dir: dir.path().to_path_buf(), _fleet: fleet, _agents: agents, _dir: dir, env, url }
}

/// A private CA (`ca.pem`) and a certificate it signed for `localhost`, made with openssl as an
/// operator would; returns the server's certificate and key.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (Debian: openssl)");
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "1", "-subj", "/CN=fleet test CA", "-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "cert.csr"]].concat());
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    run(&["x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
        .iter()
        .chain(&["-extfile", "ext.cnf", "-out", "cert.pem"])
        .copied()
        .collect::<Vec<_>>());
    (dir.join("cert.pem"), dir.join("key.pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_and_refuses_bad_input_with_one_line() {
    let r = running(false).await;
    let env = r.env.clone();

    // No token: 401 with what to do.
    let o = ctl(vec![("FLEET_SERVER".into(), r.url.clone())], &["get", "apps"]).await;
    fails_with(&o, "no token: set FLEET_TOKEN");

    // apply / diff.
    let spec1 = r.dir.join("one.toml");
    let spec2 = r.dir.join("two.toml");
    std::fs::write(&spec1, spec("llm", 1)).unwrap();
    std::fs::write(&spec2, spec("llm", 2)).unwrap();
    let o = ctl(env.clone(), &["apply", "-f", spec1.to_str().unwrap()]).await;
    assert!(
        o.ok && o.stdout.contains("no change") && o.stdout.contains("applied: fleet t, apps llm"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = ctl(env.clone(), &["diff", "-f", spec2.to_str().unwrap()]).await;
    assert!(
        o.ok && o.stdout.contains("- min_concurrency = 1") && o.stdout.contains("+ min_concurrency = 2"),
        "{}",
        o.stdout
    );
    let o = ctl(env.clone(), &["apply", "-f", spec2.to_str().unwrap(), "--dry-run"]).await;
    assert!(o.ok && o.stdout.contains("+ max_concurrency = 2") && o.stdout.contains("dry run"), "{}", o.stdout);
    let o = ctl(env.clone(), &["diff", "-f", spec1.to_str().unwrap()]).await;
    assert!(o.ok && o.stdout.contains("no change"), "the dry run applied nothing: {}", o.stdout);
    let bad = r.dir.join("bad.toml");
    std::fs::write(&bad, "[fleet]\nname = \"t\"\n[apps.llm]\ngpu = \"H1000\"\n").unwrap();
    // A spec's problems are listed all at once, one per line after the first.
    let o = ctl(env.clone(), &["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(
        !o.ok && o.stderr.contains("fleetd answered 400") && o.stderr.contains("did you mean 'H100'"),
        "{}",
        o.stderr
    );
    fails_with(&ctl(env.clone(), &["apply", "-f", "/nonexistent.toml"]).await, "-f /nonexistent.toml");
    let o = ctl(env.clone(), &["diff", "-f", bad.to_str().unwrap()]).await;
    assert!(!o.ok && o.stderr.contains("H1000") && !o.stderr.contains("panicked"), "{}", o.stderr);

    // plan: against this fleetd's enabled clouds and live offerings (it says so), or offline.
    let o = ctl(env.clone(), &["plan", "-f", spec2.to_str().unwrap(), "--queue", "4"]).await;
    let first = o.stdout.lines().next().unwrap_or_default().to_string();
    assert!(
        o.ok && first.starts_with(&format!("planned against fleetd at {}: its enabled clouds (lambda)", r.url)),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let ranked: Vec<&str> = o.stdout.lines().filter(|l| l.contains("/us-") || l.contains("/eu")).collect();
    assert!(!ranked.is_empty() && ranked.iter().all(|l| l.contains("lambda/")), "only fleetd's cloud: {}", o.stdout);
    let o = ctl(env.clone(), &["plan", "-f", spec2.to_str().unwrap(), "--offline"]).await;
    assert!(o.ok && o.stdout.starts_with("planned against the built-in catalog (--offline)"), "{}", o.stdout);

    // submit, and wait for the result.
    let o = ctl(env.clone(), &["submit", "llm", "--input", r#"{"prompt": "hi"}"#, "--wait", "30"]).await;
    assert!(o.ok && o.stdout.contains("echo") && o.stdout.contains("hi"), "{}{}", o.stdout, o.stderr);
    fails_with(&ctl(env.clone(), &["submit", "llm", "--input", "{not json"]).await, "not JSON");
    for wait in ["inf", "NaN", "-1", "1e30"] {
        let o = ctl(env.clone(), &["submit", "llm", "--input", "1", &format!("--wait={wait}")]).await;
        assert!(
            !o.ok && o.stderr.contains("give the seconds to wait") && !o.stderr.contains("panicked"),
            "{}",
            o.stderr
        );
    }
    let o = ctl(env.clone(), &["submit", "llm", "--input", "1", "-o", "json"]).await;
    assert!(o.ok && serde_json::from_str::<serde_json::Value>(&o.stdout).unwrap()["id"].is_u64(), "{}", o.stdout);

    // get …, table / json / yaml.
    for what in ["apps", "nodes", "runners", "clouds", "offerings", "tokens", "events"] {
        let o = ctl(env.clone(), &["get", what]).await;
        assert!(o.ok, "get {what}: {}", o.stderr);
        let header = o.stdout.lines().next().unwrap_or_default().to_string();
        assert!(
            header.chars().filter(|c| c.is_ascii_alphabetic()).all(|c| c.is_ascii_uppercase()),
            "get {what}: {header}"
        );
        let j = ctl(env.clone(), &["get", what, "-o", "json"]).await;
        assert!(serde_json::from_str::<serde_json::Value>(&j.stdout).is_ok(), "get {what} -o json: {}", j.stdout);
        let y = ctl(env.clone(), &["get", what, "-o", "yaml"]).await;
        assert!(y.ok && !y.stdout.trim_start().starts_with('{'), "get {what} -o yaml: {}", y.stdout);
    }
    let o = ctl(env.clone(), &["get", "apps"]).await;
    assert!(o.stdout.lines().any(|l| l.starts_with("llm")), "{}", o.stdout);
    let o = ctl(env.clone(), &["get", "offerings"]).await;
    assert!(o.stdout.contains("lambda/us-east-1") && o.stdout.contains("1×H100-SXM"), "{}", o.stdout);
    let o = ctl(env.clone(), &["get", "tokens"]).await;
    assert!(o.stdout.contains("admin-") && !o.stdout.contains("flt_"), "{}", o.stdout);
    fails_with(&ctl(env.clone(), &["get", "apps", "-o", "csv"]).await, "-o csv is for `fleetctl catalog`");

    // describe app.
    let o = ctl(env.clone(), &["describe", "app", "llm"]).await;
    assert!(o.ok && o.stdout.contains("App:          llm") && o.stdout.contains("Runners:"), "{}", o.stdout);
    fails_with(&ctl(env.clone(), &["describe", "app", "nope"]).await, "no app `nope` in the applied spec (apps: llm)");

    // cordon / uncordon / drain a ready node.
    let nodes: serde_json::Value =
        serde_json::from_str(&ctl(env.clone(), &["get", "nodes", "-o", "json"]).await.stdout).unwrap();
    let ready = nodes.as_array().unwrap().iter().find(|n| n["state"]["state"] == "ready").expect("a ready node");
    let id = ready["id"].to_string();
    // Money per thing, to the cent: the node's $/hour now (its price) and month to date in
    // get nodes, describe node, get apps and cost's list of nodes.
    let price: fleet_core::Money = ready["price"].as_str().unwrap().parse().unwrap();
    let cents = price.cents().to_string();
    assert_eq!(ready["burn_per_hour"], ready["price"], "a ready node burns its price: {ready}");
    let row_of =
        |out: &str| out.lines().find(|l| l.trim_start().starts_with(&format!("{id} "))).unwrap_or_default().to_string();
    let o = ctl(env.clone(), &["get", "nodes"]).await;
    let header = o.stdout.lines().next().unwrap_or_default();
    assert!(header.contains("$/HOUR") && header.contains("MONTH TO DATE"), "{}", o.stdout);
    assert!(row_of(&o.stdout).contains(&cents), "{cents} in {}", o.stdout);
    let o = ctl(env.clone(), &["describe", "node", &id]).await;
    assert!(o.stdout.contains(&format!("Cost:         {cents}/h now, $")), "{}", o.stdout);
    let o = ctl(env.clone(), &["get", "apps"]).await;
    assert!(o.stdout.lines().next().unwrap_or_default().contains("$/HOUR"), "{}", o.stdout);
    let o = ctl(env.clone(), &["cost"]).await;
    assert!(o.stdout.contains("NODE") && row_of(&o.stdout).contains(&cents), "{}", o.stdout);
    for l in o.stdout.lines().filter(|l| l.contains('$')) {
        let is_amount = |w: &&str| {
            w.trim_start_matches("(-")
                .trim_start_matches('-')
                .trim_start_matches('$')
                .starts_with(|c: char| c.is_ascii_digit())
                && w.contains('$')
        };
        for amount in l.split_whitespace().filter(is_amount) {
            let digits = amount.trim_end_matches("/h").trim_end_matches(')').rsplit('.').next().unwrap_or_default();
            assert_eq!(digits.len(), 2, "money to the cent: {amount} in {l}");
        }
    }
    // One syntax for every node command (`describe node ID`, `cordon node ID`, …), the short
    // one too; a cordoned node says so in the table and in describe.
    let o = ctl(env.clone(), &["cordon", "node", &id]).await;
    assert!(o.ok && o.stdout.contains("cordoned"), "{}{}", o.stdout, o.stderr);
    let o = ctl(env.clone(), &["get", "nodes"]).await;
    let row = o.stdout.lines().find(|l| l.trim_start().starts_with(&format!("{id} "))).unwrap_or_default().to_string();
    assert!(row.contains("ready,cordoned"), "{}", o.stdout);
    let o = ctl(env.clone(), &["describe", "node", &id]).await;
    assert!(o.stdout.contains("Cordoned:     yes") && o.stdout.contains("operator"), "{}", o.stdout);
    let o = ctl(env.clone(), &["uncordon", "node", &id]).await;
    assert!(o.ok && o.stdout.contains("uncordoned"), "{}{}", o.stdout, o.stderr);
    let o = ctl(env.clone(), &["cordon", &id, "--undo"]).await;
    assert!(o.ok && o.stdout.contains("uncordoned"), "{}{}", o.stdout, o.stderr);
    fails_with(&ctl(env.clone(), &["cordon", "app", &id]).await, "`app` is not something this command acts on");
    let o = ctl(env.clone(), &["drain", "node", &id]).await;
    assert!(o.ok && o.stdout.contains("draining"), "{}{}", o.stdout, o.stderr);
    fails_with(&ctl(env.clone(), &["drain", "abc"]).await, "`abc` is not a node id");
    fails_with(&ctl(env.clone(), &["cordon", "999"]).await, "fleetd answered 404");

    // logs: simulated agents keep a log as real ones do; a bad id is named.
    let o = ctl(env.clone(), &["logs", "node", &id]).await;
    assert!(o.ok && o.stdout.contains("simulated agent up") && o.stdout.contains("served by runner"), "{}", o.stdout);
    fails_with(&ctl(env.clone(), &["logs", "node", "x1"]).await, "`x1` is not a node id");

    // cost.
    let o = ctl(env.clone(), &["cost"]).await;
    assert!(o.ok && o.stdout.contains("Month to date:") && o.stdout.contains("Forecast, month end:"), "{}", o.stdout);
    let j = ctl(env.clone(), &["cost", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert!(v["burn_per_hour"].is_string() && v.get("headroom_month").is_some(), "{v}");
    fails_with(&ctl(vec![("FLEET_SERVER".into(), "ftp://x".into())], &["cost"]).await, "write the URL with its scheme");
    // https:// to this plain-HTTP fleetd: said so, not "corrupt message".
    let tls_url = r.url.replace("http://", "https://");
    let token = env.iter().find(|(k, _)| k == "FLEET_TOKEN").unwrap().1.clone();
    let o = ctl(vec![("FLEET_SERVER".into(), tls_url), ("FLEET_TOKEN".into(), token)], &["cost"]).await;
    fails_with(&o, "answered in plain HTTP, not TLS: use http://");

    // tokens: create (shown once), use, revoke.
    let o = ctl(env.clone(), &["token", "create", "dash", "--scope", "read"]).await;
    assert!(o.ok && o.stdout.trim().starts_with("flt_"), "{}{}", o.stdout, o.stderr);
    let read = vec![("FLEET_TOKEN".to_string(), o.stdout.trim().to_string()), ("FLEET_SERVER".into(), r.url.clone())];
    assert!(ctl(read.clone(), &["get", "nodes"]).await.ok);
    fails_with(&ctl(read.clone(), &["drain", &id]).await, "fleetd answered 403: token `dash` has scope read");
    fails_with(&ctl(env.clone(), &["token", "create", "x", "--scope", "root"]).await, "use admin, read, or submit:APP");
    let o = ctl(env.clone(), &["token", "revoke", "dash"]).await;
    assert!(o.ok && o.stdout.contains("revoked"), "{}", o.stderr);
    fails_with(&ctl(read, &["get", "nodes"]).await, "fleetd answered 401");
    fails_with(&ctl(env.clone(), &["token", "revoke", "dash"]).await, "fleetd answered 404");

    // completion.
    for shell in ["bash", "zsh", "fish"] {
        let o = ctl(vec![], &["completion", shell]).await;
        assert!(o.ok && o.stdout.contains("fleetctl") && o.stdout.contains("describe"), "{shell}");
    }
    let o = ctl(vec![], &["completion", "tcsh"]).await;
    assert!(!o.ok && o.stderr.contains("invalid value 'tcsh'"), "{}", o.stderr);

    // A config file instead of the environment; a broken one is named.
    let cfg = r.dir.join("config.toml");
    std::fs::write(&cfg, format!("server = \"{}\"\ntoken = \"{}\"\n", r.url, env[0].1)).unwrap();
    let o = ctl(vec![("FLEET_CONFIG".into(), cfg.display().to_string())], &["get", "apps"]).await;
    assert!(o.ok, "{}", o.stderr);
    std::fs::write(&cfg, "sever = \"x\"\n").unwrap();
    fails_with(
        &ctl(vec![("FLEET_CONFIG".into(), cfg.display().to_string())], &["get", "apps"]).await,
        "keys: server, token, ca_cert",
    );

    // Nothing reachable: one line.
    fails_with(
        &ctl(vec![("FLEET_SERVER".into(), "http://127.0.0.1:9".into())], &["get", "apps"]).await,
        "cannot reach fleetd",
    );
}

/// HTTPS: fleetctl checks fleetd's certificate against --ca-cert; without it, a self-signed
/// certificate is refused (one line, not a panic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetctl_talks_https_to_a_certificate_it_trusts() {
    let r = running(true).await;
    let ca = r.dir.join("ca.pem").display().to_string();
    let o = ctl(r.env.clone(), &["get", "apps", "--ca-cert", &ca]).await;
    assert!(o.ok && o.stdout.contains("llm"), "{}{}", o.stdout, o.stderr);
    let o = ctl(r.env.clone(), &["get", "apps"]).await;
    fails_with(&o, "cannot reach fleetd");
    // Plain HTTP to the TLS port gets nothing useful either.
    let plain = r.url.replace("https://localhost", "http://127.0.0.1");
    let o =
        ctl(vec![("FLEET_TOKEN".into(), r.env[0].1.clone()), ("FLEET_SERVER".into(), plain)], &["get", "apps"]).await;
    assert!(!o.ok, "{}", o.stdout);
}

/// `get nodes -w` and `get events -w` stream from fleetd: the listing first, then again when it
/// changes (a cordon), and each new event as it is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes_as_they_happen() {
    use std::io::BufRead;
    let r = running(false).await;
    let env = r.env.clone();
    // A ready node first (the spec keeps one runner).
    let t = std::time::Instant::now();
    let id = loop {
        let nodes: serde_json::Value =
            serde_json::from_str(&ctl(env.clone(), &["get", "nodes", "-o", "json"]).await.stdout).unwrap();
        if let Some(n) = nodes.as_array().unwrap().iter().find(|n| n["state"]["state"] == "ready") {
            break n["id"].to_string();
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "no ready node");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let spawn = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetctl"));
        c.args(args).env_remove("FLEET_CONFIG").env("HOME", "/nonexistent").stdout(std::process::Stdio::piped());
        for (k, v) in &env {
            c.env(k, v);
        }
        c.spawn().unwrap()
    };
    let mut nodes = spawn(&["get", "nodes", "-w"]);
    let mut events = spawn(&["get", "events", "-w"]);
    // Lines as they come, on a thread each (reads block).
    let lines = |child: &mut std::process::Child| {
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        rx
    };
    let (node_lines, event_lines) = (lines(&mut nodes), lines(&mut events));
    let wait_for = |rx: &std::sync::mpsc::Receiver<String>, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
                let hit = l.contains(what);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
        }
        panic!("`{what}` never came; saw:\n{}", seen.join("\n"));
    };
    let first = wait_for(&node_lines, "ready");
    assert!(first.iter().any(|l| l.starts_with("ID")), "{first:?}");
    wait_for(&event_lines, "TIME");
    let o = ctl(env.clone(), &["cordon", "node", &id]).await;
    assert!(o.ok, "{}", o.stderr);
    wait_for(&node_lines, "ready,cordoned");
    let ev = wait_for(&event_lines, "cordoned: no new runners go here");
    assert!(ev.last().unwrap().contains("operator"), "{ev:?}");
    for mut c in [nodes, events] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
