//! `fleetctl get nodes` and `fleetctl describe node ID`: the nodes as fleetd sees them, with what
//! each node's agent reports (GPUs, burn-in, runners, interruption notices) and why a node is
//! unfit to serve.

use serde_json::Value;

use crate::Output;
use crate::server::Server;
use crate::table::{Table, cell as s, usd, usd_per_hour};

/// The node's state name (`ready`…): its record's state is tagged `{"state": "ready", ...}`.
/// Cordoned and leaving (consolidated away) nodes say so: they take no new runners.
fn state(n: &Value) -> String {
    let mut st = s(&n["state"]["state"]);
    if n["cordoned"].as_bool() == Some(true) {
        st += ",cordoned";
    }
    if n["leaving"].is_object() {
        st += ",leaving";
    }
    st
}

fn offering(n: &Value) -> String {
    let o = n["state"].get("offering").filter(|o| !o.is_null()).or_else(|| {
        let i = n["attempt"].as_u64().unwrap_or(0) as usize;
        n["candidates"].get(i).map(|c| &c["offering"])
    });
    match o {
        Some(o) => format!("{}/{}/{}", s(&o["cloud"]), s(&o["region"]), s(&o["instance_type"])),
        None => "-".into(),
    }
}

fn health(n: &Value) -> String {
    if let Some(u) = n["unhealthy"].as_str() {
        return format!("unhealthy: {u}");
    }
    match &n["agent"] {
        Value::Null => "-".into(),
        a if a["health"]["ok"].as_bool() == Some(true) => "healthy".into(),
        a => format!("unhealthy: {}", s(&a["health"]["reason"])),
    }
}

fn burn_in(a: &Value) -> String {
    let b = &a["health"]["burn_in"];
    match b["tflops"].as_f64() {
        Some(t) => format!("{t:.1} TFLOP/s {}", s(&b["device"])),
        None => "-".into(),
    }
}

pub fn get(server: &Server, output: Output) -> anyhow::Result<()> {
    render_nodes(&server.get("/v1/nodes")?, output);
    Ok(())
}

pub fn render_nodes(nodes: &Value, output: Output) {
    if output.structured() {
        crate::output::print(nodes, output == Output::Yaml);
        return;
    }
    let mut t = Table::new(&[
        ("ID", true),
        ("APP", false),
        ("STATE", false),
        ("OFFERING", false),
        ("GPUS", true),
        ("BURN-IN", false),
        ("RUNNERS", true),
        ("HEALTH", false),
        ("$/HOUR", true),
        ("MONTH TO DATE", true),
    ]);
    for n in nodes.as_array().into_iter().flatten() {
        let a = &n["agent"];
        t.row(vec![
            s(&n["id"]),
            s(&n["app"]),
            state(n),
            offering(n),
            if a.is_null() { "-".into() } else { s(&a["gpus"]) },
            burn_in(a),
            a["health"]["runners"].as_array().map(|r| r.len().to_string()).unwrap_or_else(|| "-".into()),
            health(n),
            usd(&n["burn_per_hour"]),
            usd(&n["month_to_date"]),
        ]);
    }
    out!("{}", t.render());
}

pub fn describe(server: &Server, id: &str, output: Output) -> anyhow::Result<()> {
    let n = server.get(&format!("/v1/nodes/{id}"))?;
    if output.structured() {
        crate::output::print(&n, output == Output::Yaml);
        return Ok(());
    }
    let events = server.get(&format!("/v1/events?node={id}&last=50"))?;
    if output.structured() {
        let mut n = n;
        n["events"] = events;
        crate::output::print(&n, output == Output::Yaml);
        return Ok(());
    }
    let a = &n["agent"];
    let h = &a["health"];
    outln!("Node:         {}", s(&n["id"]));
    outln!("App:          {}", s(&n["app"]));
    outln!("State:        {}", state(&n));
    outln!("Offering:     {}", offering(&n));
    outln!("Price:        {}", usd_per_hour(&n["price"]));
    outln!("Cost:         {} now, {} this month", usd_per_hour(&n["burn_per_hour"]), usd(&n["month_to_date"]));
    let tried = n["candidates"].as_array().map_or(0, Vec::len);
    let attempt = n["attempt"].as_u64().unwrap_or(0) + 1;
    outln!("Attempt:      {attempt} of {tried} offerings");
    outln!("Created:      {}", s(&n["created_at"]));
    outln!(
        "Billing:      since {}{}",
        s(&n["billing_since"]),
        match n["billing_until"].as_str() {
            Some(u) => format!(" until {u}"),
            None => String::new(),
        }
    );
    outln!("Cordoned:     {}", if n["cordoned"].as_bool() == Some(true) { "yes" } else { "no" });
    outln!("Health:       {}", health(&n));
    if a.is_null() {
        outln!("Agent:        none registered");
    } else {
        describe_agent(a, h);
    }
    outln!("Events:");
    print_events(&events, false);
    Ok(())
}

/// The agent part of `describe node`.
fn describe_agent(a: &Value, h: &Value) {
    outln!("Agent:        version {} since {} (lease {})", s(&a["version"]), s(&a["since"]), s(&a["lease"]));
    outln!("Burn-in:      {}", burn_in(a));
    // Index the JSON value, not its map: a key the record leaves out (a CPU burn-in has no
    // expected TFLOP/s) reads as null instead of panicking.
    let b = &h["burn_in"];
    if b.is_object() {
        outln!(
            "              {} {}×{} ×{}: required {}, expected {}, {}",
            s(&b["dtype"]),
            s(&b["size"]),
            s(&b["size"]),
            s(&b["iterations"]),
            s(&b["required_tflops"]),
            s(&b["expected_tflops"]),
            if b["passed"].as_bool() == Some(true) { "passed" } else { "FAILED" }
        );
    }
    let devices = h["devices"].as_array().cloned().unwrap_or_default();
    if devices.is_empty() {
        outln!("GPUs:         0 (CPU only)");
    } else {
        outln!("GPUs:");
        let mut t = Table::new(&[
            ("INDEX", true),
            ("NAME", false),
            ("MEMORY MIB", true),
            ("USED MIB", true),
            ("UTIL %", true),
            ("TEMP C", true),
            ("ECC", true),
            ("THROTTLING", false),
        ]);
        for d in &devices {
            let throttling = d["throttling"].as_array().map(|v| v.iter().map(s).collect::<Vec<_>>().join(","));
            t.row(vec![
                s(&d["index"]),
                s(&d["name"]),
                s(&d["memory_total_mib"]),
                s(&d["memory_used_mib"]),
                s(&d["utilization_pct"]),
                s(&d["temperature_c"]),
                s(&d["ecc_uncorrected"]),
                throttling.filter(|x| !x.is_empty()).unwrap_or_else(|| "-".into()),
            ]);
        }
        for line in t.render().lines() {
            outln!("  {line}");
        }
    }
    outln!(
        "Runners:      {}",
        h["runners"].as_array().map(|r| r.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    );
    outln!("In flight:    {}", s(&h["in_flight"]));
    match h["interruption"].as_object() {
        Some(i) => outln!(
            "Interruption: {} '{}' (not before {}, noticed {})",
            s(&i["source"]),
            s(&i["kind"]),
            s(&i["not_before"]),
            s(&i["noticed_at"])
        ),
        None => outln!("Interruption: none"),
    }
    let colds = h["cold_starts"].as_array().cloned().unwrap_or_default();
    if !colds.is_empty() {
        outln!("Cold starts:  (newest last)");
        let mb = |v: &Value| format!("{:.1}", v.as_f64().unwrap_or(0.0) / 1e6);
        for c in &colds {
            outln!(
                "  runner {} ({}): fetch {:.2} s ({} MB from the origin, {} from peers, {} cached), load {:.2} s{}{}",
                s(&c["runner"]),
                s(&c["app"]),
                c["fetch_s"].as_f64().unwrap_or(0.0),
                mb(&c["bytes_origin"]),
                mb(&c["bytes_peers"]),
                mb(&c["bytes_cached"]),
                c["load_s"].as_f64().unwrap_or(0.0),
                c["first_token_s"].as_f64().map(|s| format!(", first token {s:.2} s")).unwrap_or_default(),
                c["model"].as_str().map(|m| format!(", model {}", &m[..m.len().min(19)])).unwrap_or_default()
            );
        }
    }
}

/// `fleetctl get events`.
pub fn get_events(
    server: &Server,
    app: Option<&str>,
    node: Option<u64>,
    last: usize,
    output: Output,
) -> anyhow::Result<()> {
    let mut q = format!("/v1/events?last={}", last.clamp(1, 10_000));
    if let Some(a) = app {
        if a.is_empty() || !a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            anyhow::bail!("`{a}` is not an app name (lower case, digits and '-'; `fleetctl get apps` lists them)");
        }
        q += &format!("&app={a}");
    }
    if let Some(n) = node {
        q += &format!("&node={n}");
    }
    let v = server.get(&q)?;
    render_events(&v, output, true);
    Ok(())
}

/// Events as a table (with its header when `header`), or as data.
pub fn render_events(v: &Value, output: Output, header: bool) {
    if output.structured() {
        crate::output::print(v, output == Output::Yaml);
        return;
    }
    if header {
        print_events(v, true);
        return;
    }
    let rendered = {
        let mut t = Table::new(&[("TIME", false), ("KIND", false), ("APP", false), ("NODE", true), ("MESSAGE", false)]);
        for e in v.as_array().into_iter().flatten() {
            t.row(vec![s(&e["at"]), s(&e["kind"]), s(&e["app"]), s(&e["node"]), s(&e["message"])]);
        }
        t.render()
    };
    for line in rendered.lines().skip(1) {
        outln!("{line}");
    }
}

fn print_events(v: &Value, with_node: bool) {
    let events = v.as_array().cloned().unwrap_or_default();
    if events.is_empty() && !with_node {
        outln!("  (none)");
        return;
    }
    let mut cols = vec![("TIME", false), ("KIND", false), ("APP", false)];
    if with_node {
        cols.push(("NODE", true));
    }
    cols.push(("MESSAGE", false));
    let mut t = Table::new(&cols);
    for e in &events {
        let mut row = vec![s(&e["at"]), s(&e["kind"]), s(&e["app"])];
        if with_node {
            row.push(s(&e["node"]));
        }
        row.push(s(&e["message"]));
        t.row(row);
    }
    for line in t.render().lines() {
        outln!("{}{line}", if with_node { "" } else { "  " });
    }
}
