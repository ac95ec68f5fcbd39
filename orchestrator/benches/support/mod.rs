//! What the fleetd benchmarks share: the real fleetd started on a free port with its data in a
//! temporary directory (and, with `--local`, the nodes it starts: real fleet-agents), its admin
//! token, API calls, and waiting for a ready runner. Everything it started goes when dropped.

#![allow(dead_code)] // each bench uses part of it

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

pub struct Fleetd {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub addr: String,
    pub token: String,
}

impl Drop for Fleetd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Local nodes are processes started in the data directory.
        let _ = Command::new("pkill").args(["-f", &self.dir.path().display().to_string()]).status();
    }
}

/// fleet-agent beside fleetd (`cargo build --release -p fleet-agent`).
pub fn agent_binary() -> std::path::PathBuf {
    let agent = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    assert!(agent.is_file(), "{} missing: cargo build --release -p fleet-agent first", agent.display());
    agent
}

/// A generated Llama in `dir/name` (`fleet-agent make-llm` with `args`).
pub fn make_llm(dir: &std::path::Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let model = dir.join(name);
    let ok = Command::new(agent_binary()).arg("make-llm").args(args).arg(&model).status().unwrap();
    assert!(ok.success());
    model
}

impl Fleetd {
    /// `fleetd --fleet FLEET --spec SPEC ARGS` on a free loopback port; waits for its token.
    pub fn start(fleet: &str, spec: &str, args: &[String], dir: tempfile::TempDir) -> Fleetd {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let spec_file = dir.path().join("spec.toml");
        std::fs::write(&spec_file, spec).unwrap();
        // `FLEET_BENCH_FLEETD_LOG=FILE`: fleetd's warnings go there (a watch that fell behind,
        // say), to tell what a run's figures went through.
        let log = std::env::var_os("FLEET_BENCH_FLEETD_LOG").map(|f| std::fs::File::create(f).unwrap());
        let child = Command::new(env!("CARGO_BIN_EXE_fleetd"))
            .args(["--fleet", fleet, "--listen", &addr])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--spec")
            .arg(&spec_file)
            .args(args)
            .env("RUST_LOG", if log.is_some() { "warn" } else { "error" })
            .stdout(Stdio::null())
            .stderr(log.map_or_else(Stdio::null, Stdio::from))
            .spawn()
            .unwrap();
        let t = Instant::now();
        let token = loop {
            if let Ok(s) = std::fs::read_to_string(dir.path().join("admin.token"))
                && std::net::TcpStream::connect(&addr).is_ok()
            {
                break s.trim().to_string();
            }
            assert!(t.elapsed() < Duration::from_secs(30), "fleetd did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        Fleetd { child, dir, addr, token }
    }

    /// `GET path` with the admin token: the JSON answer, or `None` (not yet reachable).
    pub async fn get(&self, path: &str) -> Option<Value> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header("host", self.addr.as_str())
            .header("authorization", format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .ok()?;
        let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req)).await.ok()?.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    }

    /// The first ready runner and its agent's push endpoint: (endpoint, node, runner).
    pub async fn ready_runner(&self) -> (String, u64, u64) {
        let t = Instant::now();
        loop {
            assert!(t.elapsed() < Duration::from_secs(120), "no ready runner within 120 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (Some(nodes), Some(runners)) = (self.get("/v1/nodes").await, self.get("/v1/runners").await) else {
                continue;
            };
            let ready = runners.as_array().and_then(|r| r.iter().find(|r| r["state"]["state"] == "idle"));
            let push = nodes.as_array().and_then(|n| {
                n.iter()
                    .find_map(|n| Some((n["agent"]["health"]["push_addr"].as_str()?.to_string(), n["id"].as_u64()?)))
            });
            if let (Some(r), Some((a, node))) = (ready, push) {
                return (a, node, r["id"].as_u64().unwrap());
            }
        }
    }

    /// fleetd's resident memory now and at its peak, in MiB.
    pub fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }

    /// File descriptors fleetd holds open.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map(|d| d.count()).unwrap_or(0)
    }
}
