//! One forward per decode step for a whole batch: the decoder of the Llama family (Llama 2/3,
//! Mistral, Qwen2 share it) written so that every token the batch feeds this step — one per
//! decoding sequence, a whole prompt for a sequence joining — goes through each weight matrix
//! in one matrix product.
//!
//! Why not candle-transformers' models: they take one position offset per forward and keep the
//! KV cache inside the model, so a batch of sequences at different lengths runs one forward per
//! sequence, and each of those reads every weight. Decoding is bound by reading the weights
//! (an 8 B model in bf16 is 16 GB read per forward), so B sequences cost B reads per step where
//! one would do. Here the tokens of all sequences are stacked into one (tokens, hidden) matrix
//! for the embeddings, norms, projections and MLP. Keys and values are written in place into a
//! [`KvPool`] (one slot per sequence); the sequences decoding one token attend together in one
//! batched product over their slots, masked past each one's end, and the prompts joining in the
//! step as another, each padded to the longest of them: a step is a fixed number of operations
//! per layer however many sequences it holds.
//!
//! The arithmetic is candle-transformers' own, op for op (the same RMS norm, rotary tables and
//! kernel, grouped-query attention, softmax and activation), so greedy decoding gives the same
//! tokens: `tests/llm.rs` checks that against candle-transformers' forward for every family,
//! batched and alone. Where the families differ in config it follows the Hugging Face
//! reference: Llama 3's rope scaling, Qwen2's q/k/v biases and sliding window only when
//! `use_sliding_window` (from layer `max_window_layers` on), Mistral's `head_dim` and
//! `sliding_window`, tied embeddings when there is no `lm_head`.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Activation, Linear, RmsNorm, VarBuilder};
use candle_transformers::models::{llama, mistral, qwen2};

use super::Family;

type Result<T> = candle_core::Result<T>;

/// The keys and values of a batch's sequences, one slot per sequence, written in place: per
/// layer a (slots, kv_heads, positions, head_dim) tensor of keys and one of values. Slots and
/// positions grow (each to the next power of two) as sequences need them, so a step writes only
/// its new tokens' rows instead of copying every cache, and the decoding sequences' attention
/// reads the slots as one batch.
///
/// Memory: slots × the furthest position any of them reached (both rounded up), per layer, for
/// keys and values; a [`super::Batch`] lets its pool go when it empties. A runner's
/// `max_multiplexing` × context is what must fit beside the weights.
#[derive(Default)]
pub struct KvPool {
    layers: Vec<(Tensor, Tensor)>,
    slots: usize,
    positions: usize,
    /// The most slots it will be asked for (a batch's capacity; 0: no bound), so that rounding
    /// up never allocates past it.
    most_slots: usize,
}

impl KvPool {
    /// An empty pool for up to `slots` sequences at once.
    pub fn for_slots(slots: usize) -> KvPool {
        KvPool { most_slots: slots, ..KvPool::default() }
    }
}

impl std::fmt::Debug for KvPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvPool").field("slots", &self.slots).field("positions", &self.positions).finish()
    }
}

/// What one sequence feeds a step: its new tokens, the position of the first, its slot.
pub struct Feed<'a> {
    pub tokens: &'a [u32],
    pub pos: usize,
    pub slot: usize,
}

struct Layer {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// Keys further back than this many positions are not attended to (a sliding window).
    window: Option<usize>,
}

/// The loaded decoder: weights shared by every sequence of the runner.
pub struct Stacked {
    embed: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    /// Rotary tables, (max_positions, head_dim / 2), in the model's dtype.
    cos: Tensor,
    sin: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    act: Activation,
    /// The distinct sliding windows of the layers (each needs its own masks).
    windows: Vec<usize>,
    /// Llama's attention divides the scores by √head_dim; Mistral's and Qwen2's multiply by its
    /// inverse (kept apart so that the last bit agrees with each reference).
    divide_scale: bool,
    dtype: DType,
    device: Device,
    /// Forwards run so far (one per batch step).
    forwards: std::sync::atomic::AtomicU64,
}

/// The shape and rules the three families' configs give, in one place.
pub struct Arch {
    hidden: usize,
    intermediate: usize,
    vocab: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
    act: Activation,
    inv_freq: Vec<f32>,
    max_positions: usize,
    qkv_bias: bool,
    tie: bool,
    window: Box<dyn Fn(usize) -> Option<usize>>,
    divide_scale: bool,
}

fn bad(why: String) -> candle_core::Error {
    candle_core::Error::Msg(why)
}

/// Rotary inverse frequencies as candle-transformers computes them for Mistral and Llama.
fn inv_freq_f32(theta: f32, dim: usize) -> Vec<f32> {
    (0..dim).step_by(2).map(|i| 1f32 / theta.powf(i as f32 / dim as f32)).collect()
}

/// What `config` (config.json's text) says about a model of `family`; the error says why it
/// cannot be read as one.
pub fn arch(family: Family, config: &str) -> std::result::Result<Arch, String> {
    let parse = |e: serde_json::Error| format!("not a {} config: {e}", family.name());
    let a = match family {
        Family::Llama => {
            let c: llama::LlamaConfig = serde_json::from_str(config).map_err(parse)?;
            let c = c.into_config(false);
            let head_dim = c.hidden_size / c.num_attention_heads;
            let mut inv_freq = inv_freq_f32(c.rope_theta, head_dim);
            // Llama 3's scaling: long wavelengths slowed by `factor`, short ones kept, the band
            // between blended (as candle-transformers and Hugging Face compute it).
            if let Some(s) = &c.rope_scaling
                && matches!(s.rope_type, llama::Llama3RopeType::Llama3)
            {
                let original = s.original_max_position_embeddings as f32;
                let low = original / s.low_freq_factor;
                let high = original / s.high_freq_factor;
                for f in &mut inv_freq {
                    let wavelen = 2. * std::f32::consts::PI / *f;
                    *f = if wavelen < high {
                        *f
                    } else if wavelen > low {
                        *f / s.factor
                    } else {
                        let smooth =
                            (original / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                        (1. - smooth) * *f / s.factor + smooth * *f
                    };
                }
            }
            Arch {
                hidden: c.hidden_size,
                intermediate: c.intermediate_size,
                vocab: c.vocab_size,
                layers: c.num_hidden_layers,
                heads: c.num_attention_heads,
                kv_heads: c.num_key_value_heads,
                head_dim,
                eps: c.rms_norm_eps,
                act: Activation::Silu,
                inv_freq,
                max_positions: c.max_position_embeddings,
                qkv_bias: false,
                tie: c.tie_word_embeddings,
                window: Box::new(|_| None),
                divide_scale: true,
            }
        }
        Family::Mistral => {
            let c: mistral::Config = serde_json::from_str(config).map_err(parse)?;
            let head_dim = c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads);
            let window = c.sliding_window;
            Arch {
                hidden: c.hidden_size,
                intermediate: c.intermediate_size,
                vocab: c.vocab_size,
                layers: c.num_hidden_layers,
                heads: c.num_attention_heads,
                kv_heads: c.num_key_value_heads,
                head_dim,
                eps: c.rms_norm_eps,
                act: c.hidden_act,
                inv_freq: inv_freq_f32(c.rope_theta as f32, head_dim),
                max_positions: c.max_position_embeddings,
                qkv_bias: false,
                tie: false,
                window: Box::new(move |_| window),
                divide_scale: false,
            }
        }
        Family::Qwen2 => {
            let c: qwen2::Config = serde_json::from_str(config).map_err(parse)?;
            let head_dim = c.hidden_size / c.num_attention_heads;
            let inv_freq =
                (0..head_dim).step_by(2).map(|i| 1f32 / c.rope_theta.powf(i as f64 / head_dim as f64) as f32).collect();
            let (on, from, size) = (c.use_sliding_window, c.max_window_layers, c.sliding_window);
            Arch {
                hidden: c.hidden_size,
                intermediate: c.intermediate_size,
                vocab: c.vocab_size,
                layers: c.num_hidden_layers,
                heads: c.num_attention_heads,
                kv_heads: c.num_key_value_heads,
                head_dim,
                eps: c.rms_norm_eps,
                act: c.hidden_act,
                inv_freq,
                max_positions: c.max_position_embeddings,
                qkv_bias: true,
                tie: c.tie_word_embeddings,
                window: Box::new(move |layer| (on && layer >= from).then_some(size)),
                divide_scale: false,
            }
        }
    };
    if a.heads == 0 || a.kv_heads == 0 || a.heads % a.kv_heads != 0 {
        return Err(format!(
            "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
            a.heads, a.kv_heads
        ));
    }
    if a.head_dim == 0 || a.head_dim % 2 != 0 || a.max_positions == 0 {
        return Err(format!(
            "the head dimension ({}) must be even and max_position_embeddings ({}) at least 1",
            a.head_dim, a.max_positions
        ));
    }
    Ok(a)
}

impl Stacked {
    /// The decoder `a` describes, its weights from `vb` (in `vb`'s dtype, on its device).
    pub fn load(a: Arch, vb: VarBuilder) -> Result<Stacked> {
        let (dtype, device) = (vb.dtype(), vb.device().clone());
        let m = vb.pp("model");
        let embed = m.get((a.vocab, a.hidden), "embed_tokens.weight")?;
        let q_out = a.heads * a.head_dim;
        let kv_out = a.kv_heads * a.head_dim;
        let mut layers = Vec::with_capacity(a.layers);
        for i in 0..a.layers {
            let l = m.pp("layers").pp(i);
            let at = l.pp("self_attn");
            let proj = |out: usize, name: &str| {
                if a.qkv_bias {
                    candle_nn::linear(a.hidden, out, at.pp(name))
                } else {
                    candle_nn::linear_no_bias(a.hidden, out, at.pp(name))
                }
            };
            let mlp = l.pp("mlp");
            layers.push(Layer {
                input_norm: candle_nn::rms_norm(a.hidden, a.eps, l.pp("input_layernorm"))?,
                q: proj(q_out, "q_proj")?,
                k: proj(kv_out, "k_proj")?,
                v: proj(kv_out, "v_proj")?,
                o: candle_nn::linear_no_bias(q_out, a.hidden, at.pp("o_proj"))?,
                post_norm: candle_nn::rms_norm(a.hidden, a.eps, l.pp("post_attention_layernorm"))?,
                gate: candle_nn::linear_no_bias(a.hidden, a.intermediate, mlp.pp("gate_proj"))?,
                up: candle_nn::linear_no_bias(a.hidden, a.intermediate, mlp.pp("up_proj"))?,
                down: candle_nn::linear_no_bias(a.intermediate, a.hidden, mlp.pp("down_proj"))?,
                window: (a.window)(i),
            });
        }
        let mut windows: Vec<usize> = layers.iter().filter_map(|l| l.window).collect();
        windows.sort_unstable();
        windows.dedup();
        let norm = candle_nn::rms_norm(a.hidden, a.eps, m.pp("norm"))?;
        // Tied embeddings when the config says so or the files hold no lm_head (as
        // candle-transformers' Qwen2 reads them).
        let lm_head = if a.tie || !vb.contains_tensor("lm_head.weight") {
            Linear::new(embed.clone(), None)
        } else {
            candle_nn::linear_no_bias(a.hidden, a.vocab, vb.pp("lm_head"))?
        };
        // Position × frequency, computed in f32 as the references do, then the model's dtype.
        let half = a.inv_freq.len();
        let inv = Tensor::from_vec(a.inv_freq, (1, half), &device)?;
        let t = Tensor::arange(0u32, a.max_positions as u32, &device)?
            .to_dtype(DType::F32)?
            .reshape((a.max_positions, 1))?;
        let freqs = t.matmul(&inv)?;
        Ok(Stacked {
            embed,
            layers,
            norm,
            lm_head,
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: a.head_dim,
            act: a.act,
            windows,
            divide_scale: a.divide_scale,
            dtype,
            device,
            forwards: Default::default(),
        })
    }

    /// How many forwards have run: one per step of a batch, whatever its size.
    pub fn forwards(&self) -> u64 {
        self.forwards.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The positions a sequence may reach (the rotary tables' length).
    pub fn max_positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// Makes room in `pool` for slots `0..slots` and positions `0..positions`, keeping what it
    /// holds.
    fn reserve(&self, pool: &mut KvPool, slots: usize, positions: usize) -> Result<()> {
        if slots <= pool.slots && positions <= pool.positions && !pool.layers.is_empty() {
            return Ok(());
        }
        let new_slots = if slots > pool.slots {
            let bound = if pool.most_slots >= slots { pool.most_slots } else { usize::MAX };
            slots.next_power_of_two().min(bound)
        } else {
            pool.slots
        };
        let new_positions = if positions > pool.positions {
            positions.next_power_of_two().clamp(64, self.max_positions().max(positions))
        } else {
            pool.positions
        };
        // Rows of a layer's pool are addressed by u32 (see `forward`).
        if new_slots * self.kv_heads * new_positions > u32::MAX as usize {
            return Err(bad(format!(
                "a key/value pool of {new_slots} sequences × {new_positions} positions is more than one runner holds"
            )));
        }
        let shape = |s: usize, p: usize| (s, self.kv_heads, p, self.head_dim);
        let grow = |old: Option<&Tensor>| -> Result<Tensor> {
            let Some(old) = old else {
                return Tensor::zeros(shape(new_slots, new_positions), self.dtype, &self.device);
            };
            // Positions first (same slots), then slots: slice_set copies along one dimension.
            let wider = if new_positions > pool.positions {
                let t = Tensor::zeros(shape(pool.slots, new_positions), self.dtype, &self.device)?;
                t.slice_set(old, 2, 0)?;
                t
            } else {
                old.clone()
            };
            if new_slots > pool.slots {
                let t = Tensor::zeros(shape(new_slots, new_positions), self.dtype, &self.device)?;
                t.slice_set(&wider, 0, 0)?;
                Ok(t)
            } else {
                Ok(wider)
            }
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for i in 0..self.layers.len() {
            let old = pool.layers.get(i);
            layers.push((grow(old.map(|(k, _)| k))?, grow(old.map(|(_, v)| v))?));
        }
        *pool = KvPool { layers, slots: new_slots, positions: new_positions, most_slots: pool.most_slots };
        Ok(())
    }

    /// Zeroes `slot` of `pool` for a new sequence (what an earlier one left there is masked out
    /// anyway, but a NaN it left would still poison a product).
    pub fn clear(&self, pool: &mut KvPool, slot: usize) -> Result<()> {
        if slot >= pool.slots {
            return Ok(());
        }
        let zeros = Tensor::zeros((1, self.kv_heads, pool.positions, self.head_dim), self.dtype, &self.device)?;
        for (k, v) in &pool.layers {
            k.slice_set(&zeros, 0, slot)?;
            v.slice_set(&zeros, 0, slot)?;
        }
        Ok(())
    }

    /// One step for every feed at once: writes each feed's keys and values into its slot of
    /// `pool` and returns the logits after each feed's last token, (feeds, vocab) in f32.
    pub fn forward(&self, pool: &mut KvPool, feeds: &[Feed<'_>]) -> Result<Tensor> {
        let n: usize = feeds.iter().map(|f| f.tokens.len()).sum();
        if feeds.is_empty() || feeds.iter().any(|f| f.tokens.is_empty()) {
            return Err(bad("a step needs at least one token from every sequence in it".into()));
        }
        let limit = self.max_positions();
        let mut ids = Vec::with_capacity(n);
        let mut positions = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(feeds.len());
        let mut last = Vec::with_capacity(feeds.len());
        let mut slots = std::collections::HashSet::new();
        for f in feeds {
            if f.pos + f.tokens.len() > limit {
                return Err(bad(format!(
                    "a sequence reaching position {} exceeds the model's {limit} positions",
                    f.pos + f.tokens.len()
                )));
            }
            if !slots.insert(f.slot) {
                return Err(bad(format!("two sequences in one step share slot {}", f.slot)));
            }
            starts.push(ids.len() as u32);
            ids.extend_from_slice(f.tokens);
            positions.extend((f.pos..f.pos + f.tokens.len()).map(|p| p as u32));
            last.push(ids.len() as u32 - 1);
        }
        let reach = feeds.iter().map(|f| f.pos + f.tokens.len()).max().unwrap_or(0);
        let top = feeds.iter().map(|f| f.slot + 1).max().unwrap_or(0);
        self.reserve(pool, top, reach)?;
        self.forwards.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dev = &self.device;
        let (hd, kvh, cap) = (self.head_dim, self.kv_heads, pool.positions);
        // Where each new token's key (and value) row goes in a layer's pool seen as
        // (slots × kv_heads × positions, head_dim): one row per token and kv head, the same
        // rows in every layer.
        let mut rows = Vec::with_capacity(n * kvh);
        for f in feeds {
            for p in f.pos..f.pos + f.tokens.len() {
                for h in 0..kvh {
                    rows.push(((f.slot * kvh + h) * cap + p) as u32);
                }
            }
        }
        let rows = Tensor::from_vec(rows, (n * kvh, 1), dev)?.broadcast_as((n * kvh, hd))?.contiguous()?;
        let flat = pool.slots * kvh * cap;
        // The sequences decoding one token attend as one batch; those feeding a prompt as
        // another (padded to the longest prompt among them).
        let decoding: Vec<usize> = (0..feeds.len()).filter(|&i| feeds[i].tokens.len() == 1).collect();
        let prompting: Vec<usize> = (0..feeds.len()).filter(|&i| feeds[i].tokens.len() > 1).collect();
        let dec = Decoding::new(self, pool, feeds, &starts, &decoding)?;
        let pre = Prefill::new(self, feeds, &starts, &prompting)?;
        // Both groups' rows, decoding first, back in the step's token order (when mixed).
        let order = if dec.is_some() && pre.is_some() {
            let mut at = vec![0u32; n];
            let mut off = 0;
            let (mut d, mut p) = (0u32, decoding.len() as u32);
            for f in feeds {
                for slot in at.iter_mut().skip(off).take(f.tokens.len()) {
                    if f.tokens.len() == 1 {
                        *slot = d;
                        d += 1;
                    } else {
                        *slot = p;
                        p += 1;
                    }
                }
                off += f.tokens.len();
            }
            Some(Tensor::new(at.as_slice(), dev)?)
        } else {
            None
        };
        let positions = Tensor::new(positions.as_slice(), dev)?;
        // Each token's own rotation: (tokens, 1, head_dim / 2) against q and k laid out as
        // (tokens, heads, 1, head_dim), so rope's per-batch tables rotate each at its position.
        let cos = self.cos.index_select(&positions, 0)?.unsqueeze(1)?;
        let sin = self.sin.index_select(&positions, 0)?.unsqueeze(1)?;
        let mut x = self.embed.index_select(&Tensor::new(ids.as_slice(), dev)?, 0)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = layer.input_norm.forward(&x)?;
            let q = layer.q.forward(&h)?.reshape((n, self.heads, 1, hd))?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?.reshape((n, self.heads, hd))?;
            let k = layer.k.forward(&h)?.reshape((n, kvh, 1, hd))?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?.reshape((n * kvh, hd))?;
            let v = layer.v.forward(&h)?.reshape((n * kvh, hd))?;
            let (pk, pv) = &pool.layers[li];
            pk.reshape((flat, hd))?.scatter_set(&rows, &k, 0)?;
            pv.reshape((flat, hd))?.scatter_set(&rows, &v, 0)?;
            let y = match (&dec, &pre) {
                (Some(d), None) => d.attend(self, &q, pk, pv, layer.window)?,
                (None, Some(p)) => p.attend(self, &q, pk, pv, layer.window)?,
                (Some(d), Some(p)) => {
                    let both = Tensor::cat(
                        &[d.attend(self, &q, pk, pv, layer.window)?, p.attend(self, &q, pk, pv, layer.window)?],
                        0,
                    )?;
                    both.index_select(order.as_ref().expect("an order when mixed"), 0)?
                }
                (None, None) => unreachable!("a step has at least one sequence"),
            };
            x = (layer.o.forward(&y)? + &x)?;
            let h = layer.post_norm.forward(&x)?;
            let m = (self.act.forward(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (layer.down.forward(&m)? + &x)?;
        }
        let x = if n == feeds.len() { x } else { x.index_select(&Tensor::new(last.as_slice(), dev)?, 0)? };
        self.lm_head.forward(&self.norm.forward(&x)?)?.to_dtype(DType::F32)
    }

    fn scale(&self, att: Tensor) -> Result<Tensor> {
        let hd = self.head_dim as f64;
        if self.divide_scale { att / hd.sqrt() } else { att * (1f64 / hd.sqrt()) }
    }
}

/// A query at position `at` sees the key at `j` when `j ≤ at` and, with a window `w`, `at − j ≤ w`:
/// the additive mask's value for that pair.
fn mask_value(at: usize, j: usize, window: Option<usize>) -> f32 {
    if j > at || window.is_some_and(|w| at - j > w) { f32::NEG_INFINITY } else { 0. }
}

/// A group's additive attention masks: without a window, and for each window the model's layers
/// use.
struct Masks {
    plain: Tensor,
    windowed: Vec<(usize, Tensor)>,
}

impl Masks {
    fn new(windows: &[usize], mask: impl Fn(Option<usize>) -> Result<Tensor>) -> Result<Masks> {
        Ok(Masks {
            plain: mask(None)?,
            windowed: windows.iter().map(|&w| Ok((w, mask(Some(w))?))).collect::<Result<_>>()?,
        })
    }

    fn get(&self, window: Option<usize>) -> &Tensor {
        match window {
            None => &self.plain,
            Some(w) => &self.windowed.iter().find(|(x, _)| *x == w).expect("a mask per window").1,
        }
    }
}

/// The sequences of a step that decode one token each, attending as one batch: their slots,
/// how far each reaches, and the masks for that.
struct Decoding {
    /// Each decoding sequence's token among the step's tokens.
    tokens: Tensor,
    /// Their slots, when they are not simply slots 0.. in order.
    slots: Option<Tensor>,
    /// Positions to attend over: the furthest any of them reaches.
    reach: usize,
    /// (decoding, 1, 1, reach): past each sequence's own end.
    masks: Masks,
}

impl Decoding {
    /// `starts`: each feed's first token among the step's tokens.
    fn new(
        m: &Stacked,
        pool: &KvPool,
        feeds: &[Feed<'_>],
        starts: &[u32],
        decoding: &[usize],
    ) -> Result<Option<Decoding>> {
        if decoding.is_empty() {
            return Ok(None);
        }
        let dev = &m.device;
        let tokens: Vec<u32> = decoding.iter().map(|&i| starts[i]).collect();
        let slots: Vec<u32> = decoding.iter().map(|&i| feeds[i].slot as u32).collect();
        let in_order = slots.iter().enumerate().all(|(i, &s)| s as usize == i);
        let reach = decoding.iter().map(|&i| feeds[i].pos + 1).max().unwrap_or(1).min(pool.positions);
        let mask = |window: Option<usize>| {
            let mut v = Vec::with_capacity(decoding.len() * reach);
            for &i in decoding {
                v.extend((0..reach).map(|j| mask_value(feeds[i].pos, j, window)));
            }
            Tensor::from_vec(v, (decoding.len(), 1, 1, reach), dev)
        };
        Ok(Some(Decoding {
            tokens: Tensor::new(tokens.as_slice(), dev)?,
            slots: if in_order { None } else { Some(Tensor::new(slots.as_slice(), dev)?) },
            reach,
            masks: Masks::new(&m.windows, mask)?,
        }))
    }

    /// Attention of every decoding sequence's one query against its slot's keys and values
    /// (`pk`, `pv`: a layer's pool): (decoding, heads × head_dim), in the model's dtype.
    fn attend(&self, m: &Stacked, q: &Tensor, pk: &Tensor, pv: &Tensor, window: Option<usize>) -> Result<Tensor> {
        let b = self.tokens.dim(0)?;
        let (kvh, hd) = (m.kv_heads, m.head_dim);
        let rep = m.heads / kvh;
        let take = |t: &Tensor| -> Result<Tensor> {
            // Gathered slots before narrowing: index_select takes a contiguous tensor.
            let t = match &self.slots {
                None => t.narrow(0, 0, b)?,
                Some(s) => t.index_select(s, 0)?,
            };
            t.narrow(2, 0, self.reach)?.to_dtype(DType::F32)
        };
        let (k, v) = (take(pk)?, take(pv)?);
        // The `rep` query heads that share a key/value head (head h reads kv head h / rep, as
        // candle-transformers' repeat_kv lays them out) as one matrix product against it.
        let q = q.index_select(&self.tokens, 0)?.to_dtype(DType::F32)?.reshape((b, kvh, rep, hd))?;
        let att = m.scale(q.matmul(&k.transpose(2, 3)?)?)?;
        let att = candle_nn::ops::softmax_last_dim(&att.broadcast_add(self.masks.get(window))?)?;
        att.matmul(&v.contiguous()?)?.reshape((b, m.heads * hd))?.to_dtype(m.dtype)
    }
}

/// The sequences of a step that feed more than one token (a prompt), attending as one batch:
/// each one's queries padded to the longest prompt among them (a padding row repeats its last
/// token and is dropped after), against its slot's keys and values.
struct Prefill {
    /// The step's token behind each padded query row, (prompts × longest).
    gather: Tensor,
    /// The padded rows that are real tokens, in the step's order.
    keep: Tensor,
    slots: Tensor,
    count: usize,
    longest: usize,
    /// Positions to attend over: the furthest any of them reaches.
    reach: usize,
    /// (prompts, 1, 1, longest, reach): causal.
    masks: Masks,
}

impl Prefill {
    /// `starts`: each feed's first token among the step's tokens.
    fn new(m: &Stacked, feeds: &[Feed<'_>], starts: &[u32], prompting: &[usize]) -> Result<Option<Prefill>> {
        if prompting.is_empty() {
            return Ok(None);
        }
        let dev = &m.device;
        let longest = prompting.iter().map(|&i| feeds[i].tokens.len()).max().unwrap_or(1);
        let reach = prompting.iter().map(|&i| feeds[i].pos + feeds[i].tokens.len()).max().unwrap_or(1);
        let (mut gather, mut keep) = (Vec::new(), Vec::new());
        for (p, &i) in prompting.iter().enumerate() {
            let len = feeds[i].tokens.len();
            gather.extend((0..longest).map(|t| starts[i] + t.min(len - 1) as u32));
            keep.extend((0..len).map(|t| (p * longest + t) as u32));
        }
        let mask = |window: Option<usize>| {
            let mut v = Vec::with_capacity(prompting.len() * longest * reach);
            for &i in prompting {
                let (pos, len) = (feeds[i].pos, feeds[i].tokens.len());
                for t in 0..longest {
                    // A padding row sees what its prompt's last token sees.
                    let at = pos + t.min(len - 1);
                    v.extend((0..reach).map(|j| mask_value(at, j, window)));
                }
            }
            Tensor::from_vec(v, (prompting.len(), 1, 1, longest, reach), dev)
        };
        let slots: Vec<u32> = prompting.iter().map(|&i| feeds[i].slot as u32).collect();
        Ok(Some(Prefill {
            gather: Tensor::new(gather.as_slice(), dev)?,
            keep: Tensor::new(keep.as_slice(), dev)?,
            slots: Tensor::new(slots.as_slice(), dev)?,
            count: prompting.len(),
            longest,
            reach,
            masks: Masks::new(&m.windows, mask)?,
        }))
    }

    /// Attention of every prompt's queries (`q`: the step's, (tokens, heads, head_dim)) against
    /// its slot's keys and values (`pk`, `pv`: a layer's pool): (prompt tokens, heads × head_dim)
    /// in the step's order, in the model's dtype.
    fn attend(&self, m: &Stacked, q: &Tensor, pk: &Tensor, pv: &Tensor, window: Option<usize>) -> Result<Tensor> {
        let (b, l, r) = (self.count, self.longest, self.reach);
        let (kvh, hd) = (m.kv_heads, m.head_dim);
        let rep = m.heads / kvh;
        let take = |t: &Tensor| t.index_select(&self.slots, 0)?.narrow(2, 0, r)?.to_dtype(DType::F32);
        let (k, v) = (take(pk)?, take(pv)?);
        // (prompts, heads, longest, head_dim), the query heads grouped on their key/value head.
        let q = q
            .index_select(&self.gather, 0)?
            .reshape((b, l, m.heads, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .to_dtype(DType::F32)?
            .reshape((b, kvh, rep * l, hd))?;
        let att = m.scale(q.matmul(&k.transpose(2, 3)?)?)?;
        let att =
            att.reshape((b, kvh, rep, l, r))?.broadcast_add(self.masks.get(window))?.reshape((b, kvh, rep * l, r))?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        att.matmul(&v.contiguous()?)?
            .reshape((b, m.heads, l, hd))?
            .transpose(1, 2)?
            .reshape((b * l, m.heads * hd))?
            .index_select(&self.keep, 0)?
            .to_dtype(m.dtype)
    }
}
