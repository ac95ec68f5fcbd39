//! `fleetctl plan`: what fleet would rent for a spec and a given demand, and why.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use fleet_core::spec::FleetSpec;
use fleet_core::{Money, Offering, Price};
use fleet_policies::placement::{Candidate, PlacementIndex, RankInput, UnavailableCache};
use fleet_policies::plan::{AppPlan, AppView, FleetView, PlanOptions, plan};
use serde::Serialize;

use crate::Output;
use crate::table::Table;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fleetctl plan -f fleet.toml --queue 40
  fleetctl plan -f fleet.toml --queue 40 --app llama-70b --top 20 -o json
  fleetctl plan -f fleet.toml --queue 100 --catalog ../shared/data/catalogs")]
pub struct PlanArgs {
    /// The fleet spec (TOML).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,

    /// Requests waiting in each app's queue.
    #[arg(long, default_value_t = 0)]
    queue: u32,

    /// Requests in flight in each app.
    #[arg(long, default_value_t = 0)]
    in_flight: u32,

    /// Only this app.
    #[arg(long)]
    app: Option<String>,

    /// How many ranked offerings to show per app.
    #[arg(long, default_value_t = 10)]
    top: usize,

    /// Catalog files or folders instead of the built-in catalog.
    #[arg(long, value_name = "PATH")]
    catalog: Vec<PathBuf>,

    /// Treat the demand as just arrived, so scale-up still waits for each app's scaling_delay.
    /// By default the demand has lasted longer than that.
    #[arg(long)]
    fresh: bool,

    /// Decide as of this time (RFC 3339); default now. Monthly budgets use its calendar month.
    #[arg(long, value_name = "TIME")]
    now: Option<DateTime<Utc>>,

    /// Plan against the built-in catalog even when a fleetd is reachable (by default plan uses
    /// the enabled clouds and live offerings of the fleetd at --server / FLEET_SERVER).
    #[arg(long)]
    offline: bool,
}

#[derive(Serialize)]
struct OfferingView<'a> {
    rank: usize,
    #[serde(flatten)]
    offering: &'a Offering,
    runners_per_node: u32,
    effective_gpu_price: Price,
    /// `effective_gpu_price` per hour of H100 work: the order's key (the same for H100s).
    effective_work_price: Price,
}

#[derive(Serialize)]
struct AppReport<'a> {
    app: &'a str,
    ranked_total: usize,
    ranked: Vec<OfferingView<'a>>,
    excluded: BTreeMap<&'static str, usize>,
    plan: &'a AppPlan,
}

/// The offerings to plan against and a sentence saying which they are: the catalog files given;
/// else, where a fleetd answers, its enabled clouds' live offerings (what it would really rent);
/// else the built-in catalog.
fn offerings(args: &PlanArgs, server: Option<crate::server::Server>) -> Result<(fleet_core::Catalog, String)> {
    if !args.catalog.is_empty() {
        let c = crate::catalog::load(&args.catalog, None, false)?.into_owned();
        let n = c.len();
        return Ok((c, format!("the catalog files given ({n} offerings)")));
    }
    let builtin = || crate::catalog::load(&[], None, false).map(|c| c.into_owned());
    if args.offline {
        return Ok((builtin()?, "the built-in catalog (--offline)".to_string()));
    }
    let Some(server) = server else {
        return Ok((builtin()?, "the built-in catalog (no fleetd configured)".to_string()));
    };
    match server.get("/v1/offerings?full=true") {
        Ok(v) => {
            let rows: Vec<Offering> =
                serde_json::from_value(v).context("fleetd's /v1/offerings answer is not a list of offerings")?;
            let catalog = fleet_core::Catalog::new(rows);
            let clouds: Vec<String> = catalog.clouds().iter().map(ToString::to_string).collect();
            let clouds = if clouds.is_empty() { "none".to_string() } else { clouds.join(", ") };
            let n = catalog.len();
            Ok((catalog, format!("fleetd at {}: its enabled clouds ({clouds}), {n} live offerings", server.base())))
        }
        Err(e) => Ok((
            builtin()?,
            format!(
                "the built-in catalog, offline: fleetd at {} not used ({})",
                server.base(),
                crate::terminal::printable(&e.to_string())
            ),
        )),
    }
}

pub fn run(args: PlanArgs, output: Output, server: Option<crate::server::Server>) -> Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let spec = FleetSpec::parse(&args.file.display().to_string(), &text)?;
    if let Some(a) = &args.app
        && spec.app(a).is_none()
    {
        let names: Vec<&str> = spec.apps.iter().map(|a| a.name.as_str()).collect();
        anyhow::bail!("no app '{a}' in {}; its apps are: {}", args.file.display(), names.join(", "));
    }
    let (catalog, source) = offerings(&args, server)?;
    let index = PlacementIndex::new(Arc::new(catalog), &spec);
    let now = args.now.unwrap_or_else(Utc::now);
    let cache = UnavailableCache::default();
    let state = FleetView {
        now,
        apps: spec
            .apps
            .iter()
            .map(|a| {
                let waited = chrono::Duration::from_std(a.scaling.scaling_delay).unwrap_or(chrono::Duration::MAX);
                let st = AppView {
                    queued: args.queue,
                    in_flight: args.in_flight,
                    scale_up_pending_since: (!args.fresh).then(|| now.checked_sub_signed(waited).unwrap_or(now)),
                    ..AppView::default()
                };
                (a.name.clone(), st)
            })
            .collect(),
        unavailable: &cache,
        fleet_month_to_date: Money::ZERO,
    };
    let fleet = plan(&index, &spec, &state, &PlanOptions::default());
    let mut reports = Vec::new();
    for (i, (app, ap)) in spec.apps.iter().zip(&fleet.apps).enumerate() {
        if args.app.as_ref().is_some_and(|a| *a != app.name) {
            continue;
        }
        let e = index.explain(i, &RankInput::new(now, &cache));
        let mut excluded = BTreeMap::new();
        for (_, r) in &e.excluded {
            *excluded.entry(r.kind()).or_insert(0) += 1;
        }
        let view = |(rank, c): (usize, &Candidate)| OfferingView {
            rank: rank + 1,
            offering: index.offering(c.offering),
            runners_per_node: c.runners_per_node,
            effective_gpu_price: c.effective_gpu_price,
            effective_work_price: c.effective_work_price(index.offering(c.offering).instance.gpu),
        };
        reports.push(AppReport {
            app: &app.name,
            ranked_total: e.ranked.len(),
            ranked: e.ranked.iter().take(args.top).enumerate().map(view).collect(),
            excluded,
            plan: ap,
        });
    }
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json | Output::Yaml => {
            eprintln!("planned against {source}");
            crate::output::print(&serde_json::to_value(&reports)?, output == Output::Yaml)
        }
        Output::Table => {
            writeln!(out, "planned against {source}")?;
            for r in &reports {
                write_app(&mut out, r, &index)?;
            }
        }
        Output::Csv => anyhow::bail!("-o csv is for `fleetctl catalog`; use -o table or -o json with plan"),
    }
    Ok(())
}

fn write_app(out: &mut impl Write, r: &AppReport, index: &PlacementIndex) -> Result<()> {
    let p = r.plan;
    let t = &p.decision.target;
    writeln!(out, "APP {}", r.app)?;
    writeln!(
        out,
        "  demand {} requests -> {} runners needed + {} buffer = {} desired; start {}, stop {}",
        t.demand,
        t.needed,
        t.buffer,
        t.desired,
        p.decision.start,
        p.decision.stop.len()
    )?;
    if let Some(since) = p.decision.pending_since {
        writeln!(out, "  scale-up waits for the scaling delay (demand pending since {since})")?;
    }
    writeln!(
        out,
        "  capacity: {} on-demand ({} as spot fallback), {} spot",
        p.split.on_demand, p.split.fallback, p.split.spot
    )?;
    if !p.new_nodes.is_empty() {
        writeln!(out, "  new nodes (each tries its offerings in order):")?;
        let mut tbl = Table::new(&[
            ("NODE", true),
            ("CAPACITY", false),
            ("RUNNERS", true),
            ("FIRST CHOICE", false),
            ("$/HOUR", true),
            ("FAILOVER", true),
            ("RESERVED $/HOUR", true),
        ]);
        for (i, n) in p.new_nodes.iter().enumerate() {
            let first = index.offering(n.candidates[0].offering);
            tbl.row(vec![
                (i + 1).to_string(),
                n.capacity.to_string(),
                n.runners.to_string(),
                first.key().to_string(),
                first.price.hourly().cents().to_string(),
                (n.candidates.len() - 1).to_string(),
                n.reserved_per_hour.cents().to_string(),
            ]);
        }
        for line in tbl.render().lines() {
            writeln!(out, "    {line}")?;
        }
        writeln!(out, "  why these node sizes:")?;
        for (i, n) in p.new_nodes.iter().enumerate() {
            writeln!(out, "    node {}: {}", i + 1, n.why)?;
        }
    }
    for u in &p.unplaced {
        writeln!(out, "  NOT PLACED: {} runners: {}", u.runners, u.why)?;
    }
    writeln!(
        out,
        "  cost: {}/h now, at most {}/h more after this plan",
        p.burn_per_hour.cents(),
        p.max_added_per_hour.cents()
    )?;
    writeln!(out, "  ranked offerings ({} of {}):", r.ranked.len(), r.ranked_total)?;
    // Where the app allows several GPU families the order is by price per hour of H100 work
    // (an A100's $/GPU-hour counts about 3.2 times): that column says why an A100 cheaper per
    // GPU-hour ranks below an H100.
    let families: std::collections::BTreeSet<_> = r.ranked.iter().map(|v| v.offering.instance.gpu.family()).collect();
    let work = families.len() > 1;
    let mut cols = vec![
        ("#", true),
        ("CLOUD", false),
        ("REGION", false),
        ("ZONE", false),
        ("INSTANCE TYPE", false),
        ("GPU", false),
        ("CAPACITY", false),
        ("RUNNERS/NODE", true),
        ("EFF $/GPU-HOUR", true),
    ];
    if work {
        cols.push(("PER H100-HOUR", true));
    }
    cols.push(("$/HOUR", true));
    let mut tbl = Table::new(&cols);
    for v in &r.ranked {
        let o = v.offering;
        let mut row = vec![
            v.rank.to_string(),
            o.cloud.to_string(),
            o.region.clone(),
            o.zone.clone().unwrap_or_else(|| "-".into()),
            o.instance.name.clone(),
            format!("{}x{}", o.instance.gpu_count, o.instance.gpu),
            o.capacity.to_string(),
            v.runners_per_node.to_string(),
            v.effective_gpu_price.hourly().cents().to_string(),
        ];
        if work {
            row.push(v.effective_work_price.hourly().cents().to_string());
        }
        row.push(o.price.hourly().cents().to_string());
        tbl.row(row);
    }
    for line in tbl.render().lines() {
        writeln!(out, "    {line}")?;
    }
    let excluded: Vec<String> = r.excluded.iter().map(|(k, n)| format!("{n} {k}")).collect();
    writeln!(out, "  excluded: {}", if excluded.is_empty() { "none".to_string() } else { excluded.join(", ") })?;
    writeln!(out)?;
    Ok(())
}
