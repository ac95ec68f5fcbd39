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
//! hands it to that node's agent only, and no record or log carries it.
//!
//! **Connections.** One HTTP/2 connection per node, every request a stream on it. Off loopback
//! it is TLS, accepting only the certificate the node's agent made at start and published in its
//! record (SHA-256 pinned: [`pinned_connector`]); an agent that publishes none is pushed to only
//! on loopback.

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

/// The peer credential of `region`: the agents of one region present it to each other for
/// chunks of cached models (`fleet_agent::cache::peers`); agents elsewhere do not have it.
pub fn peer_credential(key: &Secret, region: &str) -> Secret {
    Secret::new(hmac_sha256(key.expose().as_bytes(), format!("fleet-peers:region:{region}").as_bytes()))
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

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Requests fleetd has pushed and not yet seen finish, per runner; and the connections they go
/// on: one HTTP/2 connection per agent endpoint, every request to that node a stream on it (so
/// 10,000 streams to a node are not 10,000 sockets).
#[derive(Default)]
pub struct Outstanding {
    load: Mutex<HashMap<RunnerId, u32>>,
    conns: Mutex<HashMap<String, Sender>>,
}

impl std::fmt::Debug for Outstanding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let load = self.load.lock().expect("outstanding lock").len();
        let conns = self.conns.lock().expect("conns lock").len();
        write!(f, "Outstanding {{ runners: {load}, connections: {conns} }}")
    }
}

impl Outstanding {
    fn get(&self, r: RunnerId) -> u32 {
        self.load.lock().expect("outstanding lock").get(&r).copied().unwrap_or(0)
    }
    fn add(&self, r: RunnerId) {
        *self.load.lock().expect("outstanding lock").entry(r).or_default() += 1;
    }
    fn done(&self, r: RunnerId) {
        let mut m = self.load.lock().expect("outstanding lock");
        if let Some(n) = m.get_mut(&r) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&r);
            }
        }
    }

    /// The open connection to `addr` (as pinned), or a new one (2 s to connect and shake hands):
    /// TLS accepting only the certificate `pin` names, or plain HTTP/2 where there is no pin and
    /// `addr` is a loopback address. Credentials and prompts never cross a network in the clear.
    async fn connection(&self, addr: &str, pin: Option<&str>) -> Result<Sender, String> {
        let key = format!("{addr}#{}", pin.unwrap_or(""));
        if let Some(s) = self.conns.lock().expect("conns lock").get(&key).filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let loopback = addr.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
        if pin.is_none() && !loopback {
            return Err(format!(
                "{addr} is not a loopback address and its agent publishes no certificate to pin: not pushed in the clear"
            ));
        }
        let within = std::time::Duration::from_secs(2);
        let stream = tokio::time::timeout(within, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let builder = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        let sender = match pin {
            None => {
                let (sender, conn) = builder
                    .handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(conn);
                sender
            }
            Some(pin) => {
                let name = rustls::pki_types::ServerName::try_from("fleet-agent").expect("a DNS name");
                let tls = tokio::time::timeout(within, pinned_connector(pin)?.connect(name, stream))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_string())?
                    .map_err(|e| format!("TLS: {e}"))?;
                let (sender, conn) = builder
                    .handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(conn);
                sender
            }
        };
        let mut conns = self.conns.lock().expect("conns lock");
        // Another request may have connected meanwhile: one connection is kept, either works.
        Ok(conns
            .entry(key)
            .and_modify(|s| {
                if s.is_closed() {
                    *s = sender.clone()
                }
            })
            .or_insert(sender)
            .clone())
    }

    /// Drops closed connections (after a failure: the next request connects anew).
    fn forget_closed(&self) {
        self.conns.lock().expect("conns lock").retain(|_, s| !s.is_closed());
    }
}

/// A TLS connector that accepts exactly the certificate whose SHA-256 (of its DER, hex) is `pin`
/// — the one the node's agent made at start and published in its record — and proves the peer
/// holds its key (the handshake's signature is checked as usual). No certificate authority.
pub fn pinned_connector(pin: &str) -> Result<tokio_rustls::TlsConnector, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = std::sync::Arc::new(Pinned { sha256: pin.to_ascii_lowercase(), provider: provider.clone() });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)))
}

#[derive(Debug)]
struct Pinned {
    sha256: String,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got: String = Sha256::digest(end_entity.as_ref()).iter().map(|b| format!("{b:02x}")).collect();
        if got == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the node's certificate (SHA-256 {got}) is not the one its agent published ({})",
                self.sha256
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A runner a request may be pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub runner: RunnerId,
    pub node: NodeId,
    pub addr: String,
    /// The certificate the node's agent published (SHA-256 of its DER, hex): the only one
    /// fleetd accepts from that address. `None`: plain HTTP/2, on loopback only.
    pub cert_sha256: Option<String>,
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
            let cert_sha256 = agent.health.push_cert_sha256.clone();
            let load = pushed(r.id) + queued;
            (load < capacity).then_some(Target { runner: r.id, node, addr, cert_sha256, load })
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
    let mut sender = ctx.pushes.connection(&t.addr, t.cert_sha256.as_deref()).await.map_err(retry)?;
    let req = hyper::Request::post(format!("http://{}/v1/runners/{}/generate", t.addr, t.runner))
        .header("authorization", format!("Bearer {}", credential(key, t.node).expose()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(input.to_string())))
        .map_err(|e| retry(e.to_string()))?;
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            ctx.pushes.forget_closed();
            return Err(retry(format!("no answer: {e}")));
        }
    };
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
        let (mut ended, mut cause) = (false, "its stream ended before its answer".to_string());
        'read: while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    cause = format!("its stream broke: {e}");
                    break;
                }
            };
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
            let why = format!(
                "runner {runner} was lost in the middle of its answer ({cause}): the text sent is all there is (not retried, it had begun)"
            );
            let _ = tx.send(PushEvent::Error(why)).await;
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

    #[tokio::test]
    async fn a_push_connection_accepts_only_the_pinned_certificate() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        // A node's endpoint as its agent makes it: a certificate of its own, HTTP/2 over TLS.
        let made = rcgen::generate_simple_self_signed(vec!["fleet-agent".to_string()]).unwrap();
        let der = made.cert.der().clone();
        let pin: String = Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02x}")).collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![der], key)
                .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else { return };
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        let get = || hyper::Request::get(format!("http://{addr}/")).body(Full::new(Bytes::new())).unwrap();
        let out = Outstanding::default();
        let mut s = out.connection(&addr, Some(&pin)).await.unwrap();
        assert_eq!(s.send_request(get()).await.unwrap().status(), 200);
        // The same connection serves the next request.
        let mut again = out.connection(&addr, Some(&pin)).await.unwrap();
        assert_eq!(again.send_request(get()).await.unwrap().status(), 200);
        assert_eq!(out.conns.lock().unwrap().len(), 1);
        // Any other certificate is refused in the handshake, before anything is sent.
        let e = out.connection(&addr, Some(&"0".repeat(64))).await.unwrap_err();
        assert!(e.contains("is not the one its agent published"), "{e}");
        // No pin and not loopback: refused without connecting.
        let e = out.connection("192.0.2.1:7443", None).await.unwrap_err();
        assert!(e.contains("not pushed in the clear"), "{e}");
    }
}
