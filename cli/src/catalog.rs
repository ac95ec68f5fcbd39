//! `fleetctl catalog`: query the price catalog.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use fleet_core::catalog::{ImportNote, NoteKind, native};
use fleet_core::{CapacityType, Catalog, Cloud, GpuSelector, Offering, Price, Query, SortKey};
use serde::Serialize;

use crate::Output;
use crate::table::Table;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  fleetctl catalog --gpu H100 --min-gpus 8 --sort price
  fleetctl catalog --gpu H100-SXM --spot --cloud aws,gcp -o json
  fleetctl catalog --gpu A100-80GB --region 'us-*' --limit 10
  fleetctl catalog --catalog ../shared/data/catalogs --gpu H100 --min-gpus 8
  fleetctl catalog --catalog ./skypilot/v8 -o csv > my-catalog.csv")]
pub struct CatalogArgs {
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
                    o.price_per_gpu().hourly().to_string(),
                    o.price.hourly().to_string(),
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
