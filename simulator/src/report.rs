//! What a run cost and how it served, as a table or JSON. JSON fields are named plainly
//! (`cost`, `lower_bound`, `wait_p99_s`, …); money is a decimal string, as everywhere in fleet.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fleet_core::{Money, Offering};
use serde::Serialize;

use crate::scenario::Scenario;

/// Demand and capacity at one control tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub t_s: u64,
    /// Requests queued or in flight.
    pub demand: u32,
    /// Requests ready runners can serve at once.
    pub capacity: u32,
    pub burn_per_hour: Money,
    /// Cold starts (runners started) so far.
    pub cold_starts: u64,
    /// With several demands: each one's demand and capacity, in the scenario's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppSample>,
}

/// One demand's app at one control tick (runs with several demands).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AppSample {
    pub demand: u32,
    pub capacity: u32,
}

/// Hourly burn per cloud at one moment (at most ~500 of these per run, for the stacked plot).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudSample {
    pub t_s: u64,
    pub burn_per_hour: BTreeMap<String, Money>,
}

/// Cold starts by phase, and where the weights came from (scenarios with `[weights]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ColdStartPhases {
    /// fleet's node cache and peers were on.
    pub cache: bool,
    /// Nodes launched, and their time to run and to boot, summed.
    pub nodes: u64,
    pub provision_s: f64,
    pub boot_s: f64,
    /// Runners started, and their time fetching the weights (zero where the node had them) and
    /// loading them, summed.
    pub runner_starts: u64,
    pub fetch_s: f64,
    pub load_s: f64,
    /// Fetches from the origin and from peers; runner starts on a node that held the weights
    /// already (or was fetching them).
    pub from_origin: u64,
    pub from_peers: u64,
    pub from_node: u64,
    pub origin_gb: f64,
    pub peer_gb: f64,
    /// What the origin billed for the weights read out of it.
    pub origin_egress: Money,
}

impl ColdStartPhases {
    fn mean(total: f64, n: u64) -> f64 {
        if n == 0 { 0.0 } else { total / n as f64 }
    }
    pub fn provision_mean_s(&self) -> f64 {
        Self::mean(self.provision_s, self.nodes)
    }
    pub fn boot_mean_s(&self) -> f64 {
        Self::mean(self.boot_s, self.nodes)
    }
    pub fn fetch_mean_s(&self) -> f64 {
        Self::mean(self.fetch_s, self.runner_starts)
    }
    pub fn load_mean_s(&self) -> f64 {
        Self::mean(self.load_s, self.runner_starts)
    }
}

/// One demand's requests and waits, in a run with several (`[[demand]]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppReport {
    pub app: String,
    pub requests: u64,
    pub served: u64,
    pub unserved: u64,
    pub wait_p50_s: f64,
    pub wait_p95_s: f64,
    pub wait_p99_s: f64,
    pub wait_max_s: f64,
    pub slo_attainment: f64,
    /// This demand's part of the run's lower bound.
    pub lower_bound: Money,
    /// Its app's nodes' bills.
    pub cost: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub duration_s: u64,
    pub requests: u64,
    pub served: u64,
    /// Still queued or in flight at the end.
    pub unserved: u64,
    pub cost: Money,
    pub cost_by_cloud: BTreeMap<String, Money>,
    pub cost_by_region: BTreeMap<String, Money>,
    pub cost_by_capacity: BTreeMap<String, Money>,
    /// Each app's nodes' bills (the spec's apps that launched any).
    pub cost_by_app: BTreeMap<String, Money>,
    /// GPU-hours paid for, and the share of them runners spent serving.
    pub gpu_hours: f64,
    pub busy_gpu_hours: f64,
    pub utilisation: f64,
    pub wait_p50_s: f64,
    pub wait_p95_s: f64,
    pub wait_p99_s: f64,
    /// The longest any served request waited.
    pub wait_max_s: f64,
    pub slo_wait_s: f64,
    /// Share of served requests that waited at most `slo_wait_s`.
    pub slo_attainment: f64,
    pub cold_starts: u64,
    pub nodes_launched: u64,
    pub preemptions: u64,
    /// Launch attempts refused (simulated insufficient capacity) and passed to the next offering.
    pub failovers: u64,
    /// Nodes no candidate could supply.
    pub launch_failures: u64,
    /// Nodes rented larger (dearer) than the cheapest offering that fit their runners and could
    /// be had when they launched (of the capacity type launched): 0 when nodes are right-sized.
    pub oversized_nodes: u64,
    /// Nodes consolidated away (their runners moved to fewer or cheaper nodes).
    pub consolidations: u64,
    /// Decisions in which a budget cap held runners back.
    pub budget_events: u64,
    pub max_burn_per_hour: Money,
    pub lower_bound: Money,
    pub cost_over_lower_bound: f64,
    /// The hindsight oracle's cost on the same demand, where computed (`compare --baselines`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle_cost: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_over_oracle: Option<f64>,
    pub events: u64,
    /// Per demand, in the scenario's order, when it has several (the totals above are theirs
    /// together).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppReport>,
    #[serde(skip)]
    pub(crate) waits_ms: Vec<u32>,
    /// Per demand (several only): the served requests' waits.
    #[serde(skip)]
    pub(crate) apps_waits: Vec<Vec<u32>>,
    pub timeline: Vec<Sample>,
    pub burn_by_cloud: Vec<CloudSample>,
    /// Cold starts by phase and the weights' sources (`[weights]` scenarios only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<ColdStartPhases>,
}

/// The `p`th percentile (nearest rank) in seconds, by selection: O(n), no full sort of what can be
/// tens of millions of waits.
fn percentile(waits: &mut [u32], p: f64) -> f64 {
    if waits.is_empty() {
        return 0.0;
    }
    let i = (((p / 100.0) * (waits.len() - 1) as f64).round() as usize).min(waits.len() - 1);
    f64::from(*waits.select_nth_unstable(i).1) / 1000.0
}

impl Report {
    pub(crate) fn new(sc: &Scenario, requests: u64) -> Report {
        Report {
            scenario: sc.name.clone(),
            seed: sc.seed,
            duration_s: sc.duration.as_secs(),
            requests,
            served: 0,
            unserved: 0,
            cost: Money::ZERO,
            cost_by_cloud: BTreeMap::new(),
            cost_by_region: BTreeMap::new(),
            cost_by_capacity: BTreeMap::new(),
            cost_by_app: BTreeMap::new(),
            gpu_hours: 0.0,
            busy_gpu_hours: 0.0,
            utilisation: 0.0,
            wait_p50_s: 0.0,
            wait_p95_s: 0.0,
            wait_p99_s: 0.0,
            wait_max_s: 0.0,
            slo_wait_s: sc.slo_wait.as_secs_f64(),
            slo_attainment: 0.0,
            cold_starts: 0,
            nodes_launched: 0,
            preemptions: 0,
            failovers: 0,
            launch_failures: 0,
            oversized_nodes: 0,
            consolidations: 0,
            budget_events: 0,
            max_burn_per_hour: Money::ZERO,
            lower_bound: Money::ZERO,
            cost_over_lower_bound: 0.0,
            oracle_cost: None,
            cost_over_oracle: None,
            events: 0,
            apps: Vec::new(),
            waits_ms: Vec::with_capacity(usize::try_from(requests).unwrap_or(0)),
            apps_waits: Vec::new(),
            timeline: Vec::new(),
            burn_by_cloud: Vec::new(),
            weights: sc.weights.as_ref().map(|w| ColdStartPhases { cache: w.cache, ..Default::default() }),
        }
    }

    /// Reports each of the scenario's several demands apart; `requests[d]`: demand `d`'s.
    pub(crate) fn by_app(&mut self, sc: &Scenario, requests: &[u64]) {
        self.apps = sc
            .demands
            .iter()
            .zip(requests)
            .map(|(d, n)| AppReport {
                app: d.app.clone(),
                requests: *n,
                served: 0,
                unserved: 0,
                wait_p50_s: 0.0,
                wait_p95_s: 0.0,
                wait_p99_s: 0.0,
                wait_max_s: 0.0,
                slo_attainment: 0.0,
                lower_bound: Money::ZERO,
                cost: Money::ZERO,
            })
            .collect();
        self.apps_waits = vec![Vec::new(); self.apps.len()];
    }

    /// Books the bill of one node.
    pub(crate) fn charge(&mut self, o: &Offering, cost: Money, ran_ms: u64, app: &str) {
        self.cost += cost;
        match self.cost_by_app.get_mut(app) {
            Some(c) => *c += cost,
            None => {
                self.cost_by_app.insert(app.to_string(), cost);
            }
        }
        *self.cost_by_cloud.entry(o.cloud.to_string()).or_default() += cost;
        *self.cost_by_region.entry(format!("{}/{}", o.cloud, o.region)).or_default() += cost;
        *self.cost_by_capacity.entry(o.capacity.to_string()).or_default() += cost;
        self.gpu_hours += ran_ms as f64 * f64::from(o.instance.gpu_count) / 3_600_000.0;
    }

    pub(crate) fn finish(&mut self, sc: &Scenario) {
        let slo = sc.slo_wait.as_millis();
        let attainment = |waits: &[u32]| {
            let within = waits.iter().filter(|w| u128::from(**w) <= slo).count();
            if waits.is_empty() { 0.0 } else { within as f64 / waits.len() as f64 }
        };
        self.wait_p50_s = percentile(&mut self.waits_ms, 50.0);
        self.wait_p95_s = percentile(&mut self.waits_ms, 95.0);
        self.wait_p99_s = percentile(&mut self.waits_ms, 99.0);
        self.wait_max_s = percentile(&mut self.waits_ms, 100.0);
        self.slo_attainment = attainment(&self.waits_ms);
        for (a, w) in self.apps.iter_mut().zip(&mut self.apps_waits) {
            a.served = w.len() as u64;
            a.unserved = a.requests - a.served;
            a.wait_p50_s = percentile(w, 50.0);
            a.wait_p95_s = percentile(w, 95.0);
            a.wait_p99_s = percentile(w, 99.0);
            a.wait_max_s = percentile(w, 100.0);
            a.slo_attainment = attainment(w);
            a.cost = self.cost_by_app.get(&a.app).copied().unwrap_or(Money::ZERO);
        }
        self.utilisation = if self.gpu_hours > 0.0 { self.busy_gpu_hours / self.gpu_hours } else { 0.0 };
        self.cost_over_lower_bound = if self.lower_bound > Money::ZERO {
            self.cost.micros() as f64 / self.lower_bound.micros() as f64
        } else {
            0.0
        };
    }

    /// Records the oracle's cost on the same demand, and this run's cost over it.
    pub fn set_oracle(&mut self, oracle: Money) {
        self.oracle_cost = Some(oracle);
        self.cost_over_oracle = (oracle > Money::ZERO).then(|| self.cost.micros() as f64 / oracle.micros() as f64);
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    /// The headline figures, one per line; several reports side by side for `compare`.
    pub fn table(reports: &[&Report]) -> String {
        type Cell = Box<dyn Fn(&Report) -> String>;
        let rows: Vec<(&str, Cell)> = vec![
            ("scenario", Box::new(|r| r.scenario.clone())),
            ("requests", Box::new(|r| r.requests.to_string())),
            ("served", Box::new(|r| r.served.to_string())),
            ("unserved", Box::new(|r| r.unserved.to_string())),
            ("cost", Box::new(|r| r.cost.cents().to_string())),
            ("lower bound", Box::new(|r| r.lower_bound.cents().to_string())),
            ("cost / lower bound", Box::new(|r| format!("{:.2}", r.cost_over_lower_bound))),
            ("cost / oracle", Box::new(|r| r.cost_over_oracle.map_or("-".to_string(), |x| format!("{x:.2}")))),
            ("GPU-hours", Box::new(|r| format!("{:.1}", r.gpu_hours))),
            ("utilisation", Box::new(|r| format!("{:.1}%", r.utilisation * 100.0))),
            ("wait p50", Box::new(|r| format!("{:.2}s", r.wait_p50_s))),
            ("wait p95", Box::new(|r| format!("{:.2}s", r.wait_p95_s))),
            ("wait p99", Box::new(|r| format!("{:.2}s", r.wait_p99_s))),
            ("wait max", Box::new(|r| format!("{:.2}s", r.wait_max_s))),
            ("SLO attainment", Box::new(|r| format!("{:.1}% ≤ {}s", r.slo_attainment * 100.0, r.slo_wait_s))),
            ("cold starts", Box::new(|r| r.cold_starts.to_string())),
            ("nodes launched", Box::new(|r| r.nodes_launched.to_string())),
            ("preemptions", Box::new(|r| r.preemptions.to_string())),
            ("failovers", Box::new(|r| r.failovers.to_string())),
            ("launch failures", Box::new(|r| r.launch_failures.to_string())),
            ("oversized nodes", Box::new(|r| r.oversized_nodes.to_string())),
            ("consolidations", Box::new(|r| r.consolidations.to_string())),
            ("budget events", Box::new(|r| r.budget_events.to_string())),
            ("max burn", Box::new(|r| format!("{}/h", r.max_burn_per_hour.cents()))),
        ];
        let mut clouds: Vec<String> = reports.iter().flat_map(|r| r.cost_by_cloud.keys().cloned()).collect();
        clouds.sort();
        clouds.dedup();
        let mut cells: Vec<Vec<String>> = rows
            .iter()
            .map(|(name, f)| {
                let mut v = vec![name.to_string()];
                v.extend(reports.iter().map(|r| f(r)));
                v
            })
            .collect();
        // Several demands: each app's requests, waits and SLO, by name (a report without that
        // app shows "-").
        let mut apps: Vec<String> = Vec::new();
        for r in reports {
            for a in &r.apps {
                if !apps.contains(&a.app) {
                    apps.push(a.app.clone());
                }
            }
        }
        for app in &apps {
            let of = |r: &Report| r.apps.iter().find(|a| &a.app == app).cloned();
            let row = |name: String, f: &dyn Fn(&AppReport) -> String| {
                let mut v = vec![name];
                v.extend(reports.iter().map(|r| of(r).map_or("-".into(), |a| f(&a))));
                v
            };
            cells.push(row(format!("{app}: cost"), &|a| a.cost.cents().to_string()));
            cells.push(row(format!("{app}: served"), &|a| format!("{} of {}", a.served, a.requests)));
            cells.push(row(format!("{app}: wait p99"), &|a| format!("{:.2}s", a.wait_p99_s)));
            cells.push(row(format!("{app}: SLO attainment"), &|a| format!("{:.1}%", a.slo_attainment * 100.0)));
            cells.push(row(format!("{app}: lower bound"), &|a| a.lower_bound.cents().to_string()));
        }
        if reports.iter().any(|r| r.weights.is_some()) {
            let w = |f: fn(&ColdStartPhases) -> String| -> Cell {
                Box::new(move |r: &Report| r.weights.as_ref().map_or("-".into(), f))
            };
            let extra: Vec<(&str, Cell)> = vec![
                ("node cache + peers", w(|p| if p.cache { "on".into() } else { "off".into() })),
                ("mean provision", w(|p| format!("{:.0}s", p.provision_mean_s()))),
                ("mean boot", w(|p| format!("{:.0}s", p.boot_mean_s()))),
                ("mean fetch", w(|p| format!("{:.0}s", p.fetch_mean_s()))),
                ("mean load", w(|p| format!("{:.0}s", p.load_mean_s()))),
                ("fetches origin/peers/node", w(|p| format!("{}/{}/{}", p.from_origin, p.from_peers, p.from_node))),
                ("origin GB read", w(|p| format!("{:.0}", p.origin_gb))),
                ("origin egress", w(|p| p.origin_egress.cents().to_string())),
                (
                    "cost + egress",
                    Box::new(|r: &Report| {
                        (r.cost + r.weights.as_ref().map_or(Money::ZERO, |p| p.origin_egress)).cents().to_string()
                    }),
                ),
            ];
            for (name, f) in &extra {
                let mut v = vec![name.to_string()];
                v.extend(reports.iter().map(|r| f(r)));
                cells.push(v);
            }
        }
        // Several apps billed (one demand beside other apps' floors, or several demands): each
        // app's bill, unless the per-demand rows above give them all.
        let mut billed: Vec<&String> = reports.iter().flat_map(|r| r.cost_by_app.keys()).collect();
        billed.sort();
        billed.dedup();
        // One row of a bill per report, from one of its maps (nothing billed: $0.00).
        let bill_row = |name: String, of: &dyn Fn(&Report) -> Option<Money>| {
            let mut v = vec![name];
            v.extend(reports.iter().map(|r| of(r).unwrap_or(Money::ZERO).cents().to_string()));
            v
        };
        if billed.len() > 1 && !billed.iter().all(|a| apps.contains(a)) {
            for a in billed {
                cells.push(bill_row(format!("cost of {a}"), &|r| r.cost_by_app.get(a).copied()));
            }
        }
        for c in clouds {
            cells.push(bill_row(format!("cost on {c}"), &|r| r.cost_by_cloud.get(&c).copied()));
        }
        let widths: Vec<usize> =
            (0..=reports.len()).map(|i| cells.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for row in cells {
            for (i, c) in row.iter().enumerate() {
                if i == 0 {
                    let _ = write!(out, "{c:<w$}", w = widths[0]);
                } else {
                    let _ = write!(out, "  {c:>w$}", w = widths[i]);
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_by_selection_match_the_sorted_ones() {
        let mut v: Vec<u32> = (0..1001).map(|x| x * 3 % 1001).collect(); // 0..=1000 ms, shuffled
        assert_eq!(percentile(&mut v, 50.0), 0.5);
        assert_eq!(percentile(&mut v, 99.0), 0.99);
        assert_eq!(percentile(&mut v, 100.0), 1.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }
}
