//! Talking to fleetd's HTTP API.
//!
//! Where to, and with which token, in this order:
//! - `--server URL` / `FLEET_SERVER`, else `server` in the config file, else http://127.0.0.1:7070;
//! - `FLEET_TOKEN`, else `token` in the config file, else — for a fleetd on this machine's
//!   loopback — the admin token it wrote to `./fleetd-data/admin.token` (so the README's local
//!   run needs no set-up);
//! - HTTPS servers are checked against `--ca-cert` / `ca_cert` in the config (a private CA or a
//!   self-signed certificate), else the Mozilla roots.
//!
//! The config file is `FLEET_CONFIG`, else `~/.config/fleet/config.toml`:
//!
//! ```toml
//! server = "https://fleet.internal:7070"
//! token = "flt_…"
//! ca_cert = "/etc/fleet/ca.pem"
//! ```
//!
//! Errors come back as one line: what fleetd said, or why it could not be reached.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// fleetd's address [env: FLEET_SERVER; config: server; default: http://127.0.0.1:7070].
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// A CA certificate (PEM) that fleetd's HTTPS certificate is checked against [config: ca_cert].
    #[arg(long, global = true)]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
}

fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLEET_CONFIG") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/fleet/config.toml"))
}

fn load_config() -> anyhow::Result<ConfigFile> {
    let Some(path) = config_path() else { return Ok(ConfigFile::default()) };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config {}: {} (keys: server, token, ca_cert)", path.display(), e.message())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("FLEET_CONFIG").is_none() => {
            Ok(ConfigFile::default())
        }
        Err(e) => Err(e).with_context(|| format!("config {}", path.display())),
    }
}

pub struct Server {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A secret that never shows in Debug output.
impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("base", &self.base).field("token", &self.token.as_ref().map(|_| "…")).finish()
    }
}

/// Whether `base` is plain HTTP to this machine: its host (parsed, not a prefix: in
/// `http://127.0.0.1:7070@example.com` the host is example.com) is 127.0.0.1, localhost or `[::1]`.
/// Only then does fleetctl offer a local fleetd's admin token by itself.
fn is_local(base: &str) -> bool {
    let Some(rest) = base.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) if !authority.ends_with(']') => return false,
        _ => authority,
    };
    matches!(host.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost" | "[::1]")
}

impl Server {
    /// The server, token and TLS roots from flags, environment and config file.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<Server> {
        let cfg = load_config()?;
        let base = args
            .server
            .clone()
            .or_else(|| std::env::var("FLEET_SERVER").ok().filter(|s| !s.is_empty()))
            .or(cfg.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--server {base}: write the URL with its scheme, e.g. http://127.0.0.1:7070 or https://host:7070");
        }
        let base = base.trim_end_matches('/').to_string();
        let token = std::env::var("FLEET_TOKEN").ok().filter(|t| !t.is_empty()).or(cfg.token).or_else(|| {
            is_local(&base)
                .then(|| std::fs::read_to_string("fleetd-data/admin.token").ok())
                .flatten()
                .map(|t| t.trim().to_string())
        });
        if token.is_some() && base.starts_with("http://") && !is_local(&base) {
            eprintln!(
                "warning: sending a token in clear to {base}: anyone on the path can read it and spend money; \
                 use https:// (fleetd --tls-cert) off this machine"
            );
        }
        let ca = args.ca_cert.clone().or(cfg.ca_cert);
        Server::new(&base, token, ca.as_deref())
    }

    pub fn new(base: &str, token: Option<String>, ca_cert: Option<&Path>) -> anyhow::Result<Server> {
        let mut b =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(30)));
        if let Some(ca) = ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("--ca-cert {}", ca.display()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!("--ca-cert {}: no PEM certificate in it", ca.display());
            }
            let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&certs)).build();
            b = b.tls_config(tls);
        }
        Ok(Server { base: base.trim_end_matches('/').to_string(), token, agent: b.build().new_agent() })
    }

    fn answer(&self, url: &str, resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> anyhow::Result<Value> {
        let mut resp = resp.map_err(|e| {
            let text = e.to_string();
            // rustls's words for a server that answered TLS with plain HTTP.
            if self.base.starts_with("https://") && (text.contains("InvalidContentType") || text.contains("corrupt message")) {
                return anyhow::anyhow!(
                    "fleetd at {} answered in plain HTTP, not TLS: use http:// (fleetd serves HTTPS only with --tls-cert and --tls-key)",
                    self.base
                );
            }
            anyhow::anyhow!("cannot reach fleetd at {} ({text}): is it running? (--server / FLEET_SERVER)", self.base)
        })?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().with_context(|| format!("reading the answer of {url}"))?;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        if status >= 400 {
            let msg = v.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| v.to_string());
            if status == 401 && self.token.is_none() {
                bail!("fleetd answered 401: no token: set FLEET_TOKEN or `token` in the config file ({msg})");
            }
            bail!("fleetd answered {status}: {msg}");
        }
        Ok(v)
    }

    /// fleetd's address as given.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        self.answer(&url, req.call())
    }

    /// Follows fleetd's server-sent events at `path` (`/v1/watch/…`), calling `on_data` with each
    /// event's JSON data, until the stream ends (fleetd stopped: an error) or `on_data` fails.
    pub fn watch(&self, path: &str, mut on_data: impl FnMut(Value) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        // No overall timeout: a watch lasts until interrupted (fleetd sends a keep-alive every 15 s).
        let mut req = self.agent.get(&url).config().timeout_global(None).build();
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        self.events(&url, req.call(), |data| {
            let v: Value = serde_json::from_str(data).with_context(|| format!("an event of {url} is not JSON"))?;
            on_data(v).map(|()| true)
        })?;
        bail!("fleetd at {} ended the watch (stopped?)", self.base)
    }

    /// POSTs a JSON `body` whose answer is a stream of server-sent events (an OpenAI-style
    /// `stream: true` completion), calling `on_data` with each event's data as sent, until the
    /// stream ends or `on_data` answers false.
    pub fn post_stream(
        &self,
        path: &str,
        body: &str,
        on_data: impl FnMut(&str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.post(&url).config().timeout_global(None).build();
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        self.events(&url, req.header("content-type", "application/json").send(body), on_data)
    }

    fn events(
        &self,
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        mut on_data: impl FnMut(&str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        use std::io::BufRead;
        let resp = resp.map_err(|e| anyhow::anyhow!("cannot reach fleetd at {} ({e}): is it running?", self.base))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status >= 400 {
            let text = body.read_to_string().unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let msg = v
                .get("error")
                .and_then(|e| e.as_str().or_else(|| e.get("message").and_then(Value::as_str)))
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            bail!("fleetd answered {status}: {msg}");
        }
        let reader = std::io::BufReader::new(body.with_config().limit(u64::MAX).reader());
        let mut data = String::new();
        for line in reader.lines() {
            let line = line.with_context(|| format!("reading events of {url}"))?;
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if line.is_empty() && !data.is_empty() {
                let go_on = on_data(&data)?;
                data.clear();
                if !go_on {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.delete(&url);
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        self.answer(&url, req.call())
    }

    /// POST (or PUT with `put`) of a body: JSON when it parses as JSON, else text.
    pub fn send(&self, put: bool, path: &str, body: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = if put { self.agent.put(&url) } else { self.agent.post(&url) };
        if let Some(a) = self.auth() {
            req = req.header("authorization", a);
        }
        let ct = if serde_json::from_str::<Value>(body).is_ok() { "application/json" } else { "text/plain" };
        self.answer(&url, req.header("content-type", ct).send(body))
    }
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn only_a_loopback_host_is_local() {
        for yes in [
            "http://127.0.0.1:7070",
            "http://localhost:7070",
            "http://LOCALHOST:1/x",
            "http://[::1]:7070",
            "http://127.0.0.1",
        ] {
            assert!(is_local(yes), "{yes}");
        }
        for no in [
            "http://127.0.0.1:7070@attacker.example",
            "http://localhost:7070@attacker.example/",
            "http://127.0.0.1.attacker.example:7070",
            "http://localhost.attacker.example",
            "http://localhost:7070.attacker.example",
            "https://127.0.0.1:7070",
            "http://10.0.0.5:7070",
            "http://[::1]x:7070",
        ] {
            assert!(!is_local(no), "{no}");
        }
    }
}
