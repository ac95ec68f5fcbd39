//! The push endpoint: fleetd sends a request straight to one of this node's language-model
//! runners and reads the text back as it is produced, instead of going through the durable
//! queue (which stays for the requests no runner has room for).
//!
//! HTTP/2 (fleetd sends every request to a node over one connection) or HTTP/1.1.
//! `POST /v1/runners/{runner}/generate` with `Authorization: Bearer <credential>` (the node's
//! push credential, minted by fleetd and given to this agent only; compared in constant time) and
//! the request's input as the queue carries it (`{"prompt"|"messages", "max_tokens", …}`). The
//! answer streams as newline-delimited JSON: `{"delta": "text"}` as text is produced, then one
//! `{"done": {text, finish_reason, usage, timing}}` or `{"error": "why"}`. The runner must be
//! loaded here and be a language model (404 / 400 otherwise, before anything streams).
//!
//! Off loopback the endpoint speaks TLS only (the config refuses otherwise): a certificate made
//! at start ([`Identity`]) whose SHA-256 the agent publishes in its record; fleetd connects to
//! nothing but that certificate (it pins it), so no certificate authority is involved and the
//! key never leaves this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fleet_core::{RunnerId, Secret};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::llm::worker::LlmRunner;

/// The language-model runners loaded on this node, shared with the push endpoint.
pub type Runners = Arc<Mutex<HashMap<RunnerId, Arc<LlmRunner>>>>;

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn reply(status: StatusCode, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string() + "\n")).boxed())
        .expect("a valid response")
}

/// Constant-time equality (a timing difference must not tell how much of a guess was right).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether `req` carries `Authorization: Bearer <token>` (compared in constant time): the push
/// endpoint's node credential, the peer endpoint's region credential.
pub(crate) fn bearer_is<B>(req: &Request<B>, token: &Secret) -> bool {
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    same(presented.as_bytes(), token.expose().as_bytes())
}

async fn handle(req: Request<Incoming>, token: Arc<Secret>, runners: Runners) -> Response<Body> {
    if !bearer_is(&req, &token) {
        return reply(StatusCode::UNAUTHORIZED, json!({"error": "this endpoint takes the node's push credential"}));
    }
    let path = req.uri().path().to_string();
    let runner: Option<RunnerId> =
        path.strip_prefix("/v1/runners/").and_then(|r| r.strip_suffix("/generate")).and_then(|r| r.parse().ok());
    let Some(runner) = runner.filter(|_| req.method() == hyper::Method::POST) else {
        return reply(StatusCode::NOT_FOUND, json!({"error": format!("no such endpoint: {} {path}", req.method())}));
    };
    let Some(llm) = runners.lock().expect("runners lock").get(&runner).cloned() else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("runner {runner} is not a language-model runner loaded on this node")}),
        );
    };
    // Inputs are bounded by fleetd's admission; 8 MiB is far above any it lets through.
    let body = match http_body_util::Limited::new(req.into_body(), 8 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": format!("cannot read the body: {e}")})),
    };
    let input: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": format!("the body is not JSON: {e}")})),
    };
    // Bad input is refused before anything streams.
    if let Err(e) = crate::llm::worker::parse(&input) {
        return reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}));
    }
    let (deltas_tx, mut deltas) = tokio::sync::mpsc::unbounded_channel::<String>();
    let answer = llm.submit_streaming(&input, Some(deltas_tx));
    let (tx, lines) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        while let Some(d) = deltas.recv().await {
            let line = json!({"delta": d}).to_string() + "\n";
            if tx.send(Bytes::from(line)).await.is_err() {
                // fleetd went away: the sequence still finishes (its slot frees at the end).
                return;
            }
        }
        let last = match answer.await {
            Ok(Ok(v)) => json!({"done": v}),
            Ok(Err(e)) => json!({"error": e}),
            Err(_) => json!({"error": "the runner stopped before it answered"}),
        };
        let _ = tx.send(Bytes::from(last.to_string() + "\n")).await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(Lines(lines).boxed())
        .expect("a valid response")
}

/// A streamed body: the lines sent on its channel, in order, ending once the sender is gone and
/// every line sent before is out. (http-body-util's `Channel` can end a body between a frame's
/// send and its sender's drop, losing that last frame: here, the answer line.)
struct Lines(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

/// The endpoint's TLS identity: a self-signed certificate made at start, its key, and the
/// SHA-256 of its DER (hex) to publish.
pub struct Identity {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub sha256: String,
}

impl Identity {
    pub fn new() -> Result<Identity, String> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use sha2::Digest;
        let made = rcgen::generate_simple_self_signed(vec!["fleet-agent".to_string()])
            .map_err(|e| format!("cannot make the push endpoint's certificate: {e}"))?;
        let der: CertificateDer<'static> = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
        let sha256: String = sha2::Sha256::digest(der.as_ref()).iter().map(|b| format!("{b:02x}")).collect();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .map_err(|e| format!("TLS: {e}"))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Identity { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), sha256 })
    }
}

/// Streams one HTTP/2 connection may carry at once: above any runner's `max_multiplexing` (the
/// runner's batch bounds what is served; this only bounds what may wait on one connection).
const MAX_STREAMS: u32 = 100_000;

/// Serves the push endpoint on `listener` for as long as the agent runs (over TLS with `tls`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: Secret,
    runners: Runners,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let token = Arc::new(token);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "push endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small frames (a token each) go out at once, not held back for the peer's ACK.
        let _ = stream.set_nodelay(true);
        let (token, runners, tls) = (token.clone(), runners.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, token, runners).await,
                Some(acceptor) => {
                    // A handshake that does not finish in 10 s holds nothing.
                    let accepted =
                        tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await;
                    match accepted {
                        Ok(Ok(s)) => connection(s, token, runners).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "push endpoint: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "push endpoint: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// One connection: HTTP/2 (fleetd keeps one per node and sends every request on it), or
/// HTTP/1.1 (a request per connection: tools, the benchmark's direct calls).
async fn connection<S>(io: S, token: Arc<Secret>, runners: Runners)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let (token, runners) = (token.clone(), runners.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(req, token, runners).await) }
    });
    let mut b = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.http2().max_concurrent_streams(MAX_STREAMS);
    if let Err(e) = b.serve_connection(hyper_util::rt::TokioIo::new(io), svc).await {
        tracing::debug!(error = %e, "push connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer line is sent just before the sender goes: the body must still carry it (the
    /// race that lost it with http-body-util's `Channel` under load).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_streamed_body_ends_only_after_its_last_line() {
        for i in 0..2000 {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"{\"delta\": \"a\"}\n")).await.unwrap();
                tx.send(Bytes::from_static(b"{\"done\": {}}\n")).await.unwrap();
            });
            let got = Lines(rx).collect().await.unwrap().to_bytes();
            assert_eq!(&got[..], b"{\"delta\": \"a\"}\n{\"done\": {}}\n", "iteration {i}");
        }
    }
}
