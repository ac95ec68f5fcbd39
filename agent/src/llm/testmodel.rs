//! Small random-weight models of each family, laid out as a hub publishes them (`config.json`,
//! `tokenizer.json`, safetensors, optionally sharded with an index): no hub is reachable from
//! CI, and a model of realistic layout but tiny shape exercises the same loading and decoding.
//!
//! The tokenizer is a word-level one over a fixed vocabulary (split on whitespace), so prompts
//! of those words tokenize one word per token and decoded text is the words joined by spaces.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::{llama, mistral, qwen2};
use serde_json::json;

use super::{Family, LlmError};

/// The words of the test tokenizer, after `<unk>` (0), `<s>` (1) and `</s>` (2).
pub const WORDS: &[&str] = &[
    "the", "a", "fleet", "rents", "gpus", "across", "clouds", "and", "keeps", "them", "busy", "cheap", "spot", "node",
    "runner", "model", "serves", "tokens", "fast", "slow", "price", "hour", "money", "queue", "request", "answer",
    "is", "of", "to", "in", "on", "for", "with", "by", "at", "from", "up", "down", "warm", "cold", "start", "stop",
    "region", "zone", "offering", "budget", "cap", "saving", "cost", "oracle", "trace", "burst", "wave", "idle",
    "busy", "ready", "drain", "move", "merge", "hello", "world", ".", ",", "?",
];

/// The shape of a generated model.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub max_positions: usize,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape { hidden: 32, intermediate: 64, layers: 2, heads: 4, kv_heads: 2, max_positions: 256 }
    }
}

fn vocab() -> Vec<String> {
    let mut v = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    for w in WORDS {
        if !v.iter().any(|x| x == w) {
            v.push(w.to_string());
        }
    }
    v
}

fn tokenizer_json(vocab: &[String]) -> serde_json::Value {
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let map: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.clone(), json!(i))).collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": map, "unk_token": "<unk>"}
    })
}

fn io(path: &Path, e: impl std::fmt::Display) -> LlmError {
    LlmError::Read { path: path.display().to_string(), why: e.to_string() }
}

/// Writes a random-weight model of `family` and `shape` into `dir`: one safetensors file, or
/// `shards` files with `model.safetensors.index.json` when `shards > 1`. The same seed writes
/// the same weights.
pub fn write(dir: &Path, family: Family, shape: Shape, shards: usize, seed: u64) -> Result<(), LlmError> {
    write_as(dir, family, shape, shards, seed, DType::F32)
}

/// [`write`] with the weights stored as `dtype` (bf16 halves a large model's files, as hubs
/// publish them).
pub fn write_as(
    dir: &Path,
    family: Family,
    shape: Shape,
    shards: usize,
    seed: u64,
    dtype: DType,
) -> Result<(), LlmError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let vocab = vocab();
    let v = vocab.len();
    let common = json!({
        "vocab_size": v,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": shape.max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "tie_word_embeddings": false,
    });
    let mut config = common.as_object().unwrap().clone();
    config.insert("model_type".into(), json!(family.name()));
    match family {
        Family::Llama => {}
        Family::Mistral => {
            config.insert("sliding_window".into(), json!(4096));
        }
        Family::Qwen2 => {
            config.insert("sliding_window".into(), json!(4096));
            config.insert("max_window_layers".into(), json!(shape.layers));
            config.insert("use_sliding_window".into(), json!(false));
        }
    }
    let config = serde_json::Value::Object(config);
    let text = serde_json::to_string_pretty(&config).expect("json");
    let compute = |e: candle_core::Error| LlmError::Compute(e.to_string());
    // Build the model once on a VarMap: every tensor it asks for is created with the library's
    // own initialisation, under the names the loader will ask for.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let bad = |e: serde_json::Error| LlmError::Compute(format!("test config: {e}"));
    match family {
        Family::Llama => {
            let c: llama::LlamaConfig = serde_json::from_str(&text).map_err(bad)?;
            llama::Llama::load(vb, &c.into_config(false)).map_err(compute)?;
        }
        Family::Mistral => {
            let c: mistral::Config = serde_json::from_str(&text).map_err(bad)?;
            mistral::Model::new(&c, vb).map_err(compute)?;
        }
        Family::Qwen2 => {
            let c: qwen2::Config = serde_json::from_str(&text).map_err(bad)?;
            qwen2::ModelForCausalLM::new(&c, vb).map_err(compute)?;
        }
    }
    // Candle's own initialisation draws from an unseeded generator: overwrite every tensor
    // from a seeded one, with the same spread (so the same seed writes the same model).
    reseed(&varmap, seed).map_err(compute)?;
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, text).map_err(|e| io(&cfg_path, e))?;
    let tok_path = dir.join("tokenizer.json");
    std::fs::write(&tok_path, tokenizer_json(&vocab).to_string()).map_err(|e| io(&tok_path, e))?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let shards = shards.clamp(1, names.len());
    if shards == 1 {
        let all: HashMap<String, Tensor> = data
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(dtype)?)))
            .collect::<candle_core::Result<_>>()
            .map_err(compute)?;
        let p = dir.join("model.safetensors");
        candle_core::safetensors::save(&all, &p).map_err(|e| io(&p, e))?;
        return Ok(());
    }
    let mut weight_map = serde_json::Map::new();
    let per = names.len().div_ceil(shards);
    for (i, chunk) in names.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards);
        let part: HashMap<String, Tensor> = chunk
            .iter()
            .map(|k| Ok(((*k).clone(), data[*k].as_tensor().to_dtype(dtype)?)))
            .collect::<candle_core::Result<_>>()
            .map_err(compute)?;
        let p = dir.join(&file);
        candle_core::safetensors::save(&part, &p).map_err(|e| io(&p, e))?;
        for k in chunk {
            weight_map.insert((*k).clone(), json!(file));
        }
    }
    let index = json!({"metadata": {}, "weight_map": weight_map});
    let p = dir.join("model.safetensors.index.json");
    std::fs::write(&p, index.to_string()).map_err(|e| io(&p, e))?;
    Ok(())
}

/// Replaces every variable of `varmap` with seeded uniform values of the spread candle's own
/// initialisation gives it: norms stay ones, embeddings get unit variance, weight matrices
/// √(3 / fan-in) (Kaiming-uniform), biases 0.1.
fn reseed(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    // splitmix64: small, seedable, and good enough for test weights.
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        if name.contains("norm") {
            continue;
        }
        let bound = if name.contains("embed_tokens") {
            3f32.sqrt()
        } else if dims.len() == 2 {
            (3.0 / dims[1] as f32).sqrt()
        } else {
            0.1
        };
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| next() * bound).collect();
        var.set(&Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?)?;
    }
    Ok(())
}
