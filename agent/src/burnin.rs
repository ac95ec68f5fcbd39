//! The burn-in: dense matrix multiplies that must reach a share of what the device should do
//! before the node takes work. A GPU far below its model's peak (a bad board, a throttled or
//! misconfigured machine) is reported unhealthy rather than sold to requests.
//!
//! GPUs run bf16 products through cuBLAS (cudarc, loaded at run time: no CUDA needed to build);
//! CPUs run f32 products through candle.

use std::time::Instant;

use candle_core::{Device, Tensor};
use fleet_core::Time;
use fleet_state::model::{BurnInReport, GpuReport};
use serde::{Deserialize, Serialize};

use crate::gpu::{self, Discovery};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BurnInConfig {
    /// Matrix side on CPUs.
    pub cpu_size: usize,
    /// Matrix side on GPUs (8192: big enough to keep an H100's tensor cores busy).
    pub gpu_size: usize,
    /// Timed products (after warm-up).
    pub iterations: u32,
    pub gpu_iterations: u32,
    /// A GPU passes at this share of its model's dense bf16 peak.
    pub min_fraction_of_peak: f64,
    /// A GPU fleet has no figure for passes above this.
    pub min_unknown_gpu_tflops: f64,
    /// A CPU-only node (the local provider) passes above this.
    pub min_cpu_tflops: f64,
}

impl Default for BurnInConfig {
    fn default() -> Self {
        BurnInConfig {
            cpu_size: 1024,
            gpu_size: 8192,
            iterations: 4,
            gpu_iterations: 50,
            min_fraction_of_peak: 0.5,
            min_unknown_gpu_tflops: 10.0,
            min_cpu_tflops: 0.001,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BurnInError {
    #[error("burn-in on {device} could not run: {why}")]
    Failed { device: String, why: String },
    #[error("burn-in config: {0}")]
    Config(String),
}

impl BurnInConfig {
    pub fn validate(&self) -> Result<(), BurnInError> {
        let bad = |m: &str| Err(BurnInError::Config(m.into()));
        if self.cpu_size == 0 || self.gpu_size == 0 {
            return bad("cpu_size and gpu_size must be at least 1");
        }
        if self.iterations == 0 || self.gpu_iterations == 0 {
            return bad("iterations and gpu_iterations must be at least 1");
        }
        if !(self.min_fraction_of_peak > 0.0 && self.min_fraction_of_peak <= 1.0) {
            return bad("min_fraction_of_peak must be in (0, 1]");
        }
        Ok(())
    }
}

/// f32 products of `n` × `n` matrices on the CPU with candle; TFLOP/s.
pub fn cpu_tflops(n: usize, iters: u32) -> Result<f64, BurnInError> {
    let fail = |e: candle_core::Error| BurnInError::Failed { device: "cpu".into(), why: e.to_string() };
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).map_err(fail)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu).map_err(fail)?;
    // Warm-up (thread pool, caches), then the timed products.
    let mut c = a.matmul(&b).map_err(fail)?;
    let t = Instant::now();
    for _ in 0..iters {
        c = a.matmul(&b).map_err(fail)?;
    }
    let secs = t.elapsed().as_secs_f64();
    // Keep the result alive until here (and check it is a number, as a sanity check).
    let probe: f32 = c.get(0).and_then(|r| r.get(0)).and_then(|x| x.to_scalar()).map_err(fail)?;
    if !probe.is_finite() {
        return Err(BurnInError::Failed { device: "cpu".into(), why: "the product is not a number".into() });
    }
    Ok(2.0 * (n as f64).powi(3) * iters as f64 / secs / 1e12)
}

/// Runs the burn-in on every GPU discovery found, or on the CPU when there is none.
pub fn run(discovery: &Discovery, cfg: &BurnInConfig, now: Time) -> Result<Vec<BurnInReport>, BurnInError> {
    cfg.validate()?;
    if discovery.gpus.is_empty() {
        let tflops = cpu_tflops(cfg.cpu_size, cfg.iterations)?;
        return Ok(vec![BurnInReport {
            device: "cpu".into(),
            dtype: "f32".into(),
            size: cfg.cpu_size,
            iterations: cfg.iterations,
            tflops,
            expected_tflops: None,
            required_tflops: cfg.min_cpu_tflops,
            passed: tflops >= cfg.min_cpu_tflops,
            at: now,
        }]);
    }
    discovery.gpus.iter().map(|g| gpu_burn_in(g, cfg, now)).collect()
}

fn gpu_burn_in(g: &GpuReport, cfg: &BurnInConfig, now: Time) -> Result<BurnInReport, BurnInError> {
    let device = format!("cuda:{}", g.index);
    let tflops = gpu::cuda::gemm_bf16_tflops(g.index as usize, cfg.gpu_size, cfg.gpu_iterations)
        .map_err(|why| BurnInError::Failed { device: device.clone(), why })?;
    let expected = gpu::expected_bf16_tflops(&g.name, g.memory_total_mib << 20);
    let required = expected.map(|e| e * cfg.min_fraction_of_peak).unwrap_or(cfg.min_unknown_gpu_tflops);
    Ok(BurnInReport {
        device,
        dtype: "bf16".into(),
        size: cfg.gpu_size,
        iterations: cfg.gpu_iterations,
        tflops,
        expected_tflops: expected,
        required_tflops: required,
        passed: tflops >= required,
        at: now,
    })
}

/// The verdict over all devices: Ok, or the reason the node must not serve.
pub fn verdict(reports: &[BurnInReport]) -> Result<(), String> {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            format!(
                "{} reached {:.3} TFLOP/s, below the required {:.3}{}",
                r.device,
                r.tflops,
                r.required_tflops,
                r.expected_tflops
                    .map(|e| format!(" ({:.0}% of its {e:.0} TFLOP/s peak)", 100.0 * r.tflops / e))
                    .unwrap_or_default()
            )
        })
        .collect();
    if failed.is_empty() { Ok(()) } else { Err(format!("burn-in failed: {}", failed.join("; "))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_burn_in_measures_something_and_passes_a_low_bar() {
        let d = Discovery { gpus: vec![], cuda_driver: None, nvml: false, notes: vec![] };
        let cfg = BurnInConfig { cpu_size: 128, iterations: 2, ..BurnInConfig::default() };
        let r = run(&d, &cfg, chrono::Utc::now()).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].device, "cpu");
        assert!(r[0].tflops > 0.0 && r[0].tflops.is_finite());
        assert!(r[0].passed);
        assert!(verdict(&r).is_ok());
    }

    #[test]
    fn an_impossible_bar_fails_with_the_figures() {
        let d = Discovery { gpus: vec![], cuda_driver: None, nvml: false, notes: vec![] };
        let cfg = BurnInConfig { cpu_size: 64, iterations: 1, min_cpu_tflops: 1e9, ..BurnInConfig::default() };
        let r = run(&d, &cfg, chrono::Utc::now()).unwrap();
        let why = verdict(&r).unwrap_err();
        assert!(why.contains("cpu reached") && why.contains("below the required"), "{why}");
    }

    #[test]
    fn a_slow_gpu_is_reported_against_its_peak() {
        let r = BurnInReport {
            device: "cuda:0".into(),
            dtype: "bf16".into(),
            size: 8192,
            iterations: 50,
            tflops: 120.0,
            expected_tflops: Some(989.0),
            required_tflops: 494.5,
            passed: false,
            at: chrono::Utc::now(),
        };
        let why = verdict(&[r]).unwrap_err();
        assert!(why.contains("12% of its 989 TFLOP/s peak"), "{why}");
    }

    #[test]
    fn bad_config_is_refused() {
        let cfg = BurnInConfig { min_fraction_of_peak: 1.5, ..BurnInConfig::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("min_fraction_of_peak"));
    }
}
