//! The LLM runner on small random-weight models of each family (generated, laid out as a hub
//! publishes them): fleet's decoding — KV cache, continuous batching, sampling, stop sequences —
//! against candle-transformers' own forward over the whole sequence, token for token.

use candle_core::Device;
use fleet_agent::llm::testmodel::{self, Shape};
use fleet_agent::llm::{Batch, Family, Finish, Llm, Params};

fn model(family: Family, shards: usize) -> (tempfile::TempDir, Llm) {
    let dir = tempfile::tempdir().unwrap();
    testmodel::write(dir.path(), family, Shape::default(), shards, 1).unwrap();
    let llm = Llm::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(llm.family(), family);
    (dir, llm)
}

const PROMPTS: &[&str] = &[
    "the fleet rents gpus across clouds",
    "a spot node serves tokens",
    "hello world",
    "the oracle is cheap and the budget cap holds",
];

fn greedy(max_tokens: u32) -> Params {
    Params { max_tokens, ..Params::default() }
}

#[test]
fn greedy_decoding_matches_candle_transformers_forward_for_every_family() {
    for family in Family::ALL {
        // Llama from two shards and an index, the others from one file.
        let (_dir, llm) = model(family, if family == Family::Llama { 2 } else { 1 });
        let mut produced = 0;
        for p in PROMPTS {
            let prompt = llm.tokenize(p).unwrap();
            assert!(prompt.len() >= 2, "{p}: {prompt:?}");
            let (tokens, finish) = llm.generate(prompt.clone(), &greedy(12)).unwrap();
            let reference = llm.reference_greedy(&prompt, 12).unwrap();
            assert_eq!(tokens, reference, "{family:?} on {p:?}");
            if tokens.len() == 12 {
                assert_eq!(finish, Finish::Length);
            } else {
                assert_eq!(finish, Finish::Stop, "ended before max_tokens only at end of sequence");
            }
            produced += tokens.len();
            // Deterministic: the same again.
            assert_eq!(llm.generate(prompt, &greedy(12)).unwrap().0, tokens);
        }
        assert!(produced > 0, "{family:?} produced nothing at all");
        eprintln!("{family:?}: {produced} greedy tokens equal to the reference");
    }
}

#[test]
fn sequences_joining_a_running_batch_decode_exactly_as_alone() {
    for family in Family::ALL {
        let (_dir, llm) = model(family, 1);
        let alone: Vec<Vec<u32>> =
            PROMPTS.iter().map(|p| llm.generate(llm.tokenize(p).unwrap(), &greedy(10)).unwrap().0).collect();
        // Capacity 3 for 4 prompts: one joins at each of steps 0, 2 and 4; the fourth waits for
        // a free place, then joins.
        let mut batch: Batch<usize> = Batch::new(3);
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); PROMPTS.len()];
        let mut finished = vec![false; PROMPTS.len()];
        let mut next = 0;
        let mut step = 0;
        let mut max_together = 0;
        while finished.iter().any(|f| !f) {
            if next < PROMPTS.len() && step % 2 == 0 && batch.has_room() {
                let seq = llm.start(llm.tokenize(PROMPTS[next]).unwrap(), &greedy(10)).unwrap();
                batch.join(next, seq).map_err(|_| "room").unwrap();
                next += 1;
            }
            max_together = max_together.max(batch.len());
            // One forward per step, however many sequences the batch holds.
            let before = llm.forwards();
            let (tokens, done) = batch.step(&llm);
            assert_eq!(llm.forwards(), before + 1, "{family:?}: a step of {} sequences", batch.len() + done.len());
            for (k, t) in tokens {
                out[k].push(t);
            }
            for (k, r) in done {
                let seq = r.unwrap();
                assert_eq!(seq.generated, out[k]);
                finished[k] = true;
            }
            step += 1;
            assert!(step < 200, "the batch never drained");
        }
        assert_eq!(out, alone, "{family:?}: batched output differs from alone");
        for (p, got) in PROMPTS.iter().zip(&out) {
            let reference = llm.reference_greedy(&llm.tokenize(p).unwrap(), 10).unwrap();
            assert_eq!(got, &reference, "{family:?} on {p:?}: batched output differs from candle-transformers");
        }
        assert!(max_together >= 2, "{family:?}: sequences never ran together");
        assert!(!batch.has_room() || batch.is_empty());
    }
}

/// The largest difference between two logit vectors, relative to the largest logit.
fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

#[test]
fn one_stacked_forward_of_prompts_and_decoding_tokens_gives_candle_transformers_logits() {
    // Grouped-query attention (8 query heads on 2 key/value heads) and more layers than the
    // default shape.
    let shape = Shape { hidden: 64, intermediate: 96, layers: 3, heads: 8, kv_heads: 2, max_positions: 128 };
    for family in Family::ALL {
        let dir = tempfile::tempdir().unwrap();
        testmodel::write(dir.path(), family, shape, 1, 3).unwrap();
        let llm = Llm::load(dir.path(), &Device::Cpu).unwrap();
        let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| llm.tokenize(p).unwrap()).collect();
        let mut batch: Batch<usize> = Batch::new(8);
        for (i, p) in prompts.iter().enumerate() {
            batch.join(i, llm.start(p.clone(), &greedy(8)).unwrap()).map_err(|_| "room").unwrap();
        }
        let mut fed: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
        let mut worst = 0f32;
        // Step 0: sequence 0's prompt alone. Step 1: sequence 0 decodes one token while
        // sequence 1's prompt prefills, in one forward. Step 2: both decode while 2 and 3
        // prefill (prompts of different lengths, padded together). Steps 3..: all four decode,
        // but step 4 only 1 and 3 (gathered from their slots, not read in order), and at step 5
        // sequence 1 takes three tokens at once beside the others' one. From step 7 on, 0 and 2 go on alone, well past the 64
        // positions the cache pool first holds (so it grows, keeping what it held). Every row
        // is checked against the reference over the whole sequence so far.
        for step in 0..80 {
            let active: Vec<usize> = match step {
                0 => vec![0],
                1 => vec![0, 1],
                4 => vec![1, 3],
                7.. => vec![0, 2],
                _ => vec![0, 1, 2, 3],
            };
            let feeds: Vec<(usize, Vec<u32>)> = active
                .iter()
                .map(|&i| {
                    let next = |k: u32| (i as u32 * 7 + step + k) % 60 + 3;
                    let t = match (fed[i].is_empty(), step, i) {
                        (true, _, _) => prompts[i].clone(),
                        // Several tokens at once past the start (a prompt continued).
                        (false, 5, 1) => vec![next(0), next(1), next(2)],
                        _ => vec![next(0)],
                    };
                    (i, t)
                })
                .collect();
            let logits = batch.forward_logits(&llm, &feeds).unwrap();
            assert_eq!(logits.len(), active.len());
            for ((i, f), got) in feeds.iter().zip(&logits) {
                let i = *i;
                fed[i].extend_from_slice(f);
                if step > 7 && step % 9 != 0 {
                    continue;
                }
                let want = llm.reference_logits(&fed[i]).unwrap();
                let d = max_rel_diff(got, &want);
                assert!(d < 1e-4, "{family:?} step {step} sequence {i}: logits differ by {d} of the largest");
                worst = worst.max(d);
            }
        }
        assert!(fed.iter().all(|f| f.len() > 2), "every sequence prefilled and decoded: {fed:?}");
        assert!(fed[0].len() > 64, "sequence 0 reached {} positions", fed[0].len());
        eprintln!("{family:?}: stacked logits within {worst:e} of candle-transformers'");
    }
}

#[test]
fn sliding_windows_and_llama3_rope_scaling_decode_as_candle_transformers_does() {
    // A window of 3 positions from the first layer on, so that decoding runs well past it
    // (candle-transformers' reference, run over the whole sequence each step, applies the
    // window everywhere); Llama 3's rope scaling with a short original context so that every
    // band of the scaling is used.
    for (family, edit) in [
        (Family::Mistral, vec![("\"sliding_window\": 4096", "\"sliding_window\": 3")]),
        (
            Family::Qwen2,
            vec![
                ("\"sliding_window\": 4096", "\"sliding_window\": 3"),
                ("\"use_sliding_window\": false", "\"use_sliding_window\": true"),
                ("\"max_window_layers\": 2", "\"max_window_layers\": 0"),
            ],
        ),
        (
            Family::Llama,
            vec![(
                "\"rope_theta\": 10000.0",
                "\"rope_theta\": 10000.0, \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \
                 \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16, \"rope_type\": \"llama3\"}",
            )],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        testmodel::write(dir.path(), family, Shape::default(), 1, 4).unwrap();
        let cfg = dir.path().join("config.json");
        let mut c = std::fs::read_to_string(&cfg).unwrap();
        for (from, to) in edit {
            assert!(c.contains(from), "{family:?}: {from} not in {c}");
            c = c.replace(from, to);
        }
        std::fs::write(&cfg, c).unwrap();
        let llm = Llm::load(dir.path(), &Device::Cpu).unwrap();
        let mut batch: Batch<usize> = Batch::new(PROMPTS.len());
        for (i, p) in PROMPTS.iter().enumerate() {
            batch.join(i, llm.start(llm.tokenize(p).unwrap(), &greedy(16)).unwrap()).map_err(|_| "room").unwrap();
        }
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); PROMPTS.len()];
        while !batch.is_empty() {
            for (k, t) in batch.step(&llm).0 {
                out[k].push(t);
            }
        }
        for (p, got) in PROMPTS.iter().zip(&out) {
            let reference = llm.reference_greedy(&llm.tokenize(p).unwrap(), 16).unwrap();
            assert_eq!(got, &reference, "{family:?} on {p:?}");
        }
        assert!(out.iter().any(|o| o.len() > 4), "{family:?}: decoding never went past the window: {out:?}");
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_the_seed_matters() {
    let (_dir, llm) = model(Family::Qwen2, 1);
    let prompt = llm.tokenize(PROMPTS[0]).unwrap();
    let sampled = |seed: u64| {
        let p = Params { max_tokens: 16, temperature: Some(1.5), top_p: Some(0.95), seed: Some(seed), stop: vec![] };
        llm.generate(prompt.clone(), &p).unwrap().0
    };
    assert_eq!(sampled(7), sampled(7));
    let distinct: std::collections::BTreeSet<Vec<u32>> = (0..6).map(sampled).collect();
    assert!(distinct.len() > 1, "six seeds gave one output: {distinct:?}");
}

#[test]
fn a_stop_sequence_ends_the_text_before_it() {
    let (_dir, llm) = model(Family::Llama, 1);
    // Find a prompt whose greedy output has at least three words, and stop at its third.
    for p in PROMPTS {
        let prompt = llm.tokenize(p).unwrap();
        let (tokens, _) = llm.generate(prompt.clone(), &greedy(12)).unwrap();
        let text = llm.detokenize(&tokens).unwrap();
        let words: Vec<&str> = text.split(' ').collect();
        if words.len() < 3 {
            continue;
        }
        // The third word, and the second and third together: a stop made of several tokens is
        // found when its last one comes, though it began in text produced before.
        for stop in [words[2].to_string(), format!("{} {}", words[1], words[2])] {
            let cut = text.find(&stop).unwrap();
            let params = Params { stop: vec![stop.clone()], ..greedy(12) };
            let mut seq = llm.start(prompt.clone(), &params).unwrap();
            while llm.step(&mut seq).unwrap().is_some() {}
            assert_eq!(seq.finish, Some(Finish::StopSequence(cut)), "stop {stop:?}");
            assert_eq!(llm.text(&seq).unwrap(), text[..cut]);
            assert!(seq.generated.len() < tokens.len() || tokens.len() == 3);
        }
        return;
    }
    panic!("no prompt gave three words to stop at");
}

#[test]
fn bad_models_and_requests_get_errors_that_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    testmodel::write(dir.path(), Family::Mistral, Shape::default(), 2, 1).unwrap();
    // A shard path that leaves the model directory.
    let index = dir.path().join("model.safetensors.index.json");
    let good = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, good.replacen("model-00001-of-00002.safetensors", "../../etc/passwd", 1)).unwrap();
    let e = Llm::load(dir.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("not a file name in the model directory"), "{e}");
    // A shard missing.
    std::fs::write(&index, &good).unwrap();
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = Llm::load(dir.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
    // A family not supported.
    let cfg = dir.path().join("config.json");
    let c = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, c.replace("\"mistral\"", "\"gpt2\"")).unwrap();
    let e = Llm::load(dir.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("model_type \"gpt2\" is not supported"), "{e}");
    // Weights that do not match the config.
    let (dir2, _) = model(Family::Qwen2, 1);
    let cfg = dir2.path().join("config.json");
    let c = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, c.replace("\"hidden_size\": 32", "\"hidden_size\": 48")).unwrap();
    let e = Llm::load(dir2.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("weights do not match config.json"), "{e}");
    // A shard cut short, and one whose header is not safetensors': the shard named, nothing loaded.
    let (dir3, _) = model(Family::Llama, 1);
    let shard = dir3.path().join("model.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    let e = Llm::load(dir3.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("do not hold"), "{e}");
    let mut garbage = bytes.clone();
    garbage[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&shard, &garbage).unwrap();
    let e = Llm::load(dir3.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("not a safetensors file"), "{e}");
    // Requests.
    let (_d, llm) = model(Family::Llama, 1);
    let prompt = llm.tokenize("hello world").unwrap();
    let err = |p: Params| llm.start(prompt.clone(), &p).err().expect("refused").to_string();
    assert!(err(Params { max_tokens: 0, ..Params::default() }).contains("max_tokens must be at least 1"));
    assert!(err(Params { max_tokens: 1000, ..Params::default() }).contains("exceeds the model's context of 256"));
    assert!(err(Params { temperature: Some(3.0), ..Params::default() }).contains("temperature 3"));
    assert!(err(Params { top_p: Some(0.0), ..Params::default() }).contains("top_p 0"));
    assert!(llm.start(Vec::new(), &Params::default()).err().unwrap().to_string().contains("the prompt is empty"));
}

#[test]
fn the_same_seed_writes_the_same_model() {
    let write = |seed: u64| {
        let dir = tempfile::tempdir().unwrap();
        testmodel::write(dir.path(), Family::Qwen2, Shape::default(), 1, seed).unwrap();
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        (dir, bytes)
    };
    let (_a, one) = write(5);
    let (_b, again) = write(5);
    let (_c, other) = write(6);
    assert_eq!(one, again);
    assert_ne!(one, other);
}

#[test]
fn a_streamed_request_sends_its_text_as_produced_and_nothing_past_a_stop() {
    use fleet_agent::llm::worker::LlmRunner;
    let (_dir, llm) = model(Family::Llama, 1);
    let llm = std::sync::Arc::new(llm);
    let runner = LlmRunner::start(llm.clone(), 2);
    let prompt = "the fleet rents gpus across clouds";
    let alone = llm.generate(llm.tokenize(prompt).unwrap(), &greedy(10)).unwrap().0;
    let text = llm.detokenize(&alone).unwrap();
    let words: Vec<&str> = text.split(' ').collect();
    assert!(words.len() >= 4, "{text}");
    let stream = |input: serde_json::Value| {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let answer = runner.submit_streaming(&input, Some(tx)).blocking_recv().unwrap().unwrap();
        let mut pieces = Vec::new();
        while let Ok(p) = rx.try_recv() {
            pieces.push(p);
        }
        (answer, pieces)
    };
    // No stop: one piece per token, adding up to the answer.
    let (answer, pieces) = stream(serde_json::json!({"prompt": prompt, "max_tokens": 10}));
    assert_eq!(answer["text"], text.as_str());
    assert_eq!(pieces.concat(), text);
    assert!(pieces.len() >= words.len() - 1, "{pieces:?}");
    // A stop sequence (the fourth word): the stream never shows it or anything after.
    let stop = format!(" {}", words[3]);
    let (answer, pieces) = stream(serde_json::json!({"prompt": prompt, "max_tokens": 10, "stop": stop}));
    let cut = &text[..text.find(&stop).unwrap()];
    assert_eq!(answer["text"], cut);
    assert_eq!(answer["finish_reason"], "stop");
    assert_eq!(pieces.concat(), cut, "{pieces:?}");
}

#[test]
fn a_chat_is_rendered_by_the_models_own_template() {
    let (dir, plain) = model(Family::Qwen2, 1);
    let msgs = vec![
        serde_json::json!({"role": "system", "content": "  be brief "}),
        serde_json::json!({"role": "user", "content": "hello"}),
    ];
    // No tokenizer_config.json: role lines, then the assistant's turn.
    assert_eq!(plain.render_chat(&msgs).unwrap(), "system:   be brief \nuser: hello\nassistant:");
    // ChatML as Qwen2 publishes it (Python's .strip(), raise_exception for what it refuses).
    let chatml = "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}\
        {{ raise_exception('roles are system, user and assistant') }}{% endif %}\
        <|im_start|>{{ m['role'] }}\n{{ m['content'].strip() }}<|im_end|>\n{% endfor %}\
        {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let cfg = dir.path().join("tokenizer_config.json");
    std::fs::write(&cfg, serde_json::json!({"chat_template": chatml, "eos_token": "<|im_end|>"}).to_string()).unwrap();
    let llm = Llm::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(
        llm.render_chat(&msgs).unwrap(),
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    );
    let e = llm.render_chat(&[serde_json::json!({"role": "tool", "content": "x"})]).unwrap_err().to_string();
    assert!(e.contains("roles are system, user and assistant"), "{e}");
    assert!(e.starts_with("bad request:"), "the caller's to fix: {e}");
    // Llama 3's shape: a list of named templates, BOS from the config (a {content} object).
    let llama3 = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n\
        {{ m.content | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}\
        <|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
    std::fs::write(
        &cfg,
        serde_json::json!({"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": llama3}],
                           "bos_token": {"content": "<|begin_of_text|>"}})
        .to_string(),
    )
    .unwrap();
    let llm = Llm::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(
        llm.render_chat(&msgs[1..]).unwrap(),
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // A chat generates through the runner as a prompt does.
    let runner = fleet_agent::llm::worker::LlmRunner::start(std::sync::Arc::new(llm), 1);
    let answer = runner
        .submit(&serde_json::json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}))
        .blocking_recv()
        .unwrap()
        .unwrap();
    // The test tokenizer splits on whitespace: the rendered chat is two pieces.
    assert_eq!(answer["usage"]["prompt_tokens"], 2, "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 3, "{answer}");
    // A template that does not parse is refused when the model loads.
    std::fs::write(&cfg, serde_json::json!({"chat_template": "{% for m in messages %}"}).to_string()).unwrap();
    let e = Llm::load(dir.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("chat_template does not parse"), "{e}");
}
