//! fleet-simulator: capacity planning in virtual time with the daemon's own policies.
//!
//! - [`scenario`]: the TOML scenario (fleet spec, demand, simulated clouds), documented defaults.
//! - [`demand`]: Azure LLM inference traces, transforms (time/rate scale, tiling with a diurnal
//!   shape), Poisson sources.
//! - [`engine`]: the discrete-event simulation, calling `fleet_policies::plan` each tick.
//! - [`report`]: cost, waits, events, lower bound; table and JSON.
//! - [`oracle`]: the hindsight oracle's schedule, for [`baselines`].

pub mod demand;
pub mod engine;
pub mod html;
pub mod oracle;
pub mod plots;
pub mod report;
pub mod scenario;

/// A progress bar on stderr for runs that last over a second (and only on a terminal).
pub fn progress_bar(label: &str) -> impl FnMut(u64, u64) {
    let started = std::time::Instant::now();
    let label = label.to_string();
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |done, all| {
        if bar.is_none() && started.elapsed() > std::time::Duration::from_secs(1) {
            let b = indicatif::ProgressBar::new(all.max(1));
            b.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {percent}% of virtual time, eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_message(label.clone());
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_position(done);
            if done >= all {
                b.finish_and_clear();
            }
        }
    }
}

use std::sync::Arc;

use fleet_core::Catalog;

use crate::report::Report;
use crate::scenario::{DemandSource, Policy, Scenario};

/// Loads the scenario's demand and catalog, then runs it.
pub fn run(sc: &Scenario) -> anyhow::Result<Report> {
    run_with_progress(sc, &mut |_, _| {})
}

/// [`run`], reporting progress as (virtual ms done, virtual ms in all) every tick.
pub fn run_with_progress(sc: &Scenario, progress: &mut dyn FnMut(u64, u64)) -> anyhow::Result<Report> {
    let (catalog, requests) = inputs(sc)?;
    Ok(engine::Engine::new(sc, catalog, requests).run_with_progress(progress)?)
}

/// The scenario under its spec's own policies, three baselines and the hindsight oracle, on the
/// same demand and seed, in that order:
///
/// - `static-peak`: a fixed fleet from start to end, placed as the spec places it, with as many
///   runners as the demand's peak needs: ⌈most requests ever in service at once ÷
///   max_multiplexing⌉, each request in service from its arrival for its service time on the
///   GPU the app's placement ranks first (an A100 serves a third as fast as an H100);
/// - `target-qps`: replicas = ⌈requests/s over the last minute ÷ target⌉ with a 10-minute
///   downscale cooldown (SkyPilot Serve's and dstack's way), the target being 80 % of what one
///   runner serves at full multiplexing on that GPU with the scenario's mean request;
/// - `oracle`: [`oracle::schedule`]'s nodes.
///
/// Every report carries the oracle's cost (`oracle_cost`) for the ratio.
pub fn baselines(sc: &Scenario) -> anyhow::Result<Vec<Report>> {
    let (catalog, requests) = inputs(sc)?;
    let own = engine::Engine::new(sc, catalog.clone(), requests.clone()).run()?;
    let index = fleet_policies::placement::PlacementIndex::new(catalog.clone(), &sc.spec);
    let cache = fleet_policies::placement::UnavailableCache::default();
    let (mut peaks, mut qps_targets, mut bookings) = (Vec::new(), Vec::new(), Vec::new());
    for (i, d) in sc.demands.iter().enumerate() {
        let app = &sc.spec.app(&d.app).expect("scenario checked the app").scaling;
        let mux = app.max_multiplexing.max(1);
        let app_ix = index.app_index(&d.app).expect("scenario checked the app");
        let arrivals = demand_arrivals(&requests, i);
        // The baselines size for the speed of the GPU the app gets first, as their operator
        // would; for an app allowing several GPU families, for the slowest family's first: their
        // runners land on whichever a launch finds cheapest, and one count sized for the faster
        // family leaves those on the slower short (until 2026-12-03, sized for H100s while most
        // runs went to A100s, target-qps served 0.0% of an H100-or-A100 app's requests within
        // its SLO).
        let ranked =
            index.explain(app_ix, &fleet_policies::placement::RankInput::new(engine::start_time(), &cache)).ranked;
        let gpus: Vec<fleet_core::GpuModel> = ranked.iter().map(|c| index.offering(c.offering).instance.gpu).collect();
        let fastest_of = |f: fleet_core::GpuFamily| f.models().map(|m| m.bf16_dense_tflops()).max().unwrap_or(0);
        let slowest = gpus.iter().map(|g| g.family()).min_by_key(|f| fastest_of(*f));
        let gpu = gpus.iter().copied().find(|g| Some(g.family()) == slowest).unwrap_or(fleet_core::GpuModel::H100Sxm);
        let service = sc.service_for(&d.app);
        peaks.push(peak_in_service(service, &arrivals, gpu).div_ceil(mux).clamp(1, app.max_concurrency.max(1)));
        let mean_s = if arrivals.is_empty() {
            1.0
        } else {
            arrivals.iter().map(|a| engine::service_s(service, a, gpu)).sum::<f64>() / arrivals.len() as f64
        };
        qps_targets.push(0.8 * f64::from(mux) / mean_s.max(1e-3));
        // Each app's nodes are its own, so the oracle's schedule is each app's, together.
        bookings.extend(oracle::schedule(sc, &index, app_ix, &arrivals).bookings);
    }
    let variant = |name: &str, policy: Policy| Scenario { name: format!("{} {name}", sc.name), policy, ..sc.clone() };
    let stat = variant("static-peak", Policy::StaticPeak { runners: peaks });
    let qps = variant(
        "target-qps",
        Policy::TargetQps { per_runner_qps: qps_targets, downscale_delay: std::time::Duration::from_secs(600) },
    );
    let orc = variant("oracle", Policy::Oracle { bookings });
    let stat = engine::Engine::new(&stat, catalog.clone(), requests.clone()).run()?;
    let qps = engine::Engine::new(&qps, catalog.clone(), requests.clone()).run()?;
    let orc = engine::Engine::new(&orc, catalog, requests).run()?;
    let mut out = vec![own, stat, qps, orc];
    let oracle_cost = out[3].cost;
    for r in &mut out {
        r.set_oracle(oracle_cost);
    }
    Ok(out)
}

/// Demand `i`'s requests alone, in time order.
pub(crate) fn demand_arrivals(requests: &demand::Requests, i: usize) -> std::borrow::Cow<'_, [demand::Arrival]> {
    if requests.demand.is_empty() {
        return std::borrow::Cow::Borrowed(&requests.arrivals);
    }
    std::borrow::Cow::Owned(
        requests.arrivals.iter().enumerate().filter(|(j, _)| requests.demand_of(*j) == i).map(|(_, a)| *a).collect(),
    )
}

/// The most requests in service at once if each started at its arrival and took its service
/// time on `gpu`.
fn peak_in_service(service: &scenario::ServiceModel, arrivals: &[demand::Arrival], gpu: fleet_core::GpuModel) -> u32 {
    let mut ends = std::collections::BinaryHeap::new();
    let mut peak = 0;
    for a in arrivals {
        while ends.peek().is_some_and(|std::cmp::Reverse(e)| *e <= a.at_ms) {
            ends.pop();
        }
        ends.push(std::cmp::Reverse(a.at_ms + engine::service_ms(service, a, gpu)));
        peak = peak.max(ends.len());
    }
    u32::try_from(peak).unwrap_or(u32::MAX)
}

/// The catalog and the arrivals a scenario runs on.
fn inputs(sc: &Scenario) -> anyhow::Result<(Arc<Catalog>, demand::Requests)> {
    let catalog = if sc.catalog.is_empty() {
        Arc::new(Catalog::builtin().clone())
    } else {
        let (catalog, notes) = Catalog::load(&sc.catalog, None)?;
        // Every row skipped (duplicates, unreadable prices) or none at all: a run would serve
        // nothing and say nothing of why (until 2026-12-03).
        if catalog.is_empty() {
            let why: Vec<String> =
                notes.iter().take(3).map(|n| format!("{}:{}: {}", n.file, n.line, n.message)).collect();
            anyhow::bail!(
                "catalog {}: no offering in it{}",
                sc.catalog.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
            );
        }
        Arc::new(catalog)
    };
    // An app with demand that no offering of the catalog fits (its GPU, count, clouds, regions,
    // price cap): its requests could never be served. Refused by name rather than reported as
    // all unserved (until 2026-12-03, with no word of why).
    {
        let index = fleet_policies::placement::PlacementIndex::new(catalog.clone(), &sc.spec);
        let cache = fleet_policies::placement::UnavailableCache::default();
        for d in &sc.demands {
            let app = index.app_index(&d.app).expect("scenario checked the app");
            let e = index.explain(app, &fleet_policies::placement::RankInput::new(engine::start_time(), &cache));
            if e.ranked.is_empty() {
                let mut kinds: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
                for (_, r) in &e.excluded {
                    *kinds.entry(r.kind()).or_default() += 1;
                }
                let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
                anyhow::bail!(
                    "app '{}': no offering of the catalog fits it (excluded: {}), so none of its requests could be served; check its gpu, gpus, placement and max_price_per_gpu_hour against the catalog",
                    d.app,
                    if kinds.is_empty() { "none in the catalog".to_string() } else { kinds.join(", ") }
                );
            }
        }
    }
    for key in sc.capacity.keys() {
        if !catalog.offerings().iter().any(|o| o.key().to_string() == *key) {
            anyhow::bail!(
                "capacity.\"{key}\": no such offering in the catalog (keys are cloud/region[/zone]/instance-type/capacity, e.g. aws/us-east-1/use1-az1/p5.48xlarge/spot)"
            );
        }
    }
    let end_ms = u64::try_from(sc.duration.as_millis()).unwrap_or(u64::MAX);
    let mut streams = Vec::with_capacity(sc.demands.len());
    let mut room = MAX_REQUESTS as f64;
    for (i, d) in sc.demands.iter().enumerate() {
        let v = arrivals_of(d, demand_seed(sc.seed, i), end_ms, room)?;
        room -= v.len() as f64;
        streams.push(v);
    }
    let arrivals = demand::Requests::merge(streams);
    Ok((catalog, arrivals))
}

/// Demand `i`'s random streams (tiling, Poisson): the scenario's seed for the first, so a
/// scenario with one demand draws as it always has, and a distinct seed for each other.
fn demand_seed(seed: u64, i: usize) -> u64 {
    if i == 0 { seed } else { seed ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93) }
}

/// The most requests one run holds, all demands together: each costs the engine about 30
/// bytes, so this is some 4.5 GB (a month of the Azure code trace at four times its rate, the
/// month bench, is under 30 million).
pub const MAX_REQUESTS: u64 = 150_000_000;

/// Refuses a demand that would draw about `expected` requests (at the peak of its daily shape)
/// where `room` are left of [`MAX_REQUESTS`], before any is drawn: a run that cannot fit in
/// memory says so instead of failing to allocate.
fn check_room(d: &scenario::Demand, expected: f64, room: f64) -> anyhow::Result<()> {
    if expected > room {
        anyhow::bail!(
            "the demand on app '{}' would draw about {:.0} requests over the run; one run holds at most {MAX_REQUESTS} (all demands together): shorten the duration or lower rate_scale / poisson_rate",
            d.app,
            expected
        );
    }
    Ok(())
}

/// One demand's arrivals over a run of `end_ms`, in time order; an error if they would be more
/// than `room` requests.
fn arrivals_of(d: &scenario::Demand, seed: u64, end_ms: u64, room: f64) -> anyhow::Result<Vec<demand::Arrival>> {
    Ok(match &d.source {
        DemandSource::Trace { path, tile } => {
            let v = demand::time_scale(&demand::read_azure_trace(path)?, d.time_scale);
            if *tile || d.rate_scale != 1.0 || d.diurnal_amplitude > 0.0 {
                let span = v.last().map(|a| a.at_ms + 1).unwrap_or(0);
                let length = if *tile { end_ms } else { span };
                // Each request is drawn up to `rate_scale × (1 + amplitude)` times (the daily peak).
                let per_request = d.rate_scale * (1.0 + d.diurnal_amplitude);
                check_room(d, length as f64 / span.max(1) as f64 * v.len() as f64 * per_request, room)?;
                demand::tile(&v, length, d.rate_scale, d.diurnal_amplitude, seed)
            } else {
                check_room(d, v.len() as f64, room)?;
                v
            }
        }
        DemandSource::Poisson { rate_per_s, context_tokens, generated_tokens } => {
            let (rate, amplitude) = (rate_per_s * d.rate_scale / d.time_scale, d.diurnal_amplitude);
            // A daily shape is drawn at its peak rate, then thinned.
            check_room(d, rate * (1.0 + amplitude) * end_ms as f64 / 1000.0, room)?;
            if amplitude > 0.0 {
                demand::diurnal_poisson(rate, amplitude, end_ms, *context_tokens, *generated_tokens, seed)
            } else {
                demand::poisson(rate, end_ms, *context_tokens, *generated_tokens, seed)
            }
        }
    })
}
