//! The LLM runner kind: a causal language model loaded from a directory laid out as model hubs
//! publish them, decoded on candle by fleet's own batched decoder ([`stacked`]).
//!
//! A model directory holds `config.json` (its `model_type` names the family: `llama` — Llama 2
//! and 3 —, `mistral`, `qwen2`), `tokenizer.json` (the `tokenizers` crate), and the weights: one
//! `model.safetensors`, or shards named by `model.safetensors.index.json`'s `weight_map`. f32 on
//! the CPU; bf16 on CUDA (the agent's `cuda` feature).
//!
//! Each request is a [`Sequence`]; the loaded weights are shared. The prompt is run once
//! (prefill), then one token per step (decode). [`Batch`] keeps up to `max_multiplexing`
//! sequences and advances every one of them by one token per step in one stacked forward
//! ([`stacked`]): the tokens of every sequence — one each for those decoding, the whole prompt
//! for one joining — go through each weight matrix in one matrix product, so a step reads the
//! weights once whatever the batch's size. Keys and values live in the batch's pool, one slot
//! per sequence. New sequences join between steps and finished ones leave (continuous batching).
//! candle-transformers' own models are the reference the stacked forward is checked against
//! ([`Llm::reference_greedy`]).
//!
//! Sampling is candle-transformers' [`LogitsProcessor`]: greedy (arg-max) when `temperature`
//! is 0 or absent, which is deterministic; otherwise temperature with nucleus (`top_p`) sampling
//! from a generator seeded by `seed` (so a seeded request is reproducible too).

pub mod stacked;
pub mod testmodel;
mod weights;
pub mod worker;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{llama, mistral, qwen2};
use serde::{Deserialize, Serialize};
use stacked::{Feed, KvPool, Stacked};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("cannot read model {path}: {why}")]
    Read { path: String, why: String },
    #[error("model {path}: {why}")]
    Layout { path: String, why: String },
    #[error("bad request: {0}")]
    Input(String),
    #[error("inference failed: {0}")]
    Compute(String),
}

fn compute(e: candle_core::Error) -> LlmError {
    LlmError::Compute(e.to_string())
}

/// The model families this runner loads, by `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Llama, Family::Mistral, Family::Qwen2];

    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
        }
    }
}

/// A loaded model: weights, tokenizer, and what ends a sequence.
pub struct Llm {
    family: Family,
    model: Stacked,
    /// Where the model was loaded from, and its config.json (for the reference forward).
    dir: PathBuf,
    config: String,
    tokenizer: tokenizers::Tokenizer,
    /// `tokenizer_config.json`'s chat template (Jinja) and the special tokens it may name.
    chat: Option<ChatTemplate>,
    eos: Vec<u32>,
    max_positions: usize,
    device: Device,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm").field("family", &self.family).field("device", &self.device).finish()
    }
}

#[derive(Deserialize)]
struct Head {
    model_type: Option<String>,
    eos_token_id: Option<serde_json::Value>,
}

/// The weight files of `dir`: the index's shards, or `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, LlmError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| LlmError::Read { path: p.display().to_string(), why: e.to_string() })
    };
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v: serde_json::Value = serde_json::from_str(&read(&index)?)
            .map_err(|e| LlmError::Layout { path: index.display().to_string(), why: format!("not JSON: {e}") })?;
        let map = v["weight_map"].as_object().ok_or_else(|| LlmError::Layout {
            path: index.display().to_string(),
            why: "no weight_map object".into(),
        })?;
        let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
        files.sort();
        files.dedup();
        let mut out = Vec::new();
        for f in files {
            // A shard is a file name beside the index, never a path elsewhere.
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                return Err(LlmError::Layout {
                    path: index.display().to_string(),
                    why: format!("shard {f:?} is not a file name in the model directory"),
                });
            }
            out.push(dir.join(f));
        }
        if out.is_empty() {
            return Err(LlmError::Layout {
                path: index.display().to_string(),
                why: "weight_map names no shard".into(),
            });
        }
        return Ok(out);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(LlmError::Layout {
        path: dir.display().to_string(),
        why: "no model.safetensors and no model.safetensors.index.json".into(),
    })
}

/// A runner's first token, right after its model loads: one token generated from a short
/// prompt, so the device's first forward (kernels loaded, caches allocated) is paid before a
/// request waits on it, and timed as a cold start's last phase. `false`: the tokenizer gives no
/// token for the prompt (nothing generated).
pub fn first_token(llm: &Llm) -> Result<bool, LlmError> {
    let prompt = llm.tokenize("Hello")?;
    if prompt.is_empty() {
        return Ok(false);
    }
    let mut seq = llm.start(prompt, &Params { max_tokens: 1, ..Params::default() })?;
    llm.step(&mut seq)?;
    Ok(true)
}

impl Llm {
    /// Loads the model in `dir` onto `device` (f32 on the CPU, bf16 on CUDA).
    pub fn load(dir: &Path, device: &Device) -> Result<Llm, LlmError> {
        let dtype = if device.is_cuda() { DType::BF16 } else { DType::F32 };
        let config_path = dir.join("config.json");
        let config = std::fs::read_to_string(&config_path)
            .map_err(|e| LlmError::Read { path: config_path.display().to_string(), why: e.to_string() })?;
        let layout = |why: String| LlmError::Layout { path: config_path.display().to_string(), why };
        let head: Head = serde_json::from_str(&config).map_err(|e| layout(format!("not a model config: {e}")))?;
        let family = match head.model_type.as_deref() {
            Some("llama") => Family::Llama,
            Some("mistral") => Family::Mistral,
            Some("qwen2") => Family::Qwen2,
            Some(other) => {
                return Err(layout(format!("model_type {other:?} is not supported (llama, mistral, qwen2)")));
            }
            None => return Err(layout("no model_type".into())),
        };
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| LlmError::Read { path: tok_path.display().to_string(), why: e.to_string() })?;
        let tensors = weights::load(&weight_files(dir)?, device)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let weights = |e: candle_core::Error| LlmError::Layout {
            path: dir.display().to_string(),
            why: format!("weights do not match config.json: {e}"),
        };
        let arch = stacked::arch(family, &config).map_err(layout)?;
        let model = Stacked::load(arch, vb).map_err(weights)?;
        let mut eos: Vec<u32> = match &head.eos_token_id {
            Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|n| n.as_u64().map(|n| n as u32)).collect(),
            _ => Vec::new(),
        };
        for t in ["</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>"] {
            if let Some(id) = tokenizer.token_to_id(t)
                && !eos.contains(&id)
            {
                eos.push(id);
            }
        }
        Ok(Llm {
            family,
            max_positions: model.max_positions(),
            model,
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            chat: ChatTemplate::read(dir)?,
            eos,
            device: device.clone(),
        })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// Forwards run on this model so far: one per step, however many sequences it advanced.
    pub fn forwards(&self) -> u64 {
        self.model.forwards()
    }

    /// candle-transformers' logits (vocab, f32) after the last of `tokens`, over the whole
    /// sequence from position 0 with no cache: the reference for checking.
    pub fn reference_logits(&self, tokens: &[u32]) -> Result<Vec<f32>, LlmError> {
        let logits = self.reference()?.logits(tokens, &self.device)?;
        logits.to_vec1().map_err(compute)
    }

    /// `text`'s tokens as rendered, no special tokens added (a chat template places them).
    pub fn tokenize_as_is(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| LlmError::Input(format!("cannot tokenize: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A chat as the model was trained to read one: its `tokenizer_config.json` chat template
    /// (Jinja, rendered with minijinja and Python's string methods) with `messages`,
    /// `add_generation_prompt = true`, `bos_token` and `eos_token`; without a template, each
    /// message as a `role: content` line and then `assistant:`.
    pub fn render_chat(&self, messages: &[serde_json::Value]) -> Result<String, LlmError> {
        match &self.chat {
            Some(t) => t.render(messages),
            None => {
                let mut out = String::new();
                for m in messages {
                    let role = m["role"].as_str().unwrap_or_default();
                    let content = m["content"].as_str().unwrap_or_default();
                    out.push_str(&format!("{role}: {content}\n"));
                }
                out.push_str("assistant:");
                Ok(out)
            }
        }
    }

    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| LlmError::Input(format!("cannot tokenize: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn detokenize(&self, tokens: &[u32]) -> Result<String, LlmError> {
        self.tokenizer.decode(tokens, true).map_err(|e| LlmError::Compute(format!("cannot decode tokens: {e}")))
    }

    /// A new sequence for `prompt` (already tokenized) with `params`.
    pub fn start(&self, prompt: Vec<u32>, params: &Params) -> Result<Sequence, LlmError> {
        params.check()?;
        if prompt.is_empty() {
            return Err(LlmError::Input("the prompt is empty".into()));
        }
        if prompt.len() + params.max_tokens as usize > self.max_positions {
            return Err(LlmError::Input(format!(
                "prompt ({} tokens) + max_tokens ({}) exceeds the model's context of {} tokens",
                prompt.len(),
                params.max_tokens,
                self.max_positions
            )));
        }
        let sampling = match params.temperature {
            Some(t) if t > 0.0 => match params.top_p {
                Some(p) if p < 1.0 => Sampling::TopP { p, temperature: t },
                _ => Sampling::All { temperature: t },
            },
            _ => Sampling::ArgMax,
        };
        Ok(Sequence {
            solo: KvPool::for_slots(1),
            sampler: LogitsProcessor::from_sampling(params.seed.unwrap_or(0), sampling),
            prompt_len: prompt.len(),
            pending: prompt.clone(),
            prompt,
            pos: 0,
            generated: Vec::new(),
            max_tokens: params.max_tokens,
            stop: params.stop.clone(),
            text: Detokenizer::default(),
            finish: None,
            created: std::time::Instant::now(),
            first_token: None,
            ended: None,
        })
    }

    /// Advances `seq` by one token (the first call also runs the prompt). Returns the token, or
    /// `None` once the sequence has finished (see [`Sequence::finish`]).
    pub fn step(&self, seq: &mut Sequence) -> Result<Option<u32>, LlmError> {
        let mut pool = std::mem::take(&mut seq.solo);
        let out = self.step_all(&mut pool, &mut [(0, &mut *seq)]).pop().expect("one result per sequence");
        seq.solo = pool;
        out
    }

    /// Advances every sequence of `seqs` (each with its slot in `pool`) by one token in one
    /// stacked forward (a sequence's first step also runs its prompt). One result per sequence,
    /// in order: its token, `None` once it has finished (see [`Sequence::finish`]), or the
    /// step's error: the sequences share the forward, so one that fails fails every sequence
    /// that was in it.
    fn step_all(&self, pool: &mut KvPool, seqs: &mut [(usize, &mut Sequence)]) -> Vec<Result<Option<u32>, LlmError>> {
        let mut out: Vec<Result<Option<u32>, LlmError>> = Vec::with_capacity(seqs.len());
        let mut fed = Vec::new();
        for (i, (_, seq)) in seqs.iter_mut().enumerate() {
            if seq.finish.is_none() && seq.generated.len() as u32 >= seq.max_tokens {
                seq.finish = Some(Finish::Length);
            }
            if seq.finish.is_none() {
                fed.push(i);
            }
            out.push(Ok(None));
        }
        if !fed.is_empty() {
            let logits = (|| {
                // A new sequence's slot may hold what an earlier one left there.
                for (slot, _) in seqs.iter().filter(|(_, s)| s.finish.is_none() && s.pos == 0) {
                    self.model.clear(pool, *slot)?;
                }
                let feeds: Vec<Feed<'_>> = seqs
                    .iter()
                    .filter(|(_, s)| s.finish.is_none())
                    .map(|(slot, s)| Feed { tokens: s.pending.as_slice(), pos: s.pos, slot: *slot })
                    .collect();
                // Sampling reads every row on the host: one copy for the batch.
                self.model.forward(pool, &feeds)?.to_device(&Device::Cpu)
            })()
            .map_err(compute);
            match logits {
                Ok(logits) => {
                    for (row, &i) in fed.iter().enumerate() {
                        out[i] = logits.get(row).map_err(compute).and_then(|l| self.sampled(seqs[i].1, &l));
                    }
                }
                Err(e) => {
                    for &i in &fed {
                        out[i] = Err(e.clone());
                    }
                }
            }
        }
        for (_, seq) in seqs.iter_mut() {
            if seq.finish.is_some() && seq.ended.is_none() {
                seq.ended = Some(std::time::Instant::now());
            }
        }
        out
    }

    /// `seq` after a forward over its pending tokens gave `logits` (vocab, f32): the token it
    /// samples, and whether that ends it.
    fn sampled(&self, seq: &mut Sequence, logits: &Tensor) -> Result<Option<u32>, LlmError> {
        seq.pos += seq.pending.len();
        seq.pending.clear();
        let token = seq.sampler.sample(logits).map_err(compute)?;
        if self.eos.contains(&token) {
            seq.finish = Some(Finish::Stop);
            if !seq.stop.is_empty() && seq.text.holds_back() {
                self.stop_at(seq)?;
            }
            return Ok(None);
        }
        seq.generated.push(token);
        if seq.first_token.is_none() {
            seq.first_token = Some(std::time::Instant::now());
        }
        seq.pending.push(token);
        if !seq.stop.is_empty() {
            // A stop sequence not in the text before this token can only end in what it added:
            // look there and in the stop's length before it, not in the whole text.
            let before = seq.text.push(|t| self.detokenize(t), token)?;
            let text = seq.text.text();
            let mut from = before.saturating_sub(seq.stop_len().saturating_sub(1));
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            if seq.stop.iter().any(|s| text[from..].contains(s.as_str())) && self.stop_at(seq)? {
                return Ok(Some(token));
            }
        }
        if seq.generated.len() as u32 >= seq.max_tokens {
            seq.finish = Some(Finish::Length);
            // Text held back as incomplete (half a character) shows only in the whole decode.
            if !seq.stop.is_empty() && seq.text.holds_back() {
                self.stop_at(seq)?;
            }
        }
        Ok(Some(token))
    }

    /// Ends `seq` at the first stop sequence in its whole text, where [`Llm::text`] cuts it;
    /// false when there is none. Run once a stop has been seen, not at every token.
    fn stop_at(&self, seq: &mut Sequence) -> Result<bool, LlmError> {
        let text = self.detokenize(&seq.generated)?;
        match seq.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            Some(cut) => {
                seq.finish = Some(Finish::StopSequence(cut));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The text a finished (or running) sequence has produced, cut before a stop sequence.
    pub fn text(&self, seq: &Sequence) -> Result<String, LlmError> {
        let text = self.detokenize(&seq.generated)?;
        Ok(match seq.finish {
            Some(Finish::StopSequence(cut)) => text[..cut].to_string(),
            _ => text,
        })
    }

    /// Runs `prompt` to the end alone (no batch): its tokens and why it ended.
    pub fn generate(&self, prompt: Vec<u32>, params: &Params) -> Result<(Vec<u32>, Finish), LlmError> {
        let mut seq = self.start(prompt, params)?;
        while self.step(&mut seq)?.is_some() {}
        Ok((seq.generated.clone(), seq.finish.expect("a sequence ends with a reason")))
    }

    /// Greedy decoding by the book, for checking: every step runs candle-transformers' forward
    /// over the whole sequence from position 0 without reusing any cache.
    pub fn reference_greedy(&self, prompt: &[u32], max_tokens: u32) -> Result<Vec<u32>, LlmError> {
        let mut reference = self.reference()?;
        let mut tokens = prompt.to_vec();
        let mut out = Vec::new();
        for _ in 0..max_tokens {
            let logits = reference.logits(&tokens, &self.device)?;
            let token = logits.argmax(0).and_then(|t| t.to_scalar::<u32>()).map_err(compute)?;
            if self.eos.contains(&token) {
                break;
            }
            out.push(token);
            tokens.push(token);
        }
        Ok(out)
    }

    /// candle-transformers' own model of this family on this model's weights (read again from
    /// its directory, in the runner's dtype): what the stacked forward is checked against.
    fn reference(&self) -> Result<Reference, LlmError> {
        let dtype = if self.device.is_cuda() { DType::BF16 } else { DType::F32 };
        let tensors = weights::load(&weight_files(&self.dir)?, &self.device)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, &self.device);
        let parse = |e: serde_json::Error| LlmError::Compute(format!("reference config: {e}"));
        Ok(match self.family {
            Family::Llama => {
                let c: llama::LlamaConfig = serde_json::from_str(&self.config).map_err(parse)?;
                let c = c.into_config(false);
                Reference::Llama(llama::Llama::load(vb, &c).map_err(compute)?, c, dtype)
            }
            Family::Mistral => {
                let c: mistral::Config = serde_json::from_str(&self.config).map_err(parse)?;
                Reference::Mistral(mistral::Model::new(&c, vb).map_err(compute)?)
            }
            Family::Qwen2 => {
                let c: qwen2::Config = serde_json::from_str(&self.config).map_err(parse)?;
                Reference::Qwen2(qwen2::ModelForCausalLM::new(&c, vb).map_err(compute)?)
            }
        })
    }
}

/// candle-transformers' model of a family, run by the book: every call a forward over the
/// whole sequence from position 0 with no cache kept.
enum Reference {
    Llama(llama::Llama, llama::Config, DType),
    Mistral(mistral::Model),
    Qwen2(qwen2::ModelForCausalLM),
}

impl Reference {
    /// Logits (vocab, f32) after the last of `tokens`.
    fn logits(&mut self, tokens: &[u32], device: &Device) -> Result<Tensor, LlmError> {
        let input = Tensor::new(tokens, device).and_then(|t| t.unsqueeze(0)).map_err(compute)?;
        let logits = match self {
            Reference::Llama(m, c, dtype) => {
                let mut cache = llama::Cache::new(false, *dtype, c, device).map_err(compute)?;
                m.forward(&input, 0, &mut cache)
            }
            Reference::Mistral(m) => {
                m.clear_kv_cache();
                m.forward(&input, 0)
            }
            Reference::Qwen2(m) => {
                m.clear_kv_cache();
                m.forward(&input, 0)
            }
        }
        .map_err(compute)?;
        // Llama gives (1, vocab); the others (1, 1, vocab).
        logits.flatten_all().and_then(|l| l.to_dtype(DType::F32)).map_err(compute)
    }
}

/// A model's chat template (`tokenizer_config.json`: `chat_template`, a string or a list of
/// named templates of which `default` is used) and the special tokens it is rendered with.
struct ChatTemplate {
    source: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    fn read(dir: &Path) -> Result<Option<ChatTemplate>, LlmError> {
        let path = dir.join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        let layout = |why: String| LlmError::Layout { path: path.display().to_string(), why };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| layout(format!("not JSON: {e}")))?;
        let source = match &v["chat_template"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(list) => {
                let named = |n: &str| {
                    list.iter().find(|t| t["name"] == n).and_then(|t| t["template"].as_str()).map(String::from)
                };
                match named("default") {
                    Some(s) => s,
                    None => return Err(layout("chat_template lists no template named \"default\"".into())),
                }
            }
            serde_json::Value::Null => return Ok(None),
            _ => return Err(layout("chat_template is neither a string nor a list of named templates".into())),
        };
        // Special tokens are strings or `{"content": ...}` objects.
        let token = |k: &str| match &v[k] {
            serde_json::Value::String(s) => s.clone(),
            o => o["content"].as_str().unwrap_or_default().to_string(),
        };
        let t = ChatTemplate { source, bos: token("bos_token"), eos: token("eos_token") };
        // A template that does not parse is the model's defect: said at load, not per request.
        t.env().map_err(|e| layout(format!("chat_template does not parse: {e}")))?;
        Ok(Some(t))
    }

    fn env(&self) -> Result<minijinja::Environment<'_>, minijinja::Error> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Hub templates call raise_exception("...") to refuse a conversation they cannot render.
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", &self.source)?;
        Ok(env)
    }

    fn render(&self, messages: &[serde_json::Value]) -> Result<String, LlmError> {
        let env = self.env().map_err(|e| LlmError::Compute(format!("chat template: {e}")))?;
        let t = env.get_template("chat").map_err(|e| LlmError::Compute(format!("chat template: {e}")))?;
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| {
            // The template refusing the conversation (raise_exception) is the caller's to fix.
            let detail = e.detail().map(String::from).unwrap_or_else(|| e.to_string());
            LlmError::Input(format!("the model's chat template refuses these messages: {detail}"))
        })
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-sequence token.
    Stop,
    /// A stop sequence appeared (at this byte of the text, which is cut there).
    StopSequence(usize),
    /// `max_tokens` reached.
    Length,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Stop | Finish::StopSequence(_) => "stop",
            Finish::Length => "length",
        }
    }
}

/// What a request asks of generation (OpenAI's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Vec<String>,
}

fn default_max_tokens() -> u32 {
    16
}

impl Default for Params {
    fn default() -> Params {
        Params { max_tokens: default_max_tokens(), temperature: None, top_p: None, seed: None, stop: Vec::new() }
    }
}

impl Params {
    fn check(&self) -> Result<(), LlmError> {
        if self.max_tokens == 0 {
            return Err(LlmError::Input("max_tokens must be at least 1".into()));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(LlmError::Input(format!("temperature {t} is outside 0..=2")));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(LlmError::Input(format!("top_p {p} is outside (0, 1]")));
        }
        if self.stop.len() > 4 || self.stop.iter().any(|s| s.is_empty()) {
            return Err(LlmError::Input("stop takes up to 4 non-empty strings".into()));
        }
        Ok(())
    }
}

/// The text of a growing list of tokens, decoded a few tokens at a time rather than whole after
/// every token (whole, an n-token answer costs O(n²) token decodes over its life: at 1,000
/// tokens, half a million, and on the host while the GPU waits for the next step).
///
/// As TGI and vLLM do it: the tokens since `prefix` are decoded, and what they add past the text
/// of the tokens before `read` is appended once it is whole. Decoding from a token back keeps
/// what depends on the left neighbour (a word's leading space, which a decoder strips at the
/// start of a text) as the whole decode has it; a token that ends inside a UTF-8 character (byte
/// fallback) adds nothing until the one that completes it.
#[derive(Debug, Clone, Default)]
pub struct Detokenizer {
    tokens: Vec<u32>,
    prefix: usize,
    read: usize,
    text: String,
}

impl Detokenizer {
    /// Adds `token` and returns the length in bytes of the text before it: what it added, if
    /// anything, starts there. `decode` turns tokens into text ([`Llm::detokenize`]).
    pub fn push(&mut self, decode: impl Fn(&[u32]) -> Result<String, LlmError>, token: u32) -> Result<usize, LlmError> {
        let before = self.text.len();
        self.tokens.push(token);
        let old = decode(&self.tokens[self.prefix..self.read])?;
        let new = decode(&self.tokens[self.prefix..])?;
        // Appended only once it extends what is there and ends whole: otherwise the next token
        // decodes with this one.
        if new.len() > old.len() && new.starts_with(&old) && !new.ends_with(char::REPLACEMENT_CHARACTER) {
            self.text.push_str(&new[old.len()..]);
            self.prefix = self.read;
            self.read = self.tokens.len();
        }
        Ok(before)
    }

    /// The text so far (without what is held back).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether tokens wait for the next one to complete their text (the whole decode may have
    /// more than [`Detokenizer::text`]).
    pub fn holds_back(&self) -> bool {
        self.read < self.tokens.len()
    }
}

/// One request being decoded: its own KV cache, sampler and output so far.
pub struct Sequence {
    /// Its keys and values when stepped alone ([`Llm::step`]); in a [`Batch`], the batch's pool
    /// holds them.
    solo: KvPool,
    sampler: LogitsProcessor,
    /// Tokens to feed at the next step: the prompt first, then the last token.
    pending: Vec<u32>,
    prompt: Vec<u32>,
    pos: usize,
    pub prompt_len: usize,
    pub generated: Vec<u32>,
    max_tokens: u32,
    stop: Vec<String>,
    /// Its text so far, kept only when it has stop sequences to look for.
    text: Detokenizer,
    pub finish: Option<Finish>,
    /// When it reached the runner, produced its first token, and ended.
    created: std::time::Instant,
    first_token: Option<std::time::Instant>,
    ended: Option<std::time::Instant>,
}

impl Sequence {
    /// Starts over: the next step feeds the prompt and everything generated from position 0.
    fn rewind(&mut self) {
        let mut all = self.prompt.clone();
        all.extend_from_slice(&self.generated);
        self.pending = all;
        self.pos = 0;
        self.solo = KvPool::for_slots(1);
    }

    /// The longest stop sequence's length in bytes (0: none).
    pub fn stop_len(&self) -> usize {
        self.stop.iter().map(String::len).max().unwrap_or(0)
    }

    /// Seconds from reaching the runner to the first token, and from the first token to the
    /// end (`None` before there is a first token).
    pub fn timing(&self) -> Option<(f64, f64)> {
        let first = self.first_token?;
        let end = self.ended.unwrap_or_else(std::time::Instant::now);
        Some(((first - self.created).as_secs_f64(), end.saturating_duration_since(first).as_secs_f64()))
    }
}

/// The first `n` where the `n`-th of `slots` (ascending, distinct) is not `n`: the lowest slot not
/// in it, and where it goes to keep the order.
fn first_gap(slots: impl Iterator<Item = usize>) -> usize {
    let mut n = 0;
    for s in slots {
        if s != n {
            break;
        }
        n += 1;
    }
    n
}

/// Continuous batching: up to `capacity` sequences, each advanced one token per [`Batch::step`];
/// sequences join and leave between steps.
pub struct Batch<K> {
    capacity: usize,
    /// Running sequences with their slots in `pool`, in slot order.
    running: Vec<(K, Sequence, usize)>,
    pool: KvPool,
}

impl<K: Clone> Batch<K> {
    pub fn new(capacity: usize) -> Batch<K> {
        let capacity = capacity.max(1);
        Batch { capacity, running: Vec::new(), pool: KvPool::for_slots(capacity) }
    }

    pub fn has_room(&self) -> bool {
        self.running.len() < self.capacity
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Adds a sequence; refused (given back) when the batch is full. It takes the lowest free
    /// slot, so that the running sequences' slots stay 0.. and decode as one batch without
    /// gathering. A sequence already stepped alone starts over here from its prompt and what it
    /// generated (its keys and values were in its own pool).
    pub fn join(&mut self, key: K, mut seq: Sequence) -> Result<(), Box<(K, Sequence)>> {
        if !self.has_room() {
            return Err(Box::new((key, seq)));
        }
        if seq.pos > 0 {
            seq.rewind();
        }
        // The running sequences are in slot order with distinct slots: the lowest free slot is
        // where the n-th holds another than n. (Searching slot by slot through the list was
        // quadratic: the last ~3,000–4,000 of 10,000 streams took ~90 s to join a batch of
        // ~6,000 in the streams bench.)
        let at = first_gap(self.running.iter().map(|(_, _, t)| *t));
        self.running.insert(at, (key, seq, at));
        Ok(())
    }

    /// One decode step for every running sequence, in one stacked forward: the tokens produced
    /// (key, token) and the sequences that finished (removed from the batch). A step that fails
    /// fails the sequences that were in it, each with the error.
    #[allow(clippy::type_complexity)]
    pub fn step(&mut self, llm: &Llm) -> (Vec<(K, u32)>, Vec<(K, Result<Sequence, LlmError>)>) {
        let mut tokens = Vec::new();
        let mut done = Vec::new();
        let mut keep = Vec::with_capacity(self.running.len());
        let results = {
            let mut seqs: Vec<(usize, &mut Sequence)> =
                self.running.iter_mut().map(|(_, s, slot)| (*slot, s)).collect();
            llm.step_all(&mut self.pool, &mut seqs)
        };
        for ((key, seq, slot), result) in self.running.drain(..).zip(results) {
            match result {
                Ok(Some(t)) => {
                    tokens.push((key.clone(), t));
                    if seq.finish.is_some() {
                        done.push((key, Ok(seq)));
                    } else {
                        keep.push((key, seq, slot));
                    }
                }
                Ok(None) => done.push((key, Ok(seq))),
                Err(e) => done.push((key, Err(e))),
            }
        }
        self.running = keep;
        if self.running.is_empty() {
            // Idle: the pool's memory goes back (the next sequence starts a small one).
            self.pool = KvPool::for_slots(self.capacity);
        }
        (tokens, done)
    }

    /// The logits (vocab, f32) after feeding the running sequences keyed in `feeds` the tokens
    /// paired with them, all in one stacked forward, without sampling: for checking the forward
    /// itself. Their keys, values and positions advance; their own pending tokens are ignored,
    /// so sequences used here are for this only.
    pub fn forward_logits(&mut self, llm: &Llm, feeds: &[(K, Vec<u32>)]) -> Result<Vec<Vec<f32>>, LlmError>
    where
        K: PartialEq + std::fmt::Debug,
    {
        let mut at = Vec::with_capacity(feeds.len());
        for (key, _) in feeds {
            let i = self.running.iter().position(|(k, _, _)| k == key);
            at.push(i.ok_or_else(|| LlmError::Input(format!("no running sequence {key:?}")))?);
        }
        let list: Vec<Feed<'_>> = feeds
            .iter()
            .zip(&at)
            .map(|((_, tokens), &i)| Feed { tokens, pos: self.running[i].1.pos, slot: self.running[i].2 })
            .collect();
        let logits = llm.model.forward(&mut self.pool, &list).and_then(|l| l.to_vec2()).map_err(compute)?;
        for ((_, tokens), &i) in feeds.iter().zip(&at) {
            self.running[i].1.pos += tokens.len();
        }
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::{Detokenizer, LlmError, first_gap};

    /// A tokenizer shaped like Llama 2's and Mistral's: sentencepiece pieces ("▁" for a space,
    /// stripped at the start of a text) and byte fallback for characters outside the vocabulary.
    fn sentencepiece() -> tokenizers::Tokenizer {
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": null, "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "merges": [],
                "vocab": {"<unk>": 0, "<0xC3>": 1, "<0xA9>": 2, "▁Hello": 3, "▁world": 4, "▁caf": 5, "!": 6,
                    "<0xE2>": 7, "<0x82>": 8, "<0xAC>": 9, "▁": 10}}
        });
        json.to_string().parse().expect("a tokenizer")
    }

    #[test]
    fn text_decoded_a_token_at_a_time_is_the_whole_decode() {
        let tok = sentencepiece();
        let decode = |t: &[u32]| tok.decode(t, true).map_err(|e| LlmError::Compute(e.to_string()));
        // "Hello world café!€ world", é and € in bytes split over tokens.
        let tokens = [3, 4, 5, 1, 2, 6, 10, 7, 8, 9, 4, 3];
        let mut d = Detokenizer::default();
        let mut added = String::new();
        for (i, &t) in tokens.iter().enumerate() {
            let before = d.push(decode, t).unwrap();
            added.push_str(&d.text()[before..]);
            let whole = decode(&tokens[..=i]).unwrap();
            assert!(whole.starts_with(d.text()), "{:?} is not the start of {whole:?}", d.text());
            // Held back only in the middle of a character.
            assert_eq!(d.holds_back(), matches!(t, 1 | 7 | 8), "after token {i}");
            if !d.holds_back() {
                assert_eq!(d.text(), whole, "after token {i}");
            }
        }
        assert_eq!(d.text(), "Hello world café! € world Hello");
        assert_eq!(added, d.text());
    }

    #[test]
    fn a_joining_sequence_takes_the_lowest_free_slot() {
        assert_eq!(first_gap([].into_iter()), 0);
        assert_eq!(first_gap([0, 1, 2].into_iter()), 3);
        assert_eq!(first_gap([0, 2, 3].into_iter()), 1);
        assert_eq!(first_gap([1, 2].into_iter()), 0);
        assert_eq!(first_gap([0, 1, 5, 9].into_iter()), 2);
    }
}
