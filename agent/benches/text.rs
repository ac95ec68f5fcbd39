//! Host time spent turning a streamed answer's tokens into text, as the runner does for every
//! token of a request with a stop sequence: once to look for the stop, once for the stream's
//! delta. Measured both ways in the same run on the same tokens: the whole decode of everything
//! generated after every token (how the runner did it until 2026-12-02, O(n²) over an answer),
//! and [`Detokenizer`] (a token at a time, O(1) per token). The clock covers only the decoding
//! (no model): what the host adds to each decode step, while a GPU waits for the next one.
//!
//! `cargo bench -p fleet-agent --bench text` (FLEET_TEXT_BENCH_TOKENS, default 1,000 tokens per
//! answer; FLEET_TEXT_BENCH_BATCH, default 64 answers decoded together).

use std::time::Instant;

use fleet_agent::llm::testmodel::{self, Shape};
use fleet_agent::llm::{Detokenizer, Family, LlmError};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let n = env("FLEET_TEXT_BENCH_TOKENS", 1000);
    let batch = env("FLEET_TEXT_BENCH_BATCH", 64);
    // The test models' tokenizer (a word per token); the words drawn by a fixed generator.
    let dir = tempfile::tempdir().unwrap();
    testmodel::write(dir.path(), Family::Llama, Shape::default(), 1, 1).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    let decode = |t: &[u32]| tok.decode(t, true).map_err(|e| LlmError::Compute(e.to_string()));
    let vocab = tok.get_vocab_size(true) as u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let answers: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (3 + x % (vocab - 3)) as u32
                })
                .collect()
        })
        .collect();
    let stop = "never in the text";

    // Whole: after every token, the whole answer decoded for the stop and again for the delta.
    let start = Instant::now();
    let mut bytes = 0;
    for step in 1..=n {
        for a in &answers {
            let text = decode(&a[..step]).unwrap();
            assert!(!text.contains(stop));
            bytes += decode(&a[..step]).unwrap().len();
        }
    }
    let whole = start.elapsed().as_secs_f64();
    std::hint::black_box(bytes);

    // A token at a time: one Detokenizer for the stop, one for the stream.
    let start = Instant::now();
    let mut texts: Vec<(Detokenizer, Detokenizer)> = vec![Default::default(); batch];
    for step in 0..n {
        for (a, (for_stop, for_stream)) in answers.iter().zip(texts.iter_mut()) {
            let before = for_stop.push(decode, a[step]).unwrap();
            let from = before.saturating_sub(stop.len() - 1);
            assert!(!for_stop.text()[from..].contains(stop));
            for_stream.push(decode, a[step]).unwrap();
        }
    }
    let incremental = start.elapsed().as_secs_f64();
    for (a, (s, _)) in answers.iter().zip(&texts) {
        assert_eq!(s.text(), decode(a).unwrap(), "the same text both ways");
    }

    let tokens = (n * batch) as f64;
    println!("{batch} answers of {n} tokens, decoded together ({} tokens)", n * batch);
    println!(
        "whole decode after every token: {:.2} s, {:.1} µs per token, {:.2} ms per step",
        whole,
        whole / tokens * 1e6,
        whole / n as f64 * 1e3
    );
    println!(
        "a token at a time (Detokenizer): {:.3} s, {:.2} µs per token, {:.3} ms per step",
        incremental,
        incremental / tokens * 1e6,
        incremental / n as f64 * 1e3
    );
    println!("ratio: the whole decode takes {:.0}× the time", whole / incremental);
}
