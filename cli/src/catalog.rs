//! `fleetctl catalog`: query the price catalog.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Args, Subcommand, ValueEnum};
use fleet_core::catalog::{ImportNote, NoteKind, native};
use fleet_core::{CapacityType, Catalog, Cloud, GpuSelector, Offering, Price, Query, SortKey};
use serde::Serialize;

use crate::Output;
use crate::table::Table;

#[derive(Debug, Args)]
#[command(
    after_help = "\
Examples:
  fleetctl catalog --gpu H100 --min-gpus 8 --sort price
  fleetctl catalog --gpu H100-SXM --spot --cloud aws,gcp -o json
  fleetctl catalog --gpu A100-80GB --region 'us-*' --limit 10
  fleetctl catalog --catalog ../shared/data/catalogs --gpu H100 --min-gpus 8
  fleetctl catalog --catalog ./skypilot/v8 -o csv > my-catalog.csv
  fleetctl catalog refresh                  live prices through fleetd into the local catalog

Without --catalog, the local catalog that `fleetctl catalog refresh` wrote is used when there is
one (FLEET_CATALOG, else ~/.config/fleet/catalog.csv), else the built-in one.",
    args_conflicts_with_subcommands = true
)]
pub struct CatalogArgs {
    #[command(subcommand)]
    pub cmd: Option<CatalogCmd>,

    /// GPU family (H100, A100) or exact model (H100-SXM, H100-PCIe, H100-NVL, A100-40GB, A100-80GB).
    #[arg(long)]
    gpu: Option<GpuSelector>,

    /// Only instances with at least this many GPUs.
    #[arg(long, value_name = "N")]
    min_gpus: Option<u32>,

    /// Only these clouds (repeat, or separate with commas).
    #[arg(long, value_delimiter = ',')]
    cloud: Vec<Cloud>,

    /// Only these regions (repeat, or separate with commas); `us-*` matches a prefix.
    #[arg(long, value_delimiter = ',')]
    region: Vec<String>,

    /// Only spot / preemptible offerings.
    #[arg(long, conflicts_with_all = ["on_demand", "capacity"])]
    spot: bool,

    /// Only on-demand offerings.
    #[arg(long, conflicts_with = "capacity")]
    on_demand: bool,

    /// Only this capacity type (on-demand, spot, reserved).
    #[arg(long)]
    capacity: Option<CapacityType>,

    /// Order: `price` is $/GPU-hour, `instance-price` is $/hour for the whole instance.
    #[arg(long, value_enum, default_value_t = Sort::Price)]
    sort: Sort,

    /// Show at most this many rows.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,

    /// Catalog CSV files or folders (SkyPilot vms.csv or fleet's format) instead of the built-in catalog.
    #[arg(long, value_name = "PATH")]
    catalog: Vec<PathBuf>,

    /// Date the prices of imported SkyPilot files were true (YYYY-MM-DD); default: each file's modification date.
    #[arg(long, value_name = "DATE", requires = "catalog")]
    as_of: Option<NaiveDate>,

    /// List every row the import skipped or corrected, and why.
    #[arg(long, requires = "catalog")]
    show_notes: bool,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCmd {
    /// Fetch live prices through fleetd's cloud adapters into the local catalog; say what changed.
    #[command(after_help = "\
Examples:
  fleetctl catalog refresh
  fleetctl catalog refresh --file ./prices.csv -o json

Each cloud fleetd has an account for is asked for its prices (Lambda instance types, RunPod GPU
types, EC2 spot price history …); rows of other clouds in the local catalog are kept.")]
    Refresh {
        /// The local catalog to update (default: FLEET_CATALOG, else ~/.config/fleet/catalog.csv).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

/// Where `fleetctl catalog refresh` keeps the catalog it fetched.
pub fn local_catalog_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLEET_CATALOG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/fleet/catalog.csv"))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Sort {
    Price,
    InstancePrice,
    Cloud,
}

/// One offering as printed in JSON: the offering, plus its $/GPU-hour.
#[derive(Serialize)]
struct OfferingView<'a> {
    #[serde(flatten)]
    offering: &'a Offering,
    price_per_gpu: Price,
}

pub fn run(args: CatalogArgs, output: Output) -> Result<()> {
    let catalog = load(&args.catalog, args.as_of, args.show_notes)?;
    let capacity = if args.spot {
        Some(CapacityType::Spot)
    } else if args.on_demand {
        Some(CapacityType::OnDemand)
    } else {
        args.capacity
    };
    let q = Query {
        gpu: args.gpu,
        min_gpus: args.min_gpus,
        clouds: args.cloud,
        regions: args.region,
        capacity,
        sort: match args.sort {
            Sort::Price => SortKey::GpuPrice,
            Sort::InstancePrice => SortKey::InstancePrice,
            Sort::Cloud => SortKey::Cloud,
        },
    };
    let all = catalog.query(&q);
    let total = all.len();
    let shown: Vec<&Offering> = all.into_iter().take(args.limit.unwrap_or(usize::MAX)).collect();
    let mut stdout = std::io::stdout().lock();
    match output {
        Output::Json | Output::Yaml => {
            let views: Vec<OfferingView> =
                shown.iter().map(|o| OfferingView { offering: o, price_per_gpu: o.price_per_gpu() }).collect();
            crate::output::print(&serde_json::to_value(&views)?, output == Output::Yaml);
        }
        Output::Csv => native::write(&mut stdout, shown.iter().copied()).context("writing CSV")?,
        Output::Table => {
            if shown.is_empty() {
                eprintln!(
                    "No offerings match. Loosen the filters (--gpu H100 matches every H100 model) or check --cloud/--region."
                );
                return Ok(());
            }
            let mut t = Table::new(&[
                ("CLOUD", false),
                ("REGION", false),
                ("ZONE", false),
                ("INSTANCE TYPE", false),
                ("GPU", false),
                ("GPUS", true),
                ("CAPACITY", false),
                ("$/GPU-HOUR", true),
                ("$/HOUR", true),
                ("VCPUS", true),
                ("MEM GIB", true),
                ("AS OF", false),
            ]);
            for o in &shown {
                t.row(vec![
                    o.cloud.to_string(),
                    o.region.clone(),
                    o.zone.clone().unwrap_or_else(|| "-".into()),
                    o.instance.name.clone(),
                    o.instance.gpu.to_string(),
                    o.instance.gpu_count.to_string(),
                    o.capacity.to_string(),
                    o.price_per_gpu().hourly().cents().to_string(),
                    o.price.hourly().cents().to_string(),
                    o.instance.vcpus.to_string(),
                    o.instance.memory_gib.to_string(),
                    o.source.as_of.to_string(),
                ]);
            }
            write!(stdout, "{}", t.render())?;
            if shown.len() < total {
                eprintln!("({} of {total} offerings shown; raise --limit to see more)", shown.len());
            }
        }
    }
    Ok(())
}

/// The built-in catalog, or the files given with `--catalog` (with a summary of import notes).
pub fn load(paths: &[PathBuf], as_of: Option<NaiveDate>, show_notes: bool) -> Result<Cow<'static, Catalog>> {
    if paths.is_empty() {
        if let Some(local) = local_catalog_path().filter(|p| p.is_file()) {
            let (c, _) = Catalog::load(std::slice::from_ref(&local), None)
                .with_context(|| format!("the local catalog {} (from `fleetctl catalog refresh`)", local.display()))?;
            eprintln!("note: prices from {} (fleetctl catalog refresh)", local.display());
            return Ok(Cow::Owned(c));
        }
        return Ok(Cow::Borrowed(Catalog::builtin()));
    }
    let (c, notes) = Catalog::load(paths, as_of)?;
    report_notes(&notes, show_notes);
    Ok(Cow::Owned(c))
}

fn report_notes(notes: &[ImportNote], all: bool) {
    if all {
        for n in notes {
            let kind = match n.kind {
                NoteKind::Skipped => "skipped",
                NoteKind::Corrected => "corrected",
            };
            eprintln!("{}:{}: {kind}: {}", n.file, n.line, n.message);
        }
    } else if !notes.is_empty() {
        let corrected = notes.iter().filter(|n| n.kind == NoteKind::Corrected).count();
        eprintln!(
            "note: {} rows skipped and {corrected} corrected while importing; --show-notes lists them",
            notes.len() - corrected
        );
    }
}

/// One offering whose price moved, appeared or went.
#[derive(Debug, Serialize)]
struct Change {
    offering: String,
    old: Option<Price>,
    new: Option<Price>,
}

/// `fleetctl catalog refresh`.
pub fn refresh(server: &crate::server::Server, file: Option<PathBuf>, output: Output) -> Result<()> {
    let path = file.or_else(local_catalog_path).context("no place for the local catalog: give --file or set HOME")?;
    let fresh: Vec<Offering> = serde_json::from_value(server.get("/v1/offerings?full=true")?)
        .context("fleetd's offerings are not in the expected form (is fleetctl older than fleetd?)")?;
    if fresh.is_empty() {
        anyhow::bail!("fleetd has no cloud to ask: give it accounts in the spec's [clouds.*], then refresh");
    }
    let clouds: std::collections::BTreeSet<Cloud> = fresh.iter().map(|o| o.cloud).collect();
    let (old, against): (Vec<Offering>, String) = if path.is_file() {
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let imported = native::read(&path.display().to_string(), &text[..])?;
        (imported.offerings, path.display().to_string())
    } else {
        (Catalog::builtin().offerings().to_vec(), "the built-in catalog".to_string())
    };
    let old_of: std::collections::BTreeMap<String, &Offering> = old.iter().map(|o| (o.key().to_string(), o)).collect();
    let new_of: std::collections::BTreeMap<String, &Offering> =
        fresh.iter().map(|o| (o.key().to_string(), o)).collect();
    let mut changes = Vec::new();
    for (k, n) in &new_of {
        match old_of.get(k) {
            Some(o) if o.price == n.price => {}
            Some(o) => changes.push(Change { offering: k.clone(), old: Some(o.price), new: Some(n.price) }),
            None => changes.push(Change { offering: k.clone(), old: None, new: Some(n.price) }),
        }
    }
    for (k, o) in &old_of {
        if clouds.contains(&o.cloud) && !new_of.contains_key(k) {
            changes.push(Change { offering: k.clone(), old: Some(o.price), new: None });
        }
    }
    // The local catalog: other clouds' rows as they were (the built-in catalog's at the first
    // refresh), these clouds' as fetched; `plan` and `catalog` lose no cloud fleetd was not asked.
    let mut merged: Vec<Offering> = old.iter().filter(|o| !clouds.contains(&o.cloud)).cloned().collect();
    merged.extend(fresh.iter().cloned());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("csv.tmp");
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        native::write(&mut f, merged.iter()).context("writing the catalog")?;
        f.flush()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;

    let (moved, added, gone) = (
        changes.iter().filter(|c| c.old.is_some() && c.new.is_some()).count(),
        changes.iter().filter(|c| c.old.is_none()).count(),
        changes.iter().filter(|c| c.new.is_none()).count(),
    );
    let names: Vec<String> = clouds.iter().map(ToString::to_string).collect();
    match output {
        Output::Json | Output::Yaml => {
            let v = serde_json::json!({
                "file": path.display().to_string(), "compared_with": against, "clouds": names,
                "offerings": fresh.len(), "changes": changes,
            });
            crate::output::print(&v, output == Output::Yaml);
        }
        _ => {
            outln!(
                "{} offerings from {} (live where the cloud publishes prices) vs {against}: {moved} prices changed, {added} new, {gone} gone",
                fresh.len(),
                names.join(", ")
            );
            if !changes.is_empty() {
                let mut t = Table::new(&[("OFFERING", false), ("WAS", true), ("NOW", true), ("CHANGE", true)]);
                let money = |p: Option<Price>| p.map(|p| p.hourly().cents().to_string()).unwrap_or_else(|| "-".into());
                for c in &changes {
                    let pct = match (c.old, c.new) {
                        (Some(o), Some(n)) if o.hourly() > fleet_core::Money::ZERO => {
                            let (o, n) = (o.hourly().micros() as i128, n.hourly().micros() as i128);
                            format!("{:+.1}%", ((n - o) * 1000 / o) as f64 / 10.0)
                        }
                        (None, Some(_)) => "new".into(),
                        (Some(_), None) => "gone".into(),
                        _ => String::new(),
                    };
                    t.row(vec![c.offering.clone(), money(c.old), money(c.new), pct]);
                }
                out!("{}", t.render());
            }
            outln!("written to {}", path.display());
        }
    }
    Ok(())
}
