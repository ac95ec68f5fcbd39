//! Importer for SkyPilot's catalog CSVs (`catalogs/vN/<cloud>/vms.csv` in skypilot-org/skypilot-catalog).
//!
//! The files share column names but not layouts, and each cloud has quirks the importer corrects:
//! - GCP prices GPU machines in two rows per zone: a host row (`a3-highgpu-8g`, no accelerator)
//!   and a GPU row (no instance type, `H100` × 8). The offering's price is their sum.
//! - Azure's `Standard_ND96isr_H100_v5` says 12 GPUs; the VM has 8. Known shapes win (see
//!   [`crate::instance::known_shape`]) and the correction is noted.
//! - Vast and Prime Intellect give GPU memory per machine in `GpuInfo`, not per GPU.
//! - A spot price equal to the on-demand price (AWS, Azure) or of zero (Vast) is not a spot offer.
//! - Cudo's prices carry float noise (`1.8214000000000001`): money is rounded to the micro-dollar.
//!
//! Rows that are well-formed but not rentable GPU offerings fleet models (other GPUs, rows with no
//! price) are skipped with a note. Malformed rows are errors: the whole file is refused.

use std::collections::HashMap;
use std::io::Read;

use csv::StringRecord;

use super::error::CatalogError;
use super::{Imported, NoteKind};
use crate::cloud::Cloud;
use crate::gpu::GpuModel;
use crate::instance::{InstanceType, Interconnect, interconnect_hint, known_shape, resolve_gpu};
use crate::money::{Money, Price};
use crate::names::slug;
use crate::offering::{Availability, CapacityType, Offering, Source};

const REQUIRED: [&str; 7] =
    ["InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "Region"];

/// Does this header look like a SkyPilot catalog?
pub fn is_skypilot_header(h: &StringRecord) -> bool {
    h.iter().any(|c| c.trim() == "InstanceType") && h.iter().any(|c| c.trim() == "Price")
}

/// Column positions of one file.
struct Cols {
    instance_type: usize,
    accelerator: usize,
    count: usize,
    vcpus: usize,
    memory: usize,
    price: usize,
    region: usize,
    spot: Option<usize>,
    zone: Option<usize>,
    gpu_info: Option<usize>,
}

/// One record with what is needed to report errors about it.
struct Row<'a> {
    file: &'a str,
    headers: &'a StringRecord,
    rec: &'a StringRecord,
    line: u64,
}

impl Row<'_> {
    fn get(&self, i: usize) -> &str {
        self.rec.get(i).unwrap_or("").trim()
    }

    fn err(&self, i: usize, message: impl Into<String>) -> CatalogError {
        CatalogError::Field {
            file: self.file.to_string(),
            line: self.line,
            column: self.headers.get(i).unwrap_or("?").trim().to_string(),
            index: i + 1,
            message: message.into(),
        }
    }

    fn required(&self, i: usize) -> Result<&str, CatalogError> {
        let v = self.get(i);
        if v.is_empty() { Err(self.err(i, "is empty; this column needs a value")) } else { Ok(v) }
    }

    /// A non-negative decimal, as micro-units (so `8.0` and `8` are both 8 GPUs).
    fn decimal(&self, i: usize, what: &str) -> Result<Money, CatalogError> {
        let v = self.required(i)?;
        let m = Money::parse_decimal(v).map_err(|_| self.err(i, format!("'{v}' is not a number; expected {what}")))?;
        if m.is_negative() {
            return Err(self.err(i, format!("'{v}' is negative; expected {what}")));
        }
        Ok(m)
    }

    fn whole(&self, i: usize, what: &str) -> Result<u32, CatalogError> {
        let m = self.decimal(i, what)?;
        if m.micros() % 1_000_000 != 0 {
            return Err(self.err(i, format!("'{}' is not a whole number; expected {what}", self.get(i))));
        }
        u32::try_from(m.micros() / 1_000_000).map_err(|_| self.err(i, format!("'{}' is too large", self.get(i))))
    }

    /// A whole number rounded half up (memory sizes such as 7.5 GiB).
    fn rounded(&self, i: usize, what: &str) -> Result<u32, CatalogError> {
        let m = self.decimal(i, what)?;
        u32::try_from((m.micros() + 500_000) / 1_000_000)
            .map_err(|_| self.err(i, format!("'{}' is too large", self.get(i))))
    }

    /// An optional price: empty means "no offer"; zero is treated as "no offer" too.
    fn price(&self, i: Option<usize>) -> Result<Option<Price>, CatalogError> {
        let Some(i) = i else { return Ok(None) };
        if self.get(i).is_empty() {
            return Ok(None);
        }
        let m = self.decimal(i, "a price in USD per hour such as 98.32")?;
        Ok((m > Money::ZERO).then_some(Price::per_hour(m)))
    }
}

/// The GPU memory per GPU in MiB from a `GpuInfo` cell, which is a Python-dict-like string, JSON,
/// or just a name. The first `SizeInMiB` (any case) wins.
fn gpu_info_memory_mib(info: &str) -> Option<u64> {
    let lower = info.to_ascii_lowercase();
    let at = lower.find("sizeinmib")? + "sizeinmib".len();
    let rest = &lower[at..];
    let start = rest.find(|c: char| c.is_ascii_digit())?;
    if start > 4 {
        return None; // the number is not this key's value
    }
    let digits: String = rest[start..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// GCP's GPU price row for a host machine type: which accelerator name and count it needs.
fn gcp_gpu_row_for(host: &str) -> Option<(&'static str, u32)> {
    let shape = known_shape(Cloud::Gcp, host)?;
    let name = match (host.split('-').nth(1)?, shape.gpu) {
        ("megagpu", GpuModel::H100Sxm) => "H100-MEGA",
        (_, GpuModel::H100Sxm) => "H100",
        (_, GpuModel::A100_80GB) => "A100-80GB",
        (_, GpuModel::A100_40GB) => "A100",
        _ => return None,
    };
    Some((name, shape.gpu_count))
}

/// SkyPilot writes the on-demand price into SpotPrice when it found no spot quote, sometimes
/// rounded to four decimals (AWS: 30.09784 vs 30.097800). A "spot" price within 0.1% of on-demand
/// is that placeholder; spot at the on-demand price would be worse than on-demand anyway.
fn no_spot_discount(on_demand: Price, spot: Price) -> bool {
    i128::from(spot.hourly().micros()) * 1000 >= i128::from(on_demand.hourly().micros()) * 999
}

struct GcpGpuPrice {
    on_demand: Option<Price>,
    spot: Option<Price>,
    line: u64,
    used: bool,
}

struct Pending {
    line: u64,
    cloud_zone: Option<String>,
    region: String,
    instance: InstanceType,
    on_demand: Option<Price>,
    spot: Option<Price>,
}

/// Imports one SkyPilot `vms.csv` for `cloud`. `file` labels errors and notes.
pub fn import(cloud: Cloud, file: &str, source: &Source, data: impl Read) -> Result<Imported, CatalogError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(false).from_reader(data);
    let malformed = |e: csv::Error| CatalogError::Malformed {
        file: file.to_string(),
        line: e.position().map(|p| p.line()).unwrap_or(1),
        message: match e.kind() {
            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                format!("this row has {len} fields but the header has {expected_len}; quote fields that contain commas")
            }
            _ => e.to_string(),
        },
    };
    let headers = rdr.headers().map_err(malformed)?.clone();
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let need = |name: &str| {
        find(name).ok_or_else(|| CatalogError::MissingColumn {
            file: file.to_string(),
            column: name.to_string(),
            expected: REQUIRED.join(", "),
        })
    };
    let cols = Cols {
        instance_type: need("InstanceType")?,
        accelerator: need("AcceleratorName")?,
        count: need("AcceleratorCount")?,
        vcpus: need("vCPUs")?,
        memory: need("MemoryGiB")?,
        price: need("Price")?,
        region: need("Region")?,
        spot: find("SpotPrice"),
        zone: find("AvailabilityZone"),
        gpu_info: find("GpuInfo"),
    };

    let mut out = Imported::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut gcp_gpus: HashMap<(String, String, u32), GcpGpuPrice> = HashMap::new();

    for rec in rdr.records() {
        let rec = rec.map_err(malformed)?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let row = Row { file, headers: &headers, rec: &rec, line };
        let name = row.get(cols.instance_type);
        let accelerator = row.get(cols.accelerator);
        let region_raw = row.required(cols.region)?;
        let zone = cols.zone.map(|z| row.get(z)).filter(|z| !z.is_empty()).map(slug);

        if cloud == Cloud::Gcp && name.is_empty() {
            // A GPU price row; paired with its host row below.
            if accelerator.is_empty() {
                return Err(row.err(cols.accelerator, "is empty, and so is InstanceType: the row prices nothing"));
            }
            let count = row.whole(cols.count, "a GPU count such as 8")?;
            let Some(zone) = zone else {
                return Err(row.err(
                    cols.zone.unwrap_or(cols.region),
                    "GCP GPU rows need an AvailabilityZone to pair with their machine type",
                ));
            };
            let prices =
                GcpGpuPrice { on_demand: row.price(Some(cols.price))?, spot: row.price(cols.spot)?, line, used: false };
            gcp_gpus.insert((zone, accelerator.to_ascii_uppercase(), count), prices);
            continue;
        }
        if name.is_empty() {
            return Err(row.err(cols.instance_type, "is empty; every row needs an instance type"));
        }

        let (gpu, gpu_count, interconnect) = if let Some(known) = known_shape(cloud, name) {
            if !row.get(cols.count).is_empty() {
                let said = row.whole(cols.count, "a GPU count such as 8")?;
                if said != known.gpu_count {
                    out.note(
                        file,
                        line,
                        NoteKind::Corrected,
                        format!(
                            "{name}: the catalog says {said} GPUs; the machine has {} × {}, which is used",
                            known.gpu_count, known.gpu
                        ),
                    );
                }
            }
            (known.gpu, known.gpu_count, known.interconnect)
        } else {
            if accelerator.is_empty() {
                out.note(file, line, NoteKind::Skipped, format!("{name}: no GPU"));
                continue;
            }
            let count = row.whole(cols.count, "a GPU count such as 8")?;
            if count == 0 {
                return Err(row.err(cols.count, "is 0 while AcceleratorName is set"));
            }
            let per_machine = matches!(cloud, Cloud::Vast | Cloud::Primeintellect);
            let mem = cols
                .gpu_info
                .and_then(|i| gpu_info_memory_mib(row.get(i)))
                .map(|m| if per_machine { m / u64::from(count) } else { m });
            let Some(gpu) = resolve_gpu(cloud, name, accelerator, mem) else {
                out.note(
                    file,
                    line,
                    NoteKind::Skipped,
                    format!("{name}: GPU '{accelerator}' is not a model fleet rents"),
                );
                continue;
            };
            let ic: Option<Interconnect> = interconnect_hint(gpu, count, name, accelerator);
            (gpu, count, ic)
        };

        let instance = InstanceType {
            name: name.to_string(),
            gpu,
            gpu_count,
            vcpus: row.whole(cols.vcpus, "a whole number of vCPUs")?,
            memory_gib: row.rounded(cols.memory, "memory in GiB")?,
            interconnect,
        };
        pending.push(Pending {
            line,
            cloud_zone: zone,
            region: slug(region_raw),
            instance,
            on_demand: row.price(Some(cols.price))?,
            spot: row.price(cols.spot)?,
        });
    }

    for mut p in pending {
        if cloud == Cloud::Gcp {
            let Some((acc, count)) = gcp_gpu_row_for(&p.instance.name) else {
                out.note(
                    file,
                    p.line,
                    NoteKind::Skipped,
                    format!("{}: not a GCP GPU machine type fleet knows", p.instance.name),
                );
                continue;
            };
            let key = (p.cloud_zone.clone().unwrap_or_default(), acc.to_string(), count);
            let Some(g) = gcp_gpus.get_mut(&key) else {
                out.note(
                    file,
                    p.line,
                    NoteKind::Skipped,
                    format!(
                        "{}: no {acc} × {count} GPU price in zone {}, so the machine cannot be priced",
                        p.instance.name, key.0
                    ),
                );
                continue;
            };
            g.used = true;
            p.on_demand = p.on_demand.zip(g.on_demand).map(|(h, g)| h + g);
            p.spot = p.spot.zip(g.spot).map(|(h, g)| h + g);
        }
        if p.on_demand.is_none() && p.spot.is_none() {
            out.note(file, p.line, NoteKind::Skipped, format!("{}: no price", p.instance.name));
            continue;
        }
        if let (Some(od), Some(sp)) = (p.on_demand, p.spot)
            && no_spot_discount(od, sp)
        {
            out.note(file, p.line, NoteKind::Skipped, format!(
                "{}: spot price {sp} is the on-demand price {od}: the catalog has no spot quote, so no spot offering",
                p.instance.name
            ));
            p.spot = None;
        }
        for (capacity, price) in [(CapacityType::OnDemand, p.on_demand), (CapacityType::Spot, p.spot)] {
            let Some(price) = price else { continue };
            out.push(
                file,
                p.line,
                Offering {
                    cloud,
                    region: p.region.clone(),
                    zone: p.cloud_zone.clone(),
                    instance: p.instance.clone(),
                    capacity,
                    price,
                    source: source.clone(),
                    availability: Availability::Unknown,
                },
            );
        }
    }
    let mut unused: Vec<_> = gcp_gpus.into_iter().filter(|(_, g)| !g.used).collect();
    unused.sort_by_key(|(_, g)| g.line);
    for ((zone, acc, count), g) in unused {
        out.note(
            file,
            g.line,
            NoteKind::Skipped,
            format!("GPU price {acc} × {count} in {zone}: no machine type in that zone uses it"),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Source {
        Source { name: "test".into(), as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap() }
    }

    #[test]
    fn gpu_info_memory() {
        assert_eq!(gpu_info_memory_mib("{'Gpus': [{'MemoryInfo': {'SizeInMiB': 81920}}]}"), Some(81920));
        assert_eq!(gpu_info_memory_mib(r#"{"Gpus":[{"MemoryInfo":{"SizeInMiB":655360}}]}"#), Some(655360));
        assert_eq!(gpu_info_memory_mib("{'memoryinfo': {'sizeinmib': 81559}}"), Some(81559));
        assert_eq!(gpu_info_memory_mib("A100-80GB"), None);
    }

    #[test]
    fn gcp_host_plus_gpu_rows() {
        let csv = "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice\n\
a3-highgpu-8g,208.0,1872.0,,,,us-east4,us-east4-a,9.46006,2.15966\n\
,,,H100,8,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 81920}}]},us-east4,us-east4-a,78.37241,17.8848\n\
,,,H100,8,x,us-east4,us-east4-b,78.37241,\n";
        let got = import(Cloud::Gcp, "gcp.csv", &src(), csv.as_bytes()).unwrap();
        assert_eq!(got.offerings.len(), 2);
        let od = &got.offerings[0];
        assert_eq!(
            (od.instance.gpu, od.instance.gpu_count, od.capacity),
            (GpuModel::H100Sxm, 8, CapacityType::OnDemand)
        );
        assert_eq!(od.price, Price::parse_decimal("87.83247").unwrap());
        assert_eq!(got.offerings[1].price, Price::parse_decimal("20.04446").unwrap());
        assert!(got.notes.iter().any(|n| n.line == 4 && n.message.contains("no machine type in that zone")));
    }

    #[test]
    fn missing_column_is_named() {
        let csv = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,Price,Region\np5.48xlarge,H100,8,192,98.32,us-east-1\n";
        let e = import(Cloud::Aws, "aws.csv", &src(), csv.as_bytes()).unwrap_err();
        assert_eq!(e.to_string().split(';').next().unwrap(), "aws.csv:1: missing required column 'MemoryGiB'");
    }

    #[test]
    fn bad_number_names_line_and_column() {
        let csv = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region\n\
gpu_1x_h100_pcie,H100,1,26,200,2.49,us-east-1\n\
gpu_8x_h100_sxm5,H100,8,208,1800,23.92x,us-east-1\n";
        let e = import(Cloud::Lambda, "lambda.csv", &src(), csv.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "lambda.csv:3: column 6 'Price': '23.92x' is not a number; expected a price in USD per hour such as 98.32"
        );
    }

    #[test]
    fn ragged_row_is_refused_with_its_line() {
        let csv = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region\n\
gpu_1x_h100_pcie,H100,1,26,200,2.49,us-east-1\n\
gpu_1x_h100_pcie,H100,1,26,200,2.49\n";
        let e = import(Cloud::Lambda, "lambda.csv", &src(), csv.as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with("lambda.csv:3: this row has 6 fields but the header has 7"), "{e}");
    }

    #[test]
    fn negative_and_fractional_counts_are_refused() {
        let head = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region\n";
        let e =
            import(Cloud::Lambda, "l.csv", &src(), format!("{head}x,H100,1.5,26,200,2.49,r\n").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("column 3 'AcceleratorCount': '1.5' is not a whole number"), "{e}");
        let e =
            import(Cloud::Lambda, "l.csv", &src(), format!("{head}x,H100,1,26,200,-2.49,r\n").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("'-2.49' is negative"), "{e}");
    }

    #[test]
    fn spot_equal_to_on_demand_is_no_spot_offer() {
        let csv = "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region\n\
Standard_ND96isr_H100_v5,H100,12,96,1900,98.32,98.32,eastus\n\
p4d.24xlarge,A100,8,96,1152,30.09784,30.097800,ap-northeast-1\n";
        let got = import(Cloud::Azure, "azure.csv", &src(), csv.as_bytes()).unwrap();
        assert_eq!(got.offerings.len(), 2);
        assert!(got.offerings.iter().all(|o| o.capacity == CapacityType::OnDemand));
        assert_eq!(got.offerings[0].instance.gpu_count, 8);
        assert!(got.notes.iter().any(|n| n.kind == NoteKind::Corrected && n.message.contains("says 12 GPUs")));
        assert!(got.notes.iter().any(|n| n.message.contains("no spot quote")));
    }
}
