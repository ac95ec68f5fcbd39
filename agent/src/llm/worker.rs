//! A runner's decode loop: one thread per loaded LLM runner owns its [`Batch`]; requests come in
//! over a channel and join between steps, each answered on its own channel when it finishes.
//! The thread ends when the runner is unloaded (every sender dropped) and its batch is empty.
//!
//! A request through the queue is `{"prompt": "...", "max_tokens": 16, "temperature": 0.7,
//! "top_p": 0.9, "seed": 1, "stop": ["."]}` (OpenAI's names; only `prompt` is required); the
//! answer is `{"text": "...", "finish_reason": "stop" | "length", "usage": {"prompt_tokens": n,
//! "completion_tokens": m, "total_tokens": n + m}, "timing": {"first_token_s", "decode_s"}}`.

use std::sync::Arc;
use std::sync::mpsc;

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{Batch, Detokenizer, Llm, LlmError, Params, Sequence};

type Reply = oneshot::Sender<Result<Value, String>>;
/// Text as it is produced, for a streamed request: each message the text added since the last.
pub type Deltas = tokio::sync::mpsc::UnboundedSender<String>;

struct Job {
    seq: Sequence,
    reply: Reply,
    deltas: Option<Deltas>,
}

/// The handle fleet's agent keeps per LLM runner.
pub struct LlmRunner {
    tx: mpsc::Sender<Job>,
    llm: Arc<Llm>,
}

impl std::fmt::Debug for LlmRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmRunner").field("family", &self.llm.family()).finish()
    }
}

/// What a request asks the model to continue: a prompt as given, or a chat.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    /// `[{role, content}]`, rendered by the model's chat template ([`Llm::render_chat`]).
    Chat(Vec<Value>),
}

/// A request's input as the queue carries it: the prompt (or chat `messages`) and OpenAI's
/// sampling parameters.
pub fn parse(input: &Value) -> Result<(Prompt, Params), LlmError> {
    let prompt = match (input.get("prompt"), input.get("messages")) {
        (Some(Value::String(p)), None) => Prompt::Text(p.clone()),
        (None, Some(Value::Array(m))) if !m.is_empty() => {
            for (i, msg) in m.iter().enumerate() {
                if msg.get("role").and_then(Value::as_str).is_none()
                    || msg.get("content").and_then(Value::as_str).is_none()
                {
                    return Err(LlmError::Input(format!("messages[{i}] needs a role and a text content")));
                }
            }
            Prompt::Chat(m.clone())
        }
        _ => {
            return Err(LlmError::Input(
                "an LLM request needs \"prompt\": a string, or \"messages\": a list of {role, content}".into(),
            ));
        }
    };
    let mut rest = input.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("prompt");
        o.remove("messages");
        // OpenAI accepts one stop string as well as a list.
        if let Some(Value::String(s)) = o.get("stop").cloned() {
            o.insert("stop".into(), json!([s]));
        }
        if o.get("stop").is_some_and(Value::is_null) {
            o.remove("stop");
        }
    }
    let params: Params = serde_json::from_value(rest).map_err(|e| LlmError::Input(e.to_string()))?;
    Ok((prompt, params))
}

/// The tokens `prompt` starts as: a text through the tokenizer (its special tokens added, as
/// the tokenizer says), a chat rendered by the model's template and tokenized as rendered (the
/// template places BOS and the rest itself).
pub fn prompt_tokens(llm: &Llm, prompt: &Prompt) -> Result<Vec<u32>, LlmError> {
    match prompt {
        Prompt::Text(t) => llm.tokenize(t),
        Prompt::Chat(m) => llm.tokenize_as_is(&llm.render_chat(m)?),
    }
}

impl LlmRunner {
    /// Starts the decode thread for `llm`, up to `max_multiplexing` sequences at once.
    pub fn start(llm: Arc<Llm>, max_multiplexing: usize) -> LlmRunner {
        let (tx, rx) = mpsc::channel::<Job>();
        let l = llm.clone();
        std::thread::Builder::new()
            .name("llm-decode".into())
            .spawn(move || decode_loop(&l, rx, max_multiplexing))
            .expect("spawn the decode thread");
        LlmRunner { tx, llm }
    }

    /// Runs one request through the batch; the answer comes on the returned channel.
    pub fn submit(&self, input: &Value) -> oneshot::Receiver<Result<Value, String>> {
        self.submit_streaming(input, None)
    }

    /// [`LlmRunner::submit`], with the text sent on `deltas` as it is produced (held back where it
    /// could be the start of a stop sequence, so that nothing streamed is later cut).
    pub fn submit_streaming(&self, input: &Value, deltas: Option<Deltas>) -> oneshot::Receiver<Result<Value, String>> {
        let (reply, rx) = oneshot::channel();
        let started = parse(input).and_then(|(prompt, params)| {
            let tokens = prompt_tokens(&self.llm, &prompt)?;
            self.llm.start(tokens, &params)
        });
        match started {
            Ok(seq) => {
                if let Err(mpsc::SendError(job)) = self.tx.send(Job { seq, reply, deltas }) {
                    let _ = job.reply.send(Err("the runner's decode loop has stopped".into()));
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
            }
        }
        rx
    }

    pub fn llm(&self) -> &Llm {
        &self.llm
    }
}

fn answer(llm: &Llm, seq: &Sequence) -> Result<Value, String> {
    let text = llm.text(seq).map_err(|e| e.to_string())?;
    let finish = seq.finish.map(|f| f.reason()).unwrap_or("length");
    let (p, c) = (seq.prompt_len, seq.generated.len());
    let mut out = json!({
        "text": text,
        "finish_reason": finish,
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    });
    // Measured on the runner: from the request reaching it to its first token, and from there
    // to the end (fleetd adds the queue wait for time to first token).
    if let Some((first, decode)) = seq.timing() {
        out["timing"] = json!({"first_token_s": first, "decode_s": decode});
    }
    Ok(out)
}

/// A running request's reply and, when streamed, its text so far and what of it was sent.
struct Running {
    reply: Option<Reply>,
    text: Detokenizer,
    stream: Stream,
}

/// Where a streamed request's text goes, and how much of it went.
struct Stream {
    deltas: Option<Deltas>,
    sent: usize,
    holdback: usize,
}

/// Sends the part of `text` not sent yet, keeping back the last `holdback` bytes (a stop
/// sequence may be starting there) unless the sequence ended.
fn send_delta(r: &mut Stream, text: &str, ended: bool) {
    let Some(tx) = &r.deltas else { return };
    let mut upto = if ended { text.len() } else { text.len().saturating_sub(r.holdback) };
    while upto > 0 && !text.is_char_boundary(upto) {
        upto -= 1;
    }
    // Decoding more tokens can change earlier text (merged pieces): send only what extends
    // what was sent.
    if upto > r.sent && text.is_char_boundary(r.sent) {
        let _ = tx.send(text[r.sent..upto].to_string());
        r.sent = upto;
    }
}

fn decode_loop(llm: &Llm, rx: mpsc::Receiver<Job>, capacity: usize) {
    let mut batch: Batch<usize> = Batch::new(capacity);
    let mut running: Vec<Running> = Vec::new();
    let mut waiting: std::collections::VecDeque<Job> = Default::default();
    let mut open = true;
    loop {
        // Take what has arrived: block only when there is nothing to decode.
        if batch.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(r) => waiting.push_back(r),
                Err(_) => return,
            }
        }
        while open {
            match rx.try_recv() {
                Ok(r) => waiting.push_back(r),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => open = false,
            }
        }
        while batch.has_room() {
            let Some(job) = waiting.pop_front() else { break };
            let key = running.len();
            let holdback = job.seq.stop_len().saturating_sub(1);
            running.push(Running {
                reply: Some(job.reply),
                text: Detokenizer::default(),
                stream: Stream { deltas: job.deltas, sent: 0, holdback },
            });
            if let Err(back) = batch.join(key, job.seq) {
                let (_, seq) = *back;
                let r = running.pop().expect("just pushed");
                waiting.push_front(Job { seq, reply: r.reply.expect("not answered"), deltas: r.stream.deltas });
                break;
            }
        }
        let (tokens, done) = batch.step(llm);
        // A sequence that ended this step sends its final text (cut at a stop sequence) below.
        let ended: Vec<usize> = done.iter().map(|(k, _)| *k).collect();
        for (key, t) in tokens {
            let r = &mut running[key];
            if r.stream.deltas.is_some() && !ended.contains(&key) && r.text.push(|t| llm.detokenize(t), t).is_ok() {
                send_delta(&mut r.stream, r.text.text(), false);
            }
        }
        for (key, result) in done {
            let out = result.map_err(|e| e.to_string()).and_then(|seq| answer(llm, &seq));
            let r = &mut running[key];
            if let Ok(v) = &out
                && let Some(text) = v["text"].as_str()
            {
                send_delta(&mut r.stream, text, true);
            }
            r.stream.deltas = None;
            if let Some(reply) = r.reply.take() {
                let _ = reply.send(out);
            }
        }
        if batch.is_empty() && waiting.is_empty() {
            running.clear();
            if !open {
                return;
            }
        }
    }
}
