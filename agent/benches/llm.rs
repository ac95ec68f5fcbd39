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

/// Bytes per second the device reads: on CUDA a large tensor copied on it (bytes read + written
/// ÷ time); on the CPU a 1 GiB buffer summed by every core at once (decoding reads weights, and
/// candle's CPU matmul reads them on every core).
fn bandwidth(device: &Device) -> f64 {
    if device.is_cuda() {
        let n = 256 * 1024 * 1024 / 4; // 256 MiB of f32
        let t = Tensor::ones(n, DType::F32, device).unwrap();
        let mut best = 0f64;
        for _ in 0..5 {
            sync(device);
            let start = Instant::now();
            let c = t.copy().unwrap();
            sync(device);
            let s = start.elapsed().as_secs_f64();
            drop(c);
            best = best.max(2.0 * (n * 4) as f64 / s);
        }
        return best;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n: usize = 256 * 1024 * 1024; // 1 GiB of f32
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let start = Instant::now();
        let total: f32 = std::thread::scope(|s| {
            let parts: Vec<_> = buf
                .chunks(n.div_ceil(threads))
                .map(|c| {
                    s.spawn(move || {
                        // Eight lanes, so the sum vectorises and the loads are the limit.
                        let mut acc = [0f32; 8];
                        for w in c.chunks_exact(8) {
                            for k in 0..8 {
                                acc[k] += w[k];
                            }
                        }
                        acc.iter().sum::<f32>()
                    })
                })
                .collect();
            parts.into_iter().map(|p| p.join().unwrap()).sum()
        });
        std::hint::black_box(total);
        best = best.max((n * 4) as f64 / start.elapsed().as_secs_f64());
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
    eprintln!(
        "wrote a {name} model ({:.2} GB of {dtype:?} weights) in {:.1} s",
        bytes / 1e9,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let llm = Llm::load(dir.path(), &device).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    let bw = bandwidth(&device);
    let roofline = bw / bytes;
    let want: u32 = if name == "small" { 128 } else { 32 };
    // Sampled decoding (temperature 1, seeded); the timing excludes each prompt's prefill and
    // first token. A random model may end a sequence early: prompts follow one another until
    // `want` tokens are decoded.
    let prompts =
        ["the fleet rents gpus across clouds and keeps them busy", "a spot node serves tokens", "hello world"];
    let (mut first, mut decoded, mut decode_s) = (0f64, 0u32, 0f64);
    for (i, p) in prompts.iter().cycle().enumerate().take(24) {
        if decoded >= want {
            break;
        }
        let prompt = llm.tokenize(p).unwrap();
        let params = Params {
            max_tokens: want - decoded + 1,
            seed: Some(i as u64),
            temperature: Some(1.0),
            ..Params::default()
        };
        let mut seq = llm.start(prompt, &params).unwrap();
        let t = Instant::now();
        let mut at_first: Option<f64> = None;
        let mut n = 0u32;
        while llm.step(&mut seq).unwrap().is_some() {
            n += 1;
            if at_first.is_none() {
                sync(&device);
                at_first = Some(t.elapsed().as_secs_f64());
            }
        }
        sync(&device);
        let total = t.elapsed().as_secs_f64();
        if i == 0 {
            first = at_first.unwrap_or(total);
        }
        if let Some(f) = at_first {
            decoded += n.saturating_sub(1);
            decode_s += total - f;
        }
    }
    let rate = if decode_s > 0.0 { decoded as f64 / decode_s } else { 0.0 };
    let prompt = llm.tokenize(prompts[0]).unwrap();
    println!("device                 {device:?} ({dtype:?})");
    println!("model                  {name}: {:.2} GB of weights, loaded in {load_s:.2} s", bytes / 1e9);
    println!("prompt                 {} tokens, first token after {:.1} ms", prompt.len(), first * 1000.0);
    println!("memory bandwidth       {:.1} GB/s (read on the device)", bw / 1e9);
    println!("roofline               {roofline:.1} tokens/s (bandwidth / weight bytes)");
    println!("decode                 {rate:.1} tokens/s over {decoded} tokens (one sequence)");
    println!("decode / roofline      {:.2}", rate / roofline);
}
