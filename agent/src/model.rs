//! The inference workload: a multilayer perceptron read from a safetensors file and run with
//! candle (CUDA when built with the `cuda` feature and a GPU is there, else CPU).
//!
//! File layout: `layers.{i}.weight` (out × in) and `layers.{i}.bias` (out) for i = 0, 1, …;
//! ReLU between layers, none after the last. A request's input is `{"x": [..]}` (one vector) or
//! `{"x": [[..], ..]}` (a batch); the output is `{"y": ..}` in the same shape.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model {path}: {why}")]
    Read { path: String, why: String },
    #[error("model {path} is not a layered MLP: {why}")]
    Layout { path: String, why: String },
    #[error("bad request input: {0}")]
    Input(String),
    #[error("inference failed: {0}")]
    Compute(String),
}

pub struct Mlp {
    layers: Vec<(Tensor, Tensor)>,
    device: Device,
}

impl std::fmt::Debug for Mlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mlp").field("dims", &self.dims()).field("device", &self.device).finish()
    }
}

/// Starts this process again with `RAYON_NUM_THREADS` set, when it is not, to the thread count
/// candle would use anyway; returns only if it is set already or the restart failed.
///
/// Why: candle asks how many threads to use on every CPU matrix product, and without the variable
/// the answer comes from `num_cpus::get_physical()`, which reads and parses /proc/cpuinfo each
/// time. That was 40% of a small model's CPU decode (`cargo bench -p fleet-agent --bench llm`:
/// 159 → 258–289 tokens/s with it set), more on machines with many cores (a longer file). The
/// variable can only be set safely before the process has threads, hence the exec (same pid, same
/// arguments) at the top of `main`, before anything else runs.
pub fn set_cpu_threads() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let threads = candle_core::utils::get_num_threads();
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("RAYON_NUM_THREADS", threads.to_string())
        .exec();
    eprintln!("could not restart with RAYON_NUM_THREADS={threads} ({err}); going on without it");
}

/// The device runners use: the first GPU when candle was built with CUDA and one is there.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if crate::gpu::cuda::driver_present()
        && let Ok(d) = Device::new_cuda(0)
    {
        return d;
    }
    Device::Cpu
}

impl Mlp {
    pub fn load(path: &Path, device: &Device) -> Result<Mlp, ModelError> {
        let p = path.display().to_string();
        let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(path, device)
            .map_err(|e| ModelError::Read { path: p.clone(), why: e.to_string() })?;
        let layout = |why: String| ModelError::Layout { path: p.clone(), why };
        let mut layers = Vec::new();
        for i in 0.. {
            let (Some(w), Some(b)) =
                (tensors.remove(&format!("layers.{i}.weight")), tensors.remove(&format!("layers.{i}.bias")))
            else {
                break;
            };
            let w = w.to_dtype(DType::F32).map_err(|e| layout(e.to_string()))?;
            let b = b.to_dtype(DType::F32).map_err(|e| layout(e.to_string()))?;
            let (out, inp) =
                w.dims2().map_err(|_| layout(format!("layers.{i}.weight must be 2-D, is {:?}", w.dims())))?;
            if b.dims() != [out] {
                return Err(layout(format!("layers.{i}.bias must be [{out}], is {:?}", b.dims())));
            }
            if let Some((prev, _)) = layers.last() {
                let prev: &Tensor = prev;
                let prev_out = prev.dims()[0];
                if prev_out != inp {
                    return Err(layout(format!("layers.{i} takes {inp} inputs but layers.{} gives {prev_out}", i - 1)));
                }
            }
            layers.push((w, b));
        }
        if layers.is_empty() {
            return Err(layout("no layers.0.weight / layers.0.bias tensors".into()));
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(layout(format!("unexpected tensor '{extra}' (layers must be numbered from 0 without gaps)")));
        }
        Ok(Mlp { layers, device: device.clone() })
    }

    /// Input size, then each layer's output size.
    pub fn dims(&self) -> Vec<usize> {
        let mut d = vec![self.layers[0].0.dims()[1]];
        d.extend(self.layers.iter().map(|(w, _)| w.dims()[0]));
        d
    }

    pub fn forward(&self, batch: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let inp = self.dims()[0];
        if batch.is_empty() {
            return Err(ModelError::Input("empty batch".into()));
        }
        if let Some(bad) = batch.iter().find(|r| r.len() != inp) {
            return Err(ModelError::Input(format!("this model takes {inp} numbers per input, got {}", bad.len())));
        }
        let c = |e: candle_core::Error| ModelError::Compute(e.to_string());
        let flat: Vec<f32> = batch.iter().flatten().copied().collect();
        let mut x = Tensor::from_vec(flat, (batch.len(), inp), &self.device).map_err(c)?;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            x = x.matmul(&w.t().map_err(c)?).map_err(c)?.broadcast_add(b).map_err(c)?;
            if i + 1 < self.layers.len() {
                x = x.relu().map_err(c)?;
            }
        }
        x.to_vec2::<f32>().map_err(c)
    }

    /// Serves one request body.
    pub fn infer(&self, input: &Value) -> Result<Value, ModelError> {
        let x = input
            .get("x")
            .ok_or_else(|| ModelError::Input("expected {\"x\": [numbers]} or {\"x\": [[numbers], ...]}".into()))?;
        let num =
            |v: &Value| v.as_f64().map(|f| f as f32).ok_or_else(|| ModelError::Input(format!("not a number: {v}")));
        let arr = x.as_array().ok_or_else(|| ModelError::Input("\"x\" must be an array".into()))?;
        if arr.first().is_some_and(Value::is_array) {
            let batch = arr
                .iter()
                .map(|r| r.as_array().ok_or_else(|| ModelError::Input("mixed rows".into()))?.iter().map(num).collect())
                .collect::<Result<Vec<Vec<f32>>, _>>()?;
            Ok(json!({ "y": self.forward(&batch)? }))
        } else {
            let row = arr.iter().map(num).collect::<Result<Vec<f32>, _>>()?;
            let mut y = self.forward(&[row])?;
            Ok(json!({ "y": y.remove(0) }))
        }
    }
}

/// Writes an MLP with the given layer sizes and deterministic pseudo-random weights (for tests,
/// demos and `fleet-agent make-model`).
pub fn write_mlp(path: &Path, dims: &[usize], seed: u64) -> Result<(), ModelError> {
    let p = path.display().to_string();
    if dims.len() < 2 || dims.contains(&0) {
        return Err(ModelError::Layout { path: p, why: "need at least an input and an output size, none zero".into() });
    }
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut tensors = HashMap::new();
    for (i, pair) in dims.windows(2).enumerate() {
        let (inp, out) = (pair[0], pair[1]);
        let w: Vec<f32> = (0..inp * out).map(|_| next()).collect();
        let b: Vec<f32> = (0..out).map(|_| next()).collect();
        let e = |e: candle_core::Error| ModelError::Compute(e.to_string());
        tensors.insert(format!("layers.{i}.weight"), Tensor::from_vec(w, (out, inp), &Device::Cpu).map_err(e)?);
        tensors.insert(format!("layers.{i}.bias"), Tensor::from_vec(b, out, &Device::Cpu).map_err(e)?);
    }
    candle_core::safetensors::save(&tensors, path).map_err(|e| ModelError::Read { path: p, why: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model written by hand: y = W2 · relu(W1 · x + b1) + b2, checked against arithmetic.
    #[test]
    fn forward_matches_hand_computation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut t = HashMap::new();
        let d = Device::Cpu;
        t.insert("layers.0.weight".to_string(), Tensor::new(&[[1f32, 2.0], [-1.0, 0.5], [0.0, 1.0]], &d).unwrap());
        t.insert("layers.0.bias".to_string(), Tensor::new(&[0.5f32, 0.0, -10.0], &d).unwrap());
        t.insert("layers.1.weight".to_string(), Tensor::new(&[[1f32, 1.0, 1.0]], &d).unwrap());
        t.insert("layers.1.bias".to_string(), Tensor::new(&[0.25f32], &d).unwrap());
        candle_core::safetensors::save(&t, &path).unwrap();
        let m = Mlp::load(&path, &Device::Cpu).unwrap();
        assert_eq!(m.dims(), vec![2, 3, 1]);
        // x = (3, 4): h = relu(3+8+0.5, -3+2, 4-10) = (11.5, 0, 0); y = 11.5 + 0.25.
        let y = m.infer(&json!({"x": [3.0, 4.0]})).unwrap();
        assert_eq!(y, json!({"y": [11.75]}));
        let y = m.infer(&json!({"x": [[3.0, 4.0], [0.0, 0.0]]})).unwrap();
        // x = 0: h = relu(0.5, 0, -10) = (0.5, 0, 0); y = 0.75.
        assert_eq!(y, json!({"y": [[11.75], [0.75]]}));
    }

    #[test]
    fn written_models_load_and_bad_input_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write_mlp(&path, &[4, 16, 2], 7).unwrap();
        let m = Mlp::load(&path, &Device::Cpu).unwrap();
        assert_eq!(m.dims(), vec![4, 16, 2]);
        let y = m.infer(&json!({"x": [1, 2, 3, 4]})).unwrap();
        assert_eq!(y["y"].as_array().unwrap().len(), 2);
        let e = m.infer(&json!({"x": [1, 2]})).unwrap_err().to_string();
        assert!(e.contains("takes 4 numbers per input, got 2"), "{e}");
        let e = m.infer(&json!({"z": 1})).unwrap_err().to_string();
        assert!(e.contains("expected {\"x\""), "{e}");
    }

    #[test]
    fn a_file_that_is_not_an_mlp_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut t = HashMap::new();
        t.insert("layers.0.weight".to_string(), Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap());
        t.insert("layers.0.bias".to_string(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
        t.insert("layers.1.weight".to_string(), Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap());
        t.insert("layers.1.bias".to_string(), Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap());
        candle_core::safetensors::save(&t, &path).unwrap();
        let e = Mlp::load(&path, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("layers.1 takes 4 inputs but layers.0 gives 3"), "{e}");
        std::fs::write(&path, b"not safetensors").unwrap();
        assert!(Mlp::load(&path, &Device::Cpu).unwrap_err().to_string().contains("cannot read model"));
    }
}
