//! Commands that act on a running fleetd: apply/diff, get, describe app, drain/cordon, cost,
//! submit, tokens. Each prints a table (or `-o json|yaml`) and fails with one line.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::Output;
use crate::server::Server;
use crate::table::{Table, cell as s, usd, usd_per_hour};

fn read_spec(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).context("reading the spec from stdin");
    }
    std::fs::read_to_string(file).with_context(|| format!("-f {}", file.display()))
}

/// A line diff (longest common subsequence): `-` lines removed, `+` added, `  ` kept.
pub fn diff_lines(old: &str, new: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", b[j]));
            j += 1;
        } else {
            out.push(format!("- {}", a[i]));
            i += 1;
        }
    }
    out
}

/// The applied spec's text ("" when none is applied yet).
fn applied(server: &Server) -> anyhow::Result<String> {
    match server.get("/v1/spec") {
        Ok(v) => Ok(v["toml"].as_str().unwrap_or_default().to_string()),
        Err(e) if e.to_string().contains("answered 404") => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// Prints what applying `new` would change; returns whether anything would.
fn show_diff(old: &str, new: &str) -> bool {
    if old.is_empty() {
        outln!("no spec applied yet: the whole spec is new ({} lines)", new.lines().count());
        return true;
    }
    let lines = diff_lines(old, new);
    let changed = lines.iter().any(|l| !l.starts_with("  "));
    if !changed {
        outln!("no change: the applied spec is the same");
        return false;
    }
    // Changed lines with one line of context.
    for (i, l) in lines.iter().enumerate() {
        let near = |k: usize| lines.get(k).is_some_and(|x| !x.starts_with("  "));
        if !l.starts_with("  ") || near(i + 1) || i > 0 && near(i - 1) {
            outln!("{l}");
        }
    }
    true
}

pub fn diff(server: &Server, file: &Path) -> anyhow::Result<()> {
    let new = read_spec(file)?;
    // Validated by fleetd (a dry run) so that a diff of a broken spec says so.
    server.send(true, "/v1/spec?dry_run=true", &new)?;
    show_diff(&applied(server)?, &new);
    Ok(())
}

pub fn apply(server: &Server, file: &Path, dry_run: bool, output: Output) -> anyhow::Result<()> {
    let new = read_spec(file)?;
    let old = applied(server)?;
    if dry_run {
        let v = server.send(true, "/v1/spec?dry_run=true", &new)?;
        if output.structured() {
            crate::output::print(&v, output == Output::Yaml);
            return Ok(());
        }
        show_diff(&old, &new);
        show_removed(&v, "would go");
        outln!("dry run: spec valid for fleet {}, nothing applied", s(&v["fleet"]));
        return Ok(());
    }
    let v = server.send(true, "/v1/spec", &new)?;
    if output.structured() {
        crate::output::print(&v, output == Output::Yaml);
        return Ok(());
    }
    show_diff(&old, &new);
    show_removed(&v, "go");
    let apps: Vec<String> = v["apps"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
    outln!("applied: fleet {}, apps {}", s(&v["fleet"]), apps.join(", "));
    Ok(())
}

/// The nodes of apps the spec no longer has: they drain and terminate. Then fleetd's warnings
/// (an app no enabled cloud can place), on stderr: the spec is applied all the same.
fn show_removed(v: &Value, verb: &str) {
    for w in v["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", crate::terminal::printable(&s(w)));
    }
    let Some(nodes) = v["nodes_removed"].as_array().filter(|n| !n.is_empty()) else { return };
    outln!("nodes of removed apps {verb} (drained, then terminated): {}/h in all", s(&v["removed_per_hour"]));
    for n in nodes {
        outln!(
            "  node {} (app {}, {}, {}): {}/h",
            s(&n["id"]),
            s(&n["app"]),
            s(&n["offering"]),
            s(&n["state"]),
            s(&n["price_per_hour"])
        );
    }
}

fn structured(v: &Value, output: Output) -> bool {
    if output.structured() {
        crate::output::print(v, output == Output::Yaml);
        return true;
    }
    false
}

pub fn get_apps(server: &Server, output: Output) -> anyhow::Result<()> {
    render_apps(&server.get("/v1/apps")?, output);
    Ok(())
}

pub fn render_apps(v: &Value, output: Output) {
    if structured(v, output) {
        return;
    }
    let mut t = Table::new(&[
        ("APP", false),
        ("QUEUED", true),
        ("IN-FLIGHT", true),
        ("RUNNERS", true),
        ("NODES", true),
        ("$/HOUR", true),
        ("MONTH TO DATE", true),
    ]);
    for (app, a) in v.as_object().into_iter().flatten() {
        t.row(vec![
            app.clone(),
            s(&a["queued"]),
            s(&a["in_flight"]),
            s(&a["runners"]),
            s(&a["nodes"]),
            usd(&a["burn_per_hour"]),
            usd(&a["month_to_date"]),
        ]);
    }
    out!("{}", t.render());
}

pub fn describe_app(server: &Server, app: &str, output: Output) -> anyhow::Result<()> {
    let apps = server.get("/v1/apps")?;
    let Some(a) = apps.get(app) else {
        let names: Vec<&String> = apps.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        bail!(
            "no app `{app}` in the applied spec (apps: {})",
            names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        );
    };
    let runners: Vec<Value> = server
        .get("/v1/runners")?
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["app"] == app)
        .collect();
    let nodes: Vec<Value> = server
        .get("/v1/nodes")?
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["app"] == app)
        .collect();
    let events = server.get(&format!("/v1/events?app={app}&last=20"))?;
    // Why demand waits: the last word on placement (not placed, held by a budget), unless
    // everything was placed again since.
    let waiting = events
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|e| matches!(e["kind"].as_str(), Some("not-placed" | "budget-held")));
    let waiting = waiting.map(|e| s(&e["message"])).filter(|m| m != "all demand placed again");
    let v = serde_json::json!({ "app": app, "summary": a, "runners": runners, "nodes": nodes,
        "waiting_because": waiting, "events": events });
    if structured(&v, output) {
        return Ok(());
    }
    outln!("App:          {app}");
    outln!("Queued:       {}", s(&a["queued"]));
    outln!("In flight:    {}", s(&a["in_flight"]));
    outln!("Cost:         {} now, {} this month", usd_per_hour(&a["burn_per_hour"]), usd(&a["month_to_date"]));
    if let Some(w) = &waiting {
        outln!("Waiting:      {w}");
    }
    if let Some(line) = serving_line(&a["serving"]) {
        outln!("Serving:      {line}");
    }
    outln!("Runners:");
    let mut t = Table::new(&[("ID", true), ("STATE", false), ("NODE", true)]);
    for r in &runners {
        let st = &r["state"];
        t.row(vec![s(&r["id"]), s(&st["state"]), s(&st["node"])]);
    }
    out!("{}", indent(&t.render()));
    outln!("Nodes:");
    let mut t =
        Table::new(&[("ID", true), ("STATE", false), ("INSTANCE", false), ("$/HOUR", true), ("MONTH TO DATE", true)]);
    for n in nodes.iter().filter(|n| n["state"]["state"] != "terminated") {
        t.row(vec![
            s(&n["id"]),
            s(&n["state"]["state"]),
            s(&n["state"]["instance_id"]),
            usd(&n["burn_per_hour"]),
            usd(&n["month_to_date"]),
        ]);
    }
    out!("{}", indent(&t.render()));
    outln!("Events:");
    let mut t = Table::new(&[("TIME", false), ("KIND", false), ("NODE", true), ("MESSAGE", false)]);
    for e in events.as_array().into_iter().flatten() {
        t.row(vec![s(&e["at"]), s(&e["kind"]), s(&e["node"]), s(&e["message"])]);
    }
    out!("{}", indent(&t.render()));
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

pub fn get_runners(server: &Server, output: Output) -> anyhow::Result<()> {
    render_runners(&server.get("/v1/runners")?, output);
    Ok(())
}

pub fn render_runners(v: &Value, output: Output) {
    if structured(v, output) {
        return;
    }
    let mut t = Table::new(&[("ID", true), ("APP", false), ("STATE", false), ("NODE", true), ("IN-FLIGHT", true)]);
    for r in v.as_array().into_iter().flatten().filter(|r| r["state"]["state"] != "stopped") {
        let st = &r["state"];
        t.row(vec![
            s(&r["id"]),
            s(&r["app"]),
            s(&st["state"]),
            s(&st["node"]),
            st["in_flight"].as_u64().unwrap_or(0).to_string(),
        ]);
    }
    out!("{}", t.render());
}

/// `get … -w`: the listing, then again (after a blank line and the time) each time fleetd says
/// it changed; for events, each new event as it is recorded. Until interrupted.
pub fn watch(server: &Server, what: &str, query: &str, output: Output) -> anyhow::Result<()> {
    let path = format!("/v1/watch/{what}{query}");
    let mut first = true;
    server.watch(&path, |v| {
        match what {
            "events" => crate::nodes::render_events(&v, output, first),
            _ => {
                if !first && !output.structured() {
                    outln!("\n{}", chrono::Utc::now().format("%H:%M:%S"));
                }
                match what {
                    "nodes" => crate::nodes::render_nodes(&v, output),
                    "runners" => render_runners(&v, output),
                    _ => render_apps(&v, output),
                }
            }
        }
        first = false;
        std::io::Write::flush(&mut std::io::stdout()).map_err(anyhow::Error::from)
    })
}

pub fn get_clouds(server: &Server, output: Output) -> anyhow::Result<()> {
    let v = server.get("/v1/clouds")?;
    if structured(&v, output) {
        return Ok(());
    }
    let mut t = Table::new(&[("CLOUD", false), ("PROVIDER", false), ("NODES", true), ("$/HOUR", true)]);
    for c in v.as_array().into_iter().flatten() {
        t.row(vec![s(&c["cloud"]), s(&c["provider"]), s(&c["nodes"]), usd(&c["burn_per_hour"])]);
    }
    out!("{}", t.render());
    Ok(())
}

pub fn get_offerings(server: &Server, output: Output) -> anyhow::Result<()> {
    let v = server.get("/v1/offerings")?;
    if structured(&v, output) {
        return Ok(());
    }
    let mut t =
        Table::new(&[("OFFERING", false), ("GPUS", true), ("$/HOUR", true), ("$/GPU-H", true), ("AVAILABLE", false)]);
    for o in v.as_array().into_iter().flatten() {
        let gpus = format!("{}×{}", s(&o["gpus"]), s(&o["gpu"]));
        let avail = if o["available"] == true { "yes" } else { "no" };
        t.row(vec![s(&o["offering"]), gpus, usd(&o["price_per_hour"]), usd(&o["price_per_gpu_hour"]), avail.into()]);
    }
    out!("{}", t.render());
    Ok(())
}

pub fn node_action(server: &Server, id: &str, action: &str, output: Output) -> anyhow::Result<()> {
    if id.parse::<u64>().is_err() {
        bail!("`{id}` is not a node id (a number; `fleetctl get nodes` lists them)");
    }
    let v = server.send(false, &format!("/v1/nodes/{id}/{action}"), "")?;
    if structured(&v, output) {
        return Ok(());
    }
    let done = match action {
        "drain" => "draining: a replacement is planned first, then it is terminated",
        "cordon" => "cordoned: no new runners are placed on it",
        _ => "uncordoned: runners may be placed on it again",
    };
    outln!("node {id} {done}");
    Ok(())
}

pub fn logs(server: &Server, id: &str, tail: usize, output: Output) -> anyhow::Result<()> {
    if id.parse::<u64>().is_err() {
        bail!("`{id}` is not a node id (a number; `fleetctl get nodes` lists them)");
    }
    let v = server.get(&format!("/v1/nodes/{id}/logs"))?;
    if structured(&v, output) {
        return Ok(());
    }
    let lines: Vec<&str> = v["lines"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for l in &lines[lines.len().saturating_sub(tail)..] {
        outln!("{l}");
    }
    Ok(())
}

pub fn cost(server: &Server, output: Output) -> anyhow::Result<()> {
    let v = server.get("/v1/cost")?;
    if structured(&v, output) {
        return Ok(());
    }
    let money = |k: &str| usd(&v[k]);
    outln!("Month to date:       {}", money("month_to_date"));
    outln!("Per hour now:        {}", usd_per_hour(&v["burn_per_hour"]));
    outln!("Forecast, month end: {}", money("forecast_month_end"));
    outln!(
        "Budget per hour:     {} (headroom {})",
        usd_per_hour(&v["budget_per_hour"]),
        usd_per_hour(&v["headroom_per_hour"])
    );
    outln!("Budget per month:    {} (headroom {})", money("budget_per_month"), money("headroom_month"));
    outln!("");
    let mut t = Table::new(&[("BY", false), ("$/HOUR", true), ("MONTH TO DATE", true)]);
    for (k, burn, label) in [("by_app", "burn_by_app", "app"), ("by_cloud", "burn_by_cloud", "cloud")] {
        for (name, c) in v[k].as_object().into_iter().flatten() {
            t.row(vec![format!("{label} {name}"), usd(&v[burn][name]), usd(c)]);
        }
    }
    out!("{}", t.render());
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    if !nodes.is_empty() {
        outln!("");
        let mut t = Table::new(&[
            ("NODE", true),
            ("APP", false),
            ("STATE", false),
            ("OFFERING", false),
            ("$/HOUR", true),
            ("MONTH TO DATE", true),
        ]);
        // The dearest first; a large fleet's full list is in -o json.
        const SHOWN: usize = 20;
        for n in nodes.iter().take(SHOWN) {
            t.row(vec![
                s(&n["id"]),
                s(&n["app"]),
                s(&n["state"]),
                s(&n["offering"]),
                usd(&n["burn_per_hour"]),
                usd(&n["month_to_date"]),
            ]);
        }
        out!("{}", t.render());
        if nodes.len() > SHOWN {
            outln!("({} more nodes; fleetctl cost -o json lists them all)", nodes.len() - SHOWN);
        }
    }
    Ok(())
}

pub fn submit(server: &Server, app: &str, input: &str, wait: Option<f64>, output: Output) -> anyhow::Result<()> {
    let input: Value = serde_json::from_str(input)
        .with_context(|| format!("--input {input}: not JSON (e.g. --input '{{\"prompt\": \"hi\"}}')"))?;
    let v =
        server.send(false, &format!("/v1/apps/{app}/requests"), &serde_json::json!({ "input": input }).to_string())?;
    let id = v["id"].as_u64().context("fleetd answered without a request id")?;
    let Some(secs) = wait else {
        if !structured(&v, output) {
            outln!("request {id} queued for {app} (fleetctl submit --wait to wait for its result)");
        }
        return Ok(());
    };
    let start = Instant::now();
    loop {
        let r = server.get(&format!("/v1/apps/{app}/requests/{id}"))?;
        match r["state"]["state"].as_str() {
            Some("done") | Some("failed") => {
                if !structured(&r, output) {
                    match r["state"]["state"].as_str() {
                        Some("done") => outln!("{}", r["state"]["output"]),
                        _ => bail!("request {id} failed: {}", s(&r["state"]["error"])),
                    }
                }
                return Ok(());
            }
            _ if start.elapsed() > Duration::from_secs_f64(secs) => {
                bail!("request {id} not finished after {secs} s (it stays queued; fleetctl get apps shows the queue)")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

pub fn get_tokens(server: &Server, output: Output) -> anyhow::Result<()> {
    let v = server.get("/v1/tokens")?;
    if structured(&v, output) {
        return Ok(());
    }
    let mut t = Table::new(&[("NAME", false), ("SCOPE", false), ("CREATED", false)]);
    for x in v.as_array().into_iter().flatten() {
        t.row(vec![s(&x["name"]), s(&x["scope"]), s(&x["created_at"])]);
    }
    out!("{}", t.render());
    Ok(())
}

pub fn create_token(server: &Server, name: &str, scope: &str, output: Output) -> anyhow::Result<()> {
    let v = server.send(false, "/v1/tokens", &serde_json::json!({ "name": name, "scope": scope }).to_string())?;
    if structured(&v, output) {
        return Ok(());
    }
    outln!("{}", s(&v["token"]));
    eprintln!("token `{name}` ({scope}) made: it is shown this once; put it in FLEET_TOKEN or the config file");
    Ok(())
}

pub fn revoke_token(server: &Server, name: &str) -> anyhow::Result<()> {
    server.delete(&format!("/v1/tokens/{name}"))?;
    outln!("token `{name}` revoked");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn diff_marks_added_removed_and_kept_lines() {
        let d = super::diff_lines("a\nb\nc\n", "a\nc\nd\n");
        assert_eq!(d, vec!["  a", "- b", "  c", "+ d"]);
        assert!(super::diff_lines("x\n", "x\n").iter().all(|l| l.starts_with("  ")));
    }
}

/// `fleetctl describe app`'s serving line: requests done and failed, latency and queue wait
/// p50/p99, and for language models time to first token, inter-token latency and tokens/s.
fn serving_line(v: &Value) -> Option<String> {
    let done = v.get("done")?.as_u64()?;
    let failed = v["failed"].as_u64().unwrap_or(0);
    let sec =
        |k: &str| v[k].as_f64().map(|x| if x < 1.0 { format!("{:.0} ms", x * 1000.0) } else { format!("{x:.2} s") });
    let pair = |a: &str, b: &str| match (sec(a), sec(b)) {
        (Some(a), Some(b)) => Some(format!("{a} / {b}")),
        _ => None,
    };
    let mut parts = vec![format!("{done} done, {failed} failed")];
    if let Some(p) = pair("latency_p50_s", "latency_p99_s") {
        parts.push(format!("latency p50/p99 {p}"));
    }
    if let Some(p) = pair("queue_wait_p50_s", "queue_wait_p99_s") {
        parts.push(format!("queue wait {p}"));
    }
    if let Some(p) = pair("ttft_p50_s", "ttft_p99_s") {
        parts.push(format!("time to first token {p}"));
    }
    if let Some(i) = sec("itl_p50_s") {
        parts.push(format!("inter-token {i}"));
    }
    if let Some(t) = v["tokens_per_s"].as_f64() {
        parts.push(format!("{t:.1} tokens/s"));
    }
    Some(parts.join("; "))
}

#[cfg(test)]
mod serving_tests {
    use super::*;

    #[test]
    fn the_serving_line_says_what_was_measured_and_nothing_else() {
        assert_eq!(serving_line(&Value::Null), None);
        let mlp = serde_json::json!({"done": 3, "failed": 1, "latency_p50_s": 0.0123, "latency_p99_s": 2.5,
                                     "queue_wait_p50_s": 0.001, "queue_wait_p99_s": 0.2});
        assert_eq!(
            serving_line(&mlp).unwrap(),
            "3 done, 1 failed; latency p50/p99 12 ms / 2.50 s; queue wait 1 ms / 200 ms"
        );
        let llm = serde_json::json!({"done": 2, "failed": 0, "ttft_p50_s": 0.05, "ttft_p99_s": 0.08,
                                     "itl_p50_s": 0.004, "tokens_per_s": 250.0});
        assert_eq!(
            serving_line(&llm).unwrap(),
            "2 done, 0 failed; time to first token 50 ms / 80 ms; inter-token 4 ms; 250.0 tokens/s"
        );
    }
}
