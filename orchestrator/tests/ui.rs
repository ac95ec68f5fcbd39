//! The dashboard in a real browser: Debian's chromium, headless, driven over WebDriver
//! (chromedriver, fantoccini) against the real fleetd on the `local` provider, whose nodes are
//! real fleet-agents serving a model on the CPU. An operator logs in with a token, watches the
//! node appear and a burst of requests drain without reloading the page, opens the node's page
//! and its log; a read token sees no action an admin token sees; the pages fit a phone's width;
//! the browser's console stays free of errors. Screenshots are kept under the target directory
//! (`CARGO_TARGET_TMPDIR/ui-screenshots`). Needs fleet-agent beside fleetd (`cargo build
//! --workspace`, which scripts/test does) and chromium + chromium-driver (scripts/test installs
//! them).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::{Duration, Instant};

use browser::{Chromedriver, console_errors, screenshot, wait_for};
use common::{Fleetd, Machines};
use fantoccini::Locator;
use serde_json::Value;

const SPEC: &str = r#"
[fleet]
name = "ui"

[budget]
max_per_hour = "40"

[apps.chat]
gpu = "H100"
gpus = 1

[apps.chat.scaling]
min_concurrency = 1
max_concurrency = 1
keep_alive = "1h"

# The burst below comes faster than the default 100 submits/s per token.
[apps.chat.requests]
rate_per_token = 10000
"#;

fn shots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
}

/// Every chart on the page: its title, and its axis labels with their units.
const CHARTS: &str = r#"
return [...document.querySelectorAll('.chart svg')].map((s) => ({
  title: (s.querySelector('.chart-title') || {}).textContent || '',
  axes: [...s.querySelectorAll('.axis-label')].map((a) => a.textContent),
}));
"#;

fn check_charts(charts: &Value, page: &str) -> usize {
    let charts = charts.as_array().unwrap_or_else(|| panic!("{page}: charts listed"));
    for c in charts {
        let title = c["title"].as_str().unwrap();
        assert!(!title.is_empty(), "{page}: a chart without a title: {c}");
        let axes: Vec<&str> = c["axes"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(axes.len(), 2, "{page}: chart '{title}' labels both axes: {axes:?}");
        assert!(axes[0].contains('(') && axes[0].ends_with(')'), "{page}: chart '{title}' gives its x unit: {axes:?}");
    }
    charts.len()
}

#[test]
fn an_operator_watches_the_fleet_live_in_a_real_browser() {
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    assert!(agent_bin.is_file(), "fleet-agent beside fleetd: build the workspace first (cargo build --workspace)");
    let dir = tempfile::tempdir().unwrap();
    let _machines = Machines(dir.path().to_path_buf());
    let args: Vec<String> =
        ["--fleet", "ui", "--local", "--reconcile-every", "0.2", "--node-poll", "0.3", "--data-dir"]
            .map(String::from)
            .into_iter()
            .chain([dir.path().display().to_string()])
            .collect();
    let f = Fleetd::start(&args, None);
    let (s, b) = f.call("POST", "/v1/tokens", r#"{"name": "viewer", "scope": "read"}"#);
    assert_eq!(s, 201, "{b}");
    let read_token = serde_json::from_str::<Value>(&b).unwrap()["token"].as_str().unwrap().to_string();
    let driver = Chromedriver::start();
    let ui = format!("http://{}/ui", f.addr);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let c = driver.browser(1280, 800).await;
        c.goto(&ui).await.unwrap();
        // A wrong token is refused with the API's reason; the admin token logs in.
        c.find(Locator::Id("token")).await.unwrap().send_keys("flt_nobody:0000").await.unwrap();
        c.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
        let why = wait_for(
            &c,
            "the refusal",
            "return document.getElementById('login-error').textContent",
            Duration::from_secs(10),
        )
        .await;
        assert!(why.as_str().unwrap().contains("unknown or revoked token"), "{why}");
        // The refused call is the only thing the console has said (the browser logs every 401).
        let errors = console_errors(&c).await;
        assert!(errors.len() == 1 && errors[0].contains("/v1/whoami") && errors[0].contains("401"), "{errors:#?}");
        c.find(Locator::Id("token")).await.unwrap().send_keys(&f.token).await.unwrap();
        c.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
        wait_for(&c, "logged in", "return !document.getElementById('nav').hidden", Duration::from_secs(10)).await;
        // Marks this page load: a reload would lose it.
        c.execute("window.__sameLoad = 'yes'; return true", vec![]).await.unwrap();

        // The spec is applied after the page is open: the node appears, and becomes ready, live.
        c.goto(&format!("{ui}#/nodes")).await.unwrap();
        wait_for(
            &c,
            "the node table",
            "return document.getElementById('page').dataset.ready === 'nodes'",
            Duration::from_secs(10),
        )
        .await;
        let empty = c.execute("return document.getElementById('node-count').textContent", vec![]).await.unwrap();
        assert_eq!(empty, "0 of 0 nodes");
        f.put_spec(SPEC);
        let node = wait_for(
            &c,
            "a ready node in the table",
            "const r = document.querySelector('#nodes-table tr[data-node]'); \
             return r && r.querySelector('td.state').textContent === 'ready' ? r.dataset.node : null",
            Duration::from_secs(120),
        )
        .await;
        let node = node.as_str().unwrap().to_string();
        eprintln!("screenshot: {}", screenshot(&c, &shots(), "nodes").await.display());

        // A burst of requests drains on the apps page, the figures moving as it does.
        c.goto(&format!("{ui}#/apps")).await.unwrap();
        wait_for(
            &c,
            "the chat app",
            "return document.querySelector('section[data-app=\"chat\"] [data-figure=\"queued\"]')",
            Duration::from_secs(10),
        )
        .await;
        let served_before = served(&c).await;
        // More than the one runner serves in a few seconds: the page sees the queue build, then drain.
        let burst = 200;
        let submitted: Vec<u64> = (0..burst)
            .map(|i| {
                let x: Vec<f64> = (0..16).map(|k| ((i * 16 + k) % 7) as f64 / 7.0).collect();
                let (s, b) =
                    f.call("POST", "/v1/apps/chat/requests", &serde_json::json!({ "input": { "x": x } }).to_string());
                assert_eq!(s, 202, "{b}");
                serde_json::from_str::<Value>(&b).unwrap()["id"].as_u64().unwrap()
            })
            .collect();
        let t = Instant::now();
        let mut max_queued = 0;
        loop {
            let queued: u64 =
                text(&c, "section[data-app=\"chat\"] [data-figure=\"queued\"] .value").await.parse().unwrap();
            max_queued = max_queued.max(queued);
            if served(&c).await >= served_before + burst as u64 && queued == 0 {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "the burst did not drain on the page within 180 s:\n{}",
                f.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(f.unfinished("chat", &submitted).is_empty());
        assert!(max_queued > 0, "the page showed the burst queued before it drained");
        eprintln!("the apps page showed {burst} requests served live (queue seen at most {max_queued})");
        let rps = text(&c, "section[data-app=\"chat\"] [data-figure=\"rps\"] .value").await;
        assert!(rps.ends_with("/s") && rps != "0.00/s", "requests per second shown: {rps}");
        let apps_charts = check_charts(&c.execute(CHARTS, vec![]).await.unwrap(), "apps");
        assert!(apps_charts >= 5, "the apps page draws its charts ({apps_charts})");
        let drawn = c
            .execute("return +document.querySelector('section[data-app=\"chat\"] .rps svg').dataset.points", vec![])
            .await
            .unwrap();
        assert!(drawn.as_f64().unwrap() > 0.0, "the request rate chart has points");
        let phases = c
            .execute("return +document.querySelector('section[data-app=\"chat\"] .cold svg').dataset.points", vec![])
            .await
            .unwrap();
        assert!(phases.as_f64().unwrap() >= 2.0, "the ready node's provision and bootstrap are charted: {phases}");
        eprintln!("screenshot: {}", screenshot(&c, &shots(), "apps").await.display());

        // The fleet page: burn against the cap, nodes by cloud, region, capacity and state.
        c.goto(&format!("{ui}#/fleet")).await.unwrap();
        wait_for(
            &c,
            "the fleet page",
            "return document.querySelector('[data-figure=\"burn\"]')",
            Duration::from_secs(10),
        )
        .await;
        let burn = text(&c, "[data-figure=\"burn\"]").await;
        assert!(burn.contains("$40.00/h hourly cap"), "burn against the cap: {burn}");
        let fleet_charts = check_charts(&c.execute(CHARTS, vec![]).await.unwrap(), "fleet");
        assert!(fleet_charts >= 7, "the fleet page draws its charts ({fleet_charts})");
        let clouds = c
            .execute("return document.querySelector('[data-chart=\"Live nodes by cloud\"]').textContent", vec![])
            .await
            .unwrap();
        assert!(clouds.as_str().unwrap().contains("local"), "nodes by cloud: {clouds}");
        eprintln!("screenshot: {}", screenshot(&c, &shots(), "fleet").await.display());

        // The node's page, by its link in the table: record, GPUs, burn-in, events, log; actions.
        c.goto(&format!("{ui}#/nodes")).await.unwrap();
        wait_for(
            &c,
            "the node table again",
            "return document.querySelector('#nodes-table tr[data-node] a')",
            Duration::from_secs(10),
        )
        .await;
        click(&c, &format!("#nodes-table tr[data-node=\"{node}\"] a")).await;
        wait_for(
            &c,
            "the node page",
            "return document.getElementById('page').dataset.ready === 'node'",
            Duration::from_secs(10),
        )
        .await;
        let log = wait_for(
            &c,
            "the agent's log",
            "const l = document.getElementById('node-log'); return l && l.tagName === 'PRE' ? l.textContent : null",
            Duration::from_secs(30),
        )
        .await;
        assert!(log.as_str().unwrap().contains("registered"), "the agent's log: {log}");
        let events = text(&c, "#node-events").await;
        assert!(events.contains("launched") && events.contains("ready"), "the node's events: {events}");
        assert!(!text(&c, "#gpus").await.is_empty() && !text(&c, "#burn-in").await.is_empty());
        let actions = c
            .execute("return [...document.querySelectorAll('[data-action]')].map(b => b.dataset.action)", vec![])
            .await
            .unwrap();
        assert_eq!(actions, serde_json::json!(["drain", "cordon"]), "an admin sees the node's actions");
        // An admin's action takes effect and the page follows.
        click(&c, "[data-action=\"cordon\"]").await;
        wait_for(
            &c,
            "uncordon offered",
            "return document.querySelector('[data-action=\"uncordon\"]')",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(f.get(&format!("/v1/nodes/{node}"))["cordoned"], true);
        eprintln!("screenshot: {}", screenshot(&c, &shots(), "node").await.display());

        // The offerings and events pages render from the API.
        c.goto(&format!("{ui}#/offerings")).await.unwrap();
        wait_for(
            &c,
            "offerings listed",
            "return document.querySelectorAll('#offerings-table tbody tr').length",
            Duration::from_secs(10),
        )
        .await;
        c.goto(&format!("{ui}#/events")).await.unwrap();
        let ev = wait_for(
            &c,
            "events listed",
            "const e = document.getElementById('events'); return e && e.textContent",
            Duration::from_secs(10),
        )
        .await;
        assert!(ev.as_str().unwrap().contains("cordoned"), "the operator's action is in the timeline: {ev}");
        eprintln!("screenshot: {}", screenshot(&c, &shots(), "events").await.display());

        let same = c.execute("return window.__sameLoad", vec![]).await.unwrap();
        assert_eq!(same, "yes", "everything above happened without a page reload");
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "console errors: {errors:#?}");

        // A read token looks at the same node and is offered no action.
        c.find(Locator::Id("logout")).await.unwrap().click().await.unwrap();
        c.find(Locator::Id("token")).await.unwrap().send_keys(&read_token).await.unwrap();
        c.find(Locator::Css("#login button")).await.unwrap().click().await.unwrap();
        wait_for(&c, "logged in to read", "return document.body.dataset.scope === 'read'", Duration::from_secs(10))
            .await;
        c.goto(&format!("{ui}#/nodes/{node}")).await.unwrap();
        wait_for(
            &c,
            "the node page, read only",
            "return document.getElementById('page').dataset.ready === 'node'",
            Duration::from_secs(10),
        )
        .await;
        let actions = c
            .execute("return document.querySelectorAll('[data-action], #node-actions button').length", vec![])
            .await
            .unwrap();
        assert_eq!(actions, 0, "a read token is offered no action");
        eprintln!("screenshot: {}", screenshot(&c, &shots(), "node-read-token").await.display());

        // A phone's width: no page is wider than the screen (tables scroll inside their box).
        c.set_window_size(390, 844).await.unwrap();
        for page in ["fleet", "apps", "nodes", "offerings", "events"] {
            c.goto(&format!("{ui}#/{page}")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(700)).await;
            let fits =
                c.execute("return [document.documentElement.scrollWidth, window.innerWidth]", vec![]).await.unwrap();
            let (w, screen) = (fits[0].as_u64().unwrap(), fits[1].as_u64().unwrap());
            assert!(w <= screen, "#/{page} is {w} px wide on a {screen} px screen");
            eprintln!("screenshot: {}", screenshot(&c, &shots(), &format!("phone-{page}")).await.display());
        }
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "console errors: {errors:#?}");
        c.close().await.unwrap();
    });
    f.kill();
}

/// Clicks the element `css` selects, found and clicked in one script: the table and the node's
/// page are drawn again whenever a node or agent record changes (agents report every few
/// seconds), so an element found by one WebDriver call can be gone by the next.
async fn click(c: &fantoccini::Client, css: &str) {
    let t = Instant::now();
    loop {
        let done = c
            .execute(
                "const e = document.querySelector(arguments[0]); if (!e) return false; e.click(); return true",
                vec![css.into()],
            )
            .await
            .unwrap();
        if done == Value::Bool(true) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{css}: nothing to click within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rendered text of the element `css` selects, read in one script: the page redraws its
/// cards with every update, so an element found by one call can be gone by the next.
async fn text(c: &fantoccini::Client, css: &str) -> String {
    let t = Instant::now();
    loop {
        let got = c
            .execute("const e = document.querySelector(arguments[0]); return e ? e.innerText : null", vec![css.into()])
            .await
            .unwrap();
        if let Some(s) = got.as_str() {
            return s.to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{css}: no such element within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The chat app's requests served, from its card ("N served, M failed since fleetd started").
async fn served(c: &fantoccini::Client) -> u64 {
    let sub = text(c, "section[data-app=\"chat\"] [data-figure=\"rps\"] .sub").await;
    sub.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("served count in '{sub}'"))
}

/// `fleetsim run … --html`: the page draws its charts in the browser from a file, with no
/// network and no console error, the baselines side by side in its table.
#[test]
fn the_simulators_report_draws_its_charts_from_a_file() {
    let fleetsim = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleetsim");
    assert!(fleetsim.is_file(), "fleetsim beside fleetd: build the workspace first (cargo build --workspace)");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../simulator/examples/diurnal.toml");
    let out = std::process::Command::new(&fleetsim)
        .args(["run", example, "--baselines", "--html"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let driver = Chromedriver::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let c = driver.browser(1280, 800).await;
        c.goto(&format!("file://{}", page.display())).await.unwrap();
        wait_for(&c, "the report drawn", "return document.body.dataset.ready === 'yes'", Duration::from_secs(20)).await;
        let charts = c.execute(CHARTS, vec![]).await.unwrap();
        let titles: Vec<&str> = charts.as_array().unwrap().iter().map(|c| c["title"].as_str().unwrap()).collect();
        for want in [
            "Cost over time by cloud",
            "Demand and capacity",
            "Cold starts over time",
            "Queue waits (CDF)",
            "Burn by policy",
        ] {
            assert!(titles.contains(&want), "'{want}' drawn: {titles:?}");
        }
        check_charts(&charts, "report");
        let points = c
            .execute("return [...document.querySelectorAll('svg')].map(s => +s.dataset.points)", vec![])
            .await
            .unwrap();
        assert!(points.as_array().unwrap().iter().all(|p| p.as_f64().unwrap() > 0.0), "every chart has data: {points}");
        let rows = c.execute("return document.querySelectorAll('#summary tbody tr').length", vec![]).await.unwrap();
        assert_eq!(rows, 4, "the policies, both baselines and the oracle side by side");
        eprintln!("screenshot: {}", screenshot(&c, &shots(), "fleetsim-report").await.display());
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "console errors: {errors:#?}");

        // Two apps' demands: the table gives each app's requests and waits per policy.
        let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../simulator/examples/fleet-cost-two-apps.toml");
        let scenario = dir.path().join("two.toml");
        std::fs::write(
            &scenario,
            format!(
                "spec = \"{spec}\"\nduration = \"2h\"\n[[demand]]\napp = \"chat\"\npoisson_rate = 1.0\n\
                 [[demand]]\napp = \"small\"\npoisson_rate = 2.0\ndecode_tokens_per_s = 200\n"
            ),
        )
        .unwrap();
        let page = dir.path().join("two.html");
        let out = std::process::Command::new(&fleetsim)
            .args(["run", "--baselines", "--html"])
            .arg(&page)
            .arg(&scenario)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        c.goto(&format!("file://{}", page.display())).await.unwrap();
        wait_for(&c, "the report drawn", "return document.body.dataset.ready === 'yes'", Duration::from_secs(20)).await;
        let table = c
            .execute(
                "return [...document.querySelectorAll('#summary tr')].map(r => [...r.children].map(c => c.textContent))",
                vec![],
            )
            .await
            .unwrap();
        let table: Vec<Vec<String>> = serde_json::from_value(table).unwrap();
        let col = |name: &str| table[0].iter().position(|h| h == name).unwrap_or_else(|| panic!("{name}: {table:?}"));
        let (chat, small) = (col("chat: served"), col("small: served"));
        col("small: SLO met");
        let cost = col("chat: cost");
        assert!(table[1..].iter().all(|r| r[cost].starts_with('$')), "{table:?}");
        assert_eq!(table.len(), 5, "{table:?}");
        for row in &table[1..] {
            for c in [chat, small] {
                let (served, of) = row[c].split_once(" of ").unwrap_or_else(|| panic!("'{}' in {row:?}", row[c]));
                let (served, of): (u64, u64) = (served.parse().unwrap(), of.parse().unwrap());
                assert!(of > 1000 && served <= of && served * 10 >= of * 9, "{row:?}");
            }
        }
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "console errors: {errors:#?}");
        c.close().await.unwrap();
    });
}
