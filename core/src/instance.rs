//! Instance types, and how each cloud's name for one maps onto a GPU model and count.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cloud::Cloud;
use crate::gpu::{GpuFamily, GpuModel};

/// How the GPUs of one instance talk to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interconnect {
    /// SXM parts on an HGX board: every GPU reaches every other over NVLink through NVSwitch.
    Nvswitch,
    /// PCIe cards paired by NVLink bridges.
    NvlinkBridge,
    /// PCIe cards with no NVLink.
    Pcie,
}

impl Interconnect {
    pub const fn name(self) -> &'static str {
        match self {
            Interconnect::Nvswitch => "nvswitch",
            Interconnect::NvlinkBridge => "nvlink-bridge",
            Interconnect::Pcie => "pcie",
        }
    }
}

impl fmt::Display for Interconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Interconnect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nvswitch" => Ok(Interconnect::Nvswitch),
            "nvlink-bridge" => Ok(Interconnect::NvlinkBridge),
            "pcie" => Ok(Interconnect::Pcie),
            _ => Err(format!("unknown interconnect '{s}'; expected nvswitch, nvlink-bridge or pcie")),
        }
    }
}

/// A machine shape a cloud sells: its name there, and what is in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceType {
    /// The cloud's own name (`p5.48xlarge`, `a3-highgpu-8g`, `Standard_ND96isr_H100_v5`, `gpu_8x_h100_sxm5`).
    pub name: String,
    pub gpu: GpuModel,
    pub gpu_count: u32,
    pub vcpus: u32,
    pub memory_gib: u32,
    /// `None` where the catalog does not say and the shape is not one fleet knows.
    pub interconnect: Option<Interconnect>,
}

/// What fleet knows about a named shape independently of any catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownShape {
    pub gpu: GpuModel,
    pub gpu_count: u32,
    pub interconnect: Option<Interconnect>,
}

const fn shape(gpu: GpuModel, gpu_count: u32, interconnect: Option<Interconnect>) -> KnownShape {
    KnownShape { gpu, gpu_count, interconnect }
}

/// The hyperscalers' GPU shapes, from their documentation. These win over a catalog's columns:
/// SkyPilot's Azure catalog says `Standard_ND96isr_H100_v5` has 12 GPUs, the VM has 8.
pub fn known_shape(cloud: Cloud, name: &str) -> Option<KnownShape> {
    use GpuModel::*;
    use Interconnect::*;
    let nvs = Some(Nvswitch);
    match cloud {
        Cloud::Aws => Some(match name {
            "p5.48xlarge" => shape(H100Sxm, 8, nvs),
            "p5.4xlarge" => shape(H100Sxm, 1, None),
            "p4d.24xlarge" => shape(A100_40GB, 8, nvs),
            "p4de.24xlarge" => shape(A100_80GB, 8, nvs),
            _ => return None,
        }),
        Cloud::Gcp => {
            // a2-highgpu-{1,2,4,8}g, a2-megagpu-16g: A100 40 GB; a2-ultragpu-{1,2,4,8}g: A100 80 GB;
            // a3-highgpu-{1,2,4,8}g, a3-megagpu-8g, a3-edgegpu-8g[-nolssd]: H100 SXM.
            let (family, rest) = name.split_once('-')?;
            let (kind, count) = rest.split_once('-')?;
            let count: u32 = count.strip_suffix("-nolssd").unwrap_or(count).strip_suffix('g')?.parse().ok()?;
            let gpu = match (family, kind) {
                ("a2", "highgpu" | "megagpu") => A100_40GB,
                ("a2", "ultragpu") => A100_80GB,
                ("a3", "highgpu" | "megagpu" | "edgegpu") => H100Sxm,
                _ => return None,
            };
            let valid = match kind {
                "megagpu" => count == 16 && family == "a2" || count == 8 && family == "a3",
                "edgegpu" => count == 8,
                _ => matches!(count, 1 | 2 | 4 | 8),
            };
            valid.then(|| shape(gpu, count, if count > 1 { nvs } else { None }))
        }
        Cloud::Azure => Some(match name {
            "Standard_ND96isr_H100_v5" => shape(H100Sxm, 8, nvs),
            "Standard_ND96asr_v4" => shape(A100_40GB, 8, nvs),
            "Standard_ND96amsr_A100_v4" => shape(A100_80GB, 8, nvs),
            "Standard_NC24ads_A100_v4" => shape(A100_80GB, 1, None),
            "Standard_NC48ads_A100_v4" => shape(A100_80GB, 2, Some(Pcie)),
            "Standard_NC96ads_A100_v4" => shape(A100_80GB, 4, Some(Pcie)),
            "Standard_NC40ads_H100_v5" | "Standard_NCC40ads_H100_v5" => shape(H100Nvl, 1, None),
            "Standard_NC80adis_H100_v5" => shape(H100Nvl, 2, Some(NvlinkBridge)),
            _ => return None,
        }),
        Cloud::Oci => Some(match name {
            "BM.GPU.H100.8" => shape(H100Sxm, 8, nvs),
            "BM.GPU.A100-v2.8" => shape(A100_80GB, 8, nvs),
            "BM.GPU4.8" => shape(A100_40GB, 8, nvs),
            _ => return None,
        }),
        _ => None,
    }
}

/// Resolves a catalog row's GPU when the shape is not a known one, from the accelerator name the
/// catalog gives, hints in the instance-type name, and the memory per GPU where the catalog says.
///
/// Rules, in order:
/// - A100: 80 GB if a name says `80G` or the memory per GPU is at least 60 GiB, else 40 GB
///   (SkyPilot's bare `A100` is the 40 GB part, but Cudo and Vast list 80 GB cards under it).
/// - H100: `NVL` (not `NVLINK`) or more than 90 GiB per GPU → NVL; `PCIE`/`PCI` → PCIe;
///   `SXM`/`MEGA` → SXM; otherwise RunPod's bare `H100` is its PCIe card (RunPod sells
///   "H100 PCIe" and "H100 SXM", which SkyPilot names `H100` and `H100-SXM`), and every other
///   bare `H100` is the SXM part, the one sold in 8-GPU HGX machines by every other cloud here.
///
/// Returns `None` for GPUs fleet does not model (V100, L4, …).
pub fn resolve_gpu(
    cloud: Cloud,
    instance_type: &str,
    accelerator: &str,
    mem_per_gpu_mib: Option<u64>,
) -> Option<GpuModel> {
    let hints = format!("{} {}", accelerator.to_ascii_uppercase(), instance_type.to_ascii_uppercase());
    let squashed: String = hints.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let acc = accelerator.to_ascii_uppercase();
    let family = if acc.contains("H100") {
        GpuFamily::H100
    } else if acc.contains("A100") {
        GpuFamily::A100
    } else {
        return None;
    };
    let mem_gib = mem_per_gpu_mib.map(|m| m / 1024);
    Some(match family {
        GpuFamily::A100 => {
            if squashed.contains("80G") || mem_gib.is_some_and(|g| g >= 60) {
                GpuModel::A100_80GB
            } else {
                GpuModel::A100_40GB
            }
        }
        GpuFamily::H100 => {
            let nvl = squashed.match_indices("NVL").any(|(i, _)| !squashed[i..].starts_with("NVLINK"));
            if nvl || mem_gib.is_some_and(|g| g > 90) {
                GpuModel::H100Nvl
            } else if squashed.contains("PCI") {
                GpuModel::H100Pcie
            } else if squashed.contains("SXM") || squashed.contains("MEGA") {
                GpuModel::H100Sxm
            } else if cloud == Cloud::Runpod {
                GpuModel::H100Pcie
            } else {
                GpuModel::H100Sxm
            }
        }
    })
}

/// The interconnect a catalog's names imply, where they imply one.
pub fn interconnect_hint(
    gpu: GpuModel,
    gpu_count: u32,
    instance_type: &str,
    accelerator: &str,
) -> Option<Interconnect> {
    if gpu_count < 2 {
        return None;
    }
    let s = format!("{instance_type} {accelerator}").to_ascii_uppercase();
    match gpu {
        GpuModel::H100Sxm => Some(Interconnect::Nvswitch),
        _ if s.contains("SXM") => Some(Interconnect::Nvswitch),
        GpuModel::H100Nvl => Some(Interconnect::NvlinkBridge),
        _ if s.contains("NVLINK") => Some(Interconnect::NvlinkBridge),
        _ if s.contains("PCI") => Some(Interconnect::Pcie),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GpuModel::*;

    #[test]
    fn same_gpu_whatever_the_cloud_calls_it() {
        // The three spellings of "8 × H100 SXM".
        let azure = known_shape(Cloud::Azure, "Standard_ND96isr_H100_v5").unwrap();
        let gcp = known_shape(Cloud::Gcp, "a3-highgpu-8g").unwrap();
        let aws = known_shape(Cloud::Aws, "p5.48xlarge").unwrap();
        for s in [azure, gcp, aws] {
            assert_eq!((s.gpu, s.gpu_count), (H100Sxm, 8));
        }
        assert_eq!(resolve_gpu(Cloud::Runpod, "8x_H100-SXM_SECURE", "H100-SXM", None), Some(H100Sxm));
        assert_eq!(resolve_gpu(Cloud::Lambda, "gpu_8x_h100_sxm5", "H100", Some(81920)), Some(H100Sxm));
    }

    #[test]
    fn gcp_shapes() {
        assert_eq!(known_shape(Cloud::Gcp, "a2-megagpu-16g").map(|s| (s.gpu, s.gpu_count)), Some((A100_40GB, 16)));
        assert_eq!(known_shape(Cloud::Gcp, "a2-ultragpu-4g").map(|s| (s.gpu, s.gpu_count)), Some((A100_80GB, 4)));
        assert_eq!(known_shape(Cloud::Gcp, "a3-edgegpu-8g-nolssd").map(|s| (s.gpu, s.gpu_count)), Some((H100Sxm, 8)));
        assert_eq!(known_shape(Cloud::Gcp, "a3-highgpu-3g"), None);
        assert_eq!(known_shape(Cloud::Gcp, "n1-standard-8"), None);
        assert_eq!(known_shape(Cloud::Gcp, "a3-megagpu-16g"), None);
    }

    #[test]
    fn a100_memory_from_names_or_sizes() {
        assert_eq!(resolve_gpu(Cloud::Lambda, "gpu_8x_a100", "A100", Some(40960)), Some(A100_40GB));
        assert_eq!(resolve_gpu(Cloud::Cudo, "epyc-genoa-a100-pcie_1x2v4gb", "A100", Some(81920)), Some(A100_80GB));
        assert_eq!(resolve_gpu(Cloud::Hyperstack, "n3-A100x1", "A100-80G-PCIe", Some(81920)), Some(A100_80GB));
        assert_eq!(resolve_gpu(Cloud::Runpod, "1x_A100-80GB_SECURE", "A100-80GB", None), Some(A100_80GB));
        assert_eq!(resolve_gpu(Cloud::Vast, "x", "A100", None), Some(A100_40GB));
    }

    #[test]
    fn h100_variants() {
        assert_eq!(resolve_gpu(Cloud::Vast, "1x-H100_NVL-32-65536", "H100", Some(95830)), Some(H100Nvl));
        assert_eq!(resolve_gpu(Cloud::Hyperstack, "n3-H100x8-NVLink", "H100-80G-PCIe-NVLink", None), Some(H100Pcie));
        assert_eq!(resolve_gpu(Cloud::Fluidstack, "H100_NVLINK_80GB::8", "H100-NVLINK", None), Some(H100Sxm));
        assert_eq!(resolve_gpu(Cloud::Lambda, "gpu_1x_h100_pcie", "H100", None), Some(H100Pcie));
        assert_eq!(resolve_gpu(Cloud::Runpod, "1x_H100_SECURE", "H100", None), Some(H100Pcie));
        assert_eq!(resolve_gpu(Cloud::Do, "gpu-h100x8-640gb", "H100", None), Some(H100Sxm));
        assert_eq!(resolve_gpu(Cloud::Gcp, "", "H100-MEGA", None), Some(H100Sxm));
        assert_eq!(resolve_gpu(Cloud::Aws, "g5.xlarge", "A10G", None), None);
    }

    #[test]
    fn interconnect_hints() {
        assert_eq!(interconnect_hint(H100Sxm, 8, "x", "H100"), Some(Interconnect::Nvswitch));
        assert_eq!(
            interconnect_hint(H100Pcie, 8, "n3-H100x8-NVLink", "H100-80G-PCIe-NVLink"),
            Some(Interconnect::NvlinkBridge)
        );
        assert_eq!(interconnect_hint(A100_80GB, 2, "A100_PCIE_80GB::2", "A100-80GB"), Some(Interconnect::Pcie));
        assert_eq!(interconnect_hint(H100Sxm, 1, "x", "H100"), None);
    }
}
