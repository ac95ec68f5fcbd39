//! `fleetctl demo`: the whole system on this machine, no cloud account, no etcd. Starts `fleetd`
//! (embedded store, `local` provider: every node a real `fleet-agent` serving a small model with
//! candle on the CPU), applies a two-app fleet spec with a budget and a spot mix, submits a burst
//! of requests, shows nodes coming up, the queue draining and the cost ticking, waits for the
//! fleet to scale back to zero after keep_alive, and prints a summary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::server::Server;

pub const SPEC: &str = r#"# fleetctl demo: two apps on local nodes (each a real fleet-agent on this machine).
[fleet]
name = "demo"

[budget]
max_per_hour = "20"

[apps.chat]
gpu = "H100"
gpus = 1

[apps.chat.placement]
spot = "auto"        # spot where it is cheaper...
base_on_demand = 1   # ...but the first node on demand

[apps.chat.scaling]
max_concurrency = 3
keep_alive = "5s"

[apps.embed]
gpu = "H100"
gpus = 1

[apps.embed.placement]
spot = "spot"

[apps.embed.scaling]
max_concurrency = 2
keep_alive = "5s"
"#;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Requests in the burst (split 60/40 between the two apps).
    #[arg(long, default_value_t = 50)]
    requests: usize,
    /// Where fleetd keeps its store, token, nodes and logs (default: a new temporary directory,
    /// removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name(name);
    if !p.is_file() {
        bail!(
            "fleetctl demo runs {name} from fleetctl's directory and there is none at {}: build the workspace first \
             (cargo build --workspace)",
            p.display()
        );
    }
    Ok(p)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Every node process the local provider started, ended (the demo leaves nothing running).
fn stop_leftover_nodes(dir: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(dir.join("local/instances.json")) else { return 0 };
    let Ok(Value::Array(recs)) = serde_json::from_str::<Value>(&text) else { return 0 };
    let mut n = 0;
    for r in recs {
        let (Some(pid), Some(d)) = (r["pid"].as_u64(), r["dir"].as_str()) else { continue };
        if std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == Path::new(d)) {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            n += 1;
        }
    }
    n
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn secs(a: &Value, b: &Value) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(a.as_str()?).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(b.as_str()?).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

pub fn run(args: DemoArgs, output: crate::Output) -> anyhow::Result<()> {
    // With -o json/yaml the progress goes to stderr and the summary, as data, to stdout.
    let structured = output.structured();
    macro_rules! say {
        ($($t:tt)*) => {{
            if structured {
                eprintln!("{}", crate::terminal::printable(&format!($($t)*)));
            } else {
                outln!($($t)*);
            }
        }};
    }
    let fleetd = sibling("fleetd")?;
    sibling("fleet-agent")?;
    let (dir, _tmp) = match &args.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = std::env::temp_dir().join(format!("fleet-demo-{}", std::process::id()));
            (t.clone(), Some(TempDir(t)))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("--dir {}", dir.display()))?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("fleetd.log")).context("fleetd.log")?;
    say!("fleet demo: fleetd at {url} (embedded store)");
    say!("            local nodes: real fleet-agents, candle on the CPU");
    say!("            files: {}", dir.display());
    let child = Command::new(&fleetd)
        .args(["--fleet", "demo", "--local", "--local-capacity", "6", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--reconcile-every", "0.2", "--node-poll", "0.3", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", fleetd.display()))?;
    let daemon = Daemon(child);
    let start = Instant::now();
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(dir.join("admin.token"))
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            break t.trim().to_string();
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("fleetd did not start within 20 s; see {}", dir.join("fleetd.log").display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let server = Server::new(&url, Some(token), None)?;
    server.send(true, "/v1/spec", SPEC)?;
    say!("applied: apps chat (spot + 1 on-demand) and embed (spot), budget $20/h");

    let mut ids: Vec<(String, u64)> = Vec::new();
    for i in 0..args.requests {
        let app = if i % 5 < 3 { "chat" } else { "embed" };
        let x: Vec<f64> = (0..16).map(|k| ((i * 16 + k) % 7) as f64 / 7.0).collect();
        let v = server.send(
            false,
            &format!("/v1/apps/{app}/requests"),
            &serde_json::json!({ "input": { "x": x } }).to_string(),
        )?;
        ids.push((app.to_string(), v["id"].as_u64().context("no request id")?));
    }
    say!("submitted {} requests\n", ids.len());
    say!(
        "{:>6}  {:>5}  {:>5}  {:>7}  {:>7}  {:>9}  {:>10}  {:>8}",
        "TIME",
        "NODES",
        "READY",
        "QUEUED",
        "RUNNING",
        "DONE",
        "SPENT",
        "$/HOUR"
    );

    let t0 = Instant::now();
    let mut done: std::collections::BTreeMap<u64, Value> = Default::default();
    let mut peak = 0usize;
    let mut phase_done = None;
    loop {
        for (app, id) in &ids {
            if done.contains_key(id) {
                continue;
            }
            let r = server.get(&format!("/v1/apps/{app}/requests/{id}"))?;
            if matches!(r["state"]["state"].as_str(), Some("done") | Some("failed")) {
                done.insert(*id, r);
            }
        }
        let nodes = server.get("/v1/nodes")?;
        let live: Vec<&Value> = nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| !matches!(n["state"]["state"].as_str(), Some("terminated") | Some("failed")))
            .collect();
        let ready = live.iter().filter(|n| n["state"]["state"] == "ready").count();
        peak = peak.max(live.len());
        let apps = server.get("/v1/apps")?;
        let (mut queued, mut running) = (0, 0);
        for a in apps.as_object().into_iter().flatten().map(|(_, a)| a) {
            queued += a["queued"].as_u64().unwrap_or(0);
            running += a["in_flight"].as_u64().unwrap_or(0);
        }
        let cost = server.get("/v1/cost")?;
        say!(
            "{:>5.1}s  {:>5}  {:>5}  {:>7}  {:>7}  {:>9}  {:>10}  {:>8}",
            t0.elapsed().as_secs_f64(),
            live.len(),
            ready,
            queued,
            running,
            format!("{}/{}", done.len(), ids.len()),
            format!("${}", money(&cost["month_to_date"], 4)),
            format!("${}", money(&cost["burn_per_hour"], 2)),
        );
        if done.len() == ids.len() && phase_done.is_none() {
            phase_done = Some(t0.elapsed());
            say!("        all {} requests answered; nodes stay warm for keep_alive (5 s), then go", ids.len());
        }
        if phase_done.is_some() && live.is_empty() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(100) {
            bail!(
                "the demo did not finish within 100 s ({} of {} requests answered, {} nodes up); see {}",
                done.len(),
                ids.len(),
                live.len(),
                dir.join("fleetd.log").display()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let total = t0.elapsed();

    // Summary.
    let nodes = server.get("/v1/nodes")?;
    let all: Vec<&Value> = nodes.as_array().into_iter().flatten().collect();
    let launched = all.iter().filter(|n| !n["billing_since"].is_null()).count();
    let spot = all
        .iter()
        .filter(|n| !n["billing_since"].is_null())
        .filter(|n| {
            let i = n["attempt"].as_u64().unwrap_or(0) as usize;
            n["candidates"][i]["offering"]["capacity"] == "spot"
        })
        .count();
    let failed = done.values().filter(|r| r["state"]["state"] == "failed").count();
    let mut waits: Vec<f64> =
        done.values().filter_map(|r| secs(&r["submitted_at"], &r["state"]["finished_at"])).collect();
    waits.sort_by(f64::total_cmp);
    let cost = server.get("/v1/cost")?;
    say!("\nsummary");
    say!(
        "  requests   {} answered ({} failed), {} chat / {} embed",
        done.len(),
        failed,
        ids.iter().filter(|(a, _)| a == "chat").count(),
        ids.iter().filter(|(a, _)| a == "embed").count()
    );
    say!(
        "  latency    p50 {:.2} s, p95 {:.2} s, max {:.2} s (cold starts included)",
        percentile(&waits, 0.5),
        percentile(&waits, 0.95),
        percentile(&waits, 1.0)
    );
    say!(
        "  nodes      {launched} launched ({spot} spot, {} on-demand), {peak} at once, 0 left running",
        launched - spot
    );
    say!("  cost       ${} at local prices, budget $20/h", money(&cost["month_to_date"], 4));
    say!(
        "  time       served in {:.1} s, back to zero nodes at {:.1} s",
        phase_done.unwrap_or(total).as_secs_f64(),
        total.as_secs_f64()
    );
    if structured {
        let summary = serde_json::json!({
            "requests": { "answered": done.len(), "failed": failed,
                "chat": ids.iter().filter(|(a, _)| a == "chat").count(),
                "embed": ids.iter().filter(|(a, _)| a == "embed").count() },
            "latency_seconds": { "p50": percentile(&waits, 0.5), "p95": percentile(&waits, 0.95), "max": percentile(&waits, 1.0) },
            "nodes": { "launched": launched, "spot": spot, "on_demand": launched - spot, "peak": peak, "left_running": 0 },
            "cost": cost["month_to_date"],
            "served_seconds": phase_done.unwrap_or(total).as_secs_f64(),
            "back_to_zero_seconds": total.as_secs_f64(),
        });
        crate::output::print(&summary, output == crate::Output::Yaml);
    }
    drop(daemon);
    let left = stop_leftover_nodes(&dir);
    if left > 0 {
        eprintln!("fleetctl demo: stopped {left} node processes still running after fleetd");
    }
    if failed > 0 {
        bail!("{failed} requests failed; see {}", dir.join("fleetd.log").display());
    }
    Ok(())
}

/// A money string cut to `places` decimals (it is exact text from fleetd).
fn money(v: &Value, places: usize) -> String {
    let s = v.as_str().unwrap_or("0");
    match s.split_once('.') {
        Some((int, frac)) => format!("{int}.{:0<places$}", &frac[..frac.len().min(places)]),
        None => format!("{s}.{}", "0".repeat(places)),
    }
}

/// Removed when the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
