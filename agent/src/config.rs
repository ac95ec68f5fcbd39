//! The agent's configuration file (TOML), written by the bootstrap next to the binary. Durations
//! are written as in fleet specs (`"10s"`, `"250ms"`). The etcd password is read from
//! `password_file` (mode 0600) or `FLEET_AGENT_PASSWORD`, never from the config itself.
//!
//! Instead of etcd `endpoints`, an agent may reach the store through fleetd's API: `gateway =
//! "http://host:7070"` with its token in `token_file` (mode 0600) — for a fleetd on its embedded
//! store, as the `local` provider's nodes are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::Secret;
use fleet_core::spec::parse_duration;
use serde::Deserialize;

use crate::burnin::BurnInConfig;
use crate::metadata::{NoticeConfig, NoticeSource};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    fleet: String,
    node: u64,
    #[serde(default)]
    endpoints: Vec<String>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    gateway: Option<String>,
    token_file: Option<PathBuf>,
    lease_ttl: Option<String>,
    poll: Option<String>,
    #[serde(default)]
    apps: BTreeMap<String, AppFile>,
    #[serde(default)]
    burn_in: BurnInConfig,
    interruption: Option<NoticeFile>,
    rented: Option<RentedFile>,
    push: Option<PushFile>,
    cache: Option<CacheFile>,
}

/// Where fleetd pushes requests to this node's language-model runners, and the credential it
/// must present (minted by fleetd for this node).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushFile {
    listen: String,
    token_file: PathBuf,
    /// TLS with a certificate made at start, its SHA-256 published in the agent's record for
    /// fleetd to pin. Required off loopback.
    #[serde(default)]
    tls: bool,
    /// The address fleetd reaches `listen` at, when that is not it (`listen` on 0.0.0.0, the
    /// node's address as fleetd's bootstrap knows it).
    advertise: Option<String>,
}

/// The push endpoint: where it listens, whether over TLS, the address to publish, and the
/// node's push credential.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub listen: std::net::SocketAddr,
    pub tls: bool,
    pub advertise: Option<std::net::SocketAddr>,
    pub token: Secret,
}

/// What fleetd rented this node as (written by its bootstrap from the node's offering).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RentedFile {
    gpu_model: String,
    gpus: u32,
    /// How often the GPUs are checked against it (default 60s).
    check_every: Option<String>,
    /// How long hardware throttling must last to count (default 5m).
    throttle_for: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFile {
    /// A model on this machine: a directory (language model) or a `.safetensors` file (MLP).
    model: Option<PathBuf>,
    /// Or a model artefact: its origin and the digest that pins it (fetched into the cache).
    source: Option<String>,
    digest: Option<String>,
    max_concurrency: Option<u32>,
}

/// Where fetched models are kept (`[cache]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    dir: PathBuf,
    /// Bytes the cache may hold (default 100 GiB); least recently used models are evicted.
    max_bytes: Option<u64>,
    /// Peers: the node's region (nodes of one region serve each other chunks).
    region: Option<String>,
    /// Where this node serves its chunks to its peers.
    peers_listen: Option<String>,
    /// The address peers reach `peers_listen` at, when that is not it.
    peers_advertise: Option<String>,
    /// The region's peer credential (minted by fleetd).
    peers_token_file: Option<PathBuf>,
    /// What this node serves its peers, in bytes per second over all of them (default: no cap).
    serve_bytes_per_s: Option<u64>,
    /// What this node fetches, in bytes per second over all sources (default: no cap).
    fetch_bytes_per_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoticeFile {
    source: String,
    endpoint: Option<String>,
    poll: Option<String>,
}

/// An app's model: a path here, or an artefact fetched into the node's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelConfig {
    Path(PathBuf),
    Artifact { origin: fleet_core::artifact::Origin, digest: fleet_core::artifact::Digest },
}

impl std::fmt::Display for ModelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelConfig::Path(p) => write!(f, "{}", p.display()),
            ModelConfig::Artifact { origin, digest } => write!(f, "{digest:?} from {origin}"),
        }
    }
}

/// The node's model cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub peers: Option<PeersConfig>,
    pub fetch_bytes_per_s: Option<u64>,
}

/// This node among its region's peers (`[cache] region`, `peers_listen`, `peers_token_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeersConfig {
    pub region: String,
    pub listen: std::net::SocketAddr,
    pub advertise: Option<std::net::SocketAddr>,
    pub token: Secret,
    pub serve_bytes_per_s: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub model: ModelConfig,
    /// Requests one runner serves at once.
    pub max_concurrency: u32,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub fleet: String,
    pub node: u64,
    pub endpoints: Vec<String>,
    /// etcd user and password (absent: etcd without auth).
    pub auth: Option<(String, Secret)>,
    /// fleetd's API and this agent's token, when the store is reached through fleetd's gateway.
    pub gateway: Option<(String, Secret)>,
    pub lease_ttl: Duration,
    pub poll: Duration,
    pub apps: BTreeMap<String, AppConfig>,
    pub burn_in: BurnInConfig,
    pub interruption: Option<NoticeConfig>,
    /// What the node was rented as, with how often and how strictly it is held to it.
    pub rented: Option<RentedConfig>,
    /// fleetd pushes requests here (absent: the runners take work from the queue only).
    pub push: Option<PushConfig>,
    /// Where fetched models are kept (required when an app names a model artefact).
    pub cache: Option<CacheConfig>,
}

#[derive(Debug, Clone, Copy)]
pub struct RentedConfig {
    pub rented: crate::gpu::fit::Rented,
    pub check_every: Duration,
    pub throttle_for: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read agent config {path}: {why}")]
    Read { path: String, why: String },
    #[error("agent config {path}: {why}")]
    Invalid { path: String, why: String },
}

fn duration(path: &str, field: &str, v: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).filter(|d| !d.is_zero()).ok_or_else(|| ConfigError::Invalid {
            path: path.into(),
            why: format!("{field} = \"{s}\" is not a duration (write e.g. \"10s\", \"250ms\")"),
        }),
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let p = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: p.clone(), why: e.to_string() })?;
        Self::parse(&p, &text, std::env::var("FLEET_AGENT_PASSWORD").ok())
    }

    /// `env_password`: `FLEET_AGENT_PASSWORD`, used when no `password_file` is set.
    pub fn parse(path: &str, text: &str, env_password: Option<String>) -> Result<AgentConfig, ConfigError> {
        let invalid = |why: String| ConfigError::Invalid { path: path.into(), why };
        let f: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let gateway = match (&f.gateway, &f.token_file) {
            (Some(_), _) if !f.endpoints.is_empty() => {
                return Err(invalid("give either endpoints (etcd) or gateway (fleetd), not both".into()));
            }
            (Some(g), Some(tf)) => {
                let token = std::fs::read_to_string(tf)
                    .map_err(|e| invalid(format!("token_file {}: {e}", tf.display())))?
                    .trim()
                    .to_string();
                Some((g.clone(), Secret::new(token)))
            }
            (Some(_), None) => return Err(invalid("gateway needs token_file (the agent's fleetd token)".into())),
            (None, Some(_)) => return Err(invalid("token_file is set but gateway is not".into())),
            (None, None) => None,
        };
        if f.endpoints.is_empty() && gateway.is_none() {
            return Err(invalid("endpoints is empty: name at least one etcd URL (or a fleetd gateway)".into()));
        }
        if f.fleet.is_empty() {
            return Err(invalid("fleet is empty".into()));
        }
        let password = match &f.password_file {
            Some(pf) => Some(
                std::fs::read_to_string(pf)
                    .map_err(|e| invalid(format!("password_file {}: {e}", pf.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => env_password,
        };
        let auth = match (f.user, password) {
            (Some(u), Some(pw)) => Some((u, Secret::new(pw))),
            (Some(u), None) => {
                return Err(invalid(format!("user = \"{u}\" needs a password_file or FLEET_AGENT_PASSWORD")));
            }
            (None, Some(_)) if f.password_file.is_some() => {
                return Err(invalid("password_file is set but user is not".into()));
            }
            (None, _) => None,
        };
        let lease_ttl = duration(path, "lease_ttl", f.lease_ttl.as_deref(), Duration::from_secs(10))?;
        if lease_ttl < Duration::from_secs(2) {
            return Err(invalid("lease_ttl must be at least 2s (etcd's lease granularity is 1s)".into()));
        }
        let poll = duration(path, "poll", f.poll.as_deref(), Duration::from_millis(200))?;
        let mut apps = BTreeMap::new();
        for (name, a) in f.apps {
            let max = a.max_concurrency.unwrap_or(1);
            if max == 0 {
                return Err(invalid(format!("apps.{name}.max_concurrency must be at least 1")));
            }
            let model = match (a.model, a.source, a.digest) {
                (Some(p), None, None) => ModelConfig::Path(p),
                (None, Some(src), Some(d)) => {
                    let origin = src.parse().map_err(|e| invalid(format!("apps.{name}.source: {e}")))?;
                    let digest = d.parse().map_err(|e| invalid(format!("apps.{name}.digest: {e}")))?;
                    ModelConfig::Artifact { origin, digest }
                }
                _ => {
                    return Err(invalid(format!(
                        "apps.{name}: give either `model` (a path on this machine) or both `source` and `digest` (a pushed model)"
                    )));
                }
            };
            if matches!(model, ModelConfig::Artifact { .. }) && f.cache.is_none() {
                return Err(invalid(format!("apps.{name} names a model artefact: give [cache] dir for it")));
            }
            apps.insert(name, AppConfig { model, max_concurrency: max });
        }
        f.burn_in.validate().map_err(|e| invalid(e.to_string()))?;
        let interruption = match f.interruption {
            None => None,
            Some(n) => {
                let source: NoticeSource = n.source.parse().map_err(invalid)?;
                let poll = duration(path, "interruption.poll", n.poll.as_deref(), Duration::from_secs(1))?;
                let endpoint = n.endpoint.unwrap_or_else(|| source.default_endpoint().to_string());
                Some(NoticeConfig { source, endpoint, poll })
            }
        };
        let rented = match f.rented {
            None => None,
            Some(r) => {
                let model: fleet_core::GpuModel =
                    r.gpu_model.parse().map_err(|e| invalid(format!("rented.gpu_model = \"{}\": {e}", r.gpu_model)))?;
                if r.gpus == 0 {
                    return Err(invalid("rented.gpus must be at least 1".into()));
                }
                Some(RentedConfig {
                    rented: crate::gpu::fit::Rented { model, gpus: r.gpus },
                    check_every: duration(
                        path,
                        "rented.check_every",
                        r.check_every.as_deref(),
                        Duration::from_secs(60),
                    )?,
                    throttle_for: duration(
                        path,
                        "rented.throttle_for",
                        r.throttle_for.as_deref(),
                        Duration::from_secs(300),
                    )?,
                })
            }
        };
        let push = match f.push {
            None => None,
            Some(p) => {
                let listen: std::net::SocketAddr = p.listen.parse().map_err(|_| {
                    invalid(format!("push.listen = \"{}\" is not an address like 127.0.0.1:0", p.listen))
                })?;
                // Prompts, answers and the credential cross this socket: in the clear only on
                // loopback.
                if !listen.ip().is_loopback() && !p.tls {
                    return Err(invalid(format!(
                        "push.listen = \"{listen}\" is not a loopback address: set push.tls = true (fleetd pins the certificate the agent publishes)"
                    )));
                }
                let advertise = match &p.advertise {
                    None => None,
                    Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|_| {
                        invalid(format!("push.advertise = \"{a}\" is not an address like 10.0.0.5:7443"))
                    })?),
                };
                let token = std::fs::read_to_string(&p.token_file)
                    .map_err(|e| invalid(format!("push.token_file {}: {e}", p.token_file.display())))?
                    .trim()
                    .to_string();
                if token.len() < 32 {
                    return Err(invalid(format!(
                        "push.token_file {}: the credential is too short",
                        p.token_file.display()
                    )));
                }
                Some(PushConfig { listen, tls: p.tls, advertise, token: Secret::new(token) })
            }
        };
        Ok(AgentConfig {
            push,
            rented,
            cache: match f.cache {
                None => None,
                Some(c) => {
                    // A rate of zero would never let a byte through: the limiter's wait for the
                    // first one is infinite (until 2026-12-03 it panicked converting it).
                    for (field, rate) in
                        [("serve_bytes_per_s", c.serve_bytes_per_s), ("fetch_bytes_per_s", c.fetch_bytes_per_s)]
                    {
                        if rate == Some(0) {
                            return Err(invalid(format!(
                                "cache.{field} = 0 would never move a byte: give a rate above 0, or leave it out for no limit"
                            )));
                        }
                    }
                    let peers = match (c.region, c.peers_listen, c.peers_token_file) {
                        (None, None, None) => None,
                        (Some(region), Some(listen), Some(tf)) => {
                            let listen = listen.parse().map_err(|_| {
                                invalid(format!(
                                    "cache.peers_listen = \"{listen}\" is not an address like 0.0.0.0:7071"
                                ))
                            })?;
                            let advertise = match c.peers_advertise {
                                None => None,
                                Some(a) => Some(a.parse().map_err(|_| {
                                    invalid(format!(
                                        "cache.peers_advertise = \"{a}\" is not an address like 10.0.0.5:7071"
                                    ))
                                })?),
                            };
                            let token = std::fs::read_to_string(&tf)
                                .map_err(|e| invalid(format!("cache.peers_token_file {}: {e}", tf.display())))?;
                            let token = token.trim().to_string();
                            if token.len() < 16 {
                                return Err(invalid(format!(
                                    "cache.peers_token_file {}: the credential is too short",
                                    tf.display()
                                )));
                            }
                            Some(PeersConfig {
                                region,
                                listen,
                                advertise,
                                token: Secret::new(token),
                                serve_bytes_per_s: c.serve_bytes_per_s,
                            })
                        }
                        _ => {
                            return Err(invalid(
                                "cache: peers need all of region, peers_listen and peers_token_file".into(),
                            ));
                        }
                    };
                    Some(CacheConfig {
                        dir: c.dir,
                        max_bytes: c.max_bytes.unwrap_or(100 << 30),
                        peers,
                        fetch_bytes_per_s: c.fetch_bytes_per_s,
                    })
                }
            },
            fleet: f.fleet,
            node: f.node,
            endpoints: f.endpoints,
            auth,
            gateway,
            lease_ttl,
            poll,
            apps,
            burn_in: f.burn_in,
            interruption,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
fleet = "prod"
node = 42
endpoints = ["http://127.0.0.1:2379"]
lease_ttl = "5s"
[apps.chat]
model = "/models/chat.safetensors"
max_concurrency = 2
[interruption]
source = "aws"
"#;

    #[test]
    fn a_good_config_loads_with_defaults() {
        let c = AgentConfig::parse("a.toml", GOOD, None).unwrap();
        assert_eq!(c.node, 42);
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.poll, Duration::from_millis(200));
        assert_eq!(c.apps["chat"].max_concurrency, 2);
        let n = c.interruption.unwrap();
        assert_eq!(n.endpoint, "http://169.254.169.254");
        assert_eq!(n.poll, Duration::from_secs(1));
    }

    #[test]
    fn errors_name_the_field() {
        let e = AgentConfig::parse("a.toml", &GOOD.replace("\"5s\"", "\"soon\""), None).unwrap_err().to_string();
        assert!(e.contains("lease_ttl = \"soon\" is not a duration"), "{e}");
        let e = AgentConfig::parse("a.toml", &GOOD.replace("source = \"aws\"", "source = \"ibm\""), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown interruption source 'ibm'"), "{e}");
        let e = AgentConfig::parse("a.toml", &format!("{GOOD}\nuser = \"x\""), None).unwrap_err().to_string();
        assert!(e.contains("a.toml"), "{e}");
        let e = AgentConfig::parse(
            "a.toml",
            &GOOD.replace("fleet = \"prod\"", "fleet = \"prod\"\nuser = \"agent-42\""),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs a password_file or FLEET_AGENT_PASSWORD"), "{e}");
        let e = AgentConfig::parse("a.toml", &format!("{GOOD}\n[cache]\ndir = \"/c\"\nfetch_bytes_per_s = 0"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cache.fetch_bytes_per_s = 0 would never move a byte"), "{e}");
    }

    #[test]
    fn the_password_never_shows() {
        let text = GOOD.replace("fleet = \"prod\"", "fleet = \"prod\"\nuser = \"agent-42\"");
        let c = AgentConfig::parse("a.toml", &text, Some("hunter2-secret".into())).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.auth.as_ref().unwrap().1.expose(), "hunter2-secret");
    }
}
