//! Live GCP prices from the Cloud Billing Catalog API (Compute Engine's SKUs). GPU machine types
//! are billed in parts: each GPU, each vCPU and each GiB of memory of the machine family, with
//! separate Spot ("Preemptible") SKUs, priced per region (`serviceRegions`). A2 Ultra and A3
//! machines also come with Local SSD disks that Google bills with them, per GiB-month ("SSD backed
//! Local Storage", 730 hours a month), so their price includes it. An offering's price is the sum
//! of its parts, in exact micro-dollars (`units` + `nanos` of each unit price), the Local SSD's
//! monthly total divided by 730 and rounded once, at the end.

use std::collections::HashMap;

use fleet_core::{CapacityType, GpuModel, Money, Offering, Price};
use serde_json::Value;

/// Compute Engine's service id in the billing catalog.
pub(crate) const COMPUTE_SERVICE: &str = "services/6F81-5844-456A";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Gpu(GpuModel),
    /// vCPU of a machine family ("A3", "A2").
    Core(&'static str),
    /// GiB of memory of a machine family.
    Ram(&'static str),
    /// GiB-month of Local SSD.
    LocalSsd,
}

/// Hours in a billing month, as Google converts monthly disk prices.
const HOURS_PER_MONTH: i64 = 730;

/// GiB of Local SSD bundled with a machine type (375 GiB disks): A2 Ultra has one per GPU, A3
/// High two per GPU, A3 Mega and Edge sixteen (Compute Engine's GPU machine types table).
fn bundled_local_ssd_gib(machine_type: &str) -> u32 {
    let gpus: u32 =
        machine_type.rsplit('-').next().and_then(|s| s.strip_suffix('g')).and_then(|n| n.parse().ok()).unwrap_or(0);
    if machine_type.starts_with("a2-ultragpu") {
        375 * gpus
    } else if machine_type.starts_with("a3-highgpu") {
        750 * gpus
    } else if machine_type.starts_with("a3-megagpu") || machine_type.starts_with("a3-edgegpu") {
        6000
    } else {
        0
    }
}

/// (part, region, spot) → price per unit-hour.
#[derive(Debug, Default)]
pub(crate) struct Rates(HashMap<(Part, String, bool), Money>);

/// What a SKU's description prices, if fleet uses it.
fn part_of(desc: &str) -> Option<Part> {
    let d = desc.to_ascii_lowercase();
    if d.contains("commitment") || d.contains("reserved") || d.contains("dws") || d.contains("calendar") {
        return None;
    }
    if d.contains("nvidia h100 80gb mega") {
        return None; // a3-megagpu's GPUs have SKUs of their own; not priced here
    }
    if d.contains("nvidia h100 80gb gpu") {
        return Some(Part::Gpu(GpuModel::H100Sxm));
    }
    // The billing catalog writes "Nvidia Tesla A100 80GB GPU …" (older listings without "Tesla").
    if d.contains("nvidia tesla a100 80gb gpu") || d.contains("nvidia a100 80gb gpu") {
        return Some(Part::Gpu(GpuModel::A100_80GB));
    }
    if d.starts_with("ssd backed local storage") && !d.contains("dws") {
        return Some(Part::LocalSsd);
    }
    if d.contains("nvidia tesla a100 gpu") {
        return Some(Part::Gpu(GpuModel::A100_40GB));
    }
    for fam in ["A3", "A2"] {
        let f = fam.to_ascii_lowercase();
        if d.contains(&format!("{f} instance core")) {
            return Some(Part::Core(fam));
        }
        if d.contains(&format!("{f} instance ram")) {
            return Some(Part::Ram(fam));
        }
    }
    None
}

/// `{"units": "2", "nanos": 934000000}` → $2.934 exactly.
fn money(unit_price: &Value) -> Option<Money> {
    let units: i64 = match &unit_price["units"] {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => n.as_i64()?,
        Value::Null => 0,
        _ => return None,
    };
    let nanos = unit_price["nanos"].as_i64().unwrap_or(0);
    Money::from_micros(units.checked_mul(1_000_000)?.checked_add(nanos / 1000)?).into()
}

impl Rates {
    /// Adds one page of `skus`.
    pub(crate) fn add(&mut self, skus: &Value) {
        for sku in skus.as_array().into_iter().flatten() {
            let Some(part) = sku["description"].as_str().and_then(part_of) else { continue };
            let spot = match sku["category"]["usageType"].as_str() {
                Some("OnDemand") => false,
                Some("Preemptible") => true,
                _ => continue,
            };
            let Some(rate) = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"]
                .as_array()
                .and_then(|t| t.last())
                .and_then(|r| money(&r["unitPrice"]))
            else {
                continue;
            };
            for region in sku["serviceRegions"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                self.0.insert((part, region.to_string(), spot), rate);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The offering's price from its parts, when every part has a rate in its region.
    pub(crate) fn price(&self, o: &Offering) -> Option<Price> {
        let fam: &'static str = match o.instance.name.split('-').next()? {
            "a3" => "A3",
            "a2" => "A2",
            _ => return None,
        };
        if o.instance.name.starts_with("a3-megagpu") {
            return None;
        }
        let spot = o.capacity == CapacityType::Spot;
        let rate = |p: Part| self.0.get(&(p, o.region.clone(), spot)).copied();
        let gpu = rate(Part::Gpu(o.instance.gpu))?;
        let core = rate(Part::Core(fam))?;
        let ram = rate(Part::Ram(fam))?;
        let times = |m: Money, n: u32| -> Money { std::iter::repeat_n(m, n as usize).sum() };
        let ssd_gib = bundled_local_ssd_gib(&o.instance.name);
        let ssd = if ssd_gib == 0 {
            Money::ZERO
        } else {
            let per_month = rate(Part::LocalSsd)?.micros().checked_mul(i64::from(ssd_gib))?;
            // Rounded half up, once.
            Money::from_micros((per_month + HOURS_PER_MONTH / 2) / HOURS_PER_MONTH)
        };
        Some(Price::per_hour(
            times(gpu, o.instance.gpu_count) + times(core, o.instance.vcpus) + times(ram, o.instance.memory_gib) + ssd,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_and_unit_prices() {
        assert_eq!(part_of("Nvidia H100 80GB GPU running in Americas"), Some(Part::Gpu(GpuModel::H100Sxm)));
        assert_eq!(
            part_of("Nvidia H100 80GB GPU attached to Spot Preemptible VMs running in Americas"),
            Some(Part::Gpu(GpuModel::H100Sxm))
        );
        assert_eq!(part_of("Nvidia Tesla A100 GPU running in Americas"), Some(Part::Gpu(GpuModel::A100_40GB)));
        assert_eq!(part_of("Nvidia Tesla A100 80GB GPU running in Americas"), Some(Part::Gpu(GpuModel::A100_80GB)));
        assert_eq!(
            part_of("Nvidia Tesla A100 80GB GPU attached to Spot Preemptible VMs running in Americas"),
            Some(Part::Gpu(GpuModel::A100_80GB))
        );
        assert_eq!(part_of("SSD backed Local Storage"), Some(Part::LocalSsd));
        assert_eq!(part_of("SSD backed Local Storage attached to Spot Preemptible VMs"), Some(Part::LocalSsd));
        assert_eq!(part_of("SSD backed PD Capacity"), None);
        assert_eq!(bundled_local_ssd_gib("a2-ultragpu-8g"), 3000);
        assert_eq!(bundled_local_ssd_gib("a3-highgpu-8g"), 6000);
        assert_eq!(bundled_local_ssd_gib("a3-highgpu-1g"), 750);
        assert_eq!(bundled_local_ssd_gib("a2-highgpu-1g"), 0);
        assert_eq!(part_of("A3 Instance Core running in Americas"), Some(Part::Core("A3")));
        assert_eq!(part_of("Spot Preemptible A2 Instance Ram running in Americas"), Some(Part::Ram("A2")));
        assert_eq!(part_of("Commitment v1: A3 Cpu in Americas for 1 Year"), None);
        assert_eq!(part_of("N1 Predefined Instance Core running in Americas"), None);
        assert_eq!(
            money(&serde_json::json!({"units": "2", "nanos": 934_000_000})),
            Some(Money::from_micros(2_934_000))
        );
        assert_eq!(money(&serde_json::json!({"nanos": 3_900_000})), Some(Money::from_micros(3_900)));
    }
}
