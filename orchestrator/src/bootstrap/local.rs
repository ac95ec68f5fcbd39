//! What a `local` provider node runs: a real `fleet-agent`, configured to reach this fleetd's
//! store through its API gateway with a token of its own (scope `agent:NODE:APP`, revoked when the
//! node is terminated). Apps without a model file (`--model APP=FILE`) get a small MLP made by
//! `fleet-agent make-model`, so the whole path serves real inference on the CPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use fleet_providers::LaunchRequest;
use fleet_providers::local::NodeStarter;

use crate::access::AgentAccess;

/// The model every app without one gets: 16 inputs → 4 outputs (`{"x": [16 numbers]}`).
pub const DEMO_MODEL_DIMS: &str = "16,64,4";

#[derive(Debug)]
pub struct LocalAgentStarter {
    pub fleet: String,
    /// fleetd's API as the agents reach it (`http://127.0.0.1:7070`).
    pub gateway: String,
    pub agent_binary: PathBuf,
    pub models: BTreeMap<String, PathBuf>,
    pub access: Arc<dyn AgentAccess>,
    /// More agent config (TOML sections) appended to each node's.
    pub extra_agent_config: String,
    /// The fleet's push key: each node's agent gets its own push credential and a loopback push
    /// endpoint (`None`: runners take work from the queue only).
    pub push_key: Option<fleet_core::Secret>,
    /// The push endpoint over TLS (its certificate pinned by fleetd), as off loopback.
    pub push_tls: bool,
    /// Where the applied spec is: an app's runner decodes up to its `max_multiplexing` requests
    /// together (2 when there is none to read).
    pub spec: Option<(Arc<dyn fleet_state::store::Store>, fleet_core::keys::Keys)>,
}

impl LocalAgentStarter {
    /// The app as the applied spec has it.
    async fn app_spec(&self, app: &str) -> Option<fleet_core::spec::AppSpec> {
        let (store, keys) = self.spec.as_ref()?;
        let (stored, _) =
            fleet_state::store::get_json::<fleet_state::model::StoredSpec>(&**store, &keys.spec()).await.ok()??;
        let spec = fleet_core::spec::FleetSpec::parse("spec", &stored.toml).ok()?;
        spec.apps.into_iter().find(|a| a.name == app)
    }
}

#[async_trait]
impl NodeStarter for LocalAgentStarter {
    async fn prepare(&self, req: &LaunchRequest, dir: &Path) -> Result<Command, String> {
        let node: u64 = req.node_id.parse().map_err(|_| format!("node id `{}` is not a number", req.node_id))?;
        let app_spec = self.app_spec(&req.app).await;
        // The spec's model artefact (fetched by the agent into its node's cache), else a model
        // directory given to fleetd (--model), else a generated MLP.
        let artifact = app_spec.as_ref().and_then(|a| a.model.clone());
        let model = match self.models.get(&req.app) {
            _ if artifact.is_some() => PathBuf::new(),
            Some(m) => m.clone(),
            None => {
                let m = dir.join(format!("{}.safetensors", req.app));
                let out = Command::new(&self.agent_binary)
                    .args(["make-model", "--dims", DEMO_MODEL_DIMS])
                    .arg(&m)
                    .output()
                    .map_err(|e| format!("{}: {e}", self.agent_binary.display()))?;
                if !out.status.success() {
                    return Err(format!("fleet-agent make-model: {}", String::from_utf8_lossy(&out.stderr).trim()));
                }
                m
            }
        };
        let (_, token) = self.access.credentials(node, std::slice::from_ref(&req.app)).await?;
        let token_file = dir.join("agent.token");
        let _ = std::fs::remove_file(&token_file);
        crate::auth::write_private(&token_file, token.expose())
            .map_err(|e| format!("{}: {e}", token_file.display()))?;
        let (model_lines, cache_table) = match &artifact {
            Some(m) => {
                let mut cache = format!("[cache]\ndir = \"{}\"\n", dir.join("cache").display());
                // Peers: the nodes of one region serve each other the model's chunks, with the
                // region's credential (derived from the fleet's push key).
                if let Some(key) = &self.push_key {
                    let region = &req.offering.region;
                    let peer_file = dir.join("peers.token");
                    let _ = std::fs::remove_file(&peer_file);
                    crate::auth::write_private(&peer_file, crate::push::peer_credential(key, region).expose())
                        .map_err(|e| format!("{}: {e}", peer_file.display()))?;
                    cache += &format!(
                        "region = \"{region}\"\npeers_listen = \"127.0.0.1:0\"\npeers_token_file = \"{}\"\n",
                        peer_file.display()
                    );
                }
                (format!("source = \"{}\"\ndigest = \"{}\"\n", m.origin, m.digest), cache)
            }
            None => (format!("model = \"{}\"\n", model.display()), String::new()),
        };
        let config = format!(
            "# written by fleetd for a local node\nfleet = \"{}\"\nnode = {node}\ngateway = \"{}\"\ntoken_file = \"{}\"\n\
             lease_ttl = \"4s\"\npoll = \"100ms\"\n[apps.{}]\n{model_lines}max_concurrency = {}\n{cache_table}\
             [burn_in]\ncpu_size = 256\niterations = 2\n{}",
            self.fleet,
            self.gateway,
            token_file.display(),
            req.app,
            app_spec.map(|a| a.scaling.max_multiplexing).unwrap_or(2),
            self.extra_agent_config
        );
        let push = match &self.push_key {
            Some(key) => {
                let push_file = dir.join("push.token");
                let _ = std::fs::remove_file(&push_file);
                crate::auth::write_private(&push_file, crate::push::credential(key, node).expose())
                    .map_err(|e| format!("{}: {e}", push_file.display()))?;
                format!(
                    "[push]\nlisten = \"127.0.0.1:0\"\ntls = {}\ntoken_file = \"{}\"\n",
                    self.push_tls,
                    push_file.display()
                )
            }
            None => String::new(),
        };
        let config = format!("{config}{push}");
        let config_file = dir.join("agent.toml");
        std::fs::write(&config_file, config).map_err(|e| format!("{}: {e}", config_file.display()))?;
        let mut cmd = Command::new(&self.agent_binary);
        cmd.arg("run").arg("--config").arg(&config_file);
        Ok(cmd)
    }
}
