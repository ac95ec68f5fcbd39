//! The dashboard: a page compiled into fleetd (`/ui`, [`crate::ui`]) and what it reads.
//!
//! ```text
//! GET /ui, /ui/{app.js,app.css,charts.js}   the page (no token: it holds no data)
//! GET /v1/whoami                             the caller's token name and scope (any token)
//! GET /v1/dashboard[?history=N]              the overview below, with the last N samples
//! GET /v1/watch/dashboard                    the overview as server-sent events, each sample
//! GET /v1/dashboard/nodes?limit&offset&sort&order&q&live   one page of the node table
//! GET /v1/dashboard/offerings?limit&offset&q&sort          one page of the price book
//! ```
//!
//! Every [`EVERY`] (less often on a fleet so large that sampling it takes a while: [`run`])
//! fleetd takes one [`Sample`] of the fleet (burn, nodes by state, per app queue, runners by
//! state, requests finished, latency) and keeps the last [`KEPT`] (an hour) in memory:
//! the charts "over time" are these samples, from this fleetd's start. The [`Overview`] adds what
//! is computed from them (requests/s, error rate and cost per 1,000 requests over the last
//! minute) and what is not a time series (nodes by cloud, region and capacity type, the month's
//! cost against the caps, cold starts). One task computes it for every open page, so the store
//! is read once per sample whatever the number of viewers.
//!
//! Pages are read-only for a `read` token: the actions (drain, cordon) are the API's admin calls,
//! which the page shows only to an admin token, and which fleetd refuses to anyone else anyway.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use fleet_core::{Money, Price, Time};
use fleet_state::events::{EventKind, EventRecord};
use fleet_state::model::{AgentRecord, NodeRecord, RunnerRecord};
use serde::Serialize;

use crate::actors::Ctx;
use crate::api::{ApiError, ApiResult};
use crate::reconcile::{burn_per_hour, month_cost, unhealthy_nodes};

/// How often a sample is taken (and pushed to open pages).
pub const EVERY: Duration = Duration::from_secs(2);
/// A sample may take at most 1/SHARE of the time between samples (see [`run`]).
const SHARE: u32 = 20;
/// Samples kept: an hour of them (at [`EVERY`]).
pub const KEPT: usize = 1800;
/// The window requests/s, error rate and cost per 1,000 requests are computed over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Event kinds the fleet page charts over time (launches, failovers, preemptions, orphans, …).
const CHARTED: [EventKind; 6] = [
    EventKind::Launched,
    EventKind::LaunchFailed,
    EventKind::InstanceLost,
    EventKind::OrphanCollected,
    EventKind::Terminated,
    EventKind::BudgetHeld,
];

/// One app at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppSample {
    pub queued: u32,
    pub in_flight: u32,
    /// Requests finished since this fleetd started: served, and failed.
    pub done: u64,
    pub failed: u64,
    /// Runners by state (`pending`, `starting`, `idle`, `busy`, `stopping`).
    pub runners: BTreeMap<&'static str, u32>,
    /// Live nodes.
    pub nodes: u32,
    pub burn_per_hour: Money,
    /// Over the app's last requests ([`crate::serving::WINDOW`]); time to first token for apps
    /// that stream tokens.
    pub latency_p50_s: Option<f64>,
    pub latency_p90_s: Option<f64>,
    pub latency_p99_s: Option<f64>,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p90_s: Option<f64>,
    pub ttft_p99_s: Option<f64>,
}

/// The fleet at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub at: Time,
    pub burn_per_hour: Money,
    /// Node records by state (lower case), terminated ones left out.
    pub nodes: BTreeMap<String, u32>,
    /// Events of the charted kinds recorded since the previous sample.
    pub events: BTreeMap<&'static str, u32>,
    pub apps: BTreeMap<String, AppSample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CostNow {
    pub burn_per_hour: Money,
    pub budget_per_hour: Option<Money>,
    pub month_to_date: Money,
    /// Month to date plus the current burn until the month ends.
    pub forecast_month_end: Money,
    pub budget_per_month: Option<Money>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeCounts {
    /// Nodes launched and not yet terminated.
    pub live: u32,
    /// Node records, terminated ones included.
    pub records: u32,
    pub by_cloud: BTreeMap<String, u32>,
    pub by_region: BTreeMap<String, u32>,
    pub by_capacity: BTreeMap<String, u32>,
    pub by_state: BTreeMap<String, u32>,
}

/// The app's cold starts: its ready nodes' provision (record to launch answer) and boot with
/// bootstrap (launch answer to ready; the records do not say when the machine was up), and the
/// fetch, load and first token its nodes reported (the last few of each).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ColdStarts {
    pub nodes: u32,
    pub provision_p50_s: Option<f64>,
    pub bootstrap_p50_s: Option<f64>,
    pub count: u32,
    pub fetch_p50_s: Option<f64>,
    pub fetch_max_s: Option<f64>,
    pub load_p50_s: Option<f64>,
    pub load_max_s: Option<f64>,
    /// Language models: from loaded to the first token.
    pub first_token_p50_s: Option<f64>,
    pub bytes_origin: u64,
    pub bytes_peers: u64,
    pub bytes_cached: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppOverview {
    #[serde(flatten)]
    pub now: AppSample,
    /// Over the last [`RATE_WINDOW`] of samples (absent until two samples exist).
    pub requests_per_s: Option<f64>,
    /// Failed ÷ finished over the window (absent when nothing finished).
    pub error_rate: Option<f64>,
    /// What the app's nodes cost over the window ÷ requests served in it, × 1,000.
    pub cost_per_1k_requests: Option<Money>,
    pub cold_starts: ColdStarts,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub fleet: String,
    pub at: Time,
    pub cost: CostNow,
    pub nodes: NodeCounts,
    pub apps: BTreeMap<String, AppOverview>,
    /// The newest event's id: the page fetches the events after the last it has when this moves.
    pub last_event: Option<u64>,
    /// Moves whenever a node or agent record changes: the page reloads its table page then.
    pub nodes_version: String,
}

/// What the dashboard task keeps.
pub struct Dashboard {
    history: Mutex<VecDeque<Sample>>,
    latest: tokio::sync::watch::Sender<Option<Arc<String>>>,
    /// The newest price change seen (the offerings page's "what changed at the last refresh").
    last_price_change: Mutex<Option<EventRecord>>,
    /// The charted events of the hour before this fleetd started, per minute: the fleet page's
    /// events chart covers that hour too (a restart does not blank it).
    prior_events: Mutex<Vec<MinuteEvents>>,
}

/// Events of the charted kinds in one minute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteEvents {
    pub at: Time,
    pub events: BTreeMap<&'static str, u32>,
}

/// Per-minute counts of the charted kinds among `events` at or after `since`, oldest first.
pub fn per_minute(events: &[EventRecord], since: Time) -> Vec<MinuteEvents> {
    let mut out: BTreeMap<i64, BTreeMap<&'static str, u32>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.at >= since && CHARTED.contains(&e.kind)) {
        *out.entry(e.at.timestamp().div_euclid(60)).or_default().entry(e.kind.name()).or_default() += 1;
    }
    out.into_iter()
        .filter_map(|(m, events)| Some(MinuteEvents { at: chrono::DateTime::from_timestamp(m * 60, 0)?, events }))
        .collect()
}

impl Default for Dashboard {
    fn default() -> Dashboard {
        Dashboard {
            history: Mutex::new(VecDeque::with_capacity(KEPT)),
            latest: tokio::sync::watch::channel(None).0,
            last_price_change: Mutex::new(None),
            prior_events: Mutex::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

impl Dashboard {
    /// The overview as JSON text each time a sample is taken (the newest at once).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<Arc<String>>> {
        self.latest.subscribe()
    }

    /// The last `n` samples, oldest first.
    pub fn history(&self, n: usize) -> Vec<Sample> {
        let h = self.history.lock().expect("dashboard history");
        h.iter().skip(h.len().saturating_sub(n)).cloned().collect()
    }

    fn push(&self, s: Sample) {
        let mut h = self.history.lock().expect("dashboard history");
        if h.len() == KEPT {
            h.pop_front();
        }
        h.push_back(s);
    }
}

/// Takes a sample every [`EVERY`] for as long as fleetd runs, and hands each open page
/// `{"overview": …, "sample": …}`.
pub async fn run(ctx: Arc<Ctx>) {
    // Events recorded before this fleetd started are history; the charts count from now. The
    // newest price change is looked for once among them.
    let mut after = match fleet_state::events::list(&*ctx.store, &ctx.keys, &Default::default()).await {
        Ok(all) => {
            *ctx.dashboard.last_price_change.lock().expect("dashboard") =
                all.iter().rev().find(|e| e.kind == EventKind::PriceChanged).cloned();
            let hour_ago = ctx.clock.now() - chrono::TimeDelta::hours(1);
            *ctx.dashboard.prior_events.lock().expect("dashboard") = per_minute(&all, hour_ago);
            all.last().map(|e| e.id)
        }
        Err(_) => None,
    };
    loop {
        let started = std::time::Instant::now();
        let taken = take(&ctx, &mut after).await;
        // A sample reads every node, agent and runner record: on a fleet large enough for that
        // to take a while, samples come less often, so the dashboard never costs fleetd more
        // than 1/SHARE of a core whatever the fleet's size.
        let next = EVERY.max(started.elapsed() * SHARE);
        match taken {
            Ok((overview, sample)) => {
                if let Ok(text) = serde_json::to_string(&serde_json::json!({ "overview": overview, "sample": sample }))
                {
                    ctx.dashboard.latest.send_replace(Some(Arc::new(text)));
                }
            }
            Err(e) => tracing::warn!(error = %e.message, "dashboard sample not taken"),
        }
        tokio::time::sleep(next).await;
    }
}

/// What one read of the store gives the dashboard.
struct Read {
    nodes: Vec<NodeRecord>,
    agents: Vec<AgentRecord>,
    runners: Vec<RunnerRecord>,
    nodes_version: String,
}

async fn read(ctx: &Ctx) -> ApiResult<Read> {
    let (node_kvs, _) = ctx.store.range(&ctx.keys.nodes()).await?;
    let (agent_kvs, _) = ctx.store.range(&ctx.keys.agents()).await?;
    let (runner_kvs, _) = ctx.store.range(&ctx.keys.runners()).await?;
    let version = |kvs: &[fleet_state::store::KeyValue]| {
        (kvs.len(), kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or_default())
    };
    let (n, nr) = version(&node_kvs);
    let (a, ar) = version(&agent_kvs);
    Ok(Read {
        nodes: node_kvs.iter().filter_map(|kv| kv.json().ok()).collect(),
        agents: agent_kvs.iter().filter_map(|kv| kv.json().ok()).collect(),
        runners: runner_kvs.iter().filter_map(|kv| kv.json().ok()).collect(),
        nodes_version: format!("{n}.{nr}.{a}.{ar}"),
    })
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// One sample and the overview it gives, pushed to the history.
async fn take(ctx: &Ctx, after: &mut Option<u64>) -> ApiResult<(Overview, Sample)> {
    let read = read(ctx).await?;
    // Events since the last sample (the store keeps them in id order).
    let mut events: BTreeMap<&'static str, u32> = CHARTED.iter().map(|k| (k.name(), 0)).collect();
    let after_key = after.map(|id| ctx.keys.event(id));
    let page = ctx.store.range_page(&ctx.keys.events(), after_key.as_deref(), usize::MAX).await?;
    for e in page.kvs.iter().filter_map(|kv| kv.json::<EventRecord>().ok()) {
        if CHARTED.contains(&e.kind) {
            *events.entry(e.kind.name()).or_default() += 1;
        }
        if e.kind == EventKind::PriceChanged {
            *ctx.dashboard.last_price_change.lock().expect("dashboard") = Some(e.clone());
        }
        *after = Some(e.id);
    }
    let sample = sample(ctx, &read, events).await?;
    ctx.dashboard.push(sample.clone());
    let history = ctx.dashboard.history(KEPT);
    Ok((overview(ctx, &read, &sample, &history, *after).await?, sample))
}

async fn sample(ctx: &Ctx, read: &Read, events: BTreeMap<&'static str, u32>) -> ApiResult<Sample> {
    let mut apps: BTreeMap<String, AppSample> = BTreeMap::new();
    if let Some(spec) = crate::api::applied_spec(ctx).await? {
        for a in &spec.apps {
            apps.entry(a.name.clone()).or_default();
        }
    }
    for (app, d) in fleet_state::queue::depths(&*ctx.store, &ctx.keys).await? {
        let a = apps.entry(app).or_default();
        a.queued = d.queued;
        a.in_flight = d.in_flight;
    }
    for r in &read.runners {
        let state: &'static str = match r.state.name() {
            "Pending" => "pending",
            "Starting" => "starting",
            "Idle" => "idle",
            "Busy" => "busy",
            "Stopping" => "stopping",
            _ => continue,
        };
        *apps.entry(r.app.clone()).or_default().runners.entry(state).or_default() += 1;
    }
    let mut burn = Money::ZERO;
    let mut nodes: BTreeMap<String, u32> = BTreeMap::new();
    for n in &read.nodes {
        let b = burn_per_hour(n);
        burn += b;
        let state = lower(n.state.name());
        if state != "terminated" {
            *nodes.entry(state).or_default() += 1;
        }
        let a = apps.entry(n.app.clone()).or_default();
        a.burn_per_hour += b;
        if n.is_live() {
            a.nodes += 1;
        }
    }
    for (name, a) in apps.iter_mut() {
        if let Some(v) = ctx.serving.view(name) {
            a.done = v.done;
            a.failed = v.failed;
            a.latency_p50_s = v.latency_p50_s;
            a.latency_p90_s = v.latency_p90_s;
            a.latency_p99_s = v.latency_p99_s;
            a.ttft_p50_s = v.ttft_p50_s;
            a.ttft_p90_s = v.ttft_p90_s;
            a.ttft_p99_s = v.ttft_p99_s;
        }
    }
    Ok(Sample { at: ctx.clock.now(), burn_per_hour: burn, nodes, events, apps })
}

/// The rates of `app` over the samples of the last [`RATE_WINDOW`] (`history` oldest first,
/// ending with the newest sample).
fn rates(app: &str, history: &[Sample]) -> (Option<f64>, Option<f64>, Option<Money>) {
    let Some(last) = history.last() else { return (None, None, None) };
    let from = last.at - chrono::TimeDelta::from_std(RATE_WINDOW).unwrap_or_default();
    let window: Vec<&Sample> = history.iter().filter(|s| s.at >= from).collect();
    let (Some(first), Some(now)) = (window.first(), window.last()) else { return (None, None, None) };
    let secs = (now.at - first.at).to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0);
    if window.len() < 2 || secs <= 0.0 {
        return (None, None, None);
    }
    let get = |s: &Sample| s.apps.get(app).cloned().unwrap_or_default();
    let (a, b) = (get(first), get(now));
    let done = b.done.saturating_sub(a.done);
    let failed = b.failed.saturating_sub(a.failed);
    let finished = done + failed;
    let rps = finished as f64 / secs;
    let error_rate = (finished > 0).then(|| failed as f64 / finished as f64);
    // The app's bill over the window, interval by interval at the burn each interval began with.
    let mut cost = Money::ZERO;
    for pair in window.windows(2) {
        let dt = (pair[1].at - pair[0].at).to_std().unwrap_or_default();
        cost += Price::per_hour(get(pair[0]).burn_per_hour).cost_for(dt);
    }
    let per_1k = (done > 0).then(|| {
        Money::from_micros_saturating(i128::from(cost.micros()) * 1000 / i128::from(done.min(i64::MAX as u64) as i64))
    });
    (Some(rps), error_rate, per_1k)
}

use crate::serving::quantile;

fn cold_starts(app: &str, agents: &[AgentRecord], nodes: &[NodeRecord]) -> ColdStarts {
    let secs = |d: chrono::TimeDelta| d.to_std().ok().map(|d| d.as_secs_f64());
    let (mut provision, mut bootstrap) = (Vec::new(), Vec::new());
    for n in nodes.iter().filter(|n| n.app == app) {
        if let (fleet_state::lifecycle::node::NodePhase::Ready { since, .. }, Some(billed)) =
            (&n.state, n.billing_since)
        {
            provision.extend(secs(billed - n.created_at));
            bootstrap.extend(secs(*since - billed));
        }
    }
    let all: Vec<&fleet_state::model::ColdStart> =
        agents.iter().flat_map(|a| a.health.cold_starts.iter()).filter(|c| c.app == app).collect();
    let fetch: Vec<f64> = all.iter().map(|c| c.fetch_s).collect();
    let load: Vec<f64> = all.iter().map(|c| c.load_s).collect();
    ColdStarts {
        nodes: provision.len() as u32,
        provision_p50_s: quantile(provision, 0.5),
        bootstrap_p50_s: quantile(bootstrap, 0.5),
        count: all.len() as u32,
        fetch_p50_s: quantile(fetch.clone(), 0.5),
        fetch_max_s: quantile(fetch, 1.0),
        load_p50_s: quantile(load.clone(), 0.5),
        load_max_s: quantile(load, 1.0),
        first_token_p50_s: quantile(all.iter().filter_map(|c| c.first_token_s).collect(), 0.5),
        bytes_origin: all.iter().map(|c| c.bytes_origin).sum(),
        bytes_peers: all.iter().map(|c| c.bytes_peers).sum(),
        bytes_cached: all.iter().map(|c| c.bytes_cached).sum(),
    }
}

async fn overview(
    ctx: &Ctx,
    read: &Read,
    sample: &Sample,
    history: &[Sample],
    last_event: Option<u64>,
) -> ApiResult<Overview> {
    let now = sample.at;
    let mut counts = NodeCounts { records: read.nodes.len() as u32, ..Default::default() };
    let mut mtd = Money::ZERO;
    for n in &read.nodes {
        mtd += month_cost(n, now);
        *counts.by_state.entry(lower(n.state.name())).or_default() += 1;
        if n.is_live() {
            counts.live += 1;
            if let Some(o) = n.offering() {
                *counts.by_cloud.entry(o.cloud.to_string()).or_default() += 1;
                *counts.by_region.entry(format!("{}/{}", o.cloud, o.region)).or_default() += 1;
                *counts.by_capacity.entry(o.capacity.to_string()).or_default() += 1;
            }
        }
    }
    let left = crate::reconcile::month_left(now);
    let budget = crate::api::applied_spec(ctx).await?.map(|s| s.budget);
    let cost = CostNow {
        burn_per_hour: sample.burn_per_hour,
        budget_per_hour: budget.as_ref().and_then(|b| b.max_per_hour),
        month_to_date: mtd,
        forecast_month_end: mtd + Price::per_hour(sample.burn_per_hour).cost_for(left),
        budget_per_month: budget.as_ref().and_then(|b| b.max_per_month),
    };
    let apps = sample
        .apps
        .iter()
        .map(|(name, a)| {
            let (requests_per_s, error_rate, cost_per_1k_requests) = rates(name, history);
            let view = AppOverview {
                now: a.clone(),
                requests_per_s,
                error_rate,
                cost_per_1k_requests,
                cold_starts: cold_starts(name, &read.agents, &read.nodes),
            };
            (name.clone(), view)
        })
        .collect();
    Ok(Overview {
        fleet: ctx.fleet.clone(),
        at: now,
        cost,
        nodes: counts,
        apps,
        last_event,
        nodes_version: read.nodes_version.clone(),
    })
}

/// `GET /v1/dashboard?history=N`: the newest overview and the last N samples (all kept by
/// default). Before the first sample (or where no dashboard task runs) the overview is taken now.
pub async fn get(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut n = KEPT;
    for (k, v) in &q {
        match k.as_str() {
            "history" => {
                n = v.parse().ok().filter(|n| *n <= KEPT).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("history={v}: give a number of samples from 0 to {KEPT}"),
                    )
                })?
            }
            other => return Err(unknown(other, "history")),
        }
    }
    let latest = ctx.dashboard.latest.borrow().clone();
    let overview: serde_json::Value = match latest {
        Some(text) => serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?["overview"]
            .take(),
        None => {
            let read = read(&ctx).await?;
            let s = sample(&ctx, &read, BTreeMap::new()).await?;
            let o = overview(&ctx, &read, &s, std::slice::from_ref(&s), None).await?;
            serde_json::to_value(o).unwrap_or_default()
        }
    };
    Ok(Json(serde_json::json!({
        "overview": overview,
        "history": ctx.dashboard.history(n),
        "prior_events": *ctx.dashboard.prior_events.lock().expect("dashboard"),
        "every_s": EVERY.as_secs_f64(),
    })))
}

fn unknown(param: &str, takes: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, format!("unknown parameter '{param}': this takes {takes}"))
}

/// One row of the node table.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    pub id: u64,
    pub app: String,
    pub cloud: Option<String>,
    pub region: Option<String>,
    pub offering: Option<String>,
    pub capacity: Option<String>,
    pub price_per_hour: Option<Money>,
    pub age_s: i64,
    pub state: String,
    /// `ok`, why the node cannot serve, or `-` while it has no agent to speak for it.
    pub health: String,
    pub runners: u32,
    pub cordoned: bool,
}

/// A page of a table: `rows` of the `matched` that pass the filter, of `total`.
#[derive(Debug, Serialize)]
pub struct TablePage<T> {
    pub total: usize,
    pub matched: usize,
    pub offset: usize,
    pub limit: usize,
    pub rows: Vec<T>,
}

/// Largest page the tables hand out.
pub const MAX_PAGE: usize = 500;

struct PageQuery {
    limit: usize,
    offset: usize,
    sort: String,
    desc: bool,
    q: String,
    flag: bool,
}

/// Parses `limit`, `offset`, `sort` (one of `sorts`), `order` (`asc`/`desc`), `q` and the boolean
/// `flag` parameter; anything else is refused by name.
fn page_query(q: &BTreeMap<String, String>, sorts: &[&str], flag: &str, flag_default: bool) -> ApiResult<PageQuery> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let mut p = PageQuery {
        limit: 50,
        offset: 0,
        sort: sorts[0].to_string(),
        desc: false,
        q: String::new(),
        flag: flag_default,
    };
    for (k, v) in q {
        match k.as_str() {
            "limit" => {
                p.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad(format!("limit={v}: give a page size from 1 to {MAX_PAGE}")))?
            }
            "offset" => {
                p.offset = v.parse().map_err(|_| bad(format!("offset={v}: give a row number (0 is the first)")))?
            }
            "sort" => {
                if !sorts.contains(&v.as_str()) {
                    return Err(bad(format!("sort={v}: sort by one of {}", sorts.join(", "))));
                }
                p.sort = v.clone();
            }
            "order" => {
                p.desc = match v.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(bad(format!("order={v}: asc or desc"))),
                }
            }
            "q" => p.q = v.to_lowercase(),
            k if k == flag => {
                p.flag = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad(format!("{flag}={v}: true or false"))),
                }
            }
            other => {
                return Err(unknown(other, &format!("limit, offset, sort, order, q and {flag}")));
            }
        }
    }
    Ok(p)
}

fn cut<T>(mut rows: Vec<T>, total: usize, p: &PageQuery) -> TablePage<T> {
    let matched = rows.len();
    let rows: Vec<T> = rows.drain(p.offset.min(matched)..).take(p.limit).collect();
    TablePage { total, matched, offset: p.offset, limit: p.limit, rows }
}

const NODE_SORTS: [&str; 10] =
    ["id", "app", "cloud", "region", "offering", "price", "age", "state", "health", "runners"];

/// `GET /v1/dashboard/nodes`: one page of the node table, sorted and filtered here (the page
/// never holds more than a page, whatever the fleet's size). `q` matches any column's text,
/// `live=false` includes terminated nodes.
pub async fn nodes(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<TablePage<NodeRow>>> {
    let p = page_query(&q, &NODE_SORTS, "live", true)?;
    let read = read(&ctx).await?;
    let now = ctx.clock.now();
    let unhealthy = unhealthy_nodes(&read.nodes, &read.agents, &Default::default(), now, ctx.config.agent_grace);
    let agents: BTreeMap<u64, &AgentRecord> = read.agents.iter().map(|a| (a.node, a)).collect();
    let total = read.nodes.len();
    let mut rows: Vec<NodeRow> = read
        .nodes
        .iter()
        .filter(|n| !p.flag || n.state.name() != "Terminated")
        .map(|n| {
            let o = n.offering();
            let agent = agents.get(&n.id);
            let health = match (unhealthy.get(&n.id), agent) {
                (Some(u), _) => u.to_string(),
                (None, Some(_)) => "ok".to_string(),
                (None, None) => "-".to_string(),
            };
            NodeRow {
                id: n.id,
                app: n.app.clone(),
                cloud: o.map(|o| o.cloud.to_string()),
                region: o.map(|o| o.region.clone()),
                offering: o.map(|o| o.instance_type.clone()),
                capacity: o.map(|o| o.capacity.to_string()),
                price_per_hour: n.price.map(|p| p.hourly()),
                age_s: (now - n.created_at).num_seconds(),
                state: lower(n.state.name()),
                health,
                runners: agent.map(|a| a.health.runners.len() as u32).unwrap_or(0),
                cordoned: n.cordoned,
            }
        })
        .filter(|r| {
            p.q.is_empty() || {
                let text = format!(
                    "{} {} {} {} {} {} {} {}",
                    r.id,
                    r.app,
                    r.cloud.as_deref().unwrap_or(""),
                    r.region.as_deref().unwrap_or(""),
                    r.offering.as_deref().unwrap_or(""),
                    r.capacity.as_deref().unwrap_or(""),
                    r.state,
                    r.health
                );
                text.to_lowercase().contains(&p.q)
            }
        })
        .collect();
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    match p.sort.as_str() {
        "app" => rows.sort_by(|a, b| a.app.cmp(&b.app).then(a.id.cmp(&b.id))),
        "cloud" => rows.sort_by(|a, b| s(&a.cloud).cmp(&s(&b.cloud)).then(a.id.cmp(&b.id))),
        "region" => rows.sort_by(|a, b| s(&a.region).cmp(&s(&b.region)).then(a.id.cmp(&b.id))),
        "offering" => rows.sort_by(|a, b| s(&a.offering).cmp(&s(&b.offering)).then(a.id.cmp(&b.id))),
        "price" => rows.sort_by(|a, b| a.price_per_hour.cmp(&b.price_per_hour).then(a.id.cmp(&b.id))),
        "age" => rows.sort_by(|a, b| a.age_s.cmp(&b.age_s).then(a.id.cmp(&b.id))),
        "state" => rows.sort_by(|a, b| a.state.cmp(&b.state).then(a.id.cmp(&b.id))),
        "health" => rows.sort_by(|a, b| a.health.cmp(&b.health).then(a.id.cmp(&b.id))),
        "runners" => rows.sort_by(|a, b| a.runners.cmp(&b.runners).then(a.id.cmp(&b.id))),
        _ => rows.sort_by_key(|r| r.id),
    }
    if p.desc {
        rows.reverse();
    }
    Ok(Json(cut(rows, total, &p)))
}

/// One row of the price book.
#[derive(Debug, Clone, Serialize)]
pub struct OfferingRow {
    pub offering: String,
    pub cloud: String,
    pub region: String,
    pub instance_type: String,
    pub capacity: String,
    pub gpu: String,
    pub gpus: u32,
    pub price_per_hour: Money,
    pub price_per_gpu_hour: Money,
    pub source: String,
    pub as_of: String,
    /// `available`, `unknown` (a static catalog says nothing) or `unavailable`.
    pub availability: &'static str,
    pub unavailable_because: Option<String>,
}

const OFFERING_SORTS: [&str; 4] = ["price_per_gpu", "price", "cloud", "availability"];

/// `GET /v1/dashboard/offerings`: one page of the offerings fleet last gathered from the
/// enabled clouds (cheapest per GPU-hour first), what the last refresh changed, and how many are
/// marked unavailable. `unavailable=true` lists only those.
pub async fn offerings(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = page_query(&q, &OFFERING_SORTS, "unavailable", false)?;
    let catalog = ctx.offerings();
    let all = catalog.offerings();
    let unavailable =
        all.iter().filter(|o| matches!(o.availability, fleet_core::Availability::Unavailable { .. })).count();
    let mut rows: Vec<OfferingRow> = all
        .iter()
        .map(|o| {
            let (availability, why) = match &o.availability {
                fleet_core::Availability::Unknown => ("unknown", None),
                fleet_core::Availability::Available => ("available", None),
                fleet_core::Availability::Unavailable { reason } => ("unavailable", Some(reason.clone())),
            };
            OfferingRow {
                offering: o.key().to_string(),
                cloud: o.cloud.to_string(),
                region: o.region.clone(),
                instance_type: o.instance.name.clone(),
                capacity: o.capacity.to_string(),
                gpu: o.instance.gpu.to_string(),
                gpus: o.instance.gpu_count,
                price_per_hour: o.price.hourly(),
                price_per_gpu_hour: o.price_per_gpu().hourly(),
                source: o.source.name.clone(),
                as_of: o.source.as_of.to_string(),
                availability,
                unavailable_because: why,
            }
        })
        .filter(|r| !p.flag || r.availability == "unavailable")
        .filter(|r| p.q.is_empty() || format!("{} {}", r.offering, r.gpu).to_lowercase().contains(&p.q))
        .collect();
    let key = |r: &OfferingRow| r.offering.clone();
    match p.sort.as_str() {
        "price" => rows.sort_by(|a, b| a.price_per_hour.cmp(&b.price_per_hour).then_with(|| key(a).cmp(&key(b)))),
        "cloud" => rows.sort_by(|a, b| a.cloud.cmp(&b.cloud).then_with(|| key(a).cmp(&key(b)))),
        "availability" => rows.sort_by(|a, b| a.availability.cmp(b.availability).then_with(|| key(a).cmp(&key(b)))),
        _ => rows.sort_by(|a, b| a.price_per_gpu_hour.cmp(&b.price_per_gpu_hour).then_with(|| key(a).cmp(&key(b)))),
    }
    if p.desc {
        rows.reverse();
    }
    let page = cut(rows, all.len(), &p);
    let last_refresh = ctx.dashboard.last_price_change.lock().expect("dashboard").clone();
    Ok(Json(serde_json::json!({
        "total": page.total,
        "matched": page.matched,
        "offset": page.offset,
        "limit": page.limit,
        "rows": page.rows,
        "unavailable": unavailable,
        "last_refresh": last_refresh,
    })))
}

/// `GET /v1/whoami`: the token's name and scope (the page shows actions to admins only).
pub async fn whoami(caller: Option<axum::Extension<crate::auth::Caller>>) -> ApiResult<Json<serde_json::Value>> {
    match caller {
        Some(c) => Ok(Json(serde_json::json!({ "name": c.0.0.name, "scope": c.0.0.scope.to_string() }))),
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "no token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Time {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn sample(t: i64, done: u64, failed: u64, burn: &str) -> Sample {
        let app = AppSample { done, failed, burn_per_hour: Money::parse_decimal(burn).unwrap(), ..Default::default() };
        Sample {
            at: at(t),
            burn_per_hour: app.burn_per_hour,
            nodes: BTreeMap::new(),
            events: BTreeMap::new(),
            apps: [("chat".to_string(), app)].into(),
        }
    }

    #[test]
    fn rates_are_over_the_last_minute_and_cost_per_1k_is_exact() {
        // 90 s of samples every 10 s: the window is the last 60 s (t = 30..90).
        let h: Vec<Sample> = (0..=9).map(|i| sample(i * 10, (i * 100) as u64, i as u64, "3.60")).collect();
        let (rps, err, per_1k) = rates("chat", &h);
        // 600 done + 6 failed in 60 s.
        assert!((rps.unwrap() - 606.0 / 60.0).abs() < 1e-9);
        assert!((err.unwrap() - 6.0 / 606.0).abs() < 1e-9);
        // $3.60/h for 60 s = $0.06, over 600 requests = $0.10 per 1,000.
        assert_eq!(per_1k, Some(Money::parse_decimal("0.1").unwrap()));
        assert_eq!(rates("other", &h).2, None, "no requests: no cost per request");
        assert_eq!(rates("chat", &h[..1]), (None, None, None), "one sample gives no rate");
    }

    #[test]
    fn events_before_the_start_are_counted_per_minute_for_the_charted_kinds() {
        let ev = |id: u64, s: i64, kind: EventKind| EventRecord {
            id,
            at: at(s),
            kind,
            app: None,
            node: None,
            message: String::new(),
        };
        let events = [
            ev(1, -10, EventKind::Launched),
            ev(2, 5, EventKind::Launched),
            ev(3, 30, EventKind::LaunchFailed),
            ev(4, 59, EventKind::Ready),
            ev(5, 70, EventKind::OrphanCollected),
        ];
        let m = per_minute(&events, at(0));
        // 1,800,000,000 s is a whole minute: events at 5 and 30 s share it, 70 s is the next.
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!((m[0].events["launched"], m[0].events["launch-failed"]), (1, 1));
        assert!(!m[0].events.contains_key("ready"), "not a charted kind");
        assert_eq!(m[1].events["orphan-collected"], 1);
        assert_eq!(m[1].at - m[0].at, chrono::TimeDelta::minutes(1));
    }

    #[test]
    fn table_queries_are_checked_by_name() {
        let q = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let p = page_query(&q(&[("limit", "20"), ("sort", "price"), ("order", "desc")]), &NODE_SORTS, "live", true)
            .unwrap();
        assert_eq!((p.limit, p.sort.as_str(), p.desc, p.flag), (20, "price", true, true));
        for (bad, says) in [
            (q(&[("limit", "0")]), "limit=0"),
            (q(&[("limit", "100000")]), "1 to 500"),
            (q(&[("sort", "colour")]), "sort by one of"),
            (q(&[("order", "up")]), "asc or desc"),
            (q(&[("page", "2")]), "unknown parameter 'page'"),
        ] {
            let e = page_query(&bad, &NODE_SORTS, "live", true).err().unwrap();
            assert!(e.message.contains(says), "{}", e.message);
        }
        let rows: Vec<u32> = (0..10).collect();
        let p = page_query(&q(&[("limit", "4"), ("offset", "8")]), &NODE_SORTS, "live", true).unwrap();
        let page = cut(rows, 12, &p);
        assert_eq!((page.rows, page.matched, page.total), (vec![8, 9], 10, 12));
    }
}
