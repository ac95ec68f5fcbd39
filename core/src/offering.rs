//! Offerings: one instance type, in one place, bought one way, at one price.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::cloud::Cloud;
use crate::instance::InstanceType;
use crate::money::Price;

/// How capacity is bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    /// Pay as you go; the cloud does not take it back.
    OnDemand,
    /// Spot / preemptible / interruptible: cheaper, can be reclaimed at short notice.
    Spot,
    /// Committed or reserved capacity: paid for whether used or not.
    Reserved,
}

impl CapacityType {
    pub const ALL: [CapacityType; 3] = [CapacityType::OnDemand, CapacityType::Spot, CapacityType::Reserved];

    pub const fn name(self) -> &'static str {
        match self {
            CapacityType::OnDemand => "on-demand",
            CapacityType::Spot => "spot",
            CapacityType::Reserved => "reserved",
        }
    }
}

impl fmt::Display for CapacityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for CapacityType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "on-demand" | "ondemand" => Ok(CapacityType::OnDemand),
            "spot" | "preemptible" | "interruptible" => Ok(CapacityType::Spot),
            "reserved" => Ok(CapacityType::Reserved),
            _ => Err(format!("unknown capacity type '{s}'; expected on-demand, spot or reserved")),
        }
    }
}

/// Whether the offering can be had now, as far as fleet knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Availability {
    /// A static catalog says nothing about capacity.
    Unknown,
    /// The cloud says it has capacity (a live capacity query, such as Lambda's).
    Available,
    /// The cloud says it has none, or refused recently.
    Unavailable { reason: String },
}

/// Where a price came from and when it was true.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Source {
    /// For example `skypilot-catalog v8 aws/vms.csv @00148f2` or `aws pricing api`.
    pub name: String,
    pub as_of: NaiveDate,
}

/// An instance type that can be rented in one place, one way, at one price.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Offering {
    pub cloud: Cloud,
    /// Normalised region name (see [`crate::names::slug`]).
    pub region: String,
    /// Normalised zone or datacenter, where the cloud has them.
    pub zone: Option<String>,
    pub instance: InstanceType,
    pub capacity: CapacityType,
    /// The price of the whole instance per hour.
    pub price: Price,
    pub source: Source,
    pub availability: Availability,
}

/// Identifies an offering independently of its price (for "unavailable" caches and indexes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OfferingKey {
    pub cloud: Cloud,
    pub region: String,
    pub zone: Option<String>,
    pub instance_type: String,
    pub capacity: CapacityType,
}

impl fmt::Display for OfferingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cloud, self.region)?;
        if let Some(z) = &self.zone {
            write!(f, "/{z}")?;
        }
        write!(f, "/{}/{}", self.instance_type, self.capacity)
    }
}

impl Offering {
    /// The price of one GPU-hour on this offering.
    pub fn price_per_gpu(&self) -> Price {
        self.price.per_gpu(self.instance.gpu_count)
    }

    /// Its price per hour of H100 work ([`crate::GpuModel::work_price`]).
    pub fn work_price(&self) -> Price {
        self.instance.gpu.work_price(self.price)
    }

    pub fn key(&self) -> OfferingKey {
        OfferingKey {
            cloud: self.cloud,
            region: self.region.clone(),
            zone: self.zone.clone(),
            instance_type: self.instance.name.clone(),
            capacity: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuModel;
    use crate::instance::Interconnect;

    #[test]
    fn per_gpu_price_and_key() {
        let o = Offering {
            cloud: Cloud::Aws,
            region: "us-east-1".into(),
            zone: Some("use1-az6".into()),
            instance: InstanceType {
                name: "p5.48xlarge".into(),
                gpu: GpuModel::H100Sxm,
                gpu_count: 8,
                vcpus: 192,
                memory_gib: 2048,
                interconnect: Some(Interconnect::Nvswitch),
            },
            capacity: CapacityType::OnDemand,
            price: Price::parse_decimal("98.32").unwrap(),
            source: Source { name: "test".into(), as_of: NaiveDate::from_ymd_opt(2026, 11, 25).unwrap() },
            availability: Availability::Unknown,
        };
        assert_eq!(o.price_per_gpu(), Price::parse_decimal("12.29").unwrap());
        assert_eq!(o.key().to_string(), "aws/us-east-1/use1-az6/p5.48xlarge/on-demand");
    }

    #[test]
    fn capacity_type_parses() {
        assert_eq!("On_Demand".parse::<CapacityType>().unwrap(), CapacityType::OnDemand);
        assert_eq!("preemptible".parse::<CapacityType>().unwrap(), CapacityType::Spot);
        assert!("cheap".parse::<CapacityType>().unwrap_err().contains("expected on-demand, spot or reserved"));
    }
}
