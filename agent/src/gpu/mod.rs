//! GPU discovery: the CUDA driver (through cudarc, loaded at run time) says which GPUs there are,
//! NVML (through nvml-wrapper, also loaded at run time) adds their health. On a machine without
//! the NVIDIA driver both are absent and discovery says so: "0 GPUs, CPU only".

pub mod cuda;
pub mod fit;

use fleet_core::GpuModel;
use fleet_state::model::GpuReport;
use serde::Serialize;

/// What discovery found.
#[derive(Debug, Clone, Serialize)]
pub struct Discovery {
    pub gpus: Vec<GpuReport>,
    /// The CUDA driver's version (e.g. `13.0`), when the driver is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuda_driver: Option<String>,
    /// Whether NVML answered (health fields are filled only then).
    pub nvml: bool,
    /// Why there are no GPUs, or what could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Discovery {
    pub fn summary(&self) -> String {
        if self.gpus.is_empty() {
            return "0 GPUs, CPU only".into();
        }
        let mut names: Vec<String> = Vec::new();
        for g in &self.gpus {
            names.push(g.model.clone().unwrap_or_else(|| g.name.clone()));
        }
        names.dedup();
        format!("{} GPU{}: {}", self.gpus.len(), if self.gpus.len() == 1 { "" } else { "s" }, names.join(", "))
    }
}

/// Finds the GPUs. Never panics and never fails: what cannot be read becomes a note.
pub fn discover() -> Discovery {
    let mut notes = Vec::new();
    let (mut gpus, cuda_driver) = match cuda::devices() {
        Ok((version, devs)) => (
            devs.into_iter()
                .enumerate()
                .map(|(i, d)| GpuReport {
                    index: i as u32,
                    model: model_of(&d.name, d.memory_bytes).map(|m| m.name().to_string()),
                    name: d.name,
                    memory_total_mib: d.memory_bytes / (1 << 20),
                    ..GpuReport::default()
                })
                .collect(),
            Some(version),
        ),
        Err(why) => {
            notes.push(why);
            (Vec::new(), None)
        }
    };
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(nvml) => {
            fill_from_nvml(&nvml, &mut gpus, &mut notes);
            true
        }
        Err(e) => {
            if !gpus.is_empty() {
                notes.push(format!("NVML unavailable ({e}): no temperature, utilisation or ECC figures"));
            }
            false
        }
    };
    Discovery { gpus, cuda_driver, nvml, notes }
}

fn fill_from_nvml(nvml: &nvml_wrapper::Nvml, gpus: &mut [GpuReport], notes: &mut Vec<String>) {
    use nvml_wrapper::bitmasks::device::ThrottleReasons;
    use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
    for g in gpus.iter_mut() {
        let dev = match nvml.device_by_index(g.index) {
            Ok(d) => d,
            Err(e) => {
                notes.push(format!("NVML cannot open GPU {}: {e}", g.index));
                continue;
            }
        };
        if let Ok(m) = dev.memory_info() {
            g.memory_used_mib = Some(m.used / (1 << 20));
        }
        g.utilization_pct = dev.utilization_rates().ok().map(|u| u.gpu);
        g.temperature_c = dev.temperature(TemperatureSensor::Gpu).ok();
        // Not every board has ECC turned on: absent then, not zero.
        g.ecc_uncorrected = dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).ok();
        if let Ok(r) = dev.current_throttle_reasons() {
            let named = [
                (ThrottleReasons::SW_POWER_CAP, "sw-power-cap"),
                (ThrottleReasons::HW_SLOWDOWN, "hw-slowdown"),
                (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw-thermal"),
                (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw-thermal"),
                (ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN, "hw-power-brake"),
            ];
            g.throttling = named.iter().filter(|(bit, _)| r.contains(*bit)).map(|(_, n)| n.to_string()).collect();
        }
    }
}

/// fleet's model for a name the driver reports (`NVIDIA H100 80GB HBM3`, `NVIDIA A100-SXM4-40GB`…).
pub fn model_of(name: &str, memory_bytes: u64) -> Option<GpuModel> {
    let k: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect();
    let gib = memory_bytes >> 30;
    if k.contains("H100") {
        return Some(if k.contains("NVL") {
            GpuModel::H100Nvl
        } else if k.contains("PCIE") {
            GpuModel::H100Pcie
        } else {
            // The SXM part reports itself as "H100 80GB HBM3".
            GpuModel::H100Sxm
        });
    }
    if k.contains("A100") {
        // Boards report 40 GB as ~39.4 GiB and 80 GB as ~79.1 GiB.
        return Some(if gib >= 60 || k.contains("80GB") { GpuModel::A100_80GB } else { GpuModel::A100_40GB });
    }
    None
}

/// The dense bf16 peak a GPU should come near in the burn-in, in TFLOP/s: fleet's figure for the
/// models it rents, else the data sheet's for a few others seen on clouds.
pub fn expected_bf16_tflops(name: &str, memory_bytes: u64) -> Option<f64> {
    if let Some(m) = model_of(name, memory_bytes) {
        return Some(m.facts().bf16_dense_tflops as f64);
    }
    let k = name.to_ascii_uppercase();
    // H200 and GH200: the H100 SXM's compute with more memory.
    if k.contains("H200") {
        return Some(989.0);
    }
    if k.contains("L40S") {
        return Some(362.0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_map_to_models() {
        let gib = 1u64 << 30;
        assert_eq!(model_of("NVIDIA H100 80GB HBM3", 80 * gib), Some(GpuModel::H100Sxm));
        assert_eq!(model_of("NVIDIA H100 PCIe", 80 * gib), Some(GpuModel::H100Pcie));
        assert_eq!(model_of("NVIDIA H100 NVL", 94 * gib), Some(GpuModel::H100Nvl));
        assert_eq!(model_of("NVIDIA A100-SXM4-40GB", 39 * gib), Some(GpuModel::A100_40GB));
        assert_eq!(model_of("NVIDIA A100-SXM4-80GB", 79 * gib), Some(GpuModel::A100_80GB));
        assert_eq!(model_of("NVIDIA A100 80GB PCIe", 79 * gib), Some(GpuModel::A100_80GB));
        assert_eq!(model_of("NVIDIA H200", 140 * gib), None);
        assert_eq!(expected_bf16_tflops("NVIDIA H200", 140 * gib), Some(989.0));
        assert_eq!(expected_bf16_tflops("NVIDIA H100 80GB HBM3", 80 * gib), Some(989.0));
        assert_eq!(expected_bf16_tflops("Tesla T4", 15 * gib), None);
    }

    /// This machine has no NVIDIA driver: discovery must say so, not panic.
    #[test]
    fn no_driver_means_cpu_only() {
        if cuda::driver_present() {
            eprintln!("skipped: this machine has a CUDA driver");
            return;
        }
        let d = discover();
        assert!(d.gpus.is_empty());
        assert_eq!(d.summary(), "0 GPUs, CPU only");
        assert!(d.notes.iter().any(|n| n.contains("libcuda")), "{:?}", d.notes);
    }
}
