//! Talking to fleetd's HTTP API: `--server URL` (or `FLEET_SERVER`, default http://127.0.0.1:7070).
//! Errors come back as one line: what fleetd said, or why it could not be reached.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

pub struct Server {
    base: String,
    agent: ureq::Agent,
}

impl Server {
    pub fn new(base: &str) -> Server {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Server { base: base.trim_end_matches('/').to_string(), agent }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut resp = self.agent.get(&url).call().with_context(|| {
            format!("cannot reach fleetd at {} (is it running? --server / FLEET_SERVER)", self.base)
        })?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().with_context(|| format!("reading the answer of {url}"))?;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        if status >= 400 {
            let msg = v.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| v.to_string());
            bail!("fleetd answered {status}: {msg}");
        }
        Ok(v)
    }
}
