//! Decoding speed of the LLM runner against the memory-bandwidth roofline, measured in the same
//! run (a bench binary: whole-model figures, not criterion samples).
//!
//! `cargo bench -p fleet-agent --bench llm` (CPU, f32, a ~25M-parameter Llama-shaped model), or
//! `FLEET_LLM_BENCH_SHAPE=1b|8b` for TinyLlama-1.1B- and Llama-3-8B-shaped models (random
//! weights; bf16 on CUDA when built with `--features cuda`: `scripts/gpu-check`).
//!
//! Decoding one token reads every weight once, so a single sequence cannot decode faster than
//! memory bandwidth ÷ weight bytes: the roofline. A batch of B sequences decoded in one stacked
//! forward per step reads the weights once for B tokens; the second part decodes
//! `FLEET_LLM_BENCH_BATCH` (default 16) sequences that way and, on the same weights, prompts and
//! token counts, the way the runner decoded before: candle-transformers' Llama, one forward per
//! sequence per step, each with its own KV cache. The ratio is tokens/s over tokens/s. The bandwidth is measured here, on the device
//! the model runs on (a large tensor copied on it: bytes read + written ÷ time); the decode rate
//! is tokens generated ÷ time after the first token (the prompt's prefill excluded). The ratio
//! says how much of the machine the runner uses.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::llama;
use fleet_agent::llm::testmodel::{self, Shape};
use fleet_agent::llm::{Batch, Family, Llm, Params};

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
    // As the agent runs (see `set_cpu_threads`): both ways below decode on candle's CPU matmul.
    fleet_agent::model::set_cpu_threads();
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

    let b: usize = std::env::var("FLEET_LLM_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let (stacked_rate, base_rate, tokens) = batched(&llm, dir.path(), &device, dtype, &prompts, b, want.min(32));
    println!(
        "batch of {b}             stacked: {stacked_rate:.1} tokens/s; one forward per sequence: {base_rate:.1} tokens/s ({tokens} tokens each way)"
    );
    println!("stacked / per-sequence {:.2}", stacked_rate / base_rate);
    println!("stacked / (B × roofline) {:.2}", stacked_rate / (b as f64 * roofline));
}

/// `b` sequences decoded `steps` tokens each (greedy), first through fleet's batch (one stacked
/// forward per step), then through candle-transformers' Llama with one forward per sequence per
/// step feeding the same tokens. Returns both decode rates (tokens ÷ seconds, prefill and first
/// token excluded) and the tokens decoded.
fn batched(
    llm: &Llm,
    dir: &std::path::Path,
    device: &Device,
    dtype: DType,
    prompts: &[&str],
    b: usize,
    steps: u32,
) -> (f64, f64, usize) {
    let tokenized: Vec<Vec<u32>> = (0..b).map(|i| llm.tokenize(prompts[i % prompts.len()]).unwrap()).collect();
    let mut batch: Batch<usize> = Batch::new(b);
    for (i, p) in tokenized.iter().enumerate() {
        let seq = llm.start(p.clone(), &Params { max_tokens: steps + 1, ..Params::default() }).unwrap();
        batch.join(i, seq).map_err(|_| "room").unwrap();
    }
    let mut produced: Vec<Vec<u32>> = vec![Vec::new(); b];
    // The first step prefills every prompt: not timed.
    for (k, t) in batch.step(llm).0 {
        produced[k].push(t);
    }
    sync(device);
    let t = Instant::now();
    let mut decoded = 0;
    while !batch.is_empty() {
        let (tokens, _) = batch.step(llm);
        decoded += tokens.len();
        for (k, t) in tokens {
            produced[k].push(t);
        }
    }
    sync(device);
    let stacked = decoded as f64 / t.elapsed().as_secs_f64();

    // The same work one sequence at a time: each sequence's prompt, then the tokens fleet
    // produced for it, one forward each.
    let config: llama::LlamaConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let config = config.into_config(false);
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), device).unwrap();
    let model = llama::Llama::load(candle_nn::VarBuilder::from_tensors(tensors, dtype, device), &config).unwrap();
    let mut caches: Vec<llama::Cache> =
        (0..b).map(|_| llama::Cache::new(true, dtype, &config, device).unwrap()).collect();
    let forward = |tokens: &[u32], pos: usize, cache: &mut llama::Cache| {
        let input = Tensor::new(tokens, device).unwrap().unsqueeze(0).unwrap();
        model.forward(&input, pos, cache).unwrap().to_vec2::<f32>().unwrap();
    };
    for (i, p) in tokenized.iter().enumerate() {
        forward(p, 0, &mut caches[i]);
    }
    sync(device);
    let t = Instant::now();
    let mut base_decoded = 0;
    let longest = produced.iter().map(Vec::len).max().unwrap_or(0);
    // Step s feeds each sequence its token s − 1 (as fleet's step s did), sequences that ended
    // dropping out as they did in the batch.
    for s in 1..longest {
        for (i, out) in produced.iter().enumerate() {
            if s < out.len() {
                forward(&out[s - 1..s], tokenized[i].len() + s - 1, &mut caches[i]);
                base_decoded += 1;
            }
        }
    }
    sync(device);
    let base = base_decoded as f64 / t.elapsed().as_secs_f64();
    assert_eq!(base_decoded, decoded, "both ways decode the same tokens");
    (stacked, base, decoded)
}
