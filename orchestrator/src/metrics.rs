//! Prometheus metrics (`/metrics`), all named `fleet_*`. Dollar figures are computed exactly
//! (integer micro-dollars) and only turned into floats for export.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;

use fleet_core::{Cloud, Money, Time};
use fleet_state::model::{NodeRecord, RunnerRecord};
use fleet_state::queue::Depth;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::reconcile::{burn_per_hour, month_cost_since, month_start};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub cloud: String,
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerLabels {
    pub app: String,
    pub state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub app: String,
    /// `done` or `failed`.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerTokenLabels {
    pub app: String,
    pub runner: String,
}

/// Seconds from 10 ms to ~45 minutes, doubling (a 140 GB model can take minutes).
fn cold_start_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 19))
}

/// A node's side of a cold start, counted when it becomes ready: `provision` from its record to
/// the cloud's launch answer (waiting for the launch gate and the call itself), `boot` from then
/// to its instance first seen running (`booted`; by polling, so within one node poll), and
/// `bootstrap` from then to its agent healthy (the agent's install and start, its burn-in). A
/// node whose boot fleetd did not see end (its actor started later) counts provision only.
pub fn observe_node_ready(
    m: &Metrics,
    before: &fleet_state::model::NodeRecord,
    booted: Option<fleet_core::Time>,
    now: fleet_core::Time,
) {
    let fleet_state::lifecycle::node::NodePhase::Bootstrapping { since, .. } = &before.state else { return };
    let secs = |d: chrono::TimeDelta| d.to_std().unwrap_or_default().as_secs_f64();
    let mut phases = vec![("provision", secs(*since - before.created_at))];
    if let Some(b) = booted {
        phases.push(("boot", secs(b - *since)));
        phases.push(("bootstrap", secs(now - b)));
    }
    for (phase, s) in phases {
        m.cold_start_seconds.get_or_create(&PhaseLabels { phase: phase.into(), app: before.app.clone() }).observe(s);
    }
}

/// Counts the cold starts agents report that are not counted yet (reported after this fleetd
/// started: a restart does not count old ones again).
pub fn observe_cold_starts(m: &Metrics, agents: &[std::sync::Arc<fleet_state::model::AgentRecord>]) {
    let mut seen = m.cold_starts_seen.lock().expect("cold starts");
    let live: std::collections::HashSet<u64> = agents.iter().map(|a| a.node).collect();
    seen.retain(|(node, _, _)| live.contains(node));
    for a in agents {
        for c in &a.health.cold_starts {
            if c.at < m.started || !seen.insert((a.node, c.runner, c.at.timestamp_micros())) {
                continue;
            }
            for (phase, s) in [("fetch", Some(c.fetch_s)), ("load", Some(c.load_s)), ("first_token", c.first_token_s)] {
                if let Some(s) = s {
                    m.cold_start_seconds
                        .get_or_create(&PhaseLabels { phase: phase.into(), app: c.app.clone() })
                        .observe(s);
                }
            }
            for (source, n) in [("origin", c.bytes_origin), ("peers", c.bytes_peers), ("cache", c.bytes_cached)] {
                m.model_bytes.get_or_create(&SourceLabels { app: c.app.clone(), source: source.into() }).inc_by(n);
            }
        }
    }
}

/// Seconds from 1 ms to ~9 minutes, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

type Latencies = Family<AppLabel, Histogram, fn() -> Histogram>;

/// One node's money series: its id, app and cloud (live nodes only, so the set stays the fleet's
/// size, not its history).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeMoneyLabels {
    pub node: String,
    pub app: String,
    pub cloud: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaunchLabels {
    pub cloud: String,
    pub kind: String,
}

impl LaunchLabels {
    pub fn new(cloud: Cloud, kind: &str) -> LaunchLabels {
        LaunchLabels { cloud: cloud.to_string(), kind: kind.to_string() }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
    pub app: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub app: String,
    /// `origin`, `peers` or `cache`.
    pub source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

impl KindLabel {
    pub fn new(kind: &str) -> KindLabel {
        KindLabel { kind: kind.to_string() }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    /// `fleet` or the app's name.
    pub scope: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub nodes: Family<NodeLabels, Gauge>,
    pub runners: Family<RunnerLabels, Gauge>,
    pub queue_depth: Family<AppLabel, Gauge>,
    pub in_flight: Family<AppLabel, Gauge>,
    /// Launch calls made, by cloud (`kind="called"`).
    pub launches: Family<LaunchLabels, Counter>,
    pub launch_failures: Family<LaunchLabels, Counter>,
    pub burn_per_hour: FloatGauge,
    pub month_to_date: FloatGauge,
    /// Burn and month to date per app (every app that has cost anything this month).
    pub app_burn_per_hour: Family<AppLabel, FloatGauge>,
    pub app_month_to_date: Family<AppLabel, FloatGauge>,
    /// Burn and month to date per live node.
    pub node_burn_per_hour: Family<NodeMoneyLabels, FloatGauge>,
    pub node_month_to_date: Family<NodeMoneyLabels, FloatGauge>,
    pub budget_headroom: Family<ScopeLabel, FloatGauge>,
    pub actor_restarts: Family<KindLabel, Counter>,
    /// Events recorded (`fleetctl get events`), by kind.
    pub events: Family<KindLabel, Counter>,
    /// Runners' cold starts on their nodes, by phase (`fetch`, `load`), as agents report them.
    pub cold_start_seconds: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    /// Model bytes runners' nodes got, by where from (`origin`, `peers`, `cache`).
    pub model_bytes: Family<SourceLabels, Counter>,
    /// The cold starts already counted: (node, runner, when), agents' reports since this fleetd
    /// started only.
    cold_starts_seen: std::sync::Mutex<std::collections::HashSet<(u64, u64, i64)>>,
    started: Time,
    pub reconcile_errors: Counter,
    pub reconcile_seconds: Histogram,
    pub requests_requeued: Counter,
    pub results_expired: Counter,
    /// Nodes marked for consolidation (their runners moved to fewer or cheaper nodes).
    pub consolidations: Counter,
    /// Nodes drained because their app left the spec (none is left running unaccounted for).
    pub removed_app_nodes: Counter,
    /// Nodes drained because their offering is no longer one the plan may use.
    pub offering_gone_nodes: Counter,
    /// Queue records skipped as unreadable or inconsistent with their key (since start).
    pub quarantined: Gauge,
    /// Node records written by plans (each followed by its launch order).
    pub nodes_requested: Counter,
    pub reconcile_count: Counter,
    /// Ready nodes whose agent is missing, unhealthy or interrupted, by reason.
    pub nodes_unhealthy: Family<KindLabel, Gauge>,
    /// Instances of the fleet with no node record, terminated, by cloud (`kind` = the cloud).
    pub orphans_terminated: Family<KindLabel, Counter>,
    /// Serving ([`crate::serving`]): per app, from each finished request.
    pub requests_finished: Family<OutcomeLabels, Counter>,
    pub request_seconds: Latencies,
    pub queue_wait_seconds: Latencies,
    pub time_to_first_token_seconds: Latencies,
    pub inter_token_seconds: Latencies,
    pub generated_tokens: Family<RunnerTokenLabels, Counter>,
    /// Pushes that failed before the runner's first token and were tried on another runner
    /// (or put on the queue), by app.
    pub push_retries: Family<AppLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn dollars(m: Money) -> f64 {
    m.micros() as f64 / 1e6
}

impl Metrics {
    /// Creates every counter series fleetd may report for `clouds` at zero, so that each metric
    /// the README lists is there from the start (a series that appears only once incremented
    /// breaks `rate()` and alerts on absence).
    pub fn zero_series(&self, clouds: impl IntoIterator<Item = Cloud>) {
        for cloud in clouds {
            let _ = self.launches.get_or_create(&LaunchLabels::new(cloud, "called"));
            for kind in [
                "insufficient-capacity",
                "quota-exceeded",
                "throttled",
                "not-found",
                "unauthorized",
                "invalid-request",
                "transient",
            ] {
                let _ = self.launch_failures.get_or_create(&LaunchLabels::new(cloud, kind));
            }
            let _ = self.orphans_terminated.get_or_create(&KindLabel::new(&cloud.to_string()));
        }
        for kind in ["fleet", "cloud", "region", "node", "runner"] {
            let _ = self.actor_restarts.get_or_create(&KindLabel::new(kind));
        }
        for kind in fleet_state::events::EventKind::ALL {
            let _ = self.events.get_or_create(&KindLabel::new(kind.name()));
        }
    }

    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("fleet");
        let m = Metrics {
            registry: Registry::default(),
            nodes: Family::default(),
            runners: Family::default(),
            queue_depth: Family::default(),
            in_flight: Family::default(),
            launches: Family::default(),
            launch_failures: Family::default(),
            burn_per_hour: FloatGauge::default(),
            month_to_date: FloatGauge::default(),
            app_burn_per_hour: Family::default(),
            app_month_to_date: Family::default(),
            node_burn_per_hour: Family::default(),
            node_month_to_date: Family::default(),
            budget_headroom: Family::default(),
            actor_restarts: Family::default(),
            events: Family::default(),
            cold_start_seconds: Family::new_with_constructor(cold_start_histogram),
            model_bytes: Family::default(),
            cold_starts_seen: Default::default(),
            started: chrono::Utc::now(),
            reconcile_errors: Counter::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            requests_requeued: Counter::default(),
            results_expired: Counter::default(),
            consolidations: Counter::default(),
            removed_app_nodes: Counter::default(),
            offering_gone_nodes: Counter::default(),
            quarantined: Gauge::default(),
            nodes_requested: Counter::default(),
            reconcile_count: Counter::default(),
            nodes_unhealthy: Family::default(),
            orphans_terminated: Family::default(),
            requests_finished: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            queue_wait_seconds: Family::new_with_constructor(latency_histogram),
            time_to_first_token_seconds: Family::new_with_constructor(latency_histogram),
            inter_token_seconds: Family::new_with_constructor(latency_histogram),
            generated_tokens: Family::default(),
            push_retries: Family::default(),
        };
        r.register("nodes", "Nodes by cloud and lifecycle state", m.nodes.clone());
        r.register("runners", "Runners by app and lifecycle state", m.runners.clone());
        r.register("queue_depth", "Requests queued, by app", m.queue_depth.clone());
        r.register("requests_in_flight", "Requests being served, by app", m.in_flight.clone());
        r.register("launches", "Launch calls made, by cloud", m.launches.clone());
        r.register("launch_failures", "Launch calls that failed, by cloud and error kind", m.launch_failures.clone());
        r.register("burn_dollars_per_hour", "What the live nodes cost per hour now", m.burn_per_hour.clone());
        r.register("month_to_date_dollars", "What the fleet has cost this month", m.month_to_date.clone());
        r.register(
            "app_burn_dollars_per_hour",
            "What each app's live nodes cost per hour now",
            m.app_burn_per_hour.clone(),
        );
        r.register(
            "app_month_to_date_dollars",
            "What each app's nodes have cost this month",
            m.app_month_to_date.clone(),
        );
        r.register(
            "node_burn_dollars_per_hour",
            "What each live node costs per hour now (0 until billing starts)",
            m.node_burn_per_hour.clone(),
        );
        r.register(
            "node_month_to_date_dollars",
            "What each live node has cost this month",
            m.node_month_to_date.clone(),
        );
        r.register(
            "budget_headroom_dollars_per_hour",
            "How much more per hour the budgets allow, by scope (fleet or app)",
            m.budget_headroom.clone(),
        );
        r.register("events", "Decisions recorded in the fleet's events, by kind", m.events.clone());
        r.register("actor_restarts", "Supervised actors restarted after a failure, by kind", m.actor_restarts.clone());
        r.register(
            "nodes_unhealthy",
            "Ready nodes not fit to serve, by reason (no_agent, reported, interrupted)",
            m.nodes_unhealthy.clone(),
        );
        r.register(
            "orphans_terminated",
            "Instances of the fleet that no node record held, terminated, by cloud",
            m.orphans_terminated.clone(),
        );
        r.register("reconcile_errors", "Reconcile passes that failed", m.reconcile_errors.clone());
        r.register(
            "cold_start_seconds",
            "Cold starts by phase: a node's provision (record to launch answer), boot (to its instance running) and bootstrap (to its agent ready), as fleetd sees them; a runner's fetch (the model into the node's cache), load and first token, as agents report them",
            m.cold_start_seconds.clone(),
        );
        r.register(
            "model_bytes",
            "Model bytes runners' nodes got, by source (origin, peers, cache)",
            m.model_bytes.clone(),
        );
        r.register("reconcile_seconds", "Time one reconcile pass takes", m.reconcile_seconds.clone());
        r.register(
            "requests_requeued",
            "Requests queued again after their runner was lost",
            m.requests_requeued.clone(),
        );
        r.register(
            "results_expired",
            "Finished requests' results removed after their app's result_ttl",
            m.results_expired.clone(),
        );
        r.register(
            "queue_records_quarantined",
            "Queue records skipped as unreadable or inconsistent with their key, since start",
            m.quarantined.clone(),
        );
        r.register(
            "offering_gone_nodes",
            "Nodes drained and terminated because their offering left the catalog or the spec",
            m.offering_gone_nodes.clone(),
        );
        r.register(
            "removed_app_nodes",
            "Nodes drained and terminated because their app left the applied spec",
            m.removed_app_nodes.clone(),
        );
        r.register(
            "consolidations",
            "Nodes marked to be consolidated away (runners moved to fewer or cheaper nodes)",
            m.consolidations.clone(),
        );
        r.register("reconcile_passes", "Reconcile passes completed", m.reconcile_count.clone());
        r.register(
            "push_retries",
            "Pushed requests whose runner failed before its first token, tried elsewhere, by app",
            m.push_retries.clone(),
        );
        r.register(
            "requests_finished",
            "Requests finished, by app and outcome (done, failed)",
            m.requests_finished.clone(),
        );
        r.register("request_seconds", "From submit to result, per request, by app", m.request_seconds.clone());
        r.register(
            "request_queue_wait_seconds",
            "From submit to the claim of the runner that served it, by app",
            m.queue_wait_seconds.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "Language models: queue wait plus the runner's time to the first token, by app",
            m.time_to_first_token_seconds.clone(),
        );
        r.register(
            "inter_token_seconds",
            "Language models: decode time over tokens after the first, one figure per request, by app",
            m.inter_token_seconds.clone(),
        );
        r.register(
            "generated_tokens",
            "Language models: tokens generated, by app and runner (rate() is tokens/s)",
            m.generated_tokens.clone(),
        );
        r.register("nodes_requested", "Nodes the planner decided to launch", m.nodes_requested.clone());
        Metrics { registry: r, ..m }
    }

    /// Reconcile passes completed so far.
    pub fn reconcile_seconds_count(&self) -> u64 {
        self.reconcile_count.get()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }

    /// Budget headroom per scope, from the spec and what runs.
    pub fn set_budgets<N: Borrow<NodeRecord>>(&self, spec: &fleet_core::spec::FleetSpec, nodes: &[N], now: Time) {
        use fleet_policies::budget::{Spend, headroom};
        let zero = Spend { burn_per_hour: Money::ZERO, month_to_date: Money::ZERO };
        // One walk over the nodes: burn and month-to-date per app and in all.
        let mut per_app: HashMap<&str, Spend> = HashMap::new();
        let mut all = zero;
        let start = month_start(now);
        for n in nodes.iter().map(Borrow::borrow) {
            let burn = if n.is_live() { n.price.map_or(Money::ZERO, |p| p.hourly()) } else { Money::ZERO };
            let mtd = month_cost_since(n, start, now);
            let e = per_app.entry(n.app.as_str()).or_insert(zero);
            e.burn_per_hour += burn;
            e.month_to_date += mtd;
            all.burn_per_hour += burn;
            all.month_to_date += mtd;
        }
        let spend_of = |app: Option<&str>| match app {
            None => all,
            Some(a) => per_app.get(a).copied().unwrap_or(zero),
        };
        self.budget_headroom.clear();
        let set = |scope: &str, h: fleet_policies::budget::Headroom| {
            if let Some(room) = h.per_hour {
                self.budget_headroom.get_or_create(&ScopeLabel { scope: scope.into() }).set(dollars(room));
            }
        };
        set("fleet", headroom(&spec.budget, &spend_of(None), now, None));
        for app in &spec.apps {
            set(&app.name, headroom(&app.budget, &spend_of(Some(&app.name)), now, Some(&app.name)));
        }
    }
}

/// Refreshes the gauges from one reconcile's view.
pub fn observe<N: Borrow<NodeRecord>, R: Borrow<RunnerRecord>>(
    m: &Metrics,
    nodes: &[N],
    runners: &[R],
    depths: &BTreeMap<String, Depth>,
    now: Time,
) {
    // Count first, then touch each labelled gauge once: label sets allocate.
    let mut by_node: HashMap<(Option<Cloud>, &'static str), i64> = HashMap::new();
    let mut burn = Money::ZERO;
    let mut mtd = Money::ZERO;
    let start = month_start(now);
    let mut per_app: HashMap<&str, (Money, Money)> = HashMap::new();
    m.node_burn_per_hour.clear();
    m.node_month_to_date.clear();
    for n in nodes.iter().map(Borrow::borrow) {
        *by_node.entry((n.offering().map(|o| o.cloud), n.state.name())).or_default() += 1;
        let node_burn = burn_per_hour(n);
        let node_mtd = month_cost_since(n, start, now);
        burn += node_burn;
        mtd += node_mtd;
        if node_burn > Money::ZERO || node_mtd > Money::ZERO {
            let e = per_app.entry(n.app.as_str()).or_default();
            e.0 += node_burn;
            e.1 += node_mtd;
        }
        if n.is_live() {
            let labels = NodeMoneyLabels {
                node: n.id.to_string(),
                app: n.app.clone(),
                cloud: n.offering().map_or_else(|| "-".to_string(), |o| o.cloud.to_string()),
            };
            m.node_burn_per_hour.get_or_create(&labels).set(dollars(node_burn));
            m.node_month_to_date.get_or_create(&labels).set(dollars(node_mtd));
        }
    }
    m.app_burn_per_hour.clear();
    m.app_month_to_date.clear();
    for (app, (b, c)) in per_app {
        m.app_burn_per_hour.get_or_create(&AppLabel { app: app.to_string() }).set(dollars(b));
        m.app_month_to_date.get_or_create(&AppLabel { app: app.to_string() }).set(dollars(c));
    }
    m.nodes.clear();
    for ((cloud, state), count) in by_node {
        let cloud = cloud.map_or_else(|| "-".to_string(), |c| c.to_string());
        m.nodes.get_or_create(&NodeLabels { cloud, state: state.to_string() }).set(count);
    }
    let mut by_runner: HashMap<&str, BTreeMap<&'static str, i64>> = HashMap::new();
    for r in runners.iter().map(Borrow::borrow) {
        *by_runner.entry(r.app.as_str()).or_default().entry(r.state.name()).or_default() += 1;
    }
    m.runners.clear();
    for (app, states) in by_runner {
        for (state, count) in states {
            m.runners.get_or_create(&RunnerLabels { app: app.to_string(), state: state.to_string() }).set(count);
        }
    }
    m.queue_depth.clear();
    m.in_flight.clear();
    for (app, d) in depths {
        m.queue_depth.get_or_create(&AppLabel { app: app.clone() }).set(i64::from(d.queued));
        m.in_flight.get_or_create(&AppLabel { app: app.clone() }).set(i64::from(d.in_flight));
    }
    m.burn_per_hour.set(dollars(burn));
    m.month_to_date.set(dollars(mtd));
}
