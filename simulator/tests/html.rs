//! `fleetsim run … --html`: one self-contained page (its data and scripts inline, nothing to
//! fetch), with the baselines side by side when asked. (The page drawn in a real browser is
//! checked in orchestrator/tests/ui.rs, where the browser tests live.)

use std::process::Command;

use serde_json::Value;

#[test]
fn the_report_page_holds_every_run_and_fetches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/poisson.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["run", example, "--baselines", "-o", "json", "--html"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports.len(), 4, "the policies, two baselines and the oracle");
    let html = std::fs::read_to_string(&page).unwrap();
    // Nothing outside the file: no scripts, styles, images or fonts from anywhere.
    for outside in ["src=", "href=\"http", "@import", "url("] {
        assert!(!html.contains(outside), "the page refers outside itself with {outside}");
    }
    assert!(html.contains("FleetCharts"), "the chart script is inline");
    let tag = "<script type=\"application/json\" id=\"data\">";
    let start = html.find(tag).expect("the data") + tag.len();
    let end = start + html[start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&html[start..end].replace("<\\/", "</")).unwrap();
    let runs = data["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(
        names[1..].iter().any(|n| n.contains("static-peak")) && names.iter().any(|n| n.contains("oracle")),
        "{names:?}"
    );
    for (r, rep) in runs.iter().zip(&reports) {
        assert_eq!(r["summary"]["cost"], rep["cost"], "the page's figures are the run's");
        assert_eq!(r["summary"]["cold_starts"], rep["cold_starts"]);
    }
    let main = &runs[0];
    let timeline = main["timeline"].as_array().unwrap();
    assert!(!timeline.is_empty() && timeline.len() <= 600, "thinned to at most 600 points: {}", timeline.len());
    assert_eq!(timeline.last().unwrap()["cold_starts"], reports[0]["cold_starts"], "cold starts counted to the end");
    assert!(!main["by_cloud"].as_array().unwrap().is_empty() && !main["wait_cdf"].as_array().unwrap().is_empty());
}

#[test]
fn compare_writes_every_run_side_by_side_on_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("compare.html");
    let ex = |f: &str| format!("{}/examples/{f}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(["compare", &ex("poisson.toml"), &ex("poisson-on-demand.toml"), "-o", "json", "--html"])
        .arg(&page)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        let name = r["scenario"].as_str().unwrap();
        assert!(html.contains(&format!("\"name\":\"{name}\"")), "{name} on the page");
    }
}
