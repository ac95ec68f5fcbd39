//! OpenAI-compatible endpoints: `POST /v1/completions` and `POST /v1/chat/completions`, so the
//! clients people already use (the official `openai` packages, anything that speaks that API)
//! reach an LLM app unchanged. `model` is the app's name; the token is the same as the queue
//! API's (`submit:APP` may call these for its own app only, an admin token for any).
//!
//! A call passes the same admission as any request (rate per token, input size). Then it is
//! pushed to a ready runner with room ([`crate::push`]: fewest outstanding first) and its text
//! streams back as the runner produces it; when no runner has room (or fleetd's nodes take no
//! pushes), it goes through the app's durable queue like any request — same runners, served
//! once — and the call waits for its result (a watch on the result's key; polling where the
//! store cannot watch), up to [`WAIT`]. The answer is OpenAI's shape with `usage` counted by the
//! model's tokenizer; errors are OpenAI's error object (`{"error": {"message", "type", "param",
//! "code"}}`).
//!
//! `stream: true` answers as server-sent events in OpenAI's chunk format, ending with
//! `data: [DONE]` (`stream_options.include_usage` adds the usage chunk): a chunk per piece of
//! text for a pushed request; for one served from the queue the text comes with the finished
//! result, in one chunk. A runner lost after text was sent ends the stream with an error event.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use fleet_core::RequestId;
use fleet_state::model::{RequestRecord, RequestState};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::actors::Ctx;
use crate::api::{ApiError, admit, enqueue_admitted};
use crate::push::PushEvent;

/// How long a call waits for its result before answering 504 (the request stays queued; its
/// result can be read later through the queue API).
pub const WAIT: Duration = Duration::from_secs(600);

/// OpenAI's error object, with the status it goes with.
fn error(status: StatusCode, message: impl Into<String>, param: Option<&str>) -> Response {
    let (kind, code) = match status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => ("invalid_request_error", Value::Null),
        StatusCode::NOT_FOUND => ("invalid_request_error", json!("model_not_found")),
        StatusCode::UNAUTHORIZED => ("authentication_error", Value::Null),
        StatusCode::FORBIDDEN => ("permission_error", Value::Null),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limit_exceeded", json!("rate_limit_exceeded")),
        StatusCode::GATEWAY_TIMEOUT => ("timeout", Value::Null),
        _ => ("server_error", Value::Null),
    };
    let body = json!({"error": {"message": message.into(), "type": kind, "param": param, "code": code}});
    (status, Json(body)).into_response()
}

fn from_api(e: ApiError) -> Response {
    let mut r = error(e.status, e.message.clone(), None);
    if let Some(after) = e.into_response().headers().get(axum::http::header::RETRY_AFTER).cloned() {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, after);
    }
    r
}

fn bad(message: impl Into<String>, param: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message, Some(param))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

/// The queue input for an OpenAI body: `prompt` or `messages`, and the sampling parameters the
/// runner takes (OpenAI's names). Everything else a client sends is ignored, as OpenAI's own
/// server ignores what it does not know; what fleet cannot do (`n` > 1, several prompts) is
/// refused by name.
#[allow(clippy::result_large_err)] // the error is the answer itself, made once per call
fn input_of(kind: Kind, body: &Value) -> Result<(String, Value, bool, bool), Response> {
    let Some(obj) = body.as_object() else { return Err(bad("the body must be a JSON object", "body")) };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(bad("`model` is required: the name of the fleet app to call", "model")),
    };
    let mut input = serde_json::Map::new();
    match kind {
        Kind::Completion => match obj.get("prompt") {
            Some(Value::String(p)) => {
                input.insert("prompt".into(), json!(p));
            }
            Some(Value::Array(_)) => {
                return Err(bad("one prompt per request: send `prompt` as a string", "prompt"));
            }
            _ => return Err(bad("`prompt` is required: a string", "prompt")),
        },
        Kind::Chat => {
            let Some(Value::Array(messages)) = obj.get("messages") else {
                return Err(bad("`messages` is required: a list of {role, content}", "messages"));
            };
            if messages.is_empty() {
                return Err(bad("`messages` is empty", "messages"));
            }
            let mut out = Vec::with_capacity(messages.len());
            for (i, m) in messages.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str);
                // Content as a string, or a list of text parts.
                let content = match m.get("content") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                            (Some("text"), Some(t)) => Some(t.to_string()),
                            _ => None,
                        })
                        .collect::<Option<Vec<String>>>()
                        .map(|v| v.join("")),
                    _ => None,
                };
                match (role, content) {
                    (Some(r @ ("system" | "developer" | "user" | "assistant")), Some(c)) => {
                        out.push(json!({"role": r, "content": c}));
                    }
                    _ => {
                        return Err(bad(
                            format!("messages[{i}]: give a role (system, user or assistant) and text content"),
                            "messages",
                        ));
                    }
                }
            }
            input.insert("messages".into(), Value::Array(out));
        }
    }
    if let Some(n) = obj.get("n").and_then(Value::as_u64)
        && n != 1
    {
        return Err(bad(format!("n = {n}: fleet answers one choice per request"), "n"));
    }
    let max = obj.get("max_completion_tokens").or_else(|| obj.get("max_tokens"));
    match max {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u32::MAX as u64 => {
                input.insert("max_tokens".into(), json!(n));
            }
            _ => return Err(bad("`max_tokens` must be a whole number ≥ 1", "max_tokens")),
        },
    }
    for (name, lo, hi) in [("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)] {
        match obj.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_f64() {
                Some(x) if (lo..=hi).contains(&x) => {
                    input.insert(name.into(), json!(x));
                }
                _ => return Err(bad(format!("`{name}` must be a number from {lo} to {hi}"), name)),
            },
        }
    }
    match obj.get("seed") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_i64() {
            Some(s) => {
                input.insert("seed".into(), json!(s as u64));
            }
            None => return Err(bad("`seed` must be an integer", "seed")),
        },
    }
    match obj.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            input.insert("stop".into(), json!([s]));
        }
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty())) => {
            input.insert("stop".into(), Value::Array(a.clone()));
        }
        Some(_) => return Err(bad("`stop` takes a string or up to 4 non-empty strings", "stop")),
    }
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let usage_in_stream =
        obj.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    Ok((model, Value::Object(input), stream, usage_in_stream))
}

/// Waits for request `id` of `app` to finish: a watch on its result key, the record read again
/// at each change (and at least every second, so a lost watch only slows the answer).
async fn wait_result(ctx: &Ctx, app: &str, id: RequestId) -> Result<RequestRecord, Response> {
    let key = ctx.keys.result(app, id);
    let mut watch = ctx.store.watch(&key, 0).await.ok();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match ctx.store.get(&key).await {
            Ok(Some(kv)) => match kv.json::<RequestRecord>() {
                Ok(r) => return Ok(r),
                Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)),
            },
            Ok(None) => {}
            Err(e) => return Err(from_api(e.into())),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "request {id} of app `{app}` is not finished after {} s; it stays queued: read its result later \
                     with GET /v1/apps/{app}/requests/{id}",
                    WAIT.as_secs()
                ),
                None,
            ));
        }
        match &mut watch {
            Some(w) => match tokio::time::timeout(Duration::from_secs(1), w.recv()).await {
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(_) => watch = None,
            },
            None => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The runner's answer, or the OpenAI error for a failed request.
#[allow(clippy::result_large_err)] // as input_of
fn output_of(r: &RequestRecord) -> Result<(String, String, Value), Response> {
    match &r.state {
        RequestState::Done { output, .. } => {
            let text = output.get("text").and_then(Value::as_str);
            let Some(text) = text else {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("app `{}` does not serve a language model (its runner answered without text)", r.app),
                    Some("model"),
                ));
            };
            let finish = output.get("finish_reason").and_then(Value::as_str).unwrap_or("stop").to_string();
            let usage = output.get("usage").cloned().unwrap_or(Value::Null);
            Ok((text.to_string(), finish, usage))
        }
        RequestState::Failed { error: why, .. } => {
            // The runner refuses bad input as "bad request: …": the caller's to fix.
            let status = if why.starts_with("bad request:") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            Err(error(status, why.clone(), None))
        }
        other => Err(error(StatusCode::INTERNAL_SERVER_ERROR, format!("request ended {}", other.name()), None)),
    }
}

async fn handle(
    ctx: Arc<Ctx>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    body: Result<Json<Value>, JsonRejection>,
    kind: Kind,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad(format!("{}; send a JSON object", e.body_text()), "body"),
    };
    let (app, input, stream, usage_in_stream) = match input_of(kind, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    // The middleware lets a submit-scoped token in; its app is checked here, in the body.
    if let Some(c) = caller.as_ref().map(|c| &c.0.0)
        && let crate::auth::Scope::Submit(own) = &c.scope
        && *own != app
    {
        return error(
            StatusCode::FORBIDDEN,
            format!("token `{}` may call app `{own}` only, not `{app}`", c.name),
            Some("model"),
        );
    }
    let owner = caller.as_ref().map(|c| c.0.0.name.clone());
    let app_spec = match admit(&ctx, owner.as_deref(), &app, &input).await {
        Ok(a) => a,
        Err(e) => return from_api(e),
    };
    let created = ctx.clock.now().timestamp();
    let (prefix, object, chunk_object) = match kind {
        Kind::Completion => ("cmpl", "text_completion", "text_completion"),
        Kind::Chat => ("chatcmpl", "chat.completion", "chat.completion.chunk"),
    };
    // A ready runner with room takes it directly (crate::push); else the durable queue.
    if let Some(key) = ctx.push_key.clone() {
        match pushed(&ctx, &key, &app, &input, app_spec.scaling.max_multiplexing).await {
            Ok(Some((first, rest, runner))) => {
                count_arrival(&ctx, &app);
                let submitted = ctx.clock.now();
                let oid = format!("{prefix}-push-{runner}-{}", submitted.timestamp_micros());
                let names = Names { oid, app: app.clone(), created, chunk_object, kind, usage_in_stream };
                return if stream {
                    stream_pushed(ctx, names, first, rest, runner, submitted)
                } else {
                    collect_pushed(ctx, names, object, first, rest, runner, submitted).await
                };
            }
            Ok(None) => {}
            Err(resp) => return resp,
        }
    }
    let id = match enqueue_admitted(&ctx, owner.as_deref(), &app, input, app_spec.requests).await {
        Ok(id) => id,
        Err(e) => return from_api(e),
    };
    let oid = format!("{prefix}-{id}");
    if !stream {
        let r = match wait_result(&ctx, &app, id).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let (text, finish, usage) = match output_of(&r) {
            Ok(x) => x,
            Err(resp) => return resp,
        };
        let choice = match kind {
            Kind::Completion => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
            Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": null, "finish_reason": finish}),
        };
        return Json(json!({"id": oid, "object": object, "created": created, "model": app,
                           "choices": [choice], "usage": usage}))
        .into_response();
    }
    // Streaming: the chunks once the result is in (see the module doc), then [DONE].
    let names = Names { oid, app: app.clone(), created, chunk_object, kind, usage_in_stream };
    let events = async move {
        let mut out: Vec<Event> = Vec::new();
        let data = |v: Value| Event::default().data(v.to_string());
        let r = wait_result(&ctx, &app, id).await;
        let result = match r {
            Ok(r) => output_of(&r).map_err(|_| r),
            Err(_) => {
                let e = json!({"error": {"message": format!("request {id} did not finish within {} s", WAIT.as_secs()),
                                         "type": "timeout", "param": null, "code": null}});
                out.push(data(e));
                return out;
            }
        };
        match result {
            Ok((text, finish, usage)) => {
                out.extend(names.opening().map(data));
                out.push(data(names.delta(&text)));
                out.push(data(names.finish(&finish)));
                if names.usage_in_stream {
                    out.push(data(names.usage(&usage)));
                }
            }
            Err(r) => {
                let why = match &r.state {
                    RequestState::Failed { error, .. } => error.clone(),
                    _ => format!("app `{app}` does not serve a language model"),
                };
                out.push(data(json!({"error": {"message": why, "type": "server_error", "param": null, "code": null}})));
                return out;
            }
        }
        out.push(Event::default().data("[DONE]"));
        out
    };
    let stream = futures_util::stream::once(events)
        .flat_map(|evs| futures_util::stream::iter(evs.into_iter().map(Ok::<Event, std::convert::Infallible>)));
    Sse::new(stream).into_response()
}

/// A request counts as demand whichever way it goes (the autoscaler reads arrivals).
fn count_arrival(ctx: &Ctx, app: &str) {
    *ctx.arrivals.lock().expect("arrivals lock").entry(app.to_string()).or_default() += 1;
    ctx.nudge.notify_one();
}

/// Tries the app's runners in the push order until one starts answering: its first event, the
/// rest, and the runner. `Ok(None)`: none could take it now (the queue will). A runner that
/// fails before its first event is skipped; one that refuses the input answers the caller.
#[allow(clippy::result_large_err)] // the error is the answer itself
async fn pushed(
    ctx: &Ctx,
    key: &fleet_core::Secret,
    app: &str,
    input: &Value,
    capacity: u32,
) -> Result<Option<(PushEvent, tokio::sync::mpsc::Receiver<PushEvent>, fleet_core::RunnerId)>, Response> {
    for t in crate::push::targets(ctx, app, capacity).await {
        match crate::push::start(ctx, key, &t, input).await {
            Ok(mut rx) => match rx.recv().await {
                Some(PushEvent::Error(why)) => {
                    tracing::warn!(app, runner = t.runner, %why, "pushed request failed before its first token; trying elsewhere");
                    retried(ctx, app);
                }
                Some(first) => return Ok(Some((first, rx, t.runner))),
                None => retried(ctx, app),
            },
            Err(crate::push::NotStarted::Retry(why)) => {
                tracing::info!(app, %why, "push not taken before its first token; trying the next runner");
                retried(ctx, app);
            }
            Err(crate::push::NotStarted::Refused(why)) => {
                return Err(error(StatusCode::BAD_REQUEST, why, None));
            }
        }
    }
    Ok(None)
}

struct Names {
    oid: String,
    app: String,
    created: i64,
    chunk_object: &'static str,
    kind: Kind,
    usage_in_stream: bool,
}

impl Names {
    fn chunk(&self, choice: Value) -> Value {
        json!({"id": self.oid, "object": self.chunk_object, "created": self.created, "model": self.app,
               "choices": [choice]})
    }

    fn delta(&self, text: &str) -> Value {
        match self.kind {
            Kind::Completion => self.chunk(json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null})),
            Kind::Chat => {
                self.chunk(json!({"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}))
            }
        }
    }

    /// A chat stream's first chunk (the assistant's role); none for completions.
    fn opening(&self) -> Option<Value> {
        match self.kind {
            Kind::Chat => Some(self.chunk(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
            )),
            Kind::Completion => None,
        }
    }

    /// The last chunk when `stream_options.include_usage` asks for it: no choices, the usage.
    fn usage(&self, usage: &Value) -> Value {
        let mut last = self.chunk(Value::Null);
        last["choices"] = json!([]);
        last["usage"] = usage.clone();
        last
    }

    fn finish(&self, reason: &str) -> Value {
        match self.kind {
            Kind::Completion => self.chunk(json!({"index": 0, "text": "", "logprobs": null, "finish_reason": reason})),
            Kind::Chat => self.chunk(json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason})),
        }
    }
}

fn retried(ctx: &Ctx, app: &str) {
    ctx.metrics.push_retries.get_or_create(&crate::metrics::AppLabel { app: app.to_string() }).inc();
}

/// Counts a pushed request that failed once text had gone out (its runner was lost mid-stream).
fn observe_pushed_failure(ctx: &Ctx, app: &str, why: &str, submitted: fleet_core::Time) {
    let r = RequestRecord {
        id: 0,
        app: app.to_string(),
        input: Value::Null,
        submitted_at: submitted,
        attempts: 1,
        owner: None,
        state: RequestState::Failed {
            error: why.to_string(),
            finished_at: ctx.clock.now(),
            started_at: Some(submitted),
        },
    };
    ctx.serving.observe(&ctx.metrics, &r);
}

/// Counts a pushed request's figures as the results watch counts queued ones.
fn observe_pushed(ctx: &Ctx, app: &str, runner: fleet_core::RunnerId, answer: &Value, submitted: fleet_core::Time) {
    let r = RequestRecord {
        id: 0,
        app: app.to_string(),
        input: Value::Null,
        submitted_at: submitted,
        attempts: 1,
        owner: None,
        state: RequestState::Done {
            output: answer.clone(),
            runner,
            finished_at: ctx.clock.now(),
            started_at: Some(submitted),
        },
    };
    ctx.serving.observe(&ctx.metrics, &r);
}

async fn collect_pushed(
    ctx: Arc<Ctx>,
    names: Names,
    object: &'static str,
    first: PushEvent,
    mut rest: tokio::sync::mpsc::Receiver<PushEvent>,
    runner: fleet_core::RunnerId,
    submitted: fleet_core::Time,
) -> Response {
    let mut ev = Some(first);
    loop {
        // (Not `ev.take().or(rest.recv().await)`: that would take, and lose, the next event.)
        let next = match ev.take() {
            Some(e) => Some(e),
            None => rest.recv().await,
        };
        match next {
            Some(PushEvent::Delta(_)) => {}
            Some(PushEvent::Done(answer)) => {
                observe_pushed(&ctx, &names.app, runner, &answer, submitted);
                let text = answer["text"].as_str().unwrap_or_default();
                let finish = answer["finish_reason"].as_str().unwrap_or("stop");
                let choice = match names.kind {
                    Kind::Completion => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
                    Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                                         "logprobs": null, "finish_reason": finish}),
                };
                return Json(json!({"id": names.oid, "object": object, "created": names.created, "model": names.app,
                                   "choices": [choice], "usage": answer["usage"]}))
                .into_response();
            }
            Some(PushEvent::Error(why)) => {
                observe_pushed_failure(&ctx, &names.app, &why, submitted);
                return error(StatusCode::INTERNAL_SERVER_ERROR, why, None);
            }
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("runner {runner} was lost before it finished"),
                    None,
                );
            }
        }
    }
}

/// Server-sent events as the runner produces text: a chunk per delta, then the finish (and the
/// usage when asked), then `[DONE]`; a runner lost midway ends the stream with an error event.
fn stream_pushed(
    ctx: Arc<Ctx>,
    names: Names,
    first: PushEvent,
    rest: tokio::sync::mpsc::Receiver<PushEvent>,
    runner: fleet_core::RunnerId,
    submitted: fleet_core::Time,
) -> Response {
    let opening = names.opening();
    let state = (Some(first), rest, names, false);
    let events = futures_util::stream::unfold(state, move |(mut pending, mut rest, names, over)| {
        let ctx = ctx.clone();
        async move {
            if over {
                return None;
            }
            let ev = match pending.take() {
                Some(e) => Some(e),
                None => rest.recv().await,
            };
            let out: Vec<Event> = match ev {
                Some(PushEvent::Delta(d)) => vec![Event::default().data(names.delta(&d).to_string())],
                Some(PushEvent::Done(answer)) => {
                    observe_pushed(&ctx, &names.app, runner, &answer, submitted);
                    let mut v = vec![
                        Event::default()
                            .data(names.finish(answer["finish_reason"].as_str().unwrap_or("stop")).to_string()),
                    ];
                    if names.usage_in_stream {
                        v.push(Event::default().data(names.usage(&answer["usage"]).to_string()));
                    }
                    v.push(Event::default().data("[DONE]"));
                    return Some((v, (None, rest, names, true)));
                }
                Some(PushEvent::Error(why)) => {
                    observe_pushed_failure(&ctx, &names.app, &why, submitted);
                    let e = json!({"error": {"message": why, "type": "server_error", "param": null, "code": null}});
                    return Some((vec![Event::default().data(e.to_string())], (None, rest, names, true)));
                }
                None => return None,
            };
            Some((out, (None, rest, names, false)))
        }
    });
    let head = futures_util::stream::iter(opening.map(|c| Event::default().data(c.to_string())));
    let stream = head.chain(events.flat_map(futures_util::stream::iter)).map(Ok::<Event, std::convert::Infallible>);
    Sse::new(stream).into_response()
}

/// `POST /v1/completions`.
pub async fn completions(
    State(ctx): State<Arc<Ctx>>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    handle(ctx, caller, body, Kind::Completion).await
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(ctx): State<Arc<Ctx>>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    handle(ctx, caller, body, Kind::Chat).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(kind: Kind, body: Value) -> StatusCode {
        input_of(kind, &body).expect_err("refused").status()
    }

    #[test]
    fn openai_bodies_become_queue_inputs_and_bad_ones_are_refused_by_name() {
        let (model, input, stream, usage) = input_of(
            Kind::Completion,
            &json!({"model": "chat", "prompt": "hello", "max_tokens": 5, "temperature": 0, "seed": 3,
                    "stop": ".", "stream": true, "stream_options": {"include_usage": true}, "user": "ignored"}),
        )
        .unwrap();
        assert_eq!(model, "chat");
        assert_eq!(input, json!({"prompt": "hello", "max_tokens": 5, "temperature": 0.0, "seed": 3, "stop": ["."]}));
        assert!(stream && usage);
        let (_, input, stream, _) = input_of(
            Kind::Chat,
            &json!({"model": "chat", "messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_completion_tokens": 7}),
        )
        .unwrap();
        assert_eq!(
            input,
            json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                   "max_tokens": 7})
        );
        assert!(!stream);
        for body in [
            json!({"prompt": "x"}),
            json!({"model": "chat"}),
            json!({"model": "chat", "prompt": ["a", "b"]}),
            json!({"model": "chat", "prompt": "x", "n": 2}),
            json!({"model": "chat", "prompt": "x", "max_tokens": 0}),
            json!({"model": "chat", "prompt": "x", "temperature": 3}),
            json!({"model": "chat", "prompt": "x", "top_p": 1.5}),
            json!({"model": "chat", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}),
        ] {
            assert_eq!(refused(Kind::Completion, body.clone()), StatusCode::BAD_REQUEST, "{body}");
        }
        for body in [
            json!({"model": "chat", "messages": []}),
            json!({"model": "chat", "messages": [{"role": "tool", "content": "x"}]}),
            json!({"model": "chat", "messages": [{"role": "user"}]}),
        ] {
            assert_eq!(refused(Kind::Chat, body.clone()), StatusCode::BAD_REQUEST, "{body}");
        }
    }
}
