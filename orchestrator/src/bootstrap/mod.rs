//! Getting fleet onto a rented machine over SSH: verify the host, upload `fleet-agent`, its
//! config and the apps' models, start it (a systemd unit where systemd runs, else a supervising
//! shell loop), and call the node ready once its agent reports healthy in the store.
//!
//! Host keys: the keys the cloud reports for the instance (AWS console output, GCP guest
//! attributes: `Provider::host_keys`), else the one recorded at the node's first contact (trust
//! on first use, kept under `hostkeys/{node}`, and said so in the node's events); any other key is
//! refused and the node fails, never silently accepted. Secrets go only over a verified session. Idempotent: files are compared by SHA-256 and only
//! what differs is uploaded; a node already running this version is left alone. At most
//! `max_concurrent` nodes are bootstrapped at once.

pub mod local;
pub mod ssh;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fleet_core::keys::Keys;
use fleet_core::{NodeId, Secret};
use fleet_providers::{Instance, InstanceState};
use fleet_state::model::{AgentRecord, NodeRecord};
use fleet_state::store::{Compare, Op, Store, get_json};
use russh::keys::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use self::ssh::{Session, SshError, fingerprint};

/// Where the host keys a connection insists on come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKeySource {
    /// Reported by the cloud for the instance (`Provider::host_keys`).
    Cloud,
    /// Recorded at an earlier contact.
    Recorded,
    /// Neither: the key seen now is pinned.
    FirstContact,
}
use crate::access::AgentAccess;
use crate::actors::Bootstrap;

/// Where to reach an instance over SSH.
pub type Resolve = Arc<dyn Fn(&Instance) -> Option<SocketAddr> + Send + Sync>;

pub struct SshBootstrapConfig {
    pub fleet: String,
    pub user: String,
    /// The fleet's private key (OpenSSH format).
    pub key: Secret,
    /// The `fleet-agent` binary to install.
    pub agent_binary: PathBuf,
    /// Where it goes on the node (letters, digits, `/._-` only).
    /// Where the agent goes on the node; `{node}` is replaced by the node's id (several nodes
    /// on one host, as in a lab or the end-to-end test).
    pub remote_dir: String,
    /// The store as the node reaches it.
    pub endpoints: Vec<String>,
    pub lease_ttl: String,
    /// App → model here: a file, uploaded to `{remote_dir}/models/{app}.safetensors`, or a
    /// language model's directory (config.json, tokenizer.json, weights), each of its files
    /// uploaded to `{remote_dir}/models/{app}/`. Read into memory once, at start.
    pub models: BTreeMap<String, PathBuf>,
    /// More agent config (TOML sections such as `[burn_in]` or `[interruption]`).
    pub extra_agent_config: String,
    pub connect_timeout: Duration,
    pub max_concurrent: usize,
    /// Default: the instance's public address, else its private one, port 22.
    pub resolve: Option<Resolve>,
    /// Per-node store users; absent when the store has no authentication.
    pub credentials: Option<Arc<dyn AgentAccess>>,
    /// Tell each agent what its node was rented as (`[rented]`: the offering's GPU model and
    /// count), so it holds the machine to it. Off only where the agent cannot see the GPUs it
    /// was rented with (tests on a CPU machine: `fleetd --skip-hardware-check`).
    pub check_hardware: bool,
    /// fleetd pushes requests to the nodes' runners (`fleet_orchestrator::push`): each agent
    /// gets its node's push credential and serves the push endpoint on this port of every
    /// address, over TLS with a certificate it makes and publishes for fleetd to pin. `None`: the
    /// nodes' runners take work from the queue only.
    pub push: Option<PushSetup>,
}

/// What an agent needs to take pushed requests: the fleet's push key (its node's credential
/// derives from it) and the port to serve on (the cloud's firewall must let fleetd reach it).
#[derive(Clone)]
pub struct PushSetup {
    pub key: Secret,
    pub port: u16,
}

impl std::fmt::Debug for SshBootstrapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshBootstrapConfig")
            .field("user", &self.user)
            .field("key", &self.key)
            .field("agent_binary", &self.agent_binary)
            .field("remote_dir", &self.remote_dir)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("bootstrap config: {0}")]
    Config(String),
    #[error("node {node}: {why}")]
    Node { node: NodeId, why: String },
    #[error("store: {0}")]
    Store(#[from] fleet_state::store::StoreError),
}

/// What one installation pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOutcome {
    /// Files written (names under the remote dir); empty when everything matched.
    pub uploaded: Vec<String>,
    /// Whether the agent was (re)started.
    pub restarted: bool,
}

struct File {
    name: String,
    mode: &'static str,
    data: Arc<Vec<u8>>,
    sha256: String,
}

impl File {
    fn new(name: impl Into<String>, mode: &'static str, data: Vec<u8>) -> File {
        let sha256 = hex(&Sha256::digest(&data));
        File { name: name.into(), mode, data: Arc::new(data), sha256 }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct SshBootstrap {
    cfg: SshBootstrapConfig,
    store: Arc<dyn Store>,
    keys: Keys,
    key: PrivateKey,
    binary: File,
    models: Vec<File>,
    pool: Semaphore,
    /// Nodes installed by this daemon (after a restart each is checked once more, cheaply).
    installed: Mutex<HashSet<NodeId>>,
}

impl std::fmt::Debug for SshBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshBootstrap").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// The supervising loop used where systemd is not running: restarts the agent if it exits.
const RUN_SCRIPT: &str = "#!/bin/sh\n# fleet-agent supervisor (written by fleetd's bootstrap)\ncd \"$(dirname \"$0\")\"\n\
while :; do\n  ./fleet-agent run --config agent.toml >> agent.log 2>&1\n  sleep 1\ndone\n";

/// The agent config of a model the spec pins (`[apps.X.model]`): the app's source and digest,
/// the node's cache under `dir`, and, when fleetd pushes (`peers`: the node's region, the port
/// beside the push port, the address fleetd reaches the node at), its region's peers: the chunks
/// it holds served on that port of every address with the region's credential (`peers.token`).
fn pinned_config(
    dir: &str,
    app: &str,
    m: &fleet_core::spec::ModelRef,
    peers: Option<(&str, u16, std::net::IpAddr)>,
) -> String {
    let mut s =
        format!("[apps.{app}]\nsource = \"{}\"\ndigest = \"{}\"\n[cache]\ndir = \"{dir}/cache\"\n", m.origin, m.digest);
    if let Some((region, port, ip)) = peers {
        s += &format!(
            "region = \"{region}\"\npeers_listen = \"0.0.0.0:{port}\"\npeers_advertise = \"{}\"\npeers_token_file = \"{dir}/peers.token\"\n",
            SocketAddr::new(ip, port)
        );
    }
    s
}

impl SshBootstrap {
    pub fn new(cfg: SshBootstrapConfig, store: Arc<dyn Store>) -> Result<SshBootstrap, BootstrapError> {
        let plain = cfg.remote_dir.replace("{node}", "0");
        if plain.is_empty()
            || !plain.starts_with('/')
            || !plain.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
        {
            return Err(BootstrapError::Config(format!(
                "remote_dir '{}' must be an absolute path of letters, digits and /._- only (and {{node}})",
                cfg.remote_dir
            )));
        }
        for app in cfg.models.keys() {
            if !app.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
                return Err(BootstrapError::Config(format!("app name '{app}' cannot name a model file")));
            }
        }
        // The key's text is never shown, not even in the error.
        let key = russh::keys::decode_secret_key(cfg.key.expose(), None)
            .map_err(|_| BootstrapError::Config("the SSH private key is not a valid OpenSSH private key".into()))?;
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| BootstrapError::Config(format!("{}: {e}", p.display())));
        let binary = File::new("fleet-agent", "0755", read(&cfg.agent_binary)?);
        let mut models = Vec::new();
        for (app, path) in &cfg.models {
            if !path.is_dir() {
                models.push(File::new(format!("models/{app}.safetensors"), "0644", read(path)?));
                continue;
            }
            // A language model as hubs lay it out: every file of the directory, to models/{app}/.
            let listed =
                std::fs::read_dir(path).map_err(|e| BootstrapError::Config(format!("{}: {e}", path.display())))?;
            let mut names: Vec<String> = Vec::new();
            for entry in listed {
                let entry = entry.map_err(|e| BootstrapError::Config(format!("{}: {e}", path.display())))?;
                if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                    return Err(BootstrapError::Config(format!(
                        "{}: the file name '{name}' has characters other than letters, digits and ._- (rename it)",
                        path.display()
                    )));
                }
                names.push(name);
            }
            if !names.iter().any(|n| n == "config.json") {
                return Err(BootstrapError::Config(format!(
                    "{}: a model directory needs its config.json (and tokenizer.json, weights)",
                    path.display()
                )));
            }
            names.sort();
            for name in names {
                models.push(File::new(format!("models/{app}/{name}"), "0644", read(&path.join(&name))?));
            }
        }
        let keys = Keys::new(&cfg.fleet);
        let pool = Semaphore::new(cfg.max_concurrent.max(1));
        Ok(SshBootstrap { cfg, store, keys, key, binary, models, pool, installed: Mutex::new(HashSet::new()) })
    }

    fn address(&self, inst: &Instance) -> Option<SocketAddr> {
        if let Some(r) = &self.cfg.resolve {
            return r(inst);
        }
        // The adapter says where sshd answers (RunPod maps it to a port of its own choosing).
        inst.ssh
    }

    /// The host keys to insist on: the cloud's word, else the one recorded at first contact
    /// (none: this is the first contact).
    async fn expected_host_keys(
        &self,
        node: NodeId,
        inst: &Instance,
    ) -> Result<(Vec<PublicKey>, HostKeySource), BootstrapError> {
        if !inst.ssh_host_keys.is_empty() {
            let keys = inst
                .ssh_host_keys
                .iter()
                .map(|k| {
                    PublicKey::from_openssh(k).map_err(|e| BootstrapError::Node {
                        node,
                        why: format!("the cloud reported an unreadable SSH host key ({e})"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((keys, HostKeySource::Cloud));
        }
        Ok(match self.recorded_host_key(node).await? {
            Some(k) => (vec![k], HostKeySource::Recorded),
            None => (Vec::new(), HostKeySource::FirstContact),
        })
    }

    async fn recorded_host_key(&self, node: NodeId) -> Result<Option<PublicKey>, BootstrapError> {
        match self.store.get(&self.keys.host_key(node)).await? {
            Some(kv) => {
                let text = String::from_utf8_lossy(&kv.value).into_owned();
                let k = PublicKey::from_openssh(&text)
                    .map_err(|e| BootstrapError::Node { node, why: format!("recorded host key unreadable ({e})") })?;
                Ok(Some(k))
            }
            None => Ok(None),
        }
    }

    /// Records the first host key seen (true when this call recorded it); if another was
    /// recorded meanwhile, it must be the same.
    async fn pin(&self, node: NodeId, key: &PublicKey) -> Result<bool, BootstrapError> {
        let text = key.to_openssh().map_err(|e| BootstrapError::Node { node, why: e.to_string() })?;
        let k = self.keys.host_key(node);
        let res = self.store.txn(vec![Compare::absent(&k)], vec![Op::put(&k, text.into_bytes())]).await?;
        if res.succeeded {
            return Ok(true);
        }
        if let Some(expected) = self.recorded_host_key(node).await?
            && expected.key_data() != key.key_data()
        {
            return Err(BootstrapError::Node {
                node,
                why: format!(
                    "host key changed during first contact ({} vs {})",
                    fingerprint(&expected),
                    fingerprint(key)
                ),
            });
        }
        Ok(false)
    }

    /// The agent's directory on `node`.
    fn dir(&self, node: NodeId) -> String {
        self.cfg.remote_dir.replace("{node}", &node.to_string())
    }

    /// `ip`: where fleetd reaches the node (the address it dials SSH at), for the push endpoint.
    fn agent_config(
        &self,
        node: &NodeRecord,
        auth: Option<&(String, Secret)>,
        ip: std::net::IpAddr,
        pinned: Option<&fleet_core::spec::ModelRef>,
    ) -> String {
        let mut s = self.agent_config_for(node.id, auth);
        if let Some(m) = pinned {
            let region = node.offering().map(|o| o.region.clone()).unwrap_or_default();
            let peers = self.cfg.push.as_ref().map(|p| (region.as_str(), p.port.saturating_add(1), ip));
            s += &pinned_config(&self.dir(node.id), &node.app, m, peers);
        }
        if let Some(p) = &self.cfg.push {
            let dir = self.dir(node.id);
            let port = p.port;
            s += &format!(
                "[push]\nlisten = \"0.0.0.0:{port}\"\ntls = true\nadvertise = \"{}\"\ntoken_file = \"{dir}/push.token\"\n",
                std::net::SocketAddr::new(ip, port)
            );
        }
        if self.cfg.check_hardware
            && let Some((gpu, count)) = node.offering().and_then(rented_shape)
        {
            s += &format!("[rented]\ngpu_model = \"{}\"\ngpus = {count}\n", gpu.name());
        }
        s
    }

    fn agent_config_for(&self, node: NodeId, auth: Option<&(String, Secret)>) -> String {
        let dir = &self.dir(node);
        let endpoints: Vec<String> = self.cfg.endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let mut s = format!(
            "# written by fleetd's bootstrap\nfleet = \"{}\"\nnode = {node}\nendpoints = [{}]\nlease_ttl = \"{}\"\n",
            self.cfg.fleet,
            endpoints.join(", "),
            self.cfg.lease_ttl
        );
        if let Some((user, _)) = auth {
            s += &format!("user = \"{user}\"\npassword_file = \"{dir}/agent.password\"\n");
        }
        for (app, path) in &self.cfg.models {
            if path.is_dir() {
                s += &format!("[apps.{app}]\nmodel = \"{dir}/models/{app}\"\n");
            } else {
                s += &format!("[apps.{app}]\nmodel = \"{dir}/models/{app}.safetensors\"\n");
            }
        }
        s += &self.cfg.extra_agent_config.replace("{node}", &node.to_string());
        s
    }

    /// Connects to the node and makes it run this version of the agent with this config;
    /// changes nothing where it already does.
    pub async fn install(&self, node: &NodeRecord, inst: &Instance) -> Result<InstallOutcome, BootstrapError> {
        let id = node.id;
        let addr = self
            .address(inst)
            .ok_or_else(|| BootstrapError::Node { node: id, why: "the instance has no IP address yet".into() })?;
        let (expected, source) = self.expected_host_keys(id, inst).await?;
        let _permit = self.pool.acquire().await.map_err(|e| BootstrapError::Config(e.to_string()))?;
        let s = Session::connect(addr, &self.cfg.user, &self.key, &expected, self.cfg.connect_timeout).await?;
        // Verified (or first contact): record the key, and say once in the node's events how it
        // came to be trusted. Nothing secret has been sent yet.
        let said = match source {
            HostKeySource::Recorded => None,
            HostKeySource::Cloud => Some(format!(
                "host key {} verified against the {} key{} the cloud reports for the instance, before any secret was sent",
                fingerprint(&s.host_key),
                expected.len(),
                if expected.len() == 1 { "" } else { "s" }
            )),
            HostKeySource::FirstContact => Some(format!(
                "host key {} pinned at first contact: the cloud reports none for this instance (trust on first use; any other key is refused from now on)",
                fingerprint(&s.host_key)
            )),
        };
        if let Some(message) = said
            && self.pin(id, &s.host_key).await?
        {
            tracing::info!(node = id, %addr, host_key = %fingerprint(&s.host_key), "{message}");
            let ev = fleet_state::events::NewEvent::node(fleet_state::events::EventKind::HostKey, node, message);
            if let Err(e) = fleet_state::events::record(&*self.store, &self.keys, chrono::Utc::now(), ev).await {
                tracing::warn!(node = id, error = %e, "host key event not recorded");
            }
        }
        let result = self.install_over(&s, node, addr.ip()).await;
        s.close().await;
        result
    }

    async fn install_over(
        &self,
        s: &Session,
        node: &NodeRecord,
        ip: std::net::IpAddr,
    ) -> Result<InstallOutcome, BootstrapError> {
        let dir = &self.dir(node.id);
        // The spec's pinned model for the node's app, unless fleetd was given one to upload.
        let pinned = match get_json::<fleet_state::model::StoredSpec>(&*self.store, &self.keys.spec()).await? {
            Some((stored, _)) if !self.cfg.models.contains_key(&node.app) => {
                fleet_core::spec::FleetSpec::parse("spec", &stored.toml)
                    .ok()
                    .and_then(|spec| spec.app(&node.app).and_then(|a| a.model.clone()))
            }
            _ => None,
        };
        let auth = match &self.cfg.credentials {
            Some(c) => {
                let mut apps: Vec<String> = self.cfg.models.keys().cloned().collect();
                if pinned.is_some() {
                    apps.push(node.app.clone());
                }
                Some(c.credentials(node.id, &apps).await.map_err(|why| BootstrapError::Node { node: node.id, why })?)
            }
            None => None,
        };
        let mut files = vec![
            File::new("agent.toml", "0600", self.agent_config(node, auth.as_ref(), ip, pinned.as_ref()).into_bytes()),
            File::new("run-agent.sh", "0755", RUN_SCRIPT.as_bytes().to_vec()),
        ];
        if let Some(p) = &self.cfg.push {
            let credential = crate::push::credential(&p.key, node.id);
            files.push(File::new("push.token", "0600", credential.expose().as_bytes().to_vec()));
            if pinned.is_some() {
                let region = node.offering().map(|o| o.region.clone()).unwrap_or_default();
                let peers = crate::push::peer_credential(&p.key, &region);
                files.push(File::new("peers.token", "0600", peers.expose().as_bytes().to_vec()));
            }
        }
        if let Some((_, pw)) = &auth {
            files.push(File::new("agent.password", "0600", pw.expose().as_bytes().to_vec()));
        }
        let names: Vec<&str> = std::iter::once(self.binary.name.as_str())
            .chain(self.models.iter().map(|m| m.name.as_str()))
            .chain(files.iter().map(|f| f.name.as_str()))
            .collect();
        // What is there now: hashes of our files, and whether the agent runs.
        let model_dirs: String =
            self.cfg.models.iter().filter(|(_, p)| p.is_dir()).map(|(app, _)| format!(" {dir}/models/{app}")).collect();
        let probe = format!(
            "mkdir -p {dir}/models{model_dirs} && chmod 700 {dir} && cd {dir} && (sha256sum {} 2>/dev/null || true) && \
             if [ -d /run/systemd/system ] && [ \"$(id -u)\" = 0 ]; then \
               systemctl is-active --quiet fleet-agent && echo FLEET_RUNNING; \
             elif [ -f supervisor.pid ] && kill -0 \"$(cat supervisor.pid)\" 2>/dev/null; then echo FLEET_RUNNING; fi",
            names.join(" ")
        );
        let out = s.run(&probe, None).await?;
        let running = out.lines().any(|l| l.trim() == "FLEET_RUNNING");
        let have: BTreeMap<&str, &str> = out
            .lines()
            .filter_map(|l| {
                let (h, n) = l.split_once("  ")?;
                Some((n.trim(), h.trim()))
            })
            .collect();
        let mut uploaded = Vec::new();
        let all = std::iter::once(&self.binary).chain(self.models.iter()).chain(files.iter());
        for f in all {
            if have.get(f.name.as_str()) == Some(&f.sha256.as_str()) {
                continue;
            }
            // Written beside, then renamed: a running agent never sees a half-written file.
            let tmp = format!("{dir}/.{}.tmp", f.name.replace('/', "_"));
            let cmd = format!("umask 077 && cat > {tmp} && chmod {} {tmp} && mv -f {tmp} {dir}/{}", f.mode, f.name);
            s.run(&cmd, Some(&f.data)).await?;
            uploaded.push(f.name.clone());
        }
        let restarted = !uploaded.is_empty() || !running;
        if restarted {
            let start = format!(
                "cd {dir} && if [ -d /run/systemd/system ] && [ \"$(id -u)\" = 0 ]; then \
                   printf '[Unit]\\nDescription=fleet agent\\nAfter=network-online.target\\n[Service]\\nExecStart={dir}/fleet-agent run --config {dir}/agent.toml\\nRestart=always\\nRestartSec=1\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/fleet-agent.service && \
                   systemctl daemon-reload && systemctl enable --quiet fleet-agent && systemctl restart fleet-agent; \
                 else \
                   if [ -f supervisor.pid ]; then kill -TERM -- -\"$(cat supervisor.pid)\" 2>/dev/null; sleep 0.2; fi; \
                   setsid sh {dir}/run-agent.sh > /dev/null 2>&1 < /dev/null & echo $! > supervisor.pid; \
                 fi"
            );
            s.run(&start, None).await?;
        }
        tracing::info!(node = node.id, uploaded = ?uploaded, restarted, "agent installed");
        Ok(InstallOutcome { uploaded, restarted })
    }
}

/// The GPU model and count an offering rents: the documented shapes of the hyperscalers', else
/// the built-in catalog's row.
fn rented_shape(o: &fleet_core::OfferingKey) -> Option<(fleet_core::GpuModel, u32)> {
    if let Some(k) = fleet_core::instance::known_shape(o.cloud, &o.instance_type) {
        return Some((k.gpu, k.gpu_count));
    }
    fleet_core::Catalog::builtin()
        .offerings()
        .iter()
        .find(|x| x.cloud == o.cloud && x.instance.name == o.instance_type)
        .map(|x| (x.instance.gpu, x.instance.gpu_count))
}

#[async_trait]
impl Bootstrap for SshBootstrap {
    async fn bootstrap(&self, node: &NodeRecord, inst: &Instance) -> Result<bool, String> {
        if inst.state != InstanceState::Running {
            return Ok(false);
        }
        let done = self.installed.lock().expect("installed lock").contains(&node.id);
        if !done {
            match self.install(node, inst).await {
                Ok(_) => {
                    self.installed.lock().expect("installed lock").insert(node.id);
                }
                // Still booting (sshd not up): the node actor asks again, until its timeout.
                Err(BootstrapError::Ssh(e)) if e.is_transient() => {
                    tracing::debug!(node = node.id, error = %e, "not reachable yet");
                    return Ok(false);
                }
                Err(BootstrapError::Store(e)) => {
                    tracing::warn!(node = node.id, error = %e, "store unavailable during bootstrap; retrying");
                    return Ok(false);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        // Installed: ready once its agent says it is healthy.
        match get_json::<AgentRecord>(&*self.store, &self.keys.agent(node.id)).await {
            Ok(Some((a, _))) if a.health.ok => Ok(true),
            Ok(Some((a, _))) => Err(format!(
                "the agent reports the node unhealthy: {}",
                a.health.reason.unwrap_or_else(|| "no reason given".into())
            )),
            Ok(None) | Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod pinned_tests {
    use super::*;

    #[test]
    fn a_pinned_model_gives_the_agent_its_source_digest_cache_and_region_peers() {
        let m = fleet_core::spec::ModelRef {
            origin: "s3://models/llama".parse().unwrap(),
            digest: fleet_core::artifact::Digest::of(b"manifest"),
        };
        let ip: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let text = pinned_config("/opt/fleet/7", "llm", &m, Some(("us-east-1", 7444, ip)));
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["apps"]["llm"]["source"].as_str(), Some("s3://models/llama"));
        assert_eq!(v["apps"]["llm"]["digest"].as_str(), Some(m.digest.to_string().as_str()));
        assert_eq!(v["cache"]["dir"].as_str(), Some("/opt/fleet/7/cache"));
        assert_eq!(v["cache"]["region"].as_str(), Some("us-east-1"));
        assert_eq!(v["cache"]["peers_listen"].as_str(), Some("0.0.0.0:7444"));
        assert_eq!(v["cache"]["peers_advertise"].as_str(), Some("10.0.0.5:7444"));
        assert_eq!(v["cache"]["peers_token_file"].as_str(), Some("/opt/fleet/7/peers.token"));
        // Without pushes there is no credential to give: the cache alone, from the origin.
        let alone: toml::Value = toml::from_str(&pinned_config("/d", "llm", &m, None)).unwrap();
        assert!(alone["cache"].get("region").is_none());
        // Different regions, different credentials; the same region, the same.
        let key = Secret::new("k".repeat(64));
        assert_ne!(crate::push::peer_credential(&key, "us-east-1"), crate::push::peer_credential(&key, "eu-west-1"));
        assert_eq!(crate::push::peer_credential(&key, "us-east-1"), crate::push::peer_credential(&key, "us-east-1"));
    }
}
