//! GPU models and the facts about them that decisions use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names;

/// A GPU model as sold. Variants differ in memory, power and interconnect, and so in throughput
/// and price; a request for "H100" must be able to tell an SXM part from a PCIe card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GpuModel {
    /// A100 40 GB (SXM4 or PCIe). SkyPilot's plain `A100`.
    A100_40GB,
    /// A100 80 GB (SXM4 or PCIe).
    A100_80GB,
    /// H100 PCIe card, 80 GB, 350 W.
    H100Pcie,
    /// H100 SXM5 (HGX boards), 80 GB, 700 W: what AWS p5, GCP a3, Azure ND H100 v5 sell.
    H100Sxm,
    /// H100 NVL, 94 GB PCIe card (Azure NCads H100 v5, some marketplaces).
    H100Nvl,
}

/// The family a user usually means when they type `H100` or `A100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GpuFamily {
    A100,
    H100,
}

/// Facts from NVIDIA's data sheets. Throughput is dense (no structured sparsity) BF16 tensor-core
/// peak; memory is the usable HBM size in GB as marketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuFacts {
    pub memory_gb: u32,
    pub bf16_dense_tflops: u32,
    pub tdp_watts: u32,
}

impl GpuModel {
    pub const ALL: [GpuModel; 5] =
        [GpuModel::A100_40GB, GpuModel::A100_80GB, GpuModel::H100Pcie, GpuModel::H100Sxm, GpuModel::H100Nvl];

    /// Canonical name, used in specs, CLIs, JSON and the built-in catalog.
    pub const fn name(self) -> &'static str {
        match self {
            GpuModel::A100_40GB => "A100-40GB",
            GpuModel::A100_80GB => "A100-80GB",
            GpuModel::H100Pcie => "H100-PCIe",
            GpuModel::H100Sxm => "H100-SXM",
            GpuModel::H100Nvl => "H100-NVL",
        }
    }

    pub const fn family(self) -> GpuFamily {
        match self {
            GpuModel::A100_40GB | GpuModel::A100_80GB => GpuFamily::A100,
            GpuModel::H100Pcie | GpuModel::H100Sxm | GpuModel::H100Nvl => GpuFamily::H100,
        }
    }

    /// Data-sheet facts: A100 (312 TFLOP/s BF16, 400 W SXM4), H100 SXM5 (989, 700 W),
    /// H100 PCIe (756, 350 W), H100 NVL (835, 400 W, 94 GB).
    pub const fn facts(self) -> GpuFacts {
        match self {
            GpuModel::A100_40GB => GpuFacts { memory_gb: 40, bf16_dense_tflops: 312, tdp_watts: 400 },
            GpuModel::A100_80GB => GpuFacts { memory_gb: 80, bf16_dense_tflops: 312, tdp_watts: 400 },
            GpuModel::H100Pcie => GpuFacts { memory_gb: 80, bf16_dense_tflops: 756, tdp_watts: 350 },
            GpuModel::H100Sxm => GpuFacts { memory_gb: 80, bf16_dense_tflops: 989, tdp_watts: 700 },
            GpuModel::H100Nvl => GpuFacts { memory_gb: 94, bf16_dense_tflops: 835, tdp_watts: 400 },
        }
    }

    pub const fn memory_gb(self) -> u32 {
        self.facts().memory_gb
    }

    pub const fn bf16_dense_tflops(self) -> u32 {
        self.facts().bf16_dense_tflops
    }

    /// What `price` (for an hour of this GPU, or of a node of them) pays per hour of H100 work:
    /// the price scaled by the H100-SXM's bf16 TFLOP/s over its family's fastest part's (the
    /// price itself for any H100; an A100 at $1.19/h does an H100's hour of work for $3.77).
    /// Placement compares offerings by it, so an app allowing `["H100", "A100-80GB"]` weighs
    /// that an A100 runner serves about a third of an H100 runner's requests; what is billed and
    /// budgeted stays the price. Within a family (`H100` = SXM, PCIe or NVL) offerings compare
    /// by price as before: the variants' gap (0.76–1×) is small beside their price differences,
    /// and where load is light it changes no runner count (fleetsim's `poisson-on-demand`, two
    /// runners: ranking H100-PCIe by its speed costs 21% more). Truncated to the micro-dollar.
    pub fn work_price(self, price: crate::Price) -> crate::Price {
        let sxm = i128::from(GpuModel::H100Sxm.bf16_dense_tflops());
        crate::Price::per_hour(crate::Money::from_micros_saturating(
            i128::from(price.hourly().micros()) * sxm / i128::from(self.family_tflops()),
        ))
    }

    /// How much of an H100's work this GPU does in the same time, in thousandths, by the same
    /// rule as [`Self::work_price`] (its family's fastest part's bf16 TFLOP/s over the
    /// H100-SXM's): 1000 for any H100, 315 for an A100. The autoscaler measures service times in
    /// H100 work with it, so requests served on both families size runners of either right.
    pub fn work_milli(self) -> u32 {
        let sxm = GpuModel::H100Sxm.bf16_dense_tflops();
        u32::try_from(u64::from(self.family_tflops()) * 1000 / u64::from(sxm)).unwrap_or(u32::MAX)
    }

    /// The bf16 TFLOP/s of this GPU's family's fastest part (at least 1).
    fn family_tflops(self) -> u32 {
        self.family().models().map(|m| m.bf16_dense_tflops()).max().unwrap_or(1).max(1)
    }
}

impl GpuFamily {
    pub const fn name(self) -> &'static str {
        match self {
            GpuFamily::A100 => "A100",
            GpuFamily::H100 => "H100",
        }
    }

    pub fn models(self) -> impl Iterator<Item = GpuModel> {
        GpuModel::ALL.into_iter().filter(move |m| m.family() == self)
    }
}

impl fmt::Display for GpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl fmt::Display for GpuFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for GpuModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GpuModel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a user asks for: an exact model (`H100-SXM`) or any model of a family (`H100`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuSelector {
    Family(GpuFamily),
    Model(GpuModel),
}

impl GpuSelector {
    pub fn matches(self, m: GpuModel) -> bool {
        match self {
            GpuSelector::Family(f) => m.family() == f,
            GpuSelector::Model(x) => m == x,
        }
    }

    /// Every name a selector can be written as, canonical ones first (for suggestions).
    pub fn known_names() -> Vec<&'static str> {
        let mut v: Vec<&'static str> = vec!["A100", "H100"];
        v.extend(GpuModel::ALL.map(GpuModel::name));
        v
    }
}

impl fmt::Display for GpuSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuSelector::Family(x) => f.pad(x.name()),
            GpuSelector::Model(m) => f.pad(m.name()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown GPU '{input}'{}; known GPUs: {}", suggestion.map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default(), GpuSelector::known_names().join(", "))]
pub struct UnknownGpu {
    pub input: String,
    pub suggestion: Option<&'static str>,
}

/// Upper-case alphanumerics only: `h100_sxm5` → `H100SXM5`, `A100-80G-PCIe` → `A10080GPCIE`.
fn squash(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// Recognises a model name as users and catalogs write it. `A100` alone is a family here; the
/// catalog importer, which sees memory sizes, resolves SkyPilot's bare `A100` itself.
fn parse_model_name(s: &str) -> Option<GpuModel> {
    let k = squash(s);
    let k = k.strip_prefix("NVIDIA").unwrap_or(&k);
    Some(match k {
        "A10040GB" | "A10040G" | "A100SXM440GB" | "A100PCIE40GB" => GpuModel::A100_40GB,
        "A10080GB" | "A10080G" | "A10080GBSXM" | "A10080GBPCIE" | "A10080GPCIE" | "A100SXM480GB" => GpuModel::A100_80GB,
        "H100PCIE" | "H10080GPCIE" | "H100PCIE80GB" => GpuModel::H100Pcie,
        "H100SXM" | "H100SXM5" | "H10080GSXM5" | "H100SXM80GB" | "H100MEGA" => GpuModel::H100Sxm,
        "H100NVL" | "H100NVL94GB" => GpuModel::H100Nvl,
        _ => return None,
    })
}

impl FromStr for GpuModel {
    type Err = UnknownGpu;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_model_name(s).ok_or_else(|| UnknownGpu {
            input: s.to_string(),
            suggestion: names::closest(s, GpuModel::ALL.map(GpuModel::name)),
        })
    }
}

impl FromStr for GpuSelector {
    type Err = UnknownGpu;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match squash(s).as_str() {
            "A100" | "NVIDIAA100" => return Ok(GpuSelector::Family(GpuFamily::A100)),
            "H100" | "NVIDIAH100" => return Ok(GpuSelector::Family(GpuFamily::H100)),
            _ => {}
        }
        parse_model_name(s).map(GpuSelector::Model).ok_or_else(|| UnknownGpu {
            input: s.to_string(),
            suggestion: names::closest(s, GpuSelector::known_names()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_round_trip() {
        for m in GpuModel::ALL {
            assert_eq!(m.name().parse::<GpuModel>().unwrap(), m);
            assert_eq!(m.name().parse::<GpuSelector>().unwrap(), GpuSelector::Model(m));
            assert_eq!(serde_json::from_str::<GpuModel>(&serde_json::to_string(&m).unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn vendor_spellings() {
        assert_eq!("h100_sxm5".parse::<GpuModel>().unwrap(), GpuModel::H100Sxm);
        assert_eq!("H100-80G-PCIe".parse::<GpuModel>().unwrap(), GpuModel::H100Pcie);
        assert_eq!("A100-80GB-SXM".parse::<GpuModel>().unwrap(), GpuModel::A100_80GB);
        assert_eq!("NVIDIA H100 NVL".parse::<GpuModel>().unwrap(), GpuModel::H100Nvl);
        assert_eq!("h100".parse::<GpuSelector>().unwrap(), GpuSelector::Family(GpuFamily::H100));
    }

    #[test]
    fn families_select_their_models() {
        let h = GpuSelector::Family(GpuFamily::H100);
        assert!(h.matches(GpuModel::H100Sxm) && h.matches(GpuModel::H100Pcie) && h.matches(GpuModel::H100Nvl));
        assert!(!h.matches(GpuModel::A100_80GB));
        assert_eq!(GpuFamily::A100.models().count(), 2);
        assert!(GpuSelector::Model(GpuModel::H100Sxm).matches(GpuModel::H100Sxm));
        assert!(!GpuSelector::Model(GpuModel::H100Sxm).matches(GpuModel::H100Pcie));
    }

    #[test]
    fn facts_are_ordered_as_the_data_sheets_say() {
        assert!(GpuModel::H100Sxm.bf16_dense_tflops() > GpuModel::H100Nvl.bf16_dense_tflops());
        // An hour of H100 work: the price itself on any H100, about 3.2× on an A100.
        let p = crate::Price::parse_decimal("1.19").unwrap();
        for h100 in GpuFamily::H100.models() {
            assert_eq!(h100.work_price(p), p);
        }
        for a100 in GpuFamily::A100.models() {
            assert_eq!(a100.work_price(p), crate::Price::parse_decimal("3.772147").unwrap());
            // The same rule in thousandths of an H100's work: 312 / 989 TFLOP/s.
            assert_eq!(a100.work_milli(), 315);
        }
        assert!(GpuFamily::H100.models().all(|m| m.work_milli() == 1000));
        assert!(GpuModel::H100Nvl.bf16_dense_tflops() > GpuModel::H100Pcie.bf16_dense_tflops());
        assert!(GpuModel::H100Pcie.bf16_dense_tflops() > GpuModel::A100_80GB.bf16_dense_tflops());
        assert_eq!(GpuModel::H100Nvl.memory_gb(), 94);
        assert_eq!(GpuModel::A100_40GB.memory_gb(), 40);
    }

    #[test]
    fn unknown_gpu_suggests_the_closest_name() {
        let e = "H10".parse::<GpuSelector>().unwrap_err();
        assert_eq!(e.suggestion, Some("H100"));
        assert!(e.to_string().contains("did you mean 'H100'"), "{e}");
        let e = "H100-SMX".parse::<GpuSelector>().unwrap_err();
        assert_eq!(e.suggestion, Some("H100-SXM"));
        let e = "V100".parse::<GpuSelector>().unwrap_err();
        assert!(e.to_string().contains("known GPUs: A100, H100, A100-40GB"), "{e}");
    }
}
