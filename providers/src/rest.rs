//! A small JSON-over-HTTPS client for the clouds without an official Rust SDK (Lambda, RunPod):
//! one place that sends the API key, reads `Retry-After`, and never puts the key in an error.

use std::time::Duration;

use fleet_core::Secret;
use serde_json::Value;

/// How the API key travels.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth {
    Bearer,
}

/// A failed call, reduced to what error mapping needs (never the request: it holds the key).
#[derive(Debug, Clone)]
pub(crate) struct HttpFailure {
    pub status: Option<u16>,
    /// The response body as JSON (`Null` when it was not JSON; then `text` has it).
    pub body: Value,
    pub text: String,
    pub retry_after: Option<Duration>,
}

impl HttpFailure {
    fn transport(e: &reqwest::Error) -> HttpFailure {
        // reqwest's Display names the URL, never headers: the key is safe here.
        let text = e.without_url_ref();
        HttpFailure { status: None, body: Value::Null, text, retry_after: None }
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(u) = self.url() {
            s = s.replace(u.as_str(), u.path());
        }
        if self.is_timeout() { format!("timed out: {s}") } else { s }
    }
}

#[derive(Clone)]
pub(crate) struct Rest {
    client: reqwest::Client,
    base: String,
    key: Secret,
    auth: Auth,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest").field("base", &self.base).field("key", &self.key).finish()
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these APIs).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Rest {
    pub fn new(base: &str, key: Secret, auth: Auth, timeout: Duration) -> Rest {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("fleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a reqwest client with only a timeout and user agent always builds");
        Rest { client, base: base.trim_end_matches('/').to_string(), key, auth }
    }

    /// Sends one request; `Ok` is the body of a 2xx answer (`Null` when empty).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, HttpFailure> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.client.request(method, &url);
        req = match self.auth {
            Auth::Bearer => req.bearer_auth(self.key.expose()),
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| HttpFailure::transport(&e))?;
        let status = resp.status();
        let retry = retry_after(resp.headers());
        let text = resp.text().await.map_err(|e| HttpFailure::transport(&e))?;
        let json: Value =
            if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
        if status.is_success() {
            if json.is_null() && !text.trim().is_empty() {
                return Err(HttpFailure {
                    status: Some(status.as_u16()),
                    body: Value::Null,
                    text: format!("answer is not JSON: {}", truncate(&text, 200)),
                    retry_after: None,
                });
            }
            return Ok(json);
        }
        Err(HttpFailure { status: Some(status.as_u16()), body: json, text: truncate(&text, 500), retry_after: retry })
    }
}

pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
