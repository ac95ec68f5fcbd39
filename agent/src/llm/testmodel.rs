//! Small random-weight models of each family, laid out as a hub publishes them (`config.json`,
//! `tokenizer.json`, safetensors, optionally sharded with an index): no hub is reachable from
//! CI, and a model of realistic layout but tiny shape exercises the same loading and decoding.
//!
//! The tokenizer is a word-level one over a fixed vocabulary (split on whitespace), so prompts
//! of those words tokenize one word per token and decoded text is the words joined by spaces.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
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

/// [`write()`] with the weights stored as `dtype` (bf16 halves a large model's files, as hubs
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
    // Build the model once on a recording backend: every tensor it asks for is noted, under the
    // names (and in the number) the loader will ask for. Its answers are zeros in fresh pages, so
    // an 8B-parameter model's 32 GB of f32 are never touched.
    let recorder = Recorder::default();
    let vb = VarBuilder::from_backend(Box::new(recorder.clone()), DType::F32, Device::Cpu);
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
    let mut asked = std::mem::take(&mut *recorder.asked.lock().expect("recorder lock"));
    asked.sort_by(|a, b| a.name.cmp(&b.name));
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, text).map_err(|e| io(&cfg_path, e))?;
    let tok_path = dir.join("tokenizer.json");
    std::fs::write(&tok_path, tokenizer_json(&vocab).to_string()).map_err(|e| io(&tok_path, e))?;
    let tensors = seeded(&asked, seed, dtype).map_err(compute)?;
    let shards = shards.clamp(1, tensors.len());
    if shards == 1 {
        let all: HashMap<String, Tensor> = tensors.into_iter().collect();
        let p = dir.join("model.safetensors");
        candle_core::safetensors::save(&all, &p).map_err(|e| io(&p, e))?;
        return Ok(());
    }
    let mut weight_map = serde_json::Map::new();
    let per = tensors.len().div_ceil(shards);
    for (i, chunk) in tensors.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards);
        let part: HashMap<String, Tensor> = chunk.iter().cloned().collect();
        let p = dir.join(&file);
        candle_core::safetensors::save(&part, &p).map_err(|e| io(&p, e))?;
        for (k, _) in chunk {
            weight_map.insert(k.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {}, "weight_map": weight_map});
    let p = dir.join("model.safetensors.index.json");
    std::fs::write(&p, index.to_string()).map_err(|e| io(&p, e))?;
    Ok(())
}

/// One tensor a model asked its `VarBuilder` for.
struct Asked {
    name: String,
    dims: Vec<usize>,
    init: Init,
}

/// A `VarBuilder` backend that notes what is asked for and answers zeros. Like candle's
/// `VarMap`, it holds a tensor only once asked for it (`contains_tensor`), which is how a model
/// with tied embeddings (Qwen2 here) decides to write no `lm_head`.
#[derive(Default, Clone)]
struct Recorder {
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut asked = self.asked.lock().expect("recorder lock");
        match asked.iter().find(|a| a.name == name) {
            Some(a) if a.dims != s.dims() => {
                candle_core::bail!("{name} asked for as {:?} and as {:?}", a.dims, s.dims())
            }
            Some(_) => {}
            None => asked.push(Asked { name: name.to_string(), dims: s.dims().to_vec(), init: h }),
        }
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: a generated model is built by shape (get), not read (get_unchecked)")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.asked.lock().expect("recorder lock").iter().any(|a| a.name == name)
    }
}

/// splitmix64's `i`-th draw from `seed` as a uniform value in [-1, 1). splitmix64 steps its state
/// by a constant, so any draw can be computed on its own: the tensors are filled on every core
/// and hold the values one sequential generator would give.
fn draw(seed: u64, i: u64) -> f32 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut z = (seed ^ GAMMA).wrapping_add(GAMMA.wrapping_mul(i + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
}

/// Fills `out` (in parallel) with `f(i)` for its indices `i`.
fn fill<T: Send>(out: &mut [T], f: impl Fn(usize) -> T + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = out.len().div_ceil(threads).max(1 << 16);
    std::thread::scope(|s| {
        for (c, part) in out.chunks_mut(per).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (j, x) in part.iter_mut().enumerate() {
                    *x = f(c * per + j);
                }
            });
        }
    });
}

/// The tensors (sorted by name) as `dtype`, from seeded uniform values of the spread candle's
/// own initialisation gives them: norms ones (their constant initialisation), embeddings unit
/// variance, weight matrices √(3 / fan-in) (Kaiming-uniform), biases 0.1. One stream of draws
/// runs through the tensors in name order, norms skipped.
fn seeded(asked: &[Asked], seed: u64, dtype: DType) -> candle_core::Result<Vec<(String, Tensor)>> {
    let mut next = 0u64;
    let mut out = Vec::with_capacity(asked.len());
    for a in asked {
        let n: usize = a.dims.iter().product();
        // Norms keep their constant; every other tensor takes the next n draws, scaled.
        let constant = a.name.contains("norm").then_some(match a.init {
            Init::Const(c) => c as f32,
            _ => 1.0,
        });
        let bound = if a.name.contains("embed_tokens") {
            3f32.sqrt()
        } else if a.dims.len() == 2 {
            (3.0 / a.dims[1] as f32).sqrt()
        } else {
            0.1
        };
        let base = next;
        if constant.is_none() {
            next += n as u64;
        }
        let value = move |i: usize| constant.unwrap_or_else(|| draw(seed, base + i as u64) * bound);
        let dims = a.dims.as_slice();
        let t = match dtype {
            DType::BF16 => {
                let mut v = vec![half::bf16::ZERO; n];
                fill(&mut v, |i| half::bf16::from_f32(value(i)));
                Tensor::from_vec(v, dims, &Device::Cpu)?
            }
            DType::F16 => {
                let mut v = vec![half::f16::ZERO; n];
                fill(&mut v, |i| half::f16::from_f32(value(i)));
                Tensor::from_vec(v, dims, &Device::Cpu)?
            }
            other => {
                let mut v = vec![0f32; n];
                fill(&mut v, value);
                Tensor::from_vec(v, dims, &Device::Cpu)?.to_dtype(other)?
            }
        };
        out.push((a.name.clone(), t));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draws of one sequential splitmix64 generator, as the values were made before they
    /// were filled in parallel.
    fn sequential(seed: u64, n: usize) -> Vec<f32> {
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn parallel_fill_gives_one_sequential_stream_through_the_tensors_in_name_order() {
        let asked = vec![
            Asked { name: "a.weight".into(), dims: vec![300, 700], init: Init::Const(0.) },
            Asked { name: "b.norm.weight".into(), dims: vec![700], init: Init::Const(1.) },
            Asked { name: "c.bias".into(), dims: vec![70_001], init: Init::Const(0.) },
        ];
        let t = seeded(&asked, 7, DType::F32).unwrap();
        let want = sequential(7, 300 * 700 + 70_001);
        let a: Vec<f32> = t[0].1.flatten_all().unwrap().to_vec1().unwrap();
        let bound = (3.0f32 / 700.0).sqrt();
        assert!(a.iter().zip(&want).all(|(x, w)| *x == w * bound));
        let norm: Vec<f32> = t[1].1.to_vec1().unwrap();
        assert!(norm.iter().all(|x| *x == 1.0), "norms keep their constant");
        let c: Vec<f32> = t[2].1.to_vec1().unwrap();
        assert!(c.iter().zip(&want[300 * 700..]).all(|(x, w)| *x == w * 0.1), "the stream skips norms");
        let bf: Vec<half::bf16> =
            seeded(&asked, 7, DType::BF16).unwrap()[0].1.flatten_all().unwrap().to_vec1().unwrap();
        assert!(bf.iter().zip(&a).all(|(x, w)| *x == half::bf16::from_f32(*w)));
        let other: Vec<f32> = seeded(&asked, 8, DType::F32).unwrap()[0].1.flatten_all().unwrap().to_vec1().unwrap();
        assert_ne!(other, a, "another seed, other weights");
    }

    #[test]
    fn a_model_gets_the_tensors_it_asks_for_and_qwen2_ties_its_embeddings() {
        let x = tempfile::tempdir().unwrap();
        write(x.path(), Family::Qwen2, Shape::default(), 1, 3).unwrap();
        let names = candle_core::safetensors::load(x.path().join("model.safetensors"), &Device::Cpu).unwrap();
        assert!(!names.contains_key("lm_head.weight"));
        assert!(names.contains_key("model.layers.1.self_attn.q_proj.bias"));
    }
}
