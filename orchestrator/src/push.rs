//! Routing by push: fleetd sends a language-model request straight to a ready runner with room
//! and streams its text back as the runner produces it (the agent's side: `fleet-agent`'s
//! `push` module). The durable queue stays for the requests no runner has room for.
//!
//! **The rule.** Candidates are the app's runners that are ready (idle or busy) on a node whose
//! agent is healthy and publishes a push endpoint. A runner's load is the requests fleetd has
//! pushed to it and not yet seen finish, plus the queue requests its record counts; one at
//! `max_multiplexing` or above has no room. The least loaded goes first (ties: lowest runner
//! id). When none has room the request goes to the queue, counts as demand there, and the first
//! runner that frees claims it.
//!
//! **Failures.** A push that fails before the runner's first byte of text (connection refused,
//! the runner gone, the agent's answer not a stream) is tried on the next candidate, then put on
//! the queue; once text has gone to the client, a lost runner ends the stream with an error
//! that says so (the text cannot be taken back).
//!
//! **Credential.** Each node's push credential is HMAC-SHA256 of its id under the fleet's push
//! key (fleetd's data directory, `push.key`): fleetd derives it to call the node, the bootstrap
//! hands it to that node's agent only, and no record or log carries it. Loopback only until the
//! endpoint has TLS (the agent refuses any other listen address).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use fleet_core::{NodeId, RunnerId, Secret};
use fleet_state::lifecycle::runner::RunnerPhase;
use fleet_state::model::{AgentRecord, RunnerRecord};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::actors::Ctx;

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`, hex.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = key.to_vec();
    if k.len() > BLOCK {
        k = Sha256::digest(&k).to_vec();
    }
    k.resize(BLOCK, 0);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// The credential of `node` under the fleet's push `key` (HMAC-SHA256, hex).
pub fn credential(key: &Secret, node: NodeId) -> Secret {
    Secret::new(hmac_sha256(key.expose().as_bytes(), format!("fleet-push:node:{node}").as_bytes()))
}

/// The fleet's push key in `dir/push.key`, made on first use (readable by its owner only).
pub fn load_or_make_key(dir: &std::path::Path) -> std::io::Result<Secret> {
    let path = dir.join("push.key");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => Ok(Secret::new(s.trim().to_string())),
        _ => {
            let bytes: [u8; 32] = rand::random();
            let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            crate::auth::write_private(&path, &key)?;
            Ok(Secret::new(key))
        }
    }
}

/// Requests fleetd has pushed and not yet seen finish, per runner.
#[derive(Debug, Default)]
pub struct Outstanding(Mutex<HashMap<RunnerId, u32>>);

impl Outstanding {
    fn get(&self, r: RunnerId) -> u32 {
        self.0.lock().expect("outstanding lock").get(&r).copied().unwrap_or(0)
    }
    fn add(&self, r: RunnerId) {
        *self.0.lock().expect("outstanding lock").entry(r).or_default() += 1;
    }
    fn done(&self, r: RunnerId) {
        let mut m = self.0.lock().expect("outstanding lock");
        if let Some(n) = m.get_mut(&r) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&r);
            }
        }
    }
}

/// A runner a request may be pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub runner: RunnerId,
    pub node: NodeId,
    pub addr: String,
    pub load: u32,
}

/// The order to try (see the module doc): `runners` of the app with their agents, loads from
/// `pushed`, at most `capacity` requests per runner.
pub fn order(
    runners: &[RunnerRecord],
    agents: &HashMap<NodeId, AgentRecord>,
    pushed: impl Fn(RunnerId) -> u32,
    capacity: u32,
) -> Vec<Target> {
    let mut out: Vec<Target> = runners
        .iter()
        .filter_map(|r| {
            let (node, queued) = match &r.state {
                RunnerPhase::Idle { node, .. } => (*node, 0),
                RunnerPhase::Busy { node, in_flight, .. } => (*node, *in_flight),
                _ => return None,
            };
            let agent = agents.get(&node).filter(|a| a.health.ok)?;
            let addr = agent.health.push_addr.clone()?;
            let load = pushed(r.id) + queued;
            (load < capacity).then_some(Target { runner: r.id, node, addr, load })
        })
        .collect();
    out.sort_by_key(|t| (t.load, t.runner));
    out
}

/// What comes back from a pushed request.
#[derive(Debug, Clone, PartialEq)]
pub enum PushEvent {
    Delta(String),
    /// The runner's answer (`{text, finish_reason, usage, timing}`).
    Done(Value),
    Error(String),
}

/// Why a push did not start.
#[derive(Debug)]
pub enum NotStarted {
    /// The runner could not take it (unreachable, gone, not a stream): try another.
    Retry(String),
    /// The runner refused the input itself: the caller's to fix, not another runner's.
    Refused(String),
}

/// Pushes `input` to `t` and returns its events: text deltas, then one `Done` or `Error`. The
/// runner's load counts the request until its stream ends.
pub async fn start(
    ctx: &Ctx,
    key: &Secret,
    t: &Target,
    input: &Value,
) -> Result<mpsc::Receiver<PushEvent>, NotStarted> {
    let retry = |why: String| NotStarted::Retry(format!("runner {} on node {}: {why}", t.runner, t.node));
    let stream = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect(&t.addr))
        .await
        .map_err(|_| retry("connect timed out".into()))?
        .map_err(|e| retry(format!("cannot connect: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| retry(format!("handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(format!("/v1/runners/{}/generate", t.runner))
        .header("host", t.addr.as_str())
        .header("authorization", format!("Bearer {}", credential(key, t.node).expose()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(input.to_string())))
        .map_err(|e| retry(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| retry(format!("no answer: {e}")))?;
    let status = resp.status();
    if status != hyper::StatusCode::OK {
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let why = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(if status == hyper::StatusCode::BAD_REQUEST { NotStarted::Refused(why) } else { retry(why) });
    }
    let (tx, rx) = mpsc::channel(64);
    let outstanding = ctx.pushes.clone();
    let runner = t.runner;
    outstanding.add(runner);
    tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut ended = false;
        'read: while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Some(data) = frame.data_ref() else { continue };
            buf.extend_from_slice(data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let Ok(v) = serde_json::from_slice::<Value>(&line) else { continue };
                let ev = if let Some(d) = v["delta"].as_str() {
                    PushEvent::Delta(d.to_string())
                } else if !v["done"].is_null() {
                    ended = true;
                    PushEvent::Done(v["done"].clone())
                } else {
                    ended = true;
                    PushEvent::Error(v["error"].as_str().unwrap_or("the runner failed").to_string())
                };
                if tx.send(ev).await.is_err() || ended {
                    break 'read;
                }
            }
        }
        if !ended {
            let _ = tx.send(PushEvent::Error(format!("runner {runner} was lost in the middle of its answer: the text sent is all there is (not retried, it had begun)"))).await;
        }
        outstanding.done(runner);
    });
    Ok(rx)
}

/// The candidates for `app` now, from the store (runners and their agents) and fleetd's pushes.
pub async fn targets(ctx: &Ctx, app: &str, capacity: u32) -> Vec<Target> {
    let Ok((kvs, _)) = ctx.store.range(&ctx.keys.runners()).await else { return Vec::new() };
    let runners: Vec<RunnerRecord> =
        kvs.iter().filter_map(|kv| kv.json::<RunnerRecord>().ok()).filter(|r| r.app == app).collect();
    let mut agents = HashMap::new();
    for node in runners.iter().filter_map(|r| r.node()) {
        if agents.contains_key(&node) {
            continue;
        }
        if let Ok(Some(kv)) = ctx.store.get(&ctx.keys.agent(node)).await
            && let Ok(a) = kv.json::<AgentRecord>()
        {
            agents.insert(node, a);
        }
    }
    order(&runners, &agents, |r| ctx.pushes.get(r), capacity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_state::model::AgentHealth;

    #[test]
    fn the_credential_depends_on_key_and_node_only() {
        let k = Secret::new("k".repeat(40));
        let a = credential(&k, 1);
        assert_eq!(a.expose(), credential(&k, 1).expose());
        assert_ne!(a.expose(), credential(&k, 2).expose());
        assert_ne!(a.expose(), credential(&Secret::new("j".repeat(40)), 1).expose());
        assert_eq!(a.expose().len(), 64);
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test cases 2 and 6 (a key longer than the block).
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn runner(id: RunnerId, node: NodeId, in_flight: Option<u32>) -> RunnerRecord {
        let since = chrono::Utc::now();
        let state = match in_flight {
            None => RunnerPhase::Idle { node, since },
            Some(n) => RunnerPhase::Busy { node, in_flight: n, since },
        };
        RunnerRecord { state, ..RunnerRecord::placed(id, "chat", node, since) }
    }

    #[test]
    fn the_least_loaded_ready_runner_with_room_goes_first() {
        let agent = |node: NodeId, ok: bool, push: bool| AgentRecord {
            node,
            lease: 1,
            version: "t".into(),
            gpus: 1,
            since: chrono::Utc::now(),
            health: AgentHealth {
                ok,
                push_addr: push.then(|| format!("127.0.0.1:{}", 9000 + node)),
                ..AgentHealth::default()
            },
        };
        let agents: HashMap<NodeId, AgentRecord> = [
            (1, agent(1, true, true)),
            (2, agent(2, true, true)),
            (3, agent(3, false, true)),
            (4, agent(4, true, false)),
        ]
        .into_iter()
        .collect();
        let mut starting = runner(9, 1, None);
        starting.state = RunnerPhase::Starting { node: 1, since: chrono::Utc::now() };
        let runners = vec![
            runner(1, 1, Some(1)), // one queue request
            runner(2, 2, None),    // idle, but fleetd pushed two to it
            runner(3, 2, None),    // idle
            runner(4, 3, None),    // its agent is unhealthy
            runner(5, 4, None),    // its agent takes no pushes
            starting,
        ];
        let pushed = |r: RunnerId| if r == 2 { 2 } else { 0 };
        let order_of = |cap: u32| order(&runners, &agents, pushed, cap).iter().map(|t| t.runner).collect::<Vec<_>>();
        assert_eq!(order_of(4), [3, 1, 2]);
        assert_eq!(order_of(2), [3, 1], "runner 2 is full at 2");
        assert_eq!(order_of(1), [3]);
        let t = &order(&runners, &agents, pushed, 4)[0];
        assert_eq!((t.node, t.addr.as_str(), t.load), (2, "127.0.0.1:9002", 0));
    }
}
