//! `fleetctl demo`: what fleet is for, on this machine in about half a minute, with no cloud
//! account and no etcd. Starts `fleetd` on its embedded store with five simulated clouds that sell
//! what the built-in catalog says they sell, at its real prices (spot and on-demand), then shows:
//! the cheapest offering chosen and why; a capacity error on it failing over to the next one; a
//! spot interruption notice answered by draining and replacing the node before the cloud takes it;
//! the hourly budget holding back a scale-up; nodes coming up as requests arrive and going after
//! keep_alive; and, at the end, the bill beside what the same GPU-hours would have cost on one
//! hyperscaler on demand. Instances and agents are simulated (`fleetd --fake-clouds`, 4× real
//! speed); everything else (planning, failover, budgets, draining, billing) is fleetd's own.
//! Last, a language model: a second fleetd with one `--local` node (a real `fleet-agent` serving a
//! generated Llama with candle on the CPU) streams a chat completion through
//! `POST /v1/chat/completions`, with its time to first token and tokens/s, and scales to zero.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleet_core::{CapacityType, Catalog, Cloud, Money, Price};
use serde_json::Value;

use crate::server::Server;

/// The simulated clouds: three neoclouds and two hyperscalers.
pub const CLOUDS: [Cloud; 5] = [Cloud::Nebius, Cloud::Lambda, Cloud::Runpod, Cloud::Gcp, Cloud::Aws];
/// The hyperscaler whose on-demand price the bill is compared with.
pub const COMPARED: Cloud = Cloud::Aws;
/// The hourly cap: room for a few single-H100 nodes, not for all the burst would want.
pub const BUDGET_PER_HOUR: &str = "14";

pub const SPEC: &str = r#"# fleetctl demo: two apps on five simulated clouds at their catalog prices.
[fleet]
name = "demo"

[budget]
max_per_hour = "14"  # dollars per hour for the whole fleet: a hard cap

[apps.chat]
gpu = "H100"         # any H100 model
gpus = 1

[apps.chat.placement]
spot = "auto"        # spot where it is cheaper

[apps.chat.scaling]
max_concurrency = 5
max_multiplexing = 2 # requests one runner serves at once
keep_alive = "4s"
scaling_delay = "0s"

[apps.embed]
gpu = "H100"
gpus = 1

[apps.embed.budget]
max_per_hour = "2"   # this app's own cap: one spot H100, not two

[apps.embed.scaling]
max_concurrency = 3
max_multiplexing = 2
keep_alive = "4s"
scaling_delay = "0s"
"#;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Requests sent, spread evenly over --seconds.
    #[arg(long, default_value_t = 40)]
    requests: usize,
    /// Over how many seconds the requests arrive.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Where fleetd keeps its store, token and simulated clouds (default: a new temporary
    /// directory, removed afterwards).
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

/// Instances the simulated clouds still hold live (read from their files after fleetd stopped):
/// what would still be billing.
fn live_instances(dir: &Path) -> usize {
    CLOUDS
        .iter()
        .filter_map(|c| std::fs::read_to_string(dir.join(format!("fake-{c}.json"))).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| v["instances"].as_object().map_or(0, |m| m.values().filter(|i| i["state"] != "terminated").count()))
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn time(v: &Value) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok()
}

fn secs(a: &Value, b: &Value) -> Option<f64> {
    Some((time(b)? - time(a)?).num_milliseconds() as f64 / 1000.0)
}

fn usd(v: &Value) -> Money {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(Money::ZERO)
}

/// The offering fleet will rank first for the demo's app: the cheapest single-H100 spot offering
/// of the simulated clouds. The demo's simulated cloud has no capacity for it, as happens.
fn first_choice() -> Option<fleet_core::Offering> {
    Catalog::builtin()
        .offerings()
        .iter()
        .filter(|o| CLOUDS.contains(&o.cloud) && o.instance.gpu.name().starts_with("H100"))
        .filter(|o| o.instance.gpu_count == 1 && o.capacity == CapacityType::Spot)
        .min_by_key(|o| (o.price.hourly(), o.key().to_string()))
        .cloned()
}

/// The hyperscaler's cheapest on-demand H100 per GPU-hour: the price the bill is compared with.
fn hyperscaler_price() -> Option<(Price, String)> {
    Catalog::builtin()
        .offerings()
        .iter()
        .filter(|o| o.cloud == COMPARED && o.capacity == CapacityType::OnDemand)
        .filter(|o| o.instance.gpu.name().starts_with("H100"))
        .min_by_key(|o| (o.price_per_gpu().hourly(), o.key().to_string()))
        .map(|o| (o.price_per_gpu(), o.instance.name.clone()))
}

/// An event as one line of the demo's story, or `None` for kinds it does not tell.
fn story(e: &Value) -> Option<String> {
    let node = match (e["node"].as_u64(), e["app"].as_str()) {
        (Some(n), _) => format!("node {n}: "),
        (None, Some(app)) => format!("app {app}: "),
        _ => String::new(),
    };
    let msg = e["message"].as_str().unwrap_or_default();
    let what = match e["kind"].as_str()? {
        "planned" => "planned",
        "launch-failed" => "launch failed",
        "launched" => "launched",
        "budget-held" => "budget",
        "not-placed" => "not placed",
        "draining" => "draining",
        "terminated" => "terminated",
        "instance-lost" => "lost",
        "consolidating" => "consolidating",
        _ => return None,
    };
    Some(format!("  > {what}: {node}{msg}"))
}

pub fn run(args: DemoArgs, output: crate::Output) -> anyhow::Result<()> {
    // With -o json/yaml the progress goes to stderr and the summary, as data, to stdout.
    let structured = output.structured();
    macro_rules! say {
        ($($t:tt)*) => {{
            // Every line fits 80 columns.
            for line in format!($($t)*).split('\n').flat_map(|l| wrap(l, 80)) {
                if structured {
                    eprintln!("{}", crate::terminal::printable(&line));
                } else {
                    outln!("{line}");
                }
            }
        }};
    }
    if args.requests == 0 || !(args.seconds.is_finite() && args.seconds >= 0.0 && args.seconds <= 600.0) {
        bail!("--requests must be at least 1 and --seconds between 0 and 600");
    }
    let fleetd = sibling("fleetd")?;
    let (dir, _tmp) = match &args.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = std::env::temp_dir().join(format!("fleet-demo-{}", std::process::id()));
            (t.clone(), Some(TempDir(t)))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("--dir {}", dir.display()))?;
    let first = first_choice().context("the built-in catalog has no single-H100 spot offering on the demo's clouds")?;
    let (compared_price, compared_type) =
        hyperscaler_price().context("the built-in catalog has no on-demand H100 on the compared cloud")?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("fleetd.log")).context("fleetd.log")?;
    let clouds: Vec<String> = CLOUDS.iter().map(ToString::to_string).collect();
    say!("fleet demo: fleetd at {url} (embedded store), files in {}", dir.display());
    say!("  clouds: {} (simulated, at the built-in", clouds.join(", "));
    say!("  catalog's real prices; instances and agents simulated at 4x speed)");
    let child = Command::new(&fleetd)
        .args(["--fleet", "demo", "--fake-clouds", &clouds.join(","), "--fake-speed", "4"])
        .args(["--fake-capacity", &format!("{}=0", first.key())])
        .args(["--fake-spot-notices", "1", "--fake-spot-notice-after", "1"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--reconcile-every", "0.2", "--node-poll", "0.3"])
        .arg("--data-dir")
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
    say!("applied: apps chat (up to 5 runners) and embed (up to 3, its own budget $2.00/h),");
    say!(
        "  1 x H100 per runner, spot where cheaper; fleet budget {}/h",
        Money::from_dollars(BUDGET_PER_HOUR.parse()?).cents()
    );
    say!("  cheapest H100 on these clouds: {}", first.key());
    say!("  at {}/h", first.price.hourly().cents());
    say!("  (in this run that offering has no capacity: watch the launch fail over)");
    say!(
        "sending {} requests over {:.0} s; the first spot node gets an interruption notice\n",
        args.requests,
        args.seconds
    );
    say!(
        "{:>6}  {:>5}  {:>5}  {:>6}  {:>7}  {:>7}  {:>7}  {:>8}",
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
    let mut ids: Vec<(&str, u64)> = Vec::new();
    let mut done: std::collections::BTreeMap<(&str, u64), Value> = Default::default();
    let mut peak = 0usize;
    let mut max_burn = Money::ZERO;
    let mut phase_done = None;
    let mut next_event = 0u64;
    let mut told: Vec<Value> = Vec::new();
    let mut last_row = Instant::now() - Duration::from_secs(10);
    let mut last_budget: Option<Instant> = None;
    loop {
        // Requests arrive evenly over --seconds.
        let due = if args.seconds == 0.0 {
            args.requests
        } else {
            ((t0.elapsed().as_secs_f64() / args.seconds) * args.requests as f64).ceil().min(args.requests as f64)
                as usize
        };
        while ids.len() < due {
            let i = ids.len();
            // Two in three to chat, one in three to embed.
            let app = if i % 3 == 2 { "embed" } else { "chat" };
            let x: Vec<f64> = (0..16).map(|k| ((i * 16 + k) % 7) as f64 / 7.0).collect();
            let v = server.send(
                false,
                &format!("/v1/apps/{app}/requests"),
                &serde_json::json!({ "input": { "x": x } }).to_string(),
            )?;
            ids.push((app, v["id"].as_u64().context("no request id")?));
        }
        for (app, id) in &ids {
            if done.contains_key(&(*app, *id)) {
                continue;
            }
            let r = server.get(&format!("/v1/apps/{app}/requests/{id}"))?;
            if matches!(r["state"]["state"].as_str(), Some("done") | Some("failed")) {
                done.insert((*app, *id), r);
            }
        }
        // The story so far: fleetd's events, as they are recorded.
        let events = server.get(&format!("/v1/events?after={next_event}"))?;
        for e in events.as_array().into_iter().flatten() {
            next_event = next_event.max(e["id"].as_u64().unwrap_or(0));
            // Budget words change with every pass while demand waits: the first, then one
            // every few seconds.
            let budget = e["kind"] == "budget-held";
            if budget && last_budget.is_some_and(|t: Instant| t.elapsed() < Duration::from_secs(4)) {
                told.push(e.clone());
                continue;
            }
            if let Some(line) = story(e) {
                if budget {
                    last_budget = Some(Instant::now());
                }
                say!("{line}");
            }
            told.push(e.clone());
        }
        if last_row.elapsed() >= Duration::from_secs(1) {
            last_row = Instant::now();
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
            max_burn = max_burn.max(usd(&cost["burn_per_hour"]));
            say!(
                "{:>5.1}s  {:>5}  {:>5}  {:>6}  {:>7}  {:>7}  {:>7}  {:>8}",
                t0.elapsed().as_secs_f64(),
                live.len(),
                ready,
                queued,
                running,
                format!("{}/{}", done.len(), args.requests),
                usd(&cost["month_to_date"]).cents().to_string(),
                usd(&cost["burn_per_hour"]).cents().to_string(),
            );
            if done.len() == args.requests && phase_done.is_none() {
                phase_done = Some(t0.elapsed());
                say!("  all {} requests answered; idle nodes stay for keep_alive (4 s), then go", args.requests);
            }
            if phase_done.is_some() && live.is_empty() {
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!(
                "the demo did not finish within 120 s ({} of {} requests answered); see {}",
                done.len(),
                args.requests,
                dir.join("fleetd.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let total = t0.elapsed();

    // Summary, from fleetd's records.
    let nodes = server.get("/v1/nodes")?;
    let all: Vec<&Value> = nodes.as_array().into_iter().flatten().filter(|n| !n["billing_since"].is_null()).collect();
    // The offering each node ran on, as the catalog knows it (its GPU count with it).
    let offering_of = |n: &Value| -> Option<fleet_core::Offering> {
        let i = n["attempt"].as_u64().unwrap_or(0) as usize;
        let key: fleet_core::OfferingKey = serde_json::from_value(n["candidates"][i]["offering"].clone()).ok()?;
        Catalog::builtin().offerings().iter().find(|o| o.key() == key).cloned()
    };
    let ran_on: Vec<(&Value, Option<fleet_core::Offering>)> = all.iter().map(|n| (*n, offering_of(n))).collect();
    let spot = ran_on.iter().filter(|(_, o)| o.as_ref().is_some_and(|o| o.capacity == CapacityType::Spot)).count();
    let mut used_clouds: Vec<String> =
        ran_on.iter().filter_map(|(_, o)| o.as_ref().map(|o| o.cloud.to_string())).collect();
    used_clouds.sort();
    used_clouds.dedup();
    // GPU-seconds billed, and what they would have cost at the hyperscaler's price per GPU-hour.
    let mut gpu_hours = 0.0;
    let mut compared = Money::ZERO;
    for (n, o) in &ran_on {
        let Some(billed) = secs(&n["billing_since"], &n["billing_until"]) else { continue };
        let gpus = o.as_ref().map_or(1, |o| o.instance.gpu_count);
        gpu_hours += billed * f64::from(gpus) / 3600.0;
        compared += compared_price.cost_for(Duration::from_secs_f64(billed.max(0.0))).times(gpus);
    }
    let failed = done.values().filter(|r| r["state"]["state"] == "failed").count();
    let mut waits: Vec<f64> =
        done.values().filter_map(|r| secs(&r["submitted_at"], &r["state"]["finished_at"])).collect();
    waits.sort_by(f64::total_cmp);
    let cost = server.get("/v1/cost")?;
    let bill = usd(&cost["month_to_date"]);
    let count = |kind: &str| told.iter().filter(|e| e["kind"] == kind).count();
    let capacity_failovers = told
        .iter()
        .filter(|e| e["kind"] == "launch-failed" && e["message"].as_str().is_some_and(|m| m.contains("capacity")))
        .count();
    // The spot notice: which node, and whether a node launched after it before that node was gone.
    let noticed = told
        .iter()
        .find(|e| e["kind"] == "draining" && e["message"].as_str().is_some_and(|m| m.contains("interruption")));
    let notices = usize::from(noticed.is_some());
    let spot_story = match noticed {
        None => "no interruption notice came (no spot node served long enough)".to_string(),
        Some(n) => {
            let node = n["node"].as_u64().unwrap_or(0);
            // The cloud takes a noticed spot machine two minutes after its notice (the simulated
            // agents say so, as AWS's metadata does): a replacement launched before then is in time.
            let deadline = time(&n["at"]).map(|t| t + chrono::Duration::seconds(120));
            let replacement = told.iter().find(|e| e["kind"] == "launched" && e["id"].as_u64() > n["id"].as_u64());
            match (replacement, deadline) {
                (Some(r), Some(deadline)) => {
                    let after = secs(&n["at"], &r["at"]).unwrap_or(0.0);
                    let spare = time(&r["at"]).map_or(0.0, |t| (deadline - t).num_milliseconds() as f64 / 1000.0);
                    format!(
                        "node {node} drained on the cloud's 2-minute notice; node {} launched in its place {after:.1} s later, {spare:.0} s before the cloud would take node {node}",
                        r["node"]
                    )
                }
                _ => format!("node {node} drained on its notice; the other nodes served the rest"),
            }
        }
    };
    let replaced = spot_story.contains("in its place");
    let held = count("budget-held");
    drop(daemon);
    let left = live_instances(&dir);
    let ratio = if bill > Money::ZERO { compared.micros() as f64 / bill.micros() as f64 } else { 0.0 };
    say!("\nsummary");
    let chat = ids.iter().filter(|(a, _)| *a == "chat").count();
    say!("  requests   {} answered ({} failed), {chat} chat / {} embed", done.len(), failed, ids.len() - chat);
    say!(
        "  latency    p50 {:.1} s, p95 {:.1} s, max {:.1} s (cold starts included)",
        percentile(&waits, 0.5),
        percentile(&waits, 0.95),
        percentile(&waits, 1.0)
    );
    say!(
        "  nodes      {} launched ({spot} spot, {} on-demand) on {}, {peak} at once",
        all.len(),
        all.len() - spot,
        used_clouds.join(", ")
    );
    say!("  left       {left} instances running after the demo");
    say!("  failover   {capacity_failovers} launch(es) refused for capacity, each tried on the next offering");
    say!("  spot       {spot_story}");
    say!("  budget     scale-up held back {held} time(s); the most per hour was {}", max_burn.cents());
    say!("  bill       {} for {gpu_hours:.3} H100-hours", bill.cents());
    say!(
        "  vs {COMPARED}     {} at {COMPARED} on demand ({compared_type}, {}/GPU-h): {ratio:.1}x the bill",
        compared.cents(),
        compared_price.hourly().cents()
    );
    say!(
        "  time       answered in {:.1} s, back to zero nodes at {:.1} s",
        phase_done.unwrap_or(total).as_secs_f64(),
        total.as_secs_f64()
    );
    if structured {
        let summary = serde_json::json!({
            "requests": { "answered": done.len(), "failed": failed, "chat": chat, "embed": ids.len() - chat },
            "latency_seconds": { "p50": percentile(&waits, 0.5), "p95": percentile(&waits, 0.95), "max": percentile(&waits, 1.0) },
            "nodes": { "launched": all.len(), "spot": spot, "on_demand": all.len() - spot, "peak": peak,
                "clouds": used_clouds, "left_running": left },
            "capacity_failovers": capacity_failovers,
            "spot_notices": notices,
            "spot_replaced_before_gone": replaced,
            "budget_held": held,
            "max_burn_per_hour": max_burn,
            "cost": bill,
            "gpu_hours": gpu_hours,
            "compared": { "cloud": COMPARED.to_string(), "instance_type": compared_type,
                "price_per_gpu_hour": compared_price.hourly(), "cost": compared, "ratio": ratio },
            "served_seconds": phase_done.unwrap_or(total).as_secs_f64(),
            "back_to_zero_seconds": total.as_secs_f64(),
        });
        crate::output::print(&summary, output == crate::Output::Yaml);
    }
    // Act two: a language model, streamed (a real agent, on this machine's CPU).
    say!("\na language model, streamed: a small generated Llama on a local node (a real");
    say!("  fleet-agent, candle on this CPU), asked through POST /v1/chat/completions");
    let mut said = |l: String| say!("{l}");
    let streamed = llm_act(&dir.join("llm"), &mut said);
    if let Err(e) = &streamed {
        say!("  the streamed completion failed: {e:#}");
    }
    if failed > 0 {
        bail!("{failed} requests failed; see {}", dir.join("fleetd.log").display());
    }
    streamed.with_context(|| format!("the streamed completion; see {}", dir.join("llm/fleetd.log").display()))?;
    if left > 0 {
        bail!("{left} simulated instances still live after the demo; see {}", dir.join("fleetd.log").display());
    }
    Ok(())
}

pub const LLM_SPEC: &str = r#"[fleet]
name = "demo-llm"

[apps.chat]
gpu = "H100"
gpus = 1

[apps.chat.scaling]
min_concurrency = 1
max_concurrency = 1
keep_alive = "1h"
"#;

/// Local nodes (agent processes) that fleetd's `--local` provider still counts live.
fn live_local(dir: &Path) -> Vec<u64> {
    let t = std::fs::read_to_string(dir.join("local/instances.json")).unwrap_or_default();
    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["terminated"] != true)
        .filter_map(|i| i["pid"].as_u64())
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .collect()
}

/// fleetd with one local node serving a generated model: a chat completion streamed token by
/// token (time to first token and tokens/s measured as they arrive), then the app removed and
/// its node terminated.
fn llm_act(dir: &Path, say: &mut dyn FnMut(String)) -> anyhow::Result<()> {
    let agent = sibling("fleet-agent")?;
    let fleetd = sibling("fleetd")?;
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let model = dir.join("tiny-llama");
    let made = Command::new(&agent).args(["make-llm", "--hidden", "64"]).arg(&model).output()?;
    if !made.status.success() {
        bail!("fleet-agent make-llm: {}", String::from_utf8_lossy(&made.stderr));
    }
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("fleetd.log")).context("fleetd.log")?;
    let child = Command::new(&fleetd)
        .args(["--fleet", "demo-llm", "--local", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--reconcile-every", "0.2", "--node-poll", "0.3", "--model"])
        .arg(format!("chat={}", model.display()))
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", fleetd.display()))?;
    let daemon = Daemon(child);
    // Whatever happens, no agent process is left behind.
    struct Reap(PathBuf);
    impl Drop for Reap {
        fn drop(&mut self) {
            for pid in live_local(&self.0) {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
    }
    let _reap = Reap(dir.to_path_buf());
    let start = Instant::now();
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(dir.join("admin.token"))
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            break t.trim().to_string();
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("fleetd did not start within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let server = Server::new(&format!("http://127.0.0.1:{port}"), Some(token), None)?;
    server.send(true, "/v1/spec", LLM_SPEC)?;
    let t = Instant::now();
    while !server.get("/v1/runners")?.as_array().into_iter().flatten().any(|r| r["state"]["state"] == "idle") {
        if t.elapsed() > Duration::from_secs(60) {
            bail!("no runner of app chat was ready within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say(format!("  node up, model loaded, runner ready in {:.1} s", t.elapsed().as_secs_f64()));
    let body = serde_json::json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "which gpu is cheapest"}],
        "max_tokens": 24, "temperature": 0, "stream": true,
        "stream_options": {"include_usage": true},
    });
    let sent = Instant::now();
    let (mut text, mut first, mut last, mut deltas, mut usage, mut finish) =
        (String::new(), None, sent, 0u32, Value::Null, String::new());
    server.post_stream("/v1/chat/completions", &body.to_string(), |data| {
        if data == "[DONE]" {
            return Ok(false);
        }
        let v: Value = serde_json::from_str(data).context("a streamed chunk is not JSON")?;
        if let Some(e) = v.get("error") {
            bail!("{}", e["message"].as_str().unwrap_or("error"));
        }
        if !v["usage"].is_null() {
            usage = v["usage"].clone();
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            if let Some(d) = c["delta"]["content"].as_str().filter(|d| !d.is_empty()) {
                first.get_or_insert_with(|| sent.elapsed());
                last = Instant::now();
                deltas += 1;
                text.push_str(d);
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
        Ok(true)
    })?;
    let first = first.context("the stream carried no text")?;
    let tokens = usage["completion_tokens"].as_u64().unwrap_or(u64::from(deltas));
    let rate = tokens.saturating_sub(1) as f64 / (last - (sent + first)).as_secs_f64().max(1e-6);
    say(format!("  streamed: \"{}\"", text.trim()));
    say(format!(
        "  {tokens} tokens in {deltas} chunks (finish: {finish}); first token after {:.0} ms, then {rate:.0} tokens/s",
        first.as_secs_f64() * 1000.0
    ));
    // Scaled to zero: its node goes once idle a second.
    let to_zero = LLM_SPEC.replace("min_concurrency = 1", "min_concurrency = 0").replace("\"1h\"", "\"1s\"");
    server.send(true, "/v1/spec", &to_zero)?;
    let t = Instant::now();
    while !live_local(dir).is_empty() {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the local node was not terminated within 30 s of scaling the app to zero");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say(format!("  scaled to zero: its node terminated {:.1} s later", t.elapsed().as_secs_f64()));
    drop(daemon);
    Ok(())
}

/// `line` in lines of at most `width` characters, broken at spaces (runs of spaces kept),
/// continued indented.
fn wrap(line: &str, width: usize) -> Vec<String> {
    const INDENT: &str = "      ";
    let len = |s: &str| s.chars().count();
    let mut out = Vec::new();
    let mut cur = String::new();
    for token in line.split_inclusive(' ') {
        let word = token.trim_end_matches(' ');
        if !cur.trim().is_empty() && len(&cur) + len(word) > width {
            out.push(cur.trim_end().to_string());
            cur = INDENT.to_string();
        }
        // A word longer than a line (an offering's name) is cut where it must be.
        let mut rest: Vec<char> = token.chars().collect();
        while len(&cur) + rest.iter().take_while(|c| **c != ' ').count() > width {
            let take = width.saturating_sub(len(&cur)).max(1).min(rest.len());
            let tail = rest.split_off(take);
            cur.extend(rest);
            out.push(std::mem::replace(&mut cur, INDENT.to_string()));
            rest = tail;
        }
        cur.extend(rest);
    }
    if !cur.trim().is_empty() || out.is_empty() {
        out.push(cur.trim_end().to_string());
    }
    out
}

/// Removed when the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrapped_lines_fit_and_keep_every_word() {
        let line = "  > planned: node 1: for 1 runner of chat: nebius/eu-north1/gpu-h100-sxm_1gpu-16vcpu-200gb/spot at $1.25/h first, and a very-long-word-that-is-longer-than-any-line-could-be-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa end";
        let out = super::wrap(line, 40);
        assert!(out.iter().all(|l| l.chars().count() <= 40), "{out:?}");
        let joined: String = out.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
        for w in ["planned:", "$1.25/h", "end"] {
            assert!(joined.contains(w), "{joined}");
        }
        assert_eq!(super::wrap("short", 80), vec!["short".to_string()]);
        assert_eq!(super::wrap("", 80), vec![String::new()]);
        assert_eq!(super::wrap("  spot       a b", 80), vec!["  spot       a b".to_string()]);
    }
}
