//! fleet's own catalog format: one normalised offering per row, every row with its source and date.
//! The built-in catalog is in this format, and `fleetctl catalog -o csv` writes it.

use std::io::{Read, Write};

use chrono::NaiveDate;
use csv::StringRecord;

use super::error::CatalogError;
use super::{Imported, NoteKind};
use crate::cloud::Cloud;
use crate::gpu::GpuModel;
use crate::instance::{InstanceType, Interconnect, known_shape};
use crate::money::Price;
use crate::names::slug;
use crate::offering::{Availability, CapacityType, Offering, Source};

pub const HEADER: [&str; 13] = [
    "cloud",
    "region",
    "zone",
    "instance_type",
    "gpu",
    "gpu_count",
    "vcpus",
    "memory_gib",
    "interconnect",
    "capacity",
    "usd_per_hour",
    "source",
    "as_of",
];

pub fn is_native_header(h: &StringRecord) -> bool {
    h.iter().any(|c| c.trim() == "usd_per_hour") && h.iter().any(|c| c.trim() == "cloud")
}

/// Reads a native catalog. Every column is required (zone and interconnect may be empty).
pub fn read(file: &str, data: impl Read) -> Result<Imported, CatalogError> {
    let mut rdr = csv::ReaderBuilder::new().from_reader(data);
    let malformed = |e: csv::Error| CatalogError::Malformed {
        file: file.to_string(),
        line: e.position().map(|p| p.line()).unwrap_or(1),
        message: e.to_string(),
    };
    let headers = rdr.headers().map_err(malformed)?.clone();
    let mut idx = [0usize; HEADER.len()];
    for (k, name) in HEADER.iter().enumerate() {
        idx[k] = headers.iter().position(|h| h.trim() == *name).ok_or_else(|| CatalogError::MissingColumn {
            file: file.to_string(),
            column: name.to_string(),
            expected: HEADER.join(", "),
        })?;
    }
    let mut out = Imported::default();
    for rec in rdr.records() {
        let rec = rec.map_err(malformed)?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let get = |k: usize| rec.get(idx[k]).unwrap_or("").trim();
        let err = |k: usize, message: String| CatalogError::Field {
            file: file.to_string(),
            line,
            column: HEADER[k].to_string(),
            index: idx[k] + 1,
            message,
        };
        let parse = |k: usize| -> Result<u32, CatalogError> {
            get(k).parse::<u32>().map_err(|_| err(k, format!("'{}' is not a whole number", get(k))))
        };
        let cloud: Cloud = get(0).parse().map_err(|e: crate::cloud::UnknownCloud| err(0, e.to_string()))?;
        let region = slug(get(1));
        if region.is_empty() {
            return Err(err(1, "is empty; every offering has a region".into()));
        }
        let zone = Some(slug(get(2))).filter(|z| !z.is_empty());
        let name = get(3);
        if name.is_empty() {
            return Err(err(3, "is empty; every offering has an instance type".into()));
        }
        let gpu: GpuModel = get(4).parse().map_err(|e: crate::gpu::UnknownGpu| err(4, e.to_string()))?;
        let gpu_count = parse(5)?;
        if gpu_count == 0 {
            return Err(err(5, "is 0; an offering has at least one GPU".into()));
        }
        if let Some(k) = known_shape(cloud, name)
            && (k.gpu, k.gpu_count) != (gpu, gpu_count)
        {
            return Err(err(4, format!("{name} has {} × {}, not {gpu_count} × {gpu}", k.gpu_count, k.gpu)));
        }
        let interconnect = match get(8) {
            "" => None,
            s => Some(s.parse::<Interconnect>().map_err(|e| err(8, e))?),
        };
        let capacity: CapacityType = get(9).parse().map_err(|e| err(9, e))?;
        let price = Price::parse_decimal(get(10)).map_err(|e| err(10, e.to_string()))?;
        if price.hourly().is_negative() {
            return Err(err(10, format!("'{}' is negative", get(10))));
        }
        let source_name = get(11);
        if source_name.is_empty() {
            return Err(err(11, "is empty; every price says where it came from".into()));
        }
        let as_of = NaiveDate::parse_from_str(get(12), "%Y-%m-%d")
            .map_err(|_| err(12, format!("'{}' is not a date; write it as YYYY-MM-DD", get(12))))?;
        out.push(
            file,
            line,
            Offering {
                cloud,
                region,
                zone,
                instance: InstanceType {
                    name: name.to_string(),
                    gpu,
                    gpu_count,
                    vcpus: parse(6)?,
                    memory_gib: parse(7)?,
                    interconnect,
                },
                capacity,
                price,
                source: Source { name: source_name.to_string(), as_of },
                availability: Availability::Unknown,
            },
        );
    }
    debug_assert!(out.notes.iter().all(|n| n.kind == NoteKind::Skipped));
    Ok(out)
}

/// Writes offerings in the native format.
pub fn write<'a>(w: impl Write, offerings: impl IntoIterator<Item = &'a Offering>) -> csv::Result<()> {
    let mut wtr = csv::Writer::from_writer(w);
    wtr.write_record(HEADER)?;
    for o in offerings {
        wtr.write_record([
            o.cloud.as_str(),
            &o.region,
            o.zone.as_deref().unwrap_or(""),
            &o.instance.name,
            o.instance.gpu.name(),
            &o.instance.gpu_count.to_string(),
            &o.instance.vcpus.to_string(),
            &o.instance.memory_gib.to_string(),
            o.instance.interconnect.map(|i| i.name()).unwrap_or(""),
            o.capacity.name(),
            &o.price.hourly().to_decimal_string(),
            &o.source.name,
            &o.source.as_of.format("%Y-%m-%d").to_string(),
        ])?;
    }
    wtr.flush()?;
    Ok(())
}
