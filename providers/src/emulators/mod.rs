//! Local HTTP servers that answer as each cloud's public API does: request paths, JSON bodies,
//! long-running operations, and the real error bodies. The adapters' tests (and the
//! orchestrator's cross-cloud tests) point the real clients at them by endpoint override.
//!
//! Every server records each request it gets ([`Recorded`]) so tests can assert on what an adapter
//! *sent* (machine type, spot settings, labels, idempotency key), and answers the next matching
//! request with an injected error once ([`Fault`]), as a cloud does when it runs out of capacity.

pub mod aws_pricing;
pub mod azure;
pub mod gcp;
pub mod lambda;
pub mod runpod;
pub mod shapes;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the server got it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string (percent-encoded), empty when none.
    pub query: String,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: Value,
    pub authorization: Option<String>,
    /// The answer's status and JSON body (`Null` when empty or not JSON).
    pub status: u16,
    pub response: Value,
}

impl Recorded {
    /// The value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error answered once, to the next request whose method and path match.
#[derive(Debug, Clone)]
pub struct Fault {
    /// `""` matches any method.
    pub method: &'static str,
    /// Matches when the path contains this.
    pub path_contains: String,
    /// Matches when the request body contains this (`""`: any body); GraphQL's one path needs it.
    pub body_contains: &'static str,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

#[derive(Debug, Default)]
pub(crate) struct Base {
    log: Mutex<Vec<Recorded>>,
    faults: Mutex<VecDeque<Fault>>,
}

/// A running server; stops when dropped.
#[derive(Debug)]
pub struct Running {
    pub url: String,
    base: Arc<Base>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.base.log.lock().unwrap().clone()
    }

    /// Requests with this method whose path contains `path`.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == method && r.path.contains(path)).collect()
    }

    pub fn fail_next(&self, fault: Fault) {
        self.base.faults.lock().unwrap().push_back(fault);
    }

    pub fn clear_requests(&self) {
        self.base.log.lock().unwrap().clear();
    }
}

async fn record_and_inject(State(base): State<Arc<Base>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, 16 << 20).await.unwrap_or_default();
    let raw_body = String::from_utf8_lossy(&bytes).into_owned();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        authorization: parts.headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
        status: 0,
        response: Value::Null,
    };
    let fault = {
        let mut faults = base.faults.lock().unwrap();
        let at = faults.iter().position(|f| {
            (f.method.is_empty() || f.method == rec.method)
                && rec.path.contains(f.path_contains.as_str())
                && raw_body.contains(f.body_contains)
        });
        at.and_then(|i| faults.remove(i))
    };
    let resp = if let Some(f) = fault {
        let mut resp =
            (StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(f.body))
                .into_response();
        for (k, v) in f.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    } else {
        next.run(Request::from_parts(parts, Body::from(bytes))).await
    };
    // The answer is recorded too, so tests can check it against the API's definition.
    let (parts, body) = resp.into_parts();
    let bytes = to_bytes(body, 64 << 20).await.unwrap_or_default();
    let mut rec = rec;
    rec.status = parts.status.as_u16();
    rec.response = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    base.log.lock().unwrap().push(rec);
    Response::from_parts(parts, Body::from(bytes))
}

/// Serves `router` on a free loopback port, recording and injecting as described above.
pub(crate) async fn serve(router: Router) -> Running {
    let base = Arc::new(Base::default());
    let app = router.layer(middleware::from_fn_with_state(base.clone(), record_and_inject));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Running { url, base, task }
}

/// A JSON answer with a status.
pub(crate) fn json(status: u16, v: Value) -> Response {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(v)).into_response()
}

/// A short random-looking id, unique per process (hex).
pub(crate) fn new_id(len: usize) -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..len).map(|_| char::from_digit(r.random_range(0..16), 16).unwrap()).collect()
}
