//! The price catalog: every offering fleet could rent, with its price, source and date.
//!
//! - [`Catalog::builtin`]: compiled into every binary (`core/catalog/builtin.csv`), so fleet works
//!   with no files and no network.
//! - [`Catalog::load`]: SkyPilot catalog CSVs or fleet's own format, from files or folders. A load
//!   is all or nothing: one bad row and nothing is returned, with an error naming file, line, column.
//! - [`Catalog::query`]: filter by GPU, count, cloud, region, capacity type; sort by $/GPU-hour.

pub mod error;
pub mod native;
pub mod skypilot;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

pub use error::CatalogError;

use crate::cloud::Cloud;
use crate::gpu::GpuSelector;
use crate::names::slug;
use crate::offering::{CapacityType, Offering, OfferingKey, Source};

/// Why a row did not become an offering as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoteKind {
    /// Not an offering fleet can use (another GPU, no price, a duplicate).
    Skipped,
    /// Used, but a known catalog error was corrected.
    Corrected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportNote {
    pub file: String,
    pub line: u64,
    pub kind: NoteKind,
    pub message: String,
}

/// What an import produced: offerings (no two with the same [`OfferingKey`]) and notes.
#[derive(Debug, Default)]
pub struct Imported {
    pub offerings: Vec<Offering>,
    pub notes: Vec<ImportNote>,
    seen: HashMap<OfferingKey, (String, u64)>,
}

impl Imported {
    fn note(&mut self, file: &str, line: u64, kind: NoteKind, message: String) {
        self.notes.push(ImportNote { file: file.to_string(), line, kind, message });
    }

    /// Adds an offering unless one with the same key is already here (the first one wins).
    fn push(&mut self, file: &str, line: u64, o: Offering) {
        let key = o.key();
        if let Some((f, l)) = self.seen.get(&key) {
            let message = format!("{key}: duplicate of {f}:{l}, which is kept");
            self.note(file, line, NoteKind::Skipped, message);
            return;
        }
        self.seen.insert(key, (file.to_string(), line));
        self.offerings.push(o);
    }

    fn merge(&mut self, other: Imported) {
        self.notes.extend(other.notes);
        for o in other.offerings {
            let (f, l) = other.seen.get(&o.key()).cloned().unwrap_or_default();
            self.push(&f, l, o);
        }
    }
}

/// An immutable set of offerings.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    offerings: Vec<Offering>,
}

const BUILTIN_CSV: &str = include_str!("../../catalog/builtin.csv");

impl Catalog {
    pub fn new(offerings: Vec<Offering>) -> Catalog {
        Catalog { offerings }
    }

    /// The catalog compiled into the binary: real H100/A100 prices, each row with its source and date.
    pub fn builtin() -> &'static Catalog {
        static BUILTIN: OnceLock<Catalog> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            let imported = native::read("builtin.csv", BUILTIN_CSV.as_bytes())
                .unwrap_or_else(|e| panic!("the built-in catalog is invalid (a build error, not yours): {e}"));
            Catalog::new(imported.offerings)
        })
    }

    /// Loads catalog files. A folder is searched recursively for `*.csv`; files whose header is
    /// not a catalog's (SkyPilot's `accelerators.csv`, say) are skipped there with a note, but
    /// named explicitly they are an error. SkyPilot files get their cloud from the file name
    /// (`aws.csv`, `fluidstack_v6.csv`) or folder (`aws/vms.csv`), and their date from `as_of`,
    /// or else from the file's modification time.
    pub fn load(paths: &[PathBuf], as_of: Option<NaiveDate>) -> Result<(Catalog, Vec<ImportNote>), CatalogError> {
        let mut all = Imported::default();
        for path in paths {
            let meta = std::fs::metadata(path).map_err(|source| CatalogError::Io { path: path.clone(), source })?;
            if meta.is_dir() {
                let mut files = Vec::new();
                collect_csvs(path, &mut files)?;
                if files.is_empty() {
                    return Err(CatalogError::NoFiles { path: path.clone() });
                }
                for f in files {
                    match load_file(&f, as_of) {
                        Err(CatalogError::UnknownFormat { file }) => {
                            all.note(&file, 1, NoteKind::Skipped, "not a catalog file (unknown header)".into())
                        }
                        other => all.merge(other?),
                    }
                }
            } else {
                all.merge(load_file(path, as_of)?);
            }
        }
        Ok((Catalog::new(all.offerings), all.notes))
    }

    pub fn offerings(&self) -> &[Offering] {
        &self.offerings
    }

    pub fn len(&self) -> usize {
        self.offerings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offerings.is_empty()
    }

    /// Every region of the catalog's offerings, once each (computed on each call).
    pub fn regions(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.offerings.iter().map(|o| o.region.as_str()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    pub fn clouds(&self) -> BTreeSet<Cloud> {
        self.offerings.iter().map(|o| o.cloud).collect()
    }

    /// The offerings matching `q`, sorted as it asks; ties are broken by cloud, region, zone,
    /// instance type and capacity type, so the order is the same on every run.
    ///
    /// ```
    /// use fleet_core::{CapacityType, Catalog, Cloud, Query};
    ///
    /// // The cheapest on-demand 8×H100 machine on AWS or GCP, by $/GPU-hour.
    /// let q = Query {
    ///     gpu: Some("H100".parse().unwrap()),
    ///     min_gpus: Some(8),
    ///     clouds: vec![Cloud::Aws, Cloud::Gcp],
    ///     capacity: Some(CapacityType::OnDemand),
    ///     ..Query::default()
    /// };
    /// let best = Catalog::builtin().query(&q)[0];
    /// assert!(matches!(best.cloud, Cloud::Aws | Cloud::Gcp));
    /// assert_eq!(best.instance.gpu_count, 8);
    /// println!("{} {} {} at {} per GPU", best.cloud, best.region, best.instance.name, best.price_per_gpu());
    /// ```
    pub fn query(&self, q: &Query) -> Vec<&Offering> {
        let mut v: Vec<&Offering> = self.offerings.iter().filter(|o| q.matches(o)).collect();
        let tie = |o: &Offering| (o.cloud, o.region.clone(), o.zone.clone(), o.instance.name.clone(), o.capacity);
        match q.sort {
            SortKey::GpuPrice => v.sort_by_cached_key(|o| (o.price_per_gpu(), o.price, tie(o))),
            SortKey::InstancePrice => v.sort_by_cached_key(|o| (o.price, o.price_per_gpu(), tie(o))),
            SortKey::Cloud => v.sort_by_cached_key(|o| (tie(o), o.price)),
        }
        v
    }
}

fn collect_csvs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CatalogError> {
    let io = |source| CatalogError::Io { path: dir.to_path_buf(), source };
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io)?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_csvs(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "csv") {
            out.push(p);
        }
    }
    Ok(())
}

/// The cloud a SkyPilot file is for: `aws.csv`, `fluidstack_v6.csv`, or `<cloud>/vms.csv`.
pub fn cloud_of_file(path: &Path) -> Result<Cloud, CatalogError> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let first = stem.split(['_', '.', '-']).next().unwrap_or("");
    if let Ok(c) = first.parse::<Cloud>() {
        return Ok(c);
    }
    let parent = path.parent().and_then(|p| p.file_name()).and_then(|s| s.to_str()).unwrap_or("");
    if let Ok(c) = parent.parse::<Cloud>() {
        return Ok(c);
    }
    Err(CatalogError::CloudOfFile { file: path.display().to_string(), source: first.parse::<Cloud>().unwrap_err() })
}

fn load_file(path: &Path, as_of: Option<NaiveDate>) -> Result<Imported, CatalogError> {
    let label = path.display().to_string();
    let io = |source| CatalogError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let mut data = Vec::new();
    BufReader::new(file).read_to_end(&mut data).map_err(io)?;
    let header = csv::ReaderBuilder::new()
        .from_reader(data.as_slice())
        .headers()
        .cloned()
        .map_err(|e| CatalogError::Malformed { file: label.clone(), line: 1, message: e.to_string() })?;
    if native::is_native_header(&header) {
        return native::read(&label, data.as_slice());
    }
    if !skypilot::is_skypilot_header(&header) {
        return Err(CatalogError::UnknownFormat { file: label });
    }
    let cloud = cloud_of_file(path)?;
    let as_of = match as_of {
        Some(d) => d,
        None => {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).map_err(io)?;
            DateTime::<Utc>::from(modified).date_naive()
        }
    };
    let source = Source { name: format!("skypilot {label}"), as_of };
    skypilot::import(cloud, &label, &source, data.as_slice())
}

/// `../shared/data` beside the repository (real catalogs and traces for tests and benchmarks), or
/// `$FLEET_SHARED_DATA`. `None`, after saying so on stderr, when it is absent: callers skip —
/// unless `$FLEET_REQUIRE_SHARED_DATA` is set (CI sets it), when its absence is a test failure.
pub fn shared_data_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("FLEET_SHARED_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")),
    };
    if dir.is_dir() {
        Some(dir)
    } else if std::env::var_os("FLEET_REQUIRE_SHARED_DATA").is_some_and(|v| !v.is_empty() && v != "0") {
        // CI sets it: a test that needs the data must run there, not pass by skipping.
        panic!(
            "{} not found and FLEET_REQUIRE_SHARED_DATA is set: this test needs ../shared/data (or FLEET_SHARED_DATA)",
            dir.display()
        );
    } else {
        eprintln!("SKIP: {} not found; this needs ../shared/data (or set FLEET_SHARED_DATA)", dir.display());
        None
    }
}

/// How query results are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Cheapest $/GPU-hour first.
    #[default]
    GpuPrice,
    /// Cheapest whole instance per hour first.
    InstancePrice,
    /// By cloud, region, zone, instance type.
    Cloud,
}

/// A catalog query. Empty lists mean "any".
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub gpu: Option<GpuSelector>,
    pub min_gpus: Option<u32>,
    pub clouds: Vec<Cloud>,
    /// Region names (normalised before comparing); a trailing `*` matches a prefix (`us-*`).
    pub regions: Vec<String>,
    pub capacity: Option<CapacityType>,
    pub sort: SortKey,
}

impl Query {
    pub fn matches(&self, o: &Offering) -> bool {
        self.gpu.is_none_or(|g| g.matches(o.instance.gpu))
            && self.min_gpus.is_none_or(|n| o.instance.gpu_count >= n)
            && (self.clouds.is_empty() || self.clouds.contains(&o.cloud))
            && self.capacity.is_none_or(|c| o.capacity == c)
            && (self.regions.is_empty()
                || self.regions.iter().any(|r| match r.strip_suffix('*') {
                    Some(prefix) => o.region.starts_with(&prefix.to_ascii_lowercase()),
                    None => o.region == slug(r),
                }))
    }
}

#[cfg(test)]
mod tests;
