//! `fleetsim run … --html report.html`: one self-contained page for a simulated run. The charts
//! are fleetd dashboard's own ([`fleet_core::charts::SCRIPT`]), inlined with the run's figures,
//! so the page opens from a file with no network: cost over time by cloud, demand against
//! capacity, cold starts over time, the wait CDF, and, where baselines were computed
//! (`--baselines`), every policy's burn and waits side by side with a table of their figures.

use std::collections::BTreeSet;
use std::path::Path;

use fleet_core::Money;
use serde_json::{Value, json};

use crate::report::Report;

/// Points per line at most: a long run has a sample per tick.
const POINTS: usize = 600;

fn dollars(m: Money) -> f64 {
    m.micros() as f64 / 1e6
}

fn hours(t_s: u64) -> f64 {
    t_s as f64 / 3600.0
}

/// Every `step`-th element's bucket, reduced by `pick` (the largest demand of a bucket, say).
fn buckets<T>(v: &[T], pick: impl Fn(&[T]) -> Value) -> Vec<Value> {
    let step = v.len().div_ceil(POINTS).max(1);
    v.chunks(step).map(pick).collect()
}

/// The figures the page draws, as JSON.
fn data(reports: &[&Report]) -> Value {
    let runs: Vec<Value> = reports
        .iter()
        .map(|r| {
            let timeline = buckets(&r.timeline, |c| {
                let last = c.last().expect("a bucket has samples");
                json!({
                    "h": hours(c[0].t_s),
                    "demand": c.iter().map(|s| s.demand).max(),
                    "capacity": c.iter().map(|s| s.capacity).max(),
                    "burn": dollars(c.iter().map(|s| s.burn_per_hour).max().unwrap_or_default()),
                    "cold_starts": last.cold_starts,
                })
            });
            let clouds: BTreeSet<&String> = r.burn_by_cloud.iter().flat_map(|s| s.burn_per_hour.keys()).collect();
            let by_cloud = buckets(&r.burn_by_cloud, |c| {
                json!({
                    "h": hours(c[0].t_s),
                    "burn": clouds.iter().map(|k| (k.to_string(), json!(dollars(c[0].burn_per_hour.get(*k).copied().unwrap_or_default())))).collect::<serde_json::Map<_, _>>(),
                })
            });
            json!({
                "name": r.scenario,
                "summary": serde_json::to_value(Summary::of(r)).unwrap_or_default(),
                "timeline": timeline,
                "by_cloud": by_cloud,
                "clouds": clouds,
                "wait_cdf": crate::plots::cdf(&r.waits_ms),
                "phases": r.weights.as_ref().map(|p| json!({
                    "provision": p.provision_mean_s(),
                    "boot": p.boot_mean_s(),
                    "fetch": p.fetch_mean_s(),
                    "load": p.load_mean_s(),
                })),
            })
        })
        .collect();
    json!({ "runs": runs })
}

/// One row of the page's table.
#[derive(serde::Serialize)]
struct Summary {
    cost: Money,
    cost_per_1k_requests: Option<Money>,
    requests: u64,
    served: u64,
    wait_p50_s: f64,
    wait_p99_s: f64,
    slo_attainment: f64,
    cold_starts: u64,
    nodes_launched: u64,
    preemptions: u64,
    failovers: u64,
    utilisation: f64,
    cost_over_lower_bound: f64,
    cost_over_oracle: Option<f64>,
    /// With `[weights]`: what the origin billed, and the cache on or off.
    origin_egress: Option<Money>,
    cache: Option<bool>,
    /// With several demands: each app's figures (the report's `apps`).
    apps: Vec<crate::report::AppReport>,
}

impl Summary {
    fn of(r: &Report) -> Summary {
        Summary {
            cost: r.cost,
            cost_per_1k_requests: (r.served > 0).then(|| {
                Money::from_micros_saturating(i128::from(r.cost.micros()) * 1000 / i128::from(r.served as i64))
            }),
            requests: r.requests,
            served: r.served,
            wait_p50_s: r.wait_p50_s,
            wait_p99_s: r.wait_p99_s,
            slo_attainment: r.slo_attainment,
            cold_starts: r.cold_starts,
            nodes_launched: r.nodes_launched,
            preemptions: r.preemptions,
            failovers: r.failovers,
            utilisation: r.utilisation,
            cost_over_lower_bound: r.cost_over_lower_bound,
            cost_over_oracle: r.cost_over_oracle,
            origin_egress: r.weights.as_ref().map(|p| p.origin_egress),
            cache: r.weights.as_ref().map(|p| p.cache),
            apps: r.apps.clone(),
        }
    }
}

const PAGE_SCRIPT: &str = r#"
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('data').textContent);
  const runs = data.runs, main = runs[0];
  const box = (parent, id) => { const d = document.createElement('div'); d.className = 'chart'; d.id = id; parent.appendChild(d); return d; };
  const charts = document.getElementById('charts');
  const hrs = { label: 'time since the start', unit: 'h' };
  const clouds = main.clouds;
  FleetCharts.line(box(charts, 'cost-by-cloud'), { title: 'Cost over time by cloud', x: hrs, y: { label: 'burn', unit: '$ per hour' }, stacked: true, step: true,
    series: clouds.map((c) => ({ name: c, points: main.by_cloud.map((s) => [s.h, s.burn[c] || 0]) })) });
  FleetCharts.line(box(charts, 'demand-capacity'), { title: 'Demand and capacity', x: hrs, y: { label: 'requests', unit: 'count' }, step: true,
    series: [{ name: 'demand (queued + in flight)', points: main.timeline.map((s) => [s.h, s.demand]) }, { name: 'capacity (ready runners × multiplexing)', points: main.timeline.map((s) => [s.h, s.capacity]) }] });
  const cold = [];
  for (let i = 1; i < main.timeline.length; i++) {
    const dt = main.timeline[i].h - main.timeline[i - 1].h;
    if (dt > 0) cold.push([main.timeline[i].h, (main.timeline[i].cold_starts - main.timeline[i - 1].cold_starts) / dt]);
  }
  FleetCharts.line(box(charts, 'cold-starts'), { title: 'Cold starts over time', x: hrs, y: { label: 'runners started', unit: 'per hour' }, step: true, series: [{ name: 'cold starts', points: cold }] });
  FleetCharts.line(box(charts, 'waits'), { title: 'Queue waits (CDF)', x: { label: 'wait', unit: 's' }, y: { label: 'share of requests', unit: 'fraction', min: 0, max: 1 },
    series: runs.map((r) => ({ name: r.name, points: r.wait_cdf })) });
  if (main.phases) {
    FleetCharts.bars(box(charts, 'phases'), { title: 'Mean cold start by phase', x: { label: 'duration', unit: 's' }, y: { label: 'phase' },
      items: ['provision', 'boot', 'fetch', 'load'].map((k) => ({ name: k, value: main.phases[k] })) });
  }
  if (runs.length > 1) {
    FleetCharts.line(box(charts, 'burn-by-policy'), { title: 'Burn by policy', x: hrs, y: { label: 'burn', unit: '$ per hour' }, step: true,
      series: runs.map((r) => ({ name: r.name, points: r.timeline.map((s) => [s.h, s.burn]) })) });
  }
  const money = (m) => (m === null || m === undefined ? '–' : '$' + Number(m).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const cols = [['policy', (r) => r.name], ['cost', (r) => money(r.summary.cost)], ['per 1,000 requests', (r) => money(r.summary.cost_per_1k_requests)],
    ['served', (r) => r.summary.served + ' of ' + r.summary.requests], ['wait p50 / p99', (r) => r.summary.wait_p50_s.toFixed(1) + ' s / ' + r.summary.wait_p99_s.toFixed(1) + ' s'],
    ['SLO met', (r) => (r.summary.slo_attainment * 100).toFixed(1) + '%'], ['cold starts', (r) => r.summary.cold_starts], ['nodes launched', (r) => r.summary.nodes_launched],
    ['preemptions', (r) => r.summary.preemptions], ['failovers', (r) => r.summary.failovers], ['GPU utilisation', (r) => (r.summary.utilisation * 100).toFixed(1) + '%'],
    ['cost ÷ lower bound', (r) => r.summary.cost_over_lower_bound.toFixed(2) + '×'], ['cost ÷ oracle', (r) => (r.summary.cost_over_oracle ? r.summary.cost_over_oracle.toFixed(2) + '×' : '–')]];
  if (main.summary.origin_egress !== null) {
    cols.push(['node cache + peers', (r) => (r.summary.cache ? 'on' : 'off')], ['origin egress', (r) => money(r.summary.origin_egress)]);
  }
  main.summary.apps.forEach((a) => {
    const of = (r) => r.summary.apps.find((x) => x.app === a.app);
    cols.push([a.app + ': cost', (r) => (of(r) ? money(of(r).cost) : '–')], [a.app + ': served', (r) => (of(r) ? of(r).served + ' of ' + of(r).requests : '–')],
      [a.app + ': wait p99', (r) => (of(r) ? of(r).wait_p99_s.toFixed(1) + ' s' : '–')],
      [a.app + ': SLO met', (r) => (of(r) ? (of(r).slo_attainment * 100).toFixed(1) + '%' : '–')]);
  });
  const table = document.getElementById('summary');
  const tr = document.createElement('tr');
  cols.forEach(([c]) => { const th = document.createElement('th'); th.textContent = c; tr.appendChild(th); });
  table.tHead.appendChild(tr);
  runs.forEach((r) => {
    const row = document.createElement('tr');
    cols.forEach(([, f]) => { const td = document.createElement('td'); td.textContent = f(r); row.appendChild(td); });
    table.tBodies[0].appendChild(row);
  });
  document.body.dataset.ready = 'yes';
})();
"#;

const STYLE: &str = r#"
body { margin: 0 auto; max-width: 1300px; padding: 16px; font: 14px/1.45 system-ui, sans-serif; color: #1d2433; background: #f7f8fa; }
h1 { font-size: 22px; } .muted { color: #667085; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; margin: 12px 0; }
@media (max-width: 700px) { .charts { grid-template-columns: 1fr; } }
.chart { background: #fff; border: 1px solid #e4e7ec; border-radius: 8px; padding: 6px; min-width: 0; }
.chart svg { width: 100%; height: auto; display: block; }
.chart-title { font-size: 14px; font-weight: 600; } .tick { font-size: 11px; fill: #667085; } .axis-label { font-size: 12px; }
.axis { stroke: #98a2b3; } .grid { stroke: #e4e7ec; } .empty { font-size: 13px; fill: #667085; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 12px; padding: 0 8px 4px; color: #667085; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; background: #fff; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e4e7ec; white-space: nowrap; } th { font-size: 12px; color: #667085; }
"#;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The page for `reports` (the run under the scenario's policies first, then any baselines).
pub fn page(reports: &[&Report]) -> String {
    let first = reports.first().expect("a report");
    // JSON inside a <script> element: `</` would end it early, so it is written as `<\/`.
    let data = data(reports).to_string().replace("</", "<\\/");
    let names: Vec<String> = reports.iter().map(|r| r.scenario.clone()).collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>fleetsim: {title}</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head>\n<body>\
         <h1>fleetsim: {title}</h1>\
         <p class=\"muted\">seed {seed}, {hours:.1} h simulated; {runs}. Written by fleetsim; opens without a network.</p>\
         <div class=\"scroll\"><table id=\"summary\"><thead></thead><tbody></tbody></table></div>\
         <div class=\"charts\" id=\"charts\"></div>\n\
         <script type=\"application/json\" id=\"data\">{data}</script>\n<script>{charts}</script>\n<script>{PAGE_SCRIPT}</script>\n</body></html>\n",
        title = escape(&first.scenario),
        seed = first.seed,
        hours = hours(first.duration_s),
        runs = escape(&names.join(", ")),
        charts = fleet_core::charts::SCRIPT,
    )
}

/// Writes [`page`] to `path`.
pub fn write(reports: &[&Report], path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, page(reports)).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
