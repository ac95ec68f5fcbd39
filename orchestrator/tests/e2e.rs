//! End to end on real components: `fleetd` (the binary) on real etcd, the AWS adapter against
//! moto's EC2 server, SSH bootstrap into a real sshd on loopback (every emulated instance maps to
//! it; each node's agent in a directory of its own), real `fleet-agent`s serving a candle model,
//! real requests. In the middle: a spot interruption notice on one node (from a test IMDS that
//! answers as AWS's does) and a daemon restart (SIGKILL, a new fleetd takes over). Then: every
//! request served once, the interrupted node drained and replaced, no instance leaked or doubled,
//! and the metrics agree with the store.
#![cfg(feature = "aws")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Fleetd, aws_args, aws_spec, duplicates_and_unknown, live_instances, records_match_cloud};
use fleet_orchestrator::testing::etcd::EtcdServer;
use fleet_orchestrator::testing::sshd::SshServer;
use fleet_providers::moto::Moto;
use serde_json::Value;

const FLEET: &str = "e2e";
const SPEC: &str = r#"
[fleet]
name = "e2e"

[apps.chat]
gpu = "H100"
gpus = 8

[apps.chat.placement]
spot = "spot"

[apps.chat.scaling]
min_concurrency = 2
max_concurrency = 3
keep_alive = "1h"
"#;

/// An instance metadata service answering as AWS's IMDSv2 does, per node (`/node-{id}/latest/…`):
/// no notice (404) until the test interrupts a node.
fn imds(interrupted: Arc<Mutex<Option<u64>>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let interrupted = interrupted.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    return;
                }
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let node: Option<u64> =
                    path.strip_prefix("/node-").and_then(|p| p.split('/').next()).and_then(|n| n.parse().ok());
                let (status, text) = if first.starts_with("PUT") && path.ends_with("/latest/api/token") {
                    ("200 OK", "test-token".to_string())
                } else if path.ends_with("/latest/meta-data/spot/instance-action") {
                    if node.is_some() && *interrupted.lock().unwrap() == node {
                        ("200 OK", r#"{"action": "terminate", "time": "2026-11-26T12:00:00Z"}"#.to_string())
                    } else {
                        ("404 Not Found", "Not Found".to_string())
                    }
                } else {
                    ("404 Not Found", "Not Found".to_string())
                };
                let mut s = s;
                let _ =
                    write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
            });
        }
    });
    port
}

/// The machine of a terminated node goes away: every process running in its directory (the
/// agent and its supervisor) is killed, as it would be with the instance.
fn power_off(nodes_dir: &Path, node: u64) {
    let dir = nodes_dir.join(format!("node-{node}"));
    for _ in 0..3 {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == dir) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Powers off every node's machine when the test ends, passed or failed: no agent outlives it.
struct Machines(std::path::PathBuf);

impl Drop for Machines {
    fn drop(&mut self) {
        for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if let Some(id) = e.file_name().to_str().and_then(|n| n.strip_prefix("node-")).and_then(|n| n.parse().ok())
            {
                power_off(&self.0, id);
            }
        }
    }
}

/// Where the "machines" behind the loopback sshd keep their agents (`dir/nodes`, powered off when
/// the returned guard drops), and the fleet's SSH key for them (`dir/fleet_key`, mode 0600).
fn ssh_machines(dir: &Path, sshd: &SshServer) -> (std::path::PathBuf, Machines, std::path::PathBuf) {
    let nodes_dir = dir.join("nodes");
    std::fs::create_dir_all(&nodes_dir).unwrap();
    let machines = Machines(nodes_dir.clone());
    let key = dir.join("fleet_key");
    std::fs::write(&key, &sshd.user_key).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (nodes_dir, machines, key)
}

/// fleetd's arguments for nodes on moto's EC2 bootstrapped over SSH into the loopback sshd (each
/// node's agent in `nodes_dir/node-{id}`), on real etcd, starting with `spec`, data in `data`,
/// the agent's extra config from `extra`.
#[allow(clippy::too_many_arguments)]
fn ssh_daemon(
    spec: &str,
    etcd: &EtcdServer,
    moto: &Moto,
    sshd: &SshServer,
    key: &Path,
    nodes_dir: &Path,
    data: &Path,
    extra: &Path,
) -> Vec<String> {
    let agent_bin = Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    std::fs::create_dir_all(data).unwrap();
    let mut a = aws_args(FLEET, moto, spec, data);
    a.extend(
        [
            "--etcd",
            &etcd.client_url,
            "--leader-ttl",
            "3",
            "--data-dir",
            &data.display().to_string(),
            "--bootstrap",
            "ssh",
            "--ssh-user",
            &sshd.user,
            "--ssh-key",
            &key.display().to_string(),
            "--agent-binary",
            &agent_bin.display().to_string(),
            "--agent-dir",
            &format!("{}/node-{{node}}", nodes_dir.display()),
            "--agent-config",
            &extra.display().to_string(),
            "--ssh-connect-override",
            &format!("127.0.0.1:{}", sshd.port),
            // The "machines" are this CPU box: no H100 to hold them to.
            "--skip-hardware-check",
        ]
        .map(String::from),
    );
    a
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(name_and_labels)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn requests_survive_an_interruption_and_a_daemon_restart_on_real_components() {
    let agent_bin = Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    assert!(agent_bin.is_file(), "fleet-agent beside fleetd: build the workspace first (cargo build --workspace)");
    let etcd = EtcdServer::start();
    let moto = Moto::start();
    let sshd = SshServer::start();
    let interrupted = Arc::new(Mutex::new(None));
    let imds_port = imds(interrupted.clone());
    let dir = tempfile::tempdir().unwrap();
    let (nodes_dir, _machines, key) = ssh_machines(dir.path(), &sshd);
    let model = dir.path().join("chat.safetensors");
    let made = Command::new(&agent_bin).args(["make-model", "--dims", "16,32,4"]).arg(&model).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let extra = dir.path().join("agent-extra.toml");
    std::fs::write(
        &extra,
        format!(
            "[burn_in]\ncpu_size = 128\niterations = 1\nmin_cpu_tflops = 0.0001\n[interruption]\nsource = \"aws\"\n\
             endpoint = \"http://127.0.0.1:{imds_port}/node-{{node}}\"\npoll = \"200ms\"\n"
        ),
    )
    .unwrap();
    let daemon = |name: &str| {
        let data = dir.path().join(name);
        let mut a = ssh_daemon(SPEC, &etcd, &moto, &sshd, &key, &nodes_dir, &data, &extra);
        a.extend(["--model".to_string(), format!("chat={}", model.display())]);
        a
    };
    let input = r#"{"x": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]}"#;
    let submit = |f: &Fleetd, n: usize| -> Vec<u64> {
        (0..n)
            .map(|_| {
                let (s, b) = f.call("POST", "/v1/apps/chat/requests", &format!(r#"{{"input": {input}}}"#));
                assert_eq!(s, 202, "{b}");
                serde_json::from_str::<Value>(&b).unwrap()["id"].as_u64().unwrap()
            })
            .collect()
    };
    let nodes = |f: &Fleetd| -> Vec<Value> { f.get("/v1/nodes").as_array().cloned().unwrap_or_default() };
    let mut powered_off = std::collections::BTreeSet::new();
    let mut settle = |f: &Fleetd| {
        for n in nodes(f) {
            let id = n["id"].as_u64().unwrap();
            if n["state"]["state"] == "terminated" && powered_off.insert(id) {
                power_off(&nodes_dir, id);
            }
        }
    };

    let a = Fleetd::start(&daemon("a"), None);
    assert!(a.saw("fleetd acting", Duration::from_secs(20)), "{}", a.log());
    a.put_spec(&aws_spec(SPEC, &moto));
    let mut ids = submit(&a, 6);
    let t = Instant::now();
    let ready = loop {
        settle(&a);
        let ready: Vec<u64> =
            nodes(&a).iter().filter(|n| n["state"]["state"] == "ready").map(|n| n["id"].as_u64().unwrap()).collect();
        if ready.len() >= 2 && a.unfinished("chat", &ids).len() < ids.len() {
            break ready;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no two ready nodes serving within 120 s:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(300));
    };

    // A spot interruption notice on one node, then the daemon dies mid-way.
    let victim = ready[0];
    *interrupted.lock().unwrap() = Some(victim);
    let t = Instant::now();
    while nodes(&a).iter().find(|n| n["id"] == victim).map(|n| n["state"]["state"].clone()) == Some("ready".into()) {
        assert!(t.elapsed() < Duration::from_secs(30), "the notice did not drain node {victim}:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let drained = nodes(&a).into_iter().find(|n| n["id"] == victim).unwrap();
    ids.extend(submit(&a, 6));
    a.kill();
    let b = Fleetd::start(&daemon("b"), None);
    assert!(b.saw("fleetd acting", Duration::from_secs(20)), "the new fleetd did not lead:\n{}", b.log());
    ids.extend(submit(&b, 6));

    let t = Instant::now();
    loop {
        settle(&b);
        if b.unfinished("chat", &ids).is_empty()
            && nodes(&b).iter().any(|n| n["id"] == victim && n["state"]["state"] == "terminated")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(150),
            "unfinished {:?}; nodes {:?}\n{}",
            b.unfinished("chat", &ids),
            nodes(&b).iter().map(|n| (n["id"].clone(), n["state"]["state"].clone())).collect::<Vec<_>>(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    settle(&b);
    records_match_cloud(&b, &moto, FLEET, Duration::from_secs(30));

    // Served once each, by real agents running the model.
    for id in &ids {
        let r = b.get(&format!("/v1/apps/chat/requests/{id}"));
        assert_eq!(r["state"]["state"], "done", "{r}");
        assert_eq!(r["state"]["output"]["y"].as_array().map(Vec::len), Some(4), "{r}");
    }
    assert_eq!(drained["state"]["reason"], "spot-interruption", "{drained}");
    let (dups, unknown, instances) = duplicates_and_unknown(&b, &moto);
    assert!(dups.is_empty() && unknown.is_empty(), "{dups:?} {unknown:?}");
    let all = nodes(&b);
    let ready_now = all.iter().filter(|n| n["state"]["state"] == "ready").count();
    assert!(ready_now >= 2, "replaced: {all:?}");
    // Metrics agree with the store (both read again until one pass of the daemon has seen the same).
    let t = Instant::now();
    let m = loop {
        let ready = nodes(&b).iter().filter(|n| n["state"]["state"] == "ready").count();
        let m = b.call("GET", "/metrics", "").1;
        if metric(&m, "fleet_nodes{cloud=\"aws\",state=\"Ready\"}") == Some(ready as f64) {
            break m;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "fleet_nodes Ready ≠ {ready} ready records:\n{m}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(metric(&m, "fleet_queue_depth{app=\"chat\"}"), Some(0.0), "{m}");
    eprintln!(
        "e2e: {} requests served once by real agents; node {victim} interrupted → drained and replaced; fleetd \
         SIGKILLed and replaced; {instances} instances for {} nodes, 0 duplicates, 0 leaked; {} live now",
        ids.len(),
        all.len(),
        live_instances(&moto, FLEET).len()
    );
}

/// A pinned model on an SSH-bootstrapped node: fleetd is given no model file; the spec pins a
/// language model pushed to an origin, the bootstrap writes the pin and the node's cache into
/// the agent's config, and the agent fetches it into its cache and answers as the model does
/// alone; fleetd counts the cold start and learns the app's cold-start model from it.
#[test]
fn a_pinned_model_reaches_an_ssh_bootstrapped_node_through_its_cache() {
    let agent_bin = Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    assert!(agent_bin.is_file(), "fleet-agent beside fleetd: build the workspace first (cargo build --workspace)");
    let etcd = EtcdServer::start();
    let moto = Moto::start();
    let sshd = SshServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (nodes_dir, _machines, key) = ssh_machines(dir.path(), &sshd);
    let model = dir.path().join("tiny-llama");
    let made = Command::new(&agent_bin).args(["make-llm", "--family", "qwen2"]).arg(&model).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let origin_dir = dir.path().join("origin");
    std::fs::create_dir_all(&origin_dir).unwrap();
    let origin: fleet_core::artifact::Origin = format!("file://{}", origin_dir.display()).parse().unwrap();
    let store = Arc::new(fleet_providers::origin::file::FileOrigin::new(origin_dir.clone()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pushed = rt.block_on(fleet_providers::origin::push(&model, &origin, store, 64 << 10)).unwrap();
    let extra = dir.path().join("agent-extra.toml");
    // The "machines" share this box's two cores with everything else the tests run: a burn-in
    // bar for a CPU that is not busy would fail them at random.
    std::fs::write(&extra, "[burn_in]\ncpu_size = 128\niterations = 1\nmin_cpu_tflops = 0.0001\n").unwrap();
    // One node, from the start: the spec fleetd starts with pins the model.
    let spec = SPEC.replace("min_concurrency = 2\nmax_concurrency = 3", "min_concurrency = 1\nmax_concurrency = 1");
    let spec = format!("{spec}\n[apps.chat.model]\nsource = \"{origin}\"\ndigest = \"{}\"\n", pushed.digest);
    assert!(spec.contains("max_concurrency = 1"), "{spec}");
    let args = ssh_daemon(&spec, &etcd, &moto, &sshd, &key, &nodes_dir, &dir.path().join("d"), &extra);
    let f = Fleetd::start(&args, None);
    assert!(f.saw("fleetd acting", Duration::from_secs(20)), "{}", f.log());
    let body = serde_json::json!({ "input": { "prompt": "hello world", "max_tokens": 5 } }).to_string();
    let (s, b) = f.call("POST", "/v1/apps/chat/requests", &body);
    assert_eq!(s, 202, "{b}");
    let id = serde_json::from_str::<Value>(&b).unwrap()["id"].as_u64().unwrap();
    let t = Instant::now();
    while !f.unfinished("chat", &[id]).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(150), "unanswered after 150 s:\n{}", f.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = f.get(&format!("/v1/apps/chat/requests/{id}"));
    let alone = common::generate_alone(&model, "hello world", 5);
    assert_eq!(r["state"]["output"]["text"], alone["text"], "{r}");
    // The node's agent config carries the pin and a cache under its own directory, and the
    // cache holds the model as pinned.
    let node = f.get("/v1/nodes").as_array().unwrap().iter().find(|n| n["state"]["state"] == "ready").cloned();
    let node =
        node.unwrap_or_else(|| panic!("a ready node: {}\n{}", f.get("/v1/nodes"), f.get("/v1/events")))["id"].clone();
    let agent_dir = nodes_dir.join(format!("node-{node}"));
    let config = std::fs::read_dir(&agent_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .find(|c| c.contains("digest"))
        .unwrap_or_else(|| panic!("an agent config with the pin in {}", agent_dir.display()));
    assert!(config.contains(&pushed.digest.to_string()) && config.contains("[cache]"), "{config}");
    let cached = walk(&agent_dir).into_iter().filter(|p| p.ends_with(pushed.digest.hex())).count();
    assert!(cached >= 1, "the model in the node's cache under {}", agent_dir.display());
    let t = Instant::now();
    loop {
        let m = f.call("GET", "/metrics", "").1;
        if metric(&m, "fleet_cold_start_seconds_count{phase=\"fetch\",app=\"chat\"}") == Some(1.0) {
            assert_eq!(
                metric(&m, "fleet_model_bytes_total{app=\"chat\",source=\"origin\"}"),
                Some(pushed.bytes as f64)
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no cold start counted:\n{m}\n{}", f.get("/v1/events"));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(f.saw("cold-start model learned", Duration::from_secs(10)), "{}", f.log());
    eprintln!("e2e: a pinned model ({} bytes) reached node {node} over SSH bootstrap, through its cache", pushed.bytes);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.clone());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}
