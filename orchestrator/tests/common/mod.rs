//! Shared by the tests that run the real `fleetd` binary against moto (crash safety, failover):
//! the daemon as a child process, and what moto says about the fleet's instances.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleet_orchestrator::testing::http::{http, request};
use fleet_providers::moto::Moto;
use serde_json::Value;

/// A `fleetd` child process; SIGKILLed when dropped.
pub struct Fleetd {
    pub child: Child,
    pub addr: String,
    /// Its admin API token (from `--data-dir`/admin.token).
    pub token: String,
    lines: mpsc::Receiver<String>,
    /// The last lines read, for failure messages.
    tail: std::cell::RefCell<VecDeque<String>>,
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

/// `spec` with the AWS account of the tests: `moto` as its EC2 endpoint.
pub fn aws_spec(spec: &str, moto: &Moto) -> String {
    format!("{spec}\n[clouds.aws]\nregion = \"us-east-1\"\nimage = \"ami-12c6146b\"\nendpoint = \"{}\"\n", moto.url)
}

/// fleetd's flags for fleet `fleet` on AWS against `moto`, fast enough for tests: `spec` with the
/// AWS account ([`aws_spec`]), written into `dir` and applied at start (`--spec`).
pub fn aws_args(fleet: &str, moto: &Moto, spec: &str, dir: &std::path::Path) -> Vec<String> {
    let file = dir.join("fleet-spec.toml");
    std::fs::write(&file, aws_spec(spec, moto)).unwrap();
    // moto's console output never carries cloud-init's host key block: pin at first contact
    // without waiting (the wait itself is the node actor's unit test).
    [
        "--fleet",
        fleet,
        "--spec",
        &file.display().to_string(),
        "--reconcile-every",
        "0.2",
        "--node-poll",
        "0.3",
        "--host-key-wait-seconds",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Fleetd {
    /// Starts `fleetd ARGS` on a free port (`FLEETD_CRASH_AT=crash_at` when given) and waits for
    /// its API.
    pub fn start(args: &[String], crash_at: Option<&str>) -> Fleetd {
        Fleetd::start_with_env(args, crash_at, &[])
    }

    /// [`Fleetd::start`] with more environment variables (API keys).
    pub fn start_with_env(args: &[String], crash_at: Option<&str>, env: &[(&str, &str)]) -> Fleetd {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetd"));
        cmd.envs(env.iter().copied());
        cmd.args(["--listen", &addr])
            .args(args)
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
        let dir = args.iter().position(|a| a == "--data-dir").map(|i| args[i + 1].clone()).expect("--data-dir");
        let mut f = Fleetd { child, addr, token: String::new(), lines, tail: Default::default() };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok((200, _)) = http(&f.addr, "GET", "/healthz", "") {
                f.token = std::fs::read_to_string(std::path::Path::new(&dir).join("admin.token"))
                    .expect("fleetd wrote its admin token")
                    .trim()
                    .to_string();
                return f;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("fleetd did not answer /healthz within 30 s");
    }

    /// Waits up to `wait` for a stderr line containing `pat`.
    pub fn saw(&self, pat: &str, wait: Duration) -> bool {
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

    /// The last lines [`Fleetd::saw`] read.
    pub fn log(&self) -> String {
        self.tail.borrow().iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// One API call with the admin token.
    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        request(&self.addr, method, path, &[&format!("Authorization: Bearer {}", self.token)], body).unwrap()
    }

    pub fn get(&self, path: &str) -> Value {
        let (s, b) = self.call("GET", path, "");
        assert_eq!(s, 200, "GET {path}: {b}");
        serde_json::from_str(&b).unwrap()
    }

    pub fn put_spec(&self, spec: &str) {
        let (s, b) = self.call("PUT", "/v1/spec", spec);
        assert_eq!(s, 200, "{b}");
    }

    /// Submits `n` requests to `app`; returns their ids.
    pub fn submit(&self, app: &str, n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let (s, b) =
                    self.call("POST", &format!("/v1/apps/{app}/requests"), &format!(r#"{{"input": {{"i": {i}}}}}"#));
                assert_eq!(s, 202, "{b}");
                serde_json::from_str::<Value>(&b).unwrap()["id"].as_u64().unwrap()
            })
            .collect()
    }

    /// Requests of `app` not finished yet.
    pub fn unfinished(&self, app: &str, ids: &[u64]) -> Vec<u64> {
        ids.iter()
            .copied()
            .filter(|id| self.get(&format!("/v1/apps/{app}/requests/{id}"))["state"]["state"] != "done")
            .collect()
    }

    /// Instance ids that node records hold (records in a state with an instance) → node id.
    pub fn recorded_instances(&self) -> BTreeMap<String, u64> {
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

    /// (id, state, capacity type of the offering it is on or tries) of every node record.
    pub fn nodes(&self) -> Vec<(u64, String, String)> {
        self.get("/v1/nodes")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|n| {
                let state = n["state"]["state"].as_str().unwrap_or_default().to_string();
                let attempt = n["attempt"].as_u64().unwrap_or(0) as usize;
                let capacity =
                    n["candidates"][attempt]["offering"]["capacity"].as_str().unwrap_or_default().to_string();
                (n["id"].as_u64().unwrap(), state, capacity)
            })
            .collect()
    }

    /// Every node record's id.
    pub fn node_ids(&self) -> BTreeSet<String> {
        self.get("/v1/nodes").as_array().unwrap().iter().map(|n| n["id"].as_u64().unwrap().to_string()).collect()
    }

    /// SIGKILL, and wait for the process to go.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// One EC2 query call to moto (moto checks the credential's form, not the signature).
fn ec2(moto: &Moto, query: &str) -> String {
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0";
    let (s, b) = request(
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

/// Every instance moto ever made (terminated ones too) → its `fleet-node` tag.
pub fn all_instances(moto: &Moto) -> BTreeMap<String, String> {
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

/// Instances of fleet `fleet` moto has not terminated.
pub fn live_instances(moto: &Moto, fleet: &str) -> BTreeSet<String> {
    let body = ec2(
        moto,
        &format!(
            "Action=DescribeInstances&Filter.1.Name=tag:fleet-name&Filter.1.Value.1={fleet}\
             &Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&Filter.2.Value.2=running\
             &Filter.2.Value.3=stopping&Filter.2.Value.4=stopped&Filter.2.Value.5=shutting-down"
        ),
    );
    body.match_indices("<instanceId>")
        .map(|(i, _)| between(&body[i..], "<instanceId>", "<").unwrap().to_string())
        .collect()
}

/// Waits until the instances node records hold are exactly the instances moto runs; panics with
/// the difference after `within`.
pub fn records_match_cloud(f: &Fleetd, moto: &Moto, fleet: &str, within: Duration) {
    let t = Instant::now();
    loop {
        let recorded: BTreeSet<String> = f.recorded_instances().into_keys().collect();
        let live = live_instances(moto, fleet);
        if recorded == live {
            return;
        }
        assert!(
            t.elapsed() < within,
            "after {within:?}: instances without a record {:?}, records without an instance {:?}",
            live.difference(&recorded).collect::<Vec<_>>(),
            recorded.difference(&live).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Nodes with more than one instance ever, and instances of nodes `f` has no record of.
pub fn duplicates_and_unknown(f: &Fleetd, moto: &Moto) -> (Vec<String>, Vec<String>, usize) {
    let nodes = f.node_ids();
    let instances = all_instances(moto);
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for node in instances.values() {
        *per_node.entry(node).or_default() += 1;
    }
    let dup = per_node.iter().filter(|(_, n)| **n > 1).map(|(k, n)| format!("node {k}: {n} instances")).collect();
    let unknown = per_node.keys().filter(|n| !nodes.contains(**n)).map(|n| n.to_string()).collect();
    (dup, unknown, instances.len())
}

/// The `local` provider's machines under a fleetd data directory.
pub struct Machines(pub std::path::PathBuf);

impl Drop for Machines {
    /// Local nodes outlive fleetd, as machines would: stop whatever is left.
    fn drop(&mut self) {
        let instances = std::fs::read_to_string(self.0.join("local/instances.json")).unwrap_or_default();
        if let Ok(Value::Array(rs)) = serde_json::from_str::<Value>(&instances) {
            for r in rs {
                let _ = std::process::Command::new("kill").arg(r["pid"].to_string()).status();
            }
        }
    }
}

/// What `fleet-agent generate` (beside fleetd) answers `prompt` with, greedy, from `model` alone:
/// what a request served through fleet must match.
pub fn generate_alone(model: &std::path::Path, prompt: &str, max_tokens: u32) -> Value {
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    let out = Command::new(agent_bin)
        .args(["generate", "--max-tokens", &max_tokens.to_string(), "--model"])
        .arg(model)
        .arg(prompt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
