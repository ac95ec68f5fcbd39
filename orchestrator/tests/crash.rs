//! Crash safety of the real `fleetd`: embedded store, the AWS adapter against moto's EC2 server
//! (the cloud outlives the daemon, as a real one does), simulated agents. fleetd is SIGKILLed at
//! every crash point of a node's life (`fleet_orchestrator::crashpoint::POINTS`, the 1st and 2nd
//! pass of each: 22 kills during launches, serving and terminations), restarted each time on the
//! same data dir; after the last restart the fleet settles and the test checks, against moto:
//! no instance without a record, no record without an instance, no node launched twice, every
//! request served exactly once, and nothing left running once the fleet is idle.
#![cfg(feature = "aws")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleet_orchestrator::crashpoint::POINTS;
use fleet_orchestrator::testing::http::http;
use fleet_providers::moto::Moto;
use serde_json::Value;

const FLEET: &str = "crash";
const SPEC: &str = r#"
[fleet]
name = "crash"

[apps.llm]
gpu = "H100"
gpus = 8

[apps.llm.scaling]
max_concurrency = 2
keep_alive = "2s"
"#;

struct Fleetd {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    /// The last lines read, for failure messages.
    tail: std::cell::RefCell<std::collections::VecDeque<String>>,
}

impl Drop for Fleetd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(dir: &std::path::Path, moto: &Moto, crash_at: Option<&str>) -> Fleetd {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetd"));
    cmd.args(["--listen", &addr, "--fleet", FLEET, "--data-dir"])
        .arg(dir)
        .args(["--aws-region", "us-east-1", "--aws-image", "ami-12c6146b", "--aws-endpoint", &moto.url])
        .args(["--simulate-agents", "--fake-speed", "20", "--reconcile-every", "0.2", "--node-poll", "0.3"])
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "moto-does-not-check-this")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "info,fleet_orchestrator::actors=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match crash_at {
        Some(p) => cmd.env("FLEETD_CRASH_AT", p),
        None => cmd.env_remove("FLEETD_CRASH_AT"),
    };
    let mut child = cmd.spawn().expect("fleetd starts");
    // Drain stderr continuously (a full pipe would stall fleetd) into a channel.
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let f = Fleetd { child, addr, lines, tail: Default::default() };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok((200, _)) = http(&f.addr, "GET", "/healthz", "") {
            return f;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("fleetd did not answer /healthz within 30 s");
}

impl Fleetd {
    /// Waits up to `wait` for a stderr line containing `pat`.
    fn saw(&self, pat: &str, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains("reconcile pass") => {}
                Ok(l) => {
                    let found = l.contains(pat);
                    let mut tail = self.tail.borrow_mut();
                    tail.push_back(l);
                    if tail.len() > 40 {
                        tail.pop_front();
                    }
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn get(&self, path: &str) -> Value {
        let (s, b) = http(&self.addr, "GET", path, "").unwrap();
        assert_eq!(s, 200, "GET {path}: {b}");
        serde_json::from_str(&b).unwrap()
    }

    fn submit(&self, n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let (s, b) =
                    http(&self.addr, "POST", "/v1/apps/llm/requests", &format!(r#"{{"input": {{"i": {i}}}}}"#))
                        .unwrap();
                assert_eq!(s, 202, "{b}");
                serde_json::from_str::<Value>(&b).unwrap()["id"].as_u64().unwrap()
            })
            .collect()
    }

    /// Requests not finished yet.
    fn unfinished(&self, ids: &[u64]) -> Vec<u64> {
        ids.iter()
            .copied()
            .filter(|id| self.get(&format!("/v1/apps/llm/requests/{id}"))["state"]["state"] != "done")
            .collect()
    }

    /// Instance ids that node records hold (records in a state with an instance).
    fn recorded_instances(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for n in self.get("/v1/nodes").as_array().unwrap() {
            if let Some(i) = n["state"]["instance_id"].as_str()
                && n["state"]["state"] != "failed"
            {
                out.insert(i.to_string(), n["id"].as_u64().unwrap());
            }
        }
        out
    }

    fn log(&self) -> String {
        self.tail.borrow().iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

/// One EC2 query call to moto (moto checks the credential's form, not the signature).
fn ec2(moto: &Moto, query: &str) -> String {
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0";
    let (s, b) = fleet_orchestrator::testing::http::request(
        &format!("127.0.0.1:{}", moto.port),
        "POST",
        "/",
        &["Content-Type: application/x-www-form-urlencoded", auth],
        &format!("{query}&Version=2016-11-15"),
    )
    .unwrap();
    assert_eq!(s, 200, "{query}: {b}");
    b
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let a = s.find(open)? + open.len();
    Some(&s[a..a + s[a..].find(close)?])
}

/// Every instance moto ever made for this fleet (terminated ones too) → its `fleet-node` tag.
fn all_instances(moto: &Moto) -> BTreeMap<String, String> {
    let body = ec2(
        moto,
        "Action=DescribeTags&Filter.1.Name=key&Filter.1.Value.1=fleet-node&Filter.2.Name=resource-type&Filter.2.Value.1=instance",
    );
    body.split("<item>")
        .skip(1)
        .filter_map(|item| {
            Some((between(item, "<resourceId>", "<")?.to_string(), between(item, "<value>", "<")?.to_string()))
        })
        .collect()
}

/// Instances of this fleet moto has not terminated.
fn live_instances(moto: &Moto) -> BTreeSet<String> {
    let body = ec2(
        moto,
        &format!(
            "Action=DescribeInstances&Filter.1.Name=tag:fleet-name&Filter.1.Value.1={FLEET}\
             &Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&Filter.2.Value.2=running\
             &Filter.2.Value.3=stopping&Filter.2.Value.4=stopped&Filter.2.Value.5=shutting-down"
        ),
    );
    body.match_indices("<instanceId>")
        .map(|(i, _)| between(&body[i..], "<instanceId>", "<").unwrap().to_string())
        .collect()
}

#[test]
fn sigkill_at_every_crash_point_leaks_nothing_and_serves_every_request_once() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let mut submitted: Vec<u64> = Vec::new();
    let points: Vec<(&str, u32)> = [1, 2].iter().flat_map(|n| POINTS.iter().map(move |p| (*p, *n))).collect();
    assert!(points.len() >= 20);
    let mut report = Vec::new();
    for (i, (point, nth)) in points.iter().enumerate() {
        let f = start(dir.path(), &moto, Some(&format!("{point}:{nth}")));
        if i == 0 {
            let (s, b) = http(&f.addr, "PUT", "/v1/spec", SPEC).unwrap();
            assert_eq!(s, 200, "{b}");
        }
        let t = Instant::now();
        let mut last_burst: Option<Instant> = None;
        loop {
            if f.saw(&format!("crash point {point}#{nth} reached"), Duration::from_millis(300)) {
                break;
            }
            // Work arrives in bursts, once the previous burst is served and the fleet had time
            // to scale down: so the run passes launches, serving and terminations in turn.
            let quiet = last_burst.is_none_or(|b| b.elapsed() > Duration::from_secs(6));
            if quiet && f.unfinished(&submitted).is_empty() {
                submitted.extend(f.submit(3));
                last_burst = Some(Instant::now());
            }
            assert!(
                t.elapsed() < Duration::from_secs(40),
                "crash point {point}#{nth} not reached within 40 s; fleetd's last lines:\n{}",
                f.log()
            );
        }
        report.push(format!("{point}#{nth} after {:.1} s", t.elapsed().as_secs_f64()));
        eprintln!("killed at {}", report.last().unwrap());
        f.kill();
    }

    // The last restart, with no crash point: everything settles.
    let f = start(dir.path(), &moto, None);
    let t = Instant::now();
    while !f.unfinished(&submitted).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(120), "requests unfinished 120 s after the last restart");
        std::thread::sleep(Duration::from_millis(200));
    }
    let served = t.elapsed();
    // Records and the cloud agree (transients such as a terminate in flight settle first).
    let t = Instant::now();
    loop {
        let recorded: BTreeSet<String> = f.recorded_instances().into_keys().collect();
        let live = live_instances(&moto);
        if recorded == live {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "after 60 s: instances without a record {:?}, records without an instance {:?}",
            live.difference(&recorded).collect::<Vec<_>>(),
            recorded.difference(&live).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Idle: back to zero, nothing left running.
    let t = Instant::now();
    while !live_instances(&moto).is_empty() || !f.recorded_instances().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "still running 60 s after the work ended: {:?}",
            live_instances(&moto)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let idle = t.elapsed();

    // Exactly once: one result per request, each done.
    let mut retried = 0;
    for id in &submitted {
        let r = f.get(&format!("/v1/apps/llm/requests/{id}"));
        assert_eq!(r["state"]["state"], "done", "request {id}: {r}");
        if r["attempts"].as_u64().unwrap() > 1 {
            retried += 1;
        }
    }
    // No node launched twice; every instance belongs to a node record.
    let nodes: BTreeSet<String> =
        f.get("/v1/nodes").as_array().unwrap().iter().map(|n| n["id"].as_u64().unwrap().to_string()).collect();
    let instances = all_instances(&moto);
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for node in instances.values() {
        *per_node.entry(node).or_default() += 1;
    }
    let duplicates: Vec<_> = per_node.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "nodes launched more than once: {duplicates:?}");
    let unknown: Vec<_> = per_node.keys().filter(|n| !nodes.contains(**n)).collect();
    assert!(unknown.is_empty(), "instances of nodes fleetd has no record of: {unknown:?}");
    assert!(instances.len() >= 4, "the run launched too little to test anything: {instances:?}");
    eprintln!(
        "crash test: {} SIGKILLs ({}); {} instances launched for {} nodes, 0 duplicates, 0 leaked; \
         {} requests served once each ({retried} after a re-queue); last restart → all served in {:.1} s, \
         idle with nothing running {:.1} s later",
        points.len(),
        report.join(", "),
        instances.len(),
        nodes.len(),
        submitted.len(),
        served.as_secs_f64(),
        idle.as_secs_f64()
    );
}
