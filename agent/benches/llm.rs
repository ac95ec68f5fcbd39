//! Decoding speed of the LLM runner against the memory-bandwidth roofline, measured in the same
//! run (a bench binary: whole-model figures, not criterion samples).
//!
//! `cargo bench -p fleet-agent --bench llm` (CPU, f32, a ~25M-parameter Llama-shaped model), or
//! `FLEET_LLM_BENCH_SHAPE=1b|8b` for TinyLlama-1.1B- and Llama-3-8B-shaped models (random
//! weights; bf16 on CUDA when built with `--features cuda`: `scripts/gpu-check`).
//!
//! Decoding one token reads every weight once, so a single sequence cannot decode faster than
//! memory bandwidth ÷ weight bytes: the roofline. The bandwidth is measured here, on the device
//! the model runs on (a large tensor copied on it: bytes read + written ÷ time); the decode rate
//! is tokens generated ÷ time after the first token (the prompt's prefill excluded). The ratio
//! says how much of the machine the runner uses.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use fleet_agent::llm::testmodel::{self, Shape};
use fleet_agent::llm::{Family, Llm, Params};

fn shape(name: &str) -> Shape {
    match name {
        "small" => Shape { hidden: 512, intermediate: 1376, layers: 8, heads: 8, kv_heads: 8, max_positions: 512 },
        // TinyLlama 1.1B's body (the test tokenizer's small vocabulary instead of 32k words).
        "1b" => Shape { hidden: 2048, intermediate: 5632, layers: 22, heads: 32, kv_heads: 4, max_positions: 512 },
        // Llama 3 8B's body.
        "8b" => Shape { hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kv_heads: 8, max_positions: 512 },
        other => panic!("FLEET_LLM_BENCH_SHAPE={other}: use small, 1b or 8b"),
    }
}

fn sync(device: &Device) {
    device.synchronize().expect("device synchronize");
}

/// Bytes per second read + written by a copy of a large tensor on `device`.
fn bandwidth(device: &Device) -> f64 {
    let n = 256 * 1024 * 1024 / 4; // 256 MiB of f32
    let t = Tensor::ones(n, DType::F32, device).unwrap();
    let mut best = 0f64;
    for _ in 0..5 {
        sync(device);
        let start = Instant::now();
        let c = (&t * 1.0).unwrap();
        sync(device);
        let s = start.elapsed().as_secs_f64();
        drop(c);
        best = best.max(2.0 * (n * 4) as f64 / s);
    }
    best
}

fn main() {
    let name = std::env::var("FLEET_LLM_BENCH_SHAPE").unwrap_or_else(|_| "small".into());
    let device = fleet_agent::model::device();
    let dtype = if device.is_cuda() { DType::BF16 } else { DType::F32 };
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    testmodel::write_as(dir.path(), Family::Llama, shape(&name), 1, 1, dtype).unwrap();
    let bytes = std::fs::metadata(dir.path().join("model.safetensors")).unwrap().len() as f64;
    eprintln!("wrote a {name} model ({:.2} GB of {dtype:?} weights) in {:.1} s", bytes / 1e9, t.elapsed().as_secs_f64());
    let t = Instant::now();
    let llm = Llm::load(dir.path(), &device).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    let bw = bandwidth(&device);
    let roofline = bw / bytes;
    let prompt = llm.tokenize("the fleet rents gpus across clouds and keeps them busy").unwrap();
    let max_tokens = if name == "small" { 64 } else { 32 };
    // Greedy until max_tokens; the timing excludes the prompt (prefill and first token).
    let mut seq = llm.start(prompt.clone(), &Params { max_tokens, ..Params::default() }).unwrap();
    let t = Instant::now();
    let mut first: Option<f64> = None;
    let mut n = 0u32;
    while llm.step(&mut seq).unwrap().is_some() {
        n += 1;
        if first.is_none() {
            sync(&device);
            first = Some(t.elapsed().as_secs_f64());
        }
    }
    sync(&device);
    let total = t.elapsed().as_secs_f64();
    let first = first.unwrap_or(total);
    let decoded = n.saturating_sub(1);
    let rate = if total > first { decoded as f64 / (total - first) } else { 0.0 };
    println!("device                 {device:?} ({dtype:?})");
    println!("model                  {name}: {:.2} GB of weights, loaded in {load_s:.2} s", bytes / 1e9);
    println!("prompt                 {} tokens, first token after {:.1} ms", prompt.len(), first * 1000.0);
    println!("memory bandwidth       {:.1} GB/s (copy on the device, read + written)", bw / 1e9);
    println!("roofline               {roofline:.1} tokens/s (bandwidth / weight bytes)");
    println!("decode                 {rate:.1} tokens/s over {decoded} tokens");
    println!("decode / roofline      {:.2}", rate / roofline);
}
