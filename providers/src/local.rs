//! `local`: "rents" nodes on this machine. Each node is a real process — fleet's `fleet-agent`,
//! serving with candle on the CPU — started in its own directory; prices and capacity come from
//! the local section of the catalog ([`local_offerings`]), so placement → launch → bootstrap →
//! health → runners → requests → scale-down runs for real without a cloud.
//!
//! What a node runs is the caller's ([`NodeStarter`]: fleetd writes the agent's config and
//! token). Instances are kept in `DIR/instances.json`, so a restarted fleetd finds its nodes
//! again (their processes outlive it, as a cloud's machines do); a launch with a token seen
//! before returns that instance. An instance is live while its process is (checked in `/proc`:
//! the pid's working directory must be the node's, so a reused pid never passes for it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fleet_core::{
    Availability, CapacityType, Cloud, GpuModel, InstanceType, Interconnect, Money, Offering, Price, Source,
};
use serde::{Deserialize, Serialize};

use crate::{Instance, InstanceState, LaunchRequest, Provider, ProviderError, ProviderResult, TAG_FLEET};

/// What runs on a local node: the command to start, prepared in `dir` (the node's own directory).
#[async_trait]
pub trait NodeStarter: Send + Sync + std::fmt::Debug {
    async fn prepare(&self, req: &LaunchRequest, dir: &Path) -> Result<Command, String>;
}

/// The local section of the catalog: simulated GPU machines at neocloud-like prices (a node is
/// one agent process whatever its size).
pub fn local_offerings() -> Vec<Offering> {
    let shape = |name: &str, gpus: u32| InstanceType {
        name: name.into(),
        gpu: GpuModel::H100Sxm,
        gpu_count: gpus,
        vcpus: 16 * gpus,
        memory_gib: 128 * gpus,
        interconnect: (gpus > 1).then_some(Interconnect::Nvswitch),
    };
    let price = |s: &str| Price::per_hour(s.parse::<Money>().expect("a price"));
    let mk = |name: &str, gpus: u32, cap: CapacityType, p: &str| Offering {
        cloud: Cloud::Local,
        region: "local".into(),
        zone: None,
        instance: shape(name, gpus),
        capacity: cap,
        price: price(p),
        source: Source {
            name: "fleet local catalog".into(),
            as_of: chrono::NaiveDate::from_ymd_opt(2026, 11, 26).expect("a date"),
        },
        availability: Availability::Available,
    };
    vec![
        mk("local-1xh100", 1, CapacityType::OnDemand, "2.00"),
        mk("local-1xh100", 1, CapacityType::Spot, "1.20"),
        mk("local-8xh100", 8, CapacityType::OnDemand, "16.00"),
        mk("local-8xh100", 8, CapacityType::Spot, "9.60"),
    ]
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub fleet: String,
    /// Holds `instances.json` and one directory per node.
    pub dir: PathBuf,
    pub offerings: Vec<Offering>,
    /// Nodes at once, at most (more: `InsufficientCapacity`).
    pub capacity: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    pid: u32,
    token: String,
    offering: fleet_core::OfferingKey,
    tags: BTreeMap<String, String>,
    launched_at: DateTime<Utc>,
    dir: PathBuf,
    terminated: bool,
}

#[derive(Debug)]
pub struct LocalProvider {
    cfg: LocalConfig,
    starter: Arc<dyn NodeStarter>,
    // The processes this fleetd started (waited for, so they leave no zombies).
    state: Mutex<(Vec<Record>, BTreeMap<u32, std::process::Child>)>,
    launch_lock: tokio::sync::Mutex<()>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> ProviderError + '_ {
    move |e| ProviderError::Transient { detail: format!("{what}: {e}") }
}

impl LocalProvider {
    pub fn new(mut cfg: LocalConfig, starter: Arc<dyn NodeStarter>) -> Result<LocalProvider, String> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("{}: {e}", cfg.dir.display()))?;
        // Absolute: each node's process runs in its own directory.
        cfg.dir = cfg.dir.canonicalize().map_err(|e| format!("{}: {e}", cfg.dir.display()))?;
        let path = cfg.dir.join("instances.json");
        let records: Vec<Record> = match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(LocalProvider {
            cfg,
            starter,
            state: Mutex::new((records, BTreeMap::new())),
            launch_lock: Default::default(),
        })
    }

    fn save(&self, records: &[Record]) -> ProviderResult<()> {
        let path = self.cfg.dir.join("instances.json");
        let tmp = self.cfg.dir.join("instances.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(records).unwrap_or_default()).map_err(io("instances.json"))?;
        std::fs::rename(&tmp, &path).map_err(io("instances.json"))
    }

    /// Whether the node's process still runs (reaping it if it was ours and exited).
    fn alive(&self, r: &Record, children: &mut BTreeMap<u32, std::process::Child>) -> bool {
        if let Some(c) = children.get_mut(&r.pid)
            && let Ok(Some(_)) = c.try_wait()
        {
            children.remove(&r.pid);
            return false;
        }
        // Its working directory is the node's: a reused pid never passes for it.
        std::fs::read_link(format!("/proc/{}/cwd", r.pid)).is_ok_and(|cwd| cwd == r.dir)
    }

    fn instance(&self, r: &Record, live: bool) -> Instance {
        // A node told to terminate is Terminated at once, as EC2 reports shutting-down ones: its
        // process may take a moment to exit, but it is going and will not be used again.
        let state = match (live, r.terminated) {
            (true, false) => InstanceState::Running,
            (_, true) | (false, _) => InstanceState::Terminated,
        };
        Instance {
            id: r.id.clone(),
            offering: r.offering.clone(),
            state,
            public_ip: None,
            private_ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            // Local nodes are agents started by fleetd itself: nothing to SSH into.
            ssh: None,
            ssh_host_keys: Vec::new(),
            launched_at: Some(r.launched_at),
            tags: r.tags.clone(),
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn cloud(&self) -> Cloud {
        Cloud::Local
    }

    fn name(&self) -> String {
        format!("local ({})", self.cfg.dir.display())
    }

    async fn offerings(&self) -> ProviderResult<Vec<Offering>> {
        Ok(self.cfg.offerings.clone())
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<Instance> {
        // One launch at a time: the capacity check and the token lookup hold until it is recorded.
        let _one = self.launch_lock.lock().await;
        if req.tags.get(TAG_FLEET) != Some(&self.cfg.fleet) {
            return Err(ProviderError::InvalidRequest { detail: "launch request lacks the fleet's tags".into() });
        }
        if !self.cfg.offerings.iter().any(|o| o.key() == req.offering) {
            return Err(ProviderError::InvalidRequest { detail: format!("{} is not a local offering", req.offering) });
        }
        let live = {
            let mut st = self.state.lock().expect("local state");
            let (records, children) = &mut *st;
            if let Some(r) = records.iter().find(|r| r.token == req.idempotency_token) {
                let alive = self.alive(r, children);
                return Ok(self.instance(r, alive));
            }
            records.iter().filter(|r| !r.terminated && self.alive(r, children)).count()
        };
        if live >= self.cfg.capacity {
            return Err(ProviderError::InsufficientCapacity {
                offering: req.offering.clone(),
                detail: format!("this machine runs {live} local nodes, its --local-capacity"),
            });
        }
        let id = format!("local-{}", req.idempotency_token);
        let dir = self.cfg.dir.join(&id);
        std::fs::create_dir_all(&dir).map_err(io("node directory"))?;
        let mut cmd =
            self.starter.prepare(req, &dir).await.map_err(|detail| ProviderError::InvalidRequest { detail })?;
        let log = std::fs::File::create(dir.join("agent.log")).map_err(io("agent.log"))?;
        let child = cmd
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(io("agent.log"))?)
            .stderr(log)
            .spawn()
            .map_err(io("starting the node's agent"))?;
        let rec = Record {
            id,
            pid: child.id(),
            token: req.idempotency_token.clone(),
            offering: req.offering.clone(),
            tags: req.tags.clone(),
            launched_at: Utc::now(),
            dir,
            terminated: false,
        };
        let mut st = self.state.lock().expect("local state");
        st.0.push(rec.clone());
        st.1.insert(rec.pid, child);
        self.save(&st.0)?;
        Ok(self.instance(&rec, true))
    }

    async fn get(&self, id: &str) -> ProviderResult<Instance> {
        let mut st = self.state.lock().expect("local state");
        let (records, children) = &mut *st;
        let Some(r) = records.iter().find(|r| r.id == id) else {
            return Err(ProviderError::NotFound { what: format!("local instance {id}") });
        };
        let alive = self.alive(r, children);
        Ok(self.instance(r, alive))
    }

    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let mut st = self.state.lock().expect("local state");
        let (records, children) = &mut *st;
        Ok(records
            .iter()
            .filter(|r| !r.terminated && self.alive(r, children))
            .map(|r| self.instance(r, true))
            .collect())
    }

    async fn terminate(&self, id: &str) -> ProviderResult<()> {
        let (pid, live, child) = {
            let mut st = self.state.lock().expect("local state");
            let (records, children) = &mut *st;
            let Some(i) = records.iter().position(|r| r.id == id) else { return Ok(()) };
            let live = self.alive(&records[i], children);
            records[i].terminated = true;
            self.save(records)?;
            let pid = records[i].pid;
            (pid, live, children.remove(&pid))
        };
        if live {
            // SIGTERM: the agent stops serving and gives back its lease (a machine shutting down).
            let ok = Command::new("kill").args(["-TERM", &pid.to_string()]).status().map_err(io("kill"))?;
            if !ok.success() {
                tracing::debug!(pid, "kill -TERM found no process (it had exited)");
            }
        }
        // A process this fleetd started is waited for once it exits (SIGKILL after 30 s), so a
        // terminated node leaves no zombie behind: nothing else would reap it.
        if let Some(mut child) = child {
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => return,
                        Ok(None) if std::time::Instant::now() >= deadline => {
                            let _ = child.kill();
                            let _ = child.wait();
                            return;
                        }
                        Ok(None) => std::thread::sleep(std::time::Duration::from_millis(100)),
                    }
                }
            });
        }
        Ok(())
    }
}
