//! Consolidation on the `local` provider: the real fleetd, real fleet-agents serving a model with
//! candle on the CPU. An app placed on on-demand is allowed spot: its runner moves to a spot node
//! (replacement first, the old runner drained, the old node terminated) while requests keep
//! coming, and every request is served once. An LLM app (a generated Qwen2 model directory)
//! answers prompts through the queue; a pushed request whose runner dies before its first token
//! is served by another, one whose runner dies mid-stream ends with an error event. Needs
//! fleet-agent beside fleetd (`cargo build --workspace`, which scripts/test does before the tests).

mod common;

use std::time::{Duration, Instant};

use common::{Fleetd, Machines};
use serde_json::Value;

const SPEC: &str = r#"
[fleet]
name = "local-move"

[apps.chat]
gpu = "H100"
gpus = 1

[apps.chat.placement]
spot = "on-demand"

[apps.chat.scaling]
min_concurrency = 1
max_concurrency = 1
keep_alive = "1h"
"#;

/// fleetd with local nodes, passes every 0.2 s, data in `dir`, and `extra` flags.
fn local_fleetd(dir: &std::path::Path, extra: &[&str]) -> Fleetd {
    let mut args: Vec<String> =
        ["--fleet", "local-move", "--local", "--reconcile-every", "0.2", "--node-poll", "0.3", "--data-dir"]
            .map(String::from)
            .to_vec();
    args.push(dir.display().to_string());
    args.extend(extra.iter().map(|a| a.to_string()));
    Fleetd::start(&args, None)
}

#[test]
fn a_local_runner_moves_from_on_demand_to_spot_and_every_request_is_served_once() {
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    assert!(agent_bin.is_file(), "fleet-agent beside fleetd: build the workspace first (cargo build --workspace)");
    let dir = tempfile::tempdir().unwrap();
    let _machines = Machines(dir.path().to_path_buf());
    // A one-second cold start and no minimum billing: a move pays for itself within seconds.
    let f =
        local_fleetd(dir.path(), &["--local-capacity", "4", "--cold-start-seconds", "1", "--recreate-seconds", "1"]);
    f.put_spec(SPEC);
    let submit = |i: usize| -> u64 {
        let x: Vec<f64> = (0..16).map(|k| ((i * 16 + k) % 7) as f64 / 7.0).collect();
        let (s, b) = f.call("POST", "/v1/apps/chat/requests", &serde_json::json!({ "input": { "x": x } }).to_string());
        assert_eq!(s, 202, "{b}");
        serde_json::from_str::<Value>(&b).unwrap()["id"].as_u64().unwrap()
    };
    let mut ids = Vec::new();
    // Up on on-demand, serving.
    let t = Instant::now();
    loop {
        ids.push(submit(ids.len()));
        let done = ids.iter().any(|id| f.get(&format!("/v1/apps/chat/requests/{id}"))["state"]["state"] == "done");
        if done {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "nothing served within 90 s:\n{}", f.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let first = f.nodes();
    assert_eq!(first.len(), 1, "{first:?}");
    let (old, _, capacity) = &first[0];
    assert_eq!(capacity, "on-demand");
    // Spot allowed: the runner moves while requests keep coming.
    f.put_spec(&SPEC.replace("spot = \"on-demand\"", "spot = \"auto\""));
    let t = Instant::now();
    loop {
        ids.push(submit(ids.len()));
        let now = f.nodes();
        let old_gone = now.iter().any(|(id, state, _)| id == old && state == "terminated");
        let spot_ready = now.iter().any(|(_, state, cap)| state == "ready" && cap == "spot");
        if old_gone && spot_ready {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "no move within 120 s: {now:?}\n{}", f.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(f.saw("consolidating a node away", Duration::from_secs(1)), "{}", f.log());
    // Every request done, each claimed once (a drained runner hands nothing back to the queue).
    let t = Instant::now();
    while !f.unfinished("chat", &ids).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(60), "unfinished: {:?}", f.unfinished("chat", &ids));
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in &ids {
        let r = f.get(&format!("/v1/apps/chat/requests/{id}"));
        assert_eq!(r["attempts"], 1, "request {id} was claimed more than once: {r}");
        assert!(r["state"]["output"].is_object(), "request {id} has a model's answer: {r}");
    }
    let live: Vec<_> = f.nodes().into_iter().filter(|(_, s, _)| s != "terminated").collect();
    assert_eq!(live.len(), 1, "only the spot node is left: {live:?}");
    eprintln!("local consolidation: {} requests served once each across the move", ids.len());
    f.kill();
}

/// The same on the local provider with real agents, through the API: a dry run says which node
/// would go and what it costs, and changes nothing; applying drains and terminates it, and its
/// agent process ends.
#[test]
fn removing_an_app_says_which_nodes_go_and_terminates_them() {
    let dir = tempfile::tempdir().unwrap();
    let _machines = Machines(dir.path().to_path_buf());
    let f = local_fleetd(dir.path(), &[]);
    f.put_spec(SPEC);
    let t = Instant::now();
    while !f.nodes().iter().any(|(_, state, _)| state == "ready") {
        assert!(t.elapsed() < Duration::from_secs(90), "no node ready within 90 s:\n{}", f.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (id, _, _) = f.nodes()[0].clone();
    let other = SPEC.replace("[apps.chat]", "[apps.embed]").replace("[apps.chat.", "[apps.embed.");
    let other = other.replace("min_concurrency = 1", "min_concurrency = 0");
    // Dry run: named, priced, nothing changes.
    let (s, b) = f.call("PUT", "/v1/spec?dry_run=true", &other);
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["nodes_removed"][0]["id"], id, "{v}");
    assert_eq!(v["nodes_removed"][0]["app"], "chat", "{v}");
    assert_eq!(v["removed_per_hour"], "2.00", "the local on-demand 1×H100: {v}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(f.nodes().iter().any(|(n, state, _)| *n == id && state == "ready"), "a dry run changes nothing");
    // Applied: it goes.
    let (s, b) = f.call("PUT", "/v1/spec", &other);
    assert_eq!(s, 200, "{b}");
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["nodes_removed"][0]["id"], id);
    let t = Instant::now();
    while !f.nodes().iter().all(|(_, state, _)| state == "terminated") {
        assert!(t.elapsed() < Duration::from_secs(60), "not terminated within 60 s: {:?}", f.nodes());
        std::thread::sleep(Duration::from_millis(200));
    }
    let instances = std::fs::read_to_string(dir.path().join("local/instances.json")).unwrap();
    // The terminate sent SIGTERM; the agent drains and exits (the provider reaps it).
    for r in serde_json::from_str::<Value>(&instances).unwrap().as_array().unwrap() {
        let pid = r["pid"].as_u64().unwrap();
        let t = Instant::now();
        loop {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
            if cwd.is_none_or(|c| c.to_str() != r["dir"].as_str()) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(15), "node process {pid} still runs 15 s after its terminate");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    f.kill();
}

/// An LLM app on the local provider: the model a directory as a hub lays it out (a random-weight
/// Qwen2 made by `fleet-agent make-llm`, two shards), the real agent decoding prompts through the
/// durable queue, two at a time in one batch; each answer is what the model gives that prompt
/// alone (`fleet-agent generate`, greedy), with OpenAI's finish_reason and usage.
#[test]
fn an_llm_app_answers_prompts_through_the_queue_as_the_model_does_alone() {
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    assert!(agent_bin.is_file(), "fleet-agent beside fleetd: build the workspace first (cargo build --workspace)");
    let dir = tempfile::tempdir().unwrap();
    let _machines = Machines(dir.path().to_path_buf());
    let model = dir.path().join("tiny-qwen2");
    let out = std::process::Command::new(&agent_bin)
        .args(["make-llm", "--family", "qwen2", "--shards", "2"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f = local_fleetd(dir.path(), &["--model", &format!("chat={}", model.display())]);
    f.put_spec(SPEC);
    let prompts = ["the fleet rents gpus", "hello world", "a spot node serves tokens", "the budget cap holds"];
    let ids: Vec<u64> = prompts
        .iter()
        .map(|p| {
            let body = serde_json::json!({ "input": { "prompt": p, "max_tokens": 6 } }).to_string();
            let (s, b) = f.call("POST", "/v1/apps/chat/requests", &body);
            assert_eq!(s, 202, "{b}");
            serde_json::from_str::<Value>(&b).unwrap()["id"].as_u64().unwrap()
        })
        .collect();
    let t = Instant::now();
    while !f.unfinished("chat", &ids).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(120), "unanswered after 120 s:\n{}", f.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (mut generated, mut with_tokens) = (0, 0);
    for (id, p) in ids.iter().zip(prompts) {
        let r = f.get(&format!("/v1/apps/chat/requests/{id}"));
        let answer = &r["state"]["output"];
        let n = answer["usage"]["completion_tokens"].as_u64().unwrap();
        generated += n;
        with_tokens += u64::from(n > 0);
        let alone = common::generate_alone(&model, p, 6);
        assert_eq!(answer["text"], alone["text"], "prompt {p:?}: {r}");
        assert_eq!(answer["usage"], alone["usage"], "prompt {p:?}: {r}");
        assert_eq!(answer["finish_reason"], alone["finish_reason"]);
        assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() >= 2, "{answer}");
    }
    // Serving figures from those requests: per app on /v1/apps, and on /metrics.
    let t = Instant::now();
    let serving = loop {
        let v = f.get("/v1/apps")["chat"]["serving"].clone();
        if v["done"].as_u64() >= Some(prompts.len() as u64) {
            break v;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no serving figures: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for k in ["latency_p50_s", "queue_wait_p50_s", "ttft_p50_s", "itl_p50_s", "tokens_per_s"] {
        assert!(serving[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {serving}");
    }
    assert!(serving["ttft_p50_s"].as_f64() <= serving["latency_p99_s"].as_f64(), "{serving}");
    let (_, metrics) = f.call("GET", "/metrics", "");
    let tokens: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("fleet_generated_tokens_total{app=\"chat\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(tokens, generated as f64, "every token the answers counted: {metrics}");
    assert!(generated > 0);
    // A first token is timed for each answer that has one.
    let ttft = format!("fleet_time_to_first_token_seconds_count{{app=\"chat\"}} {with_tokens}");
    assert!(metrics.contains(&ttft), "{ttft}: {metrics}");
    // The agent's push endpoint: published in its record, loopback, and only for the node's own
    // credential (HMAC of the node under the fleet's push key in the data dir).
    let node = &f.get("/v1/nodes")[0];
    let addr =
        node["agent"]["health"]["push_addr"].as_str().expect("the agent publishes its push endpoint").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let node_id = node["id"].as_u64().unwrap();
    let runner = f.get("/v1/runners")[0]["id"].as_u64().unwrap();
    let key = fleet_core::Secret::new(std::fs::read_to_string(dir.path().join("push.key")).unwrap().trim().to_string());
    let good = fleet_orchestrator::push::credential(&key, node_id);
    let other = fleet_orchestrator::push::credential(&key, node_id + 1);
    let push = |token: &str, runner: u64, body: &str| {
        let auth = format!("Authorization: Bearer {token}");
        fleet_orchestrator::testing::http::request(
            &addr,
            "POST",
            &format!("/v1/runners/{runner}/generate"),
            &[auth.as_str()],
            body,
        )
        .unwrap()
    };
    let prompt = r#"{"prompt": "hello world", "max_tokens": 3}"#;
    assert_eq!(push("", runner, prompt).0, 401);
    assert_eq!(push(other.expose(), runner, prompt).0, 401, "another node's credential");
    assert_eq!(push(good.expose(), runner + 100, prompt).0, 404);
    assert_eq!(push(good.expose(), runner, r#"{"x": 1}"#).0, 400);
    let (status, body) = push(good.expose(), runner, prompt);
    assert_eq!(status, 200, "{body}");
    let body = dechunk(&body);
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let done = &lines.last().unwrap()["done"];
    let streamed: String = lines.iter().filter_map(|l| l["delta"].as_str()).collect();
    assert_eq!(streamed, done["text"].as_str().unwrap(), "{body}");
    assert!(lines.len() >= 2, "deltas before the answer: {body}");
    // A request that is not a prompt fails with the reason, and the runner goes on.
    let (s, b) = f.call("POST", "/v1/apps/chat/requests", r#"{"input": {"x": [1, 2]}}"#);
    assert_eq!(s, 202, "{b}");
    let bad = serde_json::from_str::<Value>(&b).unwrap()["id"].as_u64().unwrap();
    let t = Instant::now();
    loop {
        let r = f.get(&format!("/v1/apps/chat/requests/{bad}"));
        if r["state"]["state"] == "failed" {
            assert!(r.to_string().contains("needs \\\"prompt\\\""), "{r}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    f.kill();
}

/// The official `openai` Python client (from PyPI), unchanged, against fleetd's
/// OpenAI-compatible endpoints on an LLM app of the local provider: completions and chat
/// completions, streaming and not, usage counted, errors in OpenAI's shape, and a token scoped
/// to another app refused.
#[test]
fn the_official_openai_client_completes_and_streams_against_fleetd() {
    let has_client = std::process::Command::new("python3").args(["-c", "import openai"]).status();
    assert!(
        has_client.is_ok_and(|s| s.success()),
        "needs the official openai client: python3 -m pip install openai (scripts/test installs it)"
    );
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    let dir = tempfile::tempdir().unwrap();
    let _machines = Machines(dir.path().to_path_buf());
    let model = dir.path().join("tiny-llama");
    let out =
        std::process::Command::new(&agent_bin).args(["make-llm", "--family", "llama"]).arg(&model).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Pushed over TLS, the agent's certificate pinned, as to nodes off this machine.
    let f = local_fleetd(dir.path(), &["--model", &format!("chat={}", model.display()), "--local-push-tls"]);
    f.put_spec(SPEC);
    let (s, b) = f.call("POST", "/v1/tokens", r#"{"name": "other-app", "scope": "submit:embed"}"#);
    assert_eq!(s, 201, "{b}");
    let other: Value = serde_json::from_str(&b).unwrap();
    let script = r#"
import json, os, sys
import openai
c = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["TOKEN"], max_retries=0, timeout=120)
out = {}
r = c.completions.create(model="chat", prompt="hello world", max_tokens=6, temperature=0)
out["completion"] = {"text": r.choices[0].text, "finish": r.choices[0].finish_reason, "usage": r.usage.model_dump(),
                     "id": r.id}
r = c.completions.create(model="chat", prompt="hello world", max_tokens=1)
out["one_token"] = {"text": r.choices[0].text, "finish": r.choices[0].finish_reason}
text, pieces = "", 0
for chunk in c.completions.create(model="chat", prompt="hello world", max_tokens=6, stream=True):
    text += chunk.choices[0].text
    pieces += 1 if chunk.choices[0].text else 0
out["completion_stream"] = text
out["completion_pieces"] = pieces
msgs = [{"role": "system", "content": "the fleet"}, {"role": "user", "content": "rents gpus"}]
r = c.chat.completions.create(model="chat", messages=msgs, max_tokens=5)
out["chat"] = {"content": r.choices[0].message.content, "role": r.choices[0].message.role,
               "finish": r.choices[0].finish_reason, "usage": r.usage.model_dump()}
text, usage, finish = "", None, None
for chunk in c.chat.completions.create(model="chat", messages=msgs, max_tokens=5, stream=True,
                                       stream_options={"include_usage": True}):
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
    for ch in chunk.choices:
        text += ch.delta.content or ""
        finish = ch.finish_reason or finish
out["chat_stream"] = {"content": text, "usage": usage, "finish": finish}
errors = {}
for name, call in [
    ("unknown_model", lambda: c.completions.create(model="chta", prompt="x", max_tokens=2)),
    ("zero_tokens", lambda: c.completions.create(model="chat", prompt="x", max_tokens=0)),
    ("other_app", lambda: openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["OTHER"],
                                        max_retries=0).completions.create(model="chat", prompt="x", max_tokens=2)),
]:
    try:
        call()
        errors[name] = "no error"
    except openai.APIStatusError as e:
        errors[name] = {"class": type(e).__name__, "status": e.status_code, "message": e.message}
out["errors"] = errors
print(json.dumps(out))
"#;
    let py = dir.path().join("client.py");
    std::fs::write(&py, script).unwrap();
    let run = std::process::Command::new("python3")
        .arg(&py)
        .env("BASE", format!("http://{}", f.addr))
        .env("TOKEN", &f.token)
        .env("OTHER", other["token"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}\n{}", String::from_utf8_lossy(&run.stderr), f.log());
    let got: Value = serde_json::from_slice(&run.stdout).unwrap();
    // What the model gives the prompt alone, greedy.
    let alone = common::generate_alone(&model, "hello world", 6);
    assert_eq!(got["completion"]["text"], alone["text"], "{got}");
    // Pushed to the runner (over the pinned TLS connection), not served from the queue.
    assert!(got["completion"]["id"].as_str().unwrap().contains("-push-"), "{got}");
    assert!(
        f.get("/v1/nodes").as_array().unwrap().iter().any(|n| n["agent"]["health"]["push_cert_sha256"].is_string()),
        "the agent publishes its certificate"
    );
    assert_eq!(metric(&f, "fleet_push_retries_total{app=\"chat\"}"), 0.0, "no push failed");
    assert_eq!(got["completion"]["finish"], alone["finish_reason"], "{got}");
    assert_eq!(got["completion"]["usage"]["completion_tokens"], alone["usage"]["completion_tokens"], "{got}");
    assert_eq!(got["completion"]["usage"]["prompt_tokens"], 2, "{got}");
    assert_eq!(got["completion_stream"], alone["text"], "streamed = not streamed: {got}");
    // One token: the runner's text and its answer come back to back (the answer is not lost).
    let first_word = alone["text"].as_str().unwrap().split(' ').next().unwrap();
    assert_eq!(got["one_token"]["text"], first_word, "{got}");
    assert_eq!(got["one_token"]["finish"], "length", "{got}");
    // Pushed to the ready runner, the text streams as it is produced: a piece per word here.
    let words = alone["text"].as_str().unwrap().split(' ').count() as u64;
    assert!(got["completion_pieces"].as_u64().unwrap() >= words.min(2), "{got}");
    assert_eq!(got["chat"]["role"], "assistant");
    assert!(matches!(got["chat"]["finish"].as_str(), Some("stop" | "length")), "{got}");
    let u = &got["chat"]["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert!(u["prompt_tokens"].as_u64().unwrap() >= 4, "both messages reach the model: {got}");
    assert_eq!(got["chat_stream"]["content"], got["chat"]["content"], "{got}");
    assert_eq!(got["chat_stream"]["usage"], got["chat"]["usage"], "{got}");
    assert_eq!(got["chat_stream"]["finish"], got["chat"]["finish"], "{got}");
    let e = &got["errors"];
    assert_eq!(e["unknown_model"]["class"], "NotFoundError", "{e}");
    assert!(e["unknown_model"]["message"].as_str().unwrap().contains("did you mean `chat`"), "{e}");
    assert_eq!(e["zero_tokens"]["class"], "BadRequestError", "{e}");
    assert!(e["zero_tokens"]["message"].as_str().unwrap().contains("max_tokens"), "{e}");
    assert_eq!(e["other_app"]["class"], "PermissionDeniedError", "{e}");
    assert!(e["other_app"]["message"].as_str().unwrap().contains("may call app `embed` only"), "{e}");
    eprintln!("openai client: {got}");
    f.kill();
}

/// The body of a chunked HTTP/1.1 response (size line in hex, data, CRLF; a 0 size ends it).
fn dechunk(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("not chunked: {raw:?}"));
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// The node (and its agent's pid) of each ready runner of `chat`, lowest runner id first.
fn ready_runners(f: &Fleetd, dir: &std::path::Path) -> Vec<(u64, u64, u32)> {
    let runners = f.get("/v1/runners");
    let nodes = f.get("/v1/nodes");
    let instances: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("local/instances.json")).unwrap_or_default())
            .unwrap_or(Value::Null);
    let mut out = Vec::new();
    for r in runners.as_array().into_iter().flatten() {
        if r["state"]["state"] != "idle" {
            continue;
        }
        let node = r["state"]["node"].as_u64().unwrap();
        let Some(n) = nodes.as_array().unwrap().iter().find(|n| n["id"] == node) else { continue };
        let Some(inst) = n["state"]["instance_id"].as_str() else { continue };
        let Some(pid) =
            instances.as_array().into_iter().flatten().find(|i| i["id"] == inst).map(|i| i["pid"].as_u64().unwrap())
        else {
            continue;
        };
        out.push((r["id"].as_u64().unwrap(), node, pid as u32));
    }
    out.sort();
    out
}

fn signal(sig: &str, pid: u32) {
    assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// A metric's value on /metrics (0 when the series is not there).
fn metric(f: &Fleetd, series: &str) -> f64 {
    let (s, text) = f.call("GET", "/metrics", "");
    assert_eq!(s, 200);
    text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

#[test]
fn a_runner_lost_before_its_first_token_is_tried_elsewhere_and_one_lost_mid_stream_says_so() {
    use std::io::{Read, Write};
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    let dir = tempfile::tempdir().unwrap();
    let _machines = Machines(dir.path().to_path_buf());
    // Large enough that a long answer takes seconds to stream on this CPU.
    let model = dir.path().join("llama");
    let out = std::process::Command::new(&agent_bin)
        .args(["make-llm", "--hidden", "256", "--layers", "8", "--max-positions", "4096"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f = local_fleetd(dir.path(), &["--model", &format!("chat={}", model.display())]);
    f.put_spec(&SPEC.replace("min_concurrency = 1\nmax_concurrency = 1", "min_concurrency = 2\nmax_concurrency = 2"));
    let t = Instant::now();
    let ready = loop {
        let r = ready_runners(&f, dir.path());
        if r.len() == 2 && r[0].1 != r[1].1 {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "two ready runners on two nodes: {r:?}\n{}", f.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    // Both idle: the lowest runner id goes first (the documented rule). Its agent is frozen, the
    // request sent, then the agent killed: it dies holding the request, before any token.
    let (first, second) = (ready[0], ready[1]);
    signal("-STOP", first.2);
    let (addr, token) = (f.addr.clone(), f.token.clone());
    let call = std::thread::spawn(move || {
        let body = r#"{"model": "chat", "prompt": "hello world", "max_tokens": 5, "temperature": 0}"#;
        fleet_orchestrator::testing::http::request(
            &addr,
            "POST",
            "/v1/completions",
            &[&format!("Authorization: Bearer {token}")],
            body,
        )
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(1500));
    signal("-KILL", first.2);
    let (status, body) = call.join().unwrap();
    assert_eq!(status, 200, "{body}\n{}", f.log());
    let alone = common::generate_alone(&model, "hello world", 5);
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["choices"][0]["text"], alone["text"], "served whole by the other runner: {got}");
    assert!(metric(&f, "fleet_push_retries_total{app=\"chat\"}") >= 1.0, "the retry is counted");

    // The other runner streams a long answer; its agent is killed once text has gone out: the
    // client's stream ends with an error event that says so, and no [DONE].
    let failed_before = metric(&f, "fleet_requests_finished_total{app=\"chat\",outcome=\"failed\"}");
    let mut s = std::net::TcpStream::connect(&f.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = r#"{"model": "chat", "prompt": "hello world", "max_tokens": 3000, "stream": true}"#;
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: fleetd\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        f.token,
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("data: {") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before any text: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    assert!(ready_runners(&f, dir.path()).iter().any(|r| r.0 == second.0), "runner {} is the one serving", second.0);
    signal("-KILL", second.2);
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    let events = dechunk(&text[head_end..]);
    let data: Vec<&str> = events.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert!(data.len() >= 2, "text, then the error: {events}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    let why = last["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("lost in the middle of its answer"), "{events}");
    assert!(!events.contains("[DONE]") && !events.contains("finish_reason\":\"length"), "{events}");
    let t = Instant::now();
    while metric(&f, "fleet_requests_finished_total{app=\"chat\",outcome=\"failed\"}") < failed_before + 1.0 {
        assert!(t.elapsed() < Duration::from_secs(10), "the failure is counted");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn when_every_runner_is_full_a_call_waits_in_the_queue_and_is_answered_when_one_frees() {
    use std::io::{Read, Write};
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    let dir = tempfile::tempdir().unwrap();
    let _machines = Machines(dir.path().to_path_buf());
    let model = dir.path().join("llama");
    let out = std::process::Command::new(&agent_bin)
        .args(["make-llm", "--hidden", "256", "--layers", "8", "--max-positions", "4096"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let f = local_fleetd(dir.path(), &["--model", &format!("chat={}", model.display())]);
    f.put_spec(SPEC);
    let t = Instant::now();
    while ready_runners(&f, dir.path()).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(120), "no ready runner\n{}", f.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // One runner, one request at a time (max_multiplexing 1): a long answer holds it.
    let mut long = std::net::TcpStream::connect(&f.addr).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = r#"{"model": "chat", "prompt": "hello world", "max_tokens": 300, "stream": true}"#;
    write!(
        long,
        "POST /v1/completions HTTP/1.1\r\nHost: fleetd\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        f.token,
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("data: {") {
        let n = long.read(&mut buf).unwrap();
        assert!(n > 0, "the long answer ended before any text");
        raw.extend_from_slice(&buf[..n]);
    }
    // The runner is full: this call waits in the durable queue (counted there), and is answered
    // once the runner frees, as a stream of whole chunks.
    let waited_before = metric(&f, "fleet_request_queue_wait_seconds_count{app=\"chat\"}");
    let body =
        r#"{"model": "chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "stream": true}"#;
    let (status, answer) = fleet_orchestrator::testing::http::request(
        &f.addr,
        "POST",
        "/v1/chat/completions",
        &[&format!("Authorization: Bearer {}", f.token)],
        body,
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    long.read_to_end(&mut raw).unwrap();
    let first = String::from_utf8_lossy(&raw);
    assert!(first.contains("[DONE]"), "the long answer finished whole: {first}");
    let events = dechunk(&answer);
    let data: Vec<Value> =
        events.lines().filter_map(|l| l.strip_prefix("data: ")).filter_map(|d| serde_json::from_str(d).ok()).collect();
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");
    let id = data[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && !id.contains("-push-"), "served from the queue: {id}");
    assert_eq!(data[0]["choices"][0]["delta"]["role"], "assistant", "{events}");
    let content: String = data.iter().filter_map(|d| d["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!content.is_empty(), "{events}");
    assert_eq!(data.last().unwrap()["choices"][0]["finish_reason"], "length", "{events}");
    let t = Instant::now();
    while metric(&f, "fleet_request_queue_wait_seconds_count{app=\"chat\"}") < waited_before + 1.0 {
        assert!(t.elapsed() < Duration::from_secs(10), "its queue wait is counted");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every directory under `root` named `name` (the local nodes' caches).
fn find_dirs(root: &std::path::Path, name: &str, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == name) {
                out.push(p.clone());
            }
            find_dirs(&p, name, out);
        }
    }
}

/// A generated Llama pushed to `origin` (through `store`), a spec pinning it, fleetd (with `env`)
/// given no model: a request is answered as the model answers alone, from the node's cache.
fn serve_pinned_model(
    origin: &str,
    store: std::sync::Arc<dyn fleet_providers::origin::OriginStore>,
    env: &[(&str, &str)],
) {
    let agent_bin = std::path::Path::new(env!("CARGO_BIN_EXE_fleetd")).with_file_name("fleet-agent");
    let dir = tempfile::tempdir().unwrap();
    let _machines = Machines(dir.path().to_path_buf());
    let model = dir.path().join("tiny-llama");
    let out = std::process::Command::new(&agent_bin)
        .args(["make-llm", "--family", "llama", "--shards", "2"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Pushed in small chunks, as `fleetctl model push` does.
    let origin: fleet_core::artifact::Origin = origin.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pushed = rt.block_on(fleet_providers::origin::push(&model, &origin, store, 64 << 10)).unwrap();
    assert!(pushed.chunks > 4, "{pushed:?}");

    // fleetd is given no model: the spec's pin is all the node has to go on.
    let mut args: Vec<String> =
        ["--fleet", "local-move", "--local", "--reconcile-every", "0.2", "--node-poll", "0.3", "--data-dir"]
            .map(String::from)
            .to_vec();
    args.push(dir.path().display().to_string());
    let f = Fleetd::start_with_env(&args, None, env);
    f.put_spec(&format!("{SPEC}\n[apps.chat.model]\nsource = \"{origin}\"\ndigest = \"{}\"\n", pushed.digest));
    let body = serde_json::json!({ "input": { "prompt": "hello world", "max_tokens": 5 } }).to_string();
    let (s, b) = f.call("POST", "/v1/apps/chat/requests", &body);
    assert_eq!(s, 202, "{b}");
    let id = serde_json::from_str::<Value>(&b).unwrap()["id"].as_u64().unwrap();
    let t = Instant::now();
    while !f.unfinished("chat", &[id]).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(120), "unanswered after 120 s:\n{}", f.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = f.get(&format!("/v1/apps/chat/requests/{id}"));
    let alone = common::generate_alone(&model, "hello world", 5);
    assert_eq!(r["state"]["output"]["text"], alone["text"], "{r}");

    // The agent reported the runner's cold start; fleetd counts it by phase and bytes by source.
    let t = Instant::now();
    while metric(&f, "fleet_cold_start_seconds_count{phase=\"fetch\",app=\"chat\"}") < 1.0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no cold start counted:\n{}", f.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&f, "fleet_cold_start_seconds_count{phase=\"load\",app=\"chat\"}"), 1.0);
    // The node's side: from its record to the launch answer, then to its agent ready.
    for phase in ["provision", "boot", "bootstrap", "first_token"] {
        let series = format!("fleet_cold_start_seconds_count{{phase=\"{phase}\",app=\"chat\"}}");
        assert_eq!(metric(&f, &series), 1.0, "{phase}");
    }
    let from_origin = metric(&f, "fleet_model_bytes_total{app=\"chat\",source=\"origin\"}");
    assert_eq!(from_origin, pushed.bytes as f64, "the one node took the whole model from the origin");
    // fleetd learned the app's cold start from that report, for placement and scale-down: the
    // weights' size is the model's.
    assert!(f.saw("cold-start model learned", Duration::from_secs(10)), "{}", f.log());
    let line = f.log().lines().find(|l| l.contains("cold-start model learned")).unwrap().to_string();
    // The log's colours out, then `key=value` fields.
    let mut learned = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            learned.push(c);
        }
    }
    let field = |k: &str| {
        learned.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).unwrap_or_default().to_string()
    };
    let size: f64 = field("size_gb").parse().unwrap_or_else(|_| panic!("{learned}"));
    assert!((size - pushed.bytes as f64 / 1e9).abs() < 1e-12, "{learned}");
    // An object store bills its reads; a directory on the machine does not.
    let egress = if matches!(origin, fleet_core::artifact::Origin::S3 { .. }) { "$0.09" } else { "$0.00" };
    assert_eq!(field("egress_per_gb"), egress, "{learned}");
    // The node's cache holds the model, as pinned, its files hard links into the chunked store.
    let mut caches = Vec::new();
    find_dirs(&dir.path().join("local"), "cache", &mut caches);
    assert_eq!(caches.len(), 1, "{caches:?}");
    let cached = caches[0].join("models").join(pushed.digest.hex());
    for e in std::fs::read_dir(&model).unwrap().flatten() {
        let name = e.file_name();
        assert_eq!(std::fs::read(e.path()).unwrap(), std::fs::read(cached.join(&name)).unwrap(), "{name:?}");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(cached.join(&name)).unwrap().nlink(), 2, "{name:?} is linked, not copied");
    }
}

#[test]
fn an_app_whose_spec_pins_a_model_in_a_directory_is_served_from_the_node_cache() {
    let origin_dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(fleet_providers::origin::file::FileOrigin::new(origin_dir.path().to_path_buf()));
    serve_pinned_model(&format!("file://{}", origin_dir.path().display()), store, &[]);
}

/// The agent holds no AWS credential: it reads S3 (moto's) through URLs fleetd signs for it.
#[test]
fn an_app_whose_spec_pins_a_model_on_s3_is_fetched_through_reads_fleetd_signs() {
    let moto = fleet_providers::moto::Moto::start();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "static"))
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(client.create_bucket().bucket("models").send()).unwrap();
    let store = std::sync::Arc::new(fleet_providers::origin::s3::S3Origin::new(client, "models", "tiny"));
    serve_pinned_model("s3://models/tiny", store, &[("AWS_ENDPOINT_URL", &moto.url), ("AWS_REGION", "us-east-1")]);
}
