//! The records fleetd keeps in the store (JSON, under the keys of [`fleet_core::keys`]).

use fleet_core::{Money, NodeId, OfferingKey, Price, RequestId, RunnerId, Time};
use serde::{Deserialize, Serialize};

use fleet_core::keys::Keys;

use crate::lifecycle::node::NodePhase;
use crate::lifecycle::runner::RunnerPhase;
use crate::store::Op;

/// One rented (or to-be-rented) instance. Written *before* the launch call, so a crash between
/// the call and the answer leaves a record whose idempotency token finds the instance again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub app: String,
    pub state: NodePhase,
    /// Offerings to try, cheapest first (the plan's failover order).
    pub candidates: Vec<CandidateRecord>,
    /// The candidate being tried (or launched): index into `candidates`.
    pub attempt: usize,
    /// Runners of `app` this node hosts.
    pub slots: u32,
    /// Price of the offering it runs on, once launched.
    pub price: Option<Price>,
    /// When the cloud started billing (the launch answer), and when it stopped.
    pub billing_since: Option<Time>,
    pub billing_until: Option<Time>,
    /// No new runners go here (operator's `cordon`).
    #[serde(default)]
    pub cordoned: bool,
    /// Being consolidated away (`fleet_policies::consolidate`): takes no new runners; its
    /// runners are replaced elsewhere, then drained, then it is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaving: Option<Leaving>,
    pub created_at: Time,
}

/// A consolidation move under way on a node. Kept in the store, so a move survives a fleetd
/// restart and is neither lost nor done twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaving {
    pub since: Time,
    /// Why (the saving and what the move costs).
    pub why: String,
    /// Replacements of its runners started so far.
    pub replaced: u32,
}

impl NodeRecord {
    pub fn offering(&self) -> Option<&OfferingKey> {
        self.candidates.get(self.attempt).map(|c| &c.offering)
    }

    /// What this node cost from `billing_since` to `billing_until` (or `now`).
    pub fn cost_until(&self, now: Time) -> Money {
        match (self.price, self.billing_since) {
            (Some(p), Some(since)) => {
                let until = self.billing_until.unwrap_or(now);
                p.cost_for((until - since).to_std().unwrap_or_default())
            }
            _ => Money::ZERO,
        }
    }

    /// Still billing (or may be): counts towards burn rate and quotas.
    pub fn is_live(&self) -> bool {
        !matches!(self.state, NodePhase::Terminated { .. })
    }
}

/// One offering a node may launch on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub offering: OfferingKey,
    pub price: Price,
    /// Runners of the node's app one instance of it hosts.
    pub slots: u32,
}

/// The applied fleet spec, as the operator wrote it (re-checked when read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSpec {
    pub toml: String,
    pub applied_at: Time,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRecord {
    pub id: RunnerId,
    pub app: String,
    pub state: RunnerPhase,
    pub created_at: Time,
    /// The node it was placed on, kept after it stopped (its state forgets the node), so that
    /// its entry in the node's index ([`Keys::placement`]) is deleted with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_on: Option<NodeId>,
}

impl RunnerRecord {
    /// A new runner for `app`, placed on `node`, waiting for the node to be ready.
    pub fn placed(id: RunnerId, app: &str, node: NodeId, now: Time) -> RunnerRecord {
        RunnerRecord {
            id,
            app: app.to_string(),
            state: RunnerPhase::Pending { node },
            created_at: now,
            placed_on: Some(node),
        }
    }

    /// What writes it: the record and its node's index entry (one transaction, so that the
    /// node's agent, which watches only its index, never misses a runner).
    pub fn put_ops(&self, keys: &Keys) -> Vec<Op> {
        let mut ops = vec![Op::put_json(keys.runner(self.id), self)];
        ops.extend(self.placed_on.or(self.node()).map(|n| Op::put_json(keys.placement(n, self.id), &self.id)));
        ops
    }

    /// What deletes it: the record and its index entry.
    pub fn delete_ops(&self, keys: &Keys) -> Vec<Op> {
        let mut ops = vec![Op::delete(keys.runner(self.id))];
        ops.extend(self.placed_on.or(self.node()).map(|n| Op::delete(keys.placement(n, self.id))));
        ops
    }

    pub fn node(&self) -> Option<NodeId> {
        match &self.state {
            RunnerPhase::Pending { node }
            | RunnerPhase::Starting { node, .. }
            | RunnerPhase::Idle { node, .. }
            | RunnerPhase::Busy { node, .. }
            | RunnerPhase::Stopping { node, .. } => Some(*node),
            RunnerPhase::Stopped { .. } => None,
        }
    }
}

/// One request to an app, from submission to its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: RequestId,
    pub app: String,
    pub input: serde_json::Value,
    pub submitted_at: Time,
    /// Times it was claimed (more than one after a runner or node died while serving it).
    pub attempts: u32,
    pub state: RequestState,
    /// The name of the token that submitted it: a submit-scoped token reads only its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RequestState {
    Queued,
    /// A runner serves it; the claim key (on the runner's node lease) says it still does.
    Claimed {
        runner: RunnerId,
        node: NodeId,
        since: Time,
    },
    Done {
        output: serde_json::Value,
        runner: RunnerId,
        finished_at: Time,
        /// When the runner that finished it claimed it (the end of its queue wait).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<Time>,
    },
    Failed {
        error: String,
        finished_at: Time,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<Time>,
    },
}

impl RequestState {
    pub fn name(&self) -> &'static str {
        match self {
            RequestState::Queued => "queued",
            RequestState::Claimed { .. } => "running",
            RequestState::Done { .. } => "done",
            RequestState::Failed { .. } => "failed",
        }
    }
}

/// What the agent of a node publishes under `agents/{node}`, attached to its lease: while the key
/// exists, the agent is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub node: NodeId,
    pub lease: i64,
    pub version: String,
    pub gpus: u32,
    pub since: Time,
    /// What the agent found and measured (absent from agents that report nothing more).
    #[serde(default)]
    pub health: AgentHealth,
}

/// What one node holds of one cached model file, for its region's peers
/// (`Keys::holder`, on the agent's lease: a node that dies stops being asked).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    pub region: String,
    /// Where its peer endpoint listens (`host:port`).
    pub addr: String,
    /// The chunk indexes in place there, ascending.
    pub chunks: Vec<u32>,
    /// Those of them that landed last, still in the node's memory: served without a disk read
    /// or a second hash, so peers ask for them there first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<u32>,
}

/// An agent's report on its node: the node serves only while `ok` (burn-in passed, GPUs sane).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub ok: bool,
    /// Why not ok, in words an operator can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub devices: Vec<GpuReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_in: Option<BurnInReport>,
    /// Runners loaded on the node, and requests being served.
    #[serde(default)]
    pub runners: Vec<RunnerId>,
    #[serde(default)]
    pub in_flight: u32,
    /// A spot interruption or maintenance notice from the cloud's metadata endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption: Option<InterruptionNotice>,
    /// The machine is not what was rented (fewer GPUs, another model, uncorrected ECC errors,
    /// persistent hardware throttling): fleetd replaces it and avoids its offering for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,
    /// Where fleetd pushes requests to this node's runners (`host:port`; absent: the runners
    /// take work from the queue only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_addr: Option<String>,
    /// The push endpoint speaks TLS with this certificate (SHA-256 of its DER, hex), which
    /// fleetd pins: it connects to nothing else. Absent: plain HTTP, loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_cert_sha256: Option<String>,
    /// How the node's last runners came to serve: their cold starts' phases (the newest last,
    /// at most [`AgentHealth::COLD_STARTS_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cold_starts: Vec<ColdStart>,
}

impl AgentHealth {
    pub const COLD_STARTS_KEPT: usize = 8;
}

/// One runner's cold start on its node: fetching its model into the node's cache (from the
/// origin, from peers, or already there) and loading it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColdStart {
    pub runner: RunnerId,
    pub app: String,
    /// The pinned model's digest (absent: a model given as a path on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub fetch_s: f64,
    pub load_s: f64,
    pub bytes_origin: u64,
    pub bytes_peers: u64,
    /// Bytes found in the node's cache (nothing fetched for them).
    pub bytes_cached: u64,
    /// From the model loaded to its first token (a one-token generation right after the load:
    /// the device's first forward, kernels and caches warming); language models only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_s: Option<f64>,
    pub at: Time,
}

/// One GPU as discovery (CUDA driver) and NVML see it; NVML's fields are absent without NVML.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    pub index: u32,
    pub name: String,
    /// fleet's name for the model (`H100-SXM`…) when it is one fleet knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub memory_total_mib: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_pct: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<u32>,
    /// Uncorrected ECC errors since the driver loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_uncorrected: Option<u64>,
    /// Active clock throttle reasons (idle and application-clock settings left out).
    #[serde(default)]
    pub throttling: Vec<String>,
}

/// The matrix-multiply burn-in: what it ran on and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnInReport {
    /// `cpu` or `cuda:N`.
    pub device: String,
    pub dtype: String,
    /// Matrix side (n × n times n × n).
    pub size: usize,
    pub iterations: u32,
    pub tflops: f64,
    /// What this device should reach (the model's dense peak); absent for CPUs and unknown GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_tflops: Option<f64>,
    /// Passing bar in TFLOP/s.
    pub required_tflops: f64,
    pub passed: bool,
    pub at: Time,
}

/// A notice that the cloud will take the instance away (spot interruption, maintenance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptionNotice {
    /// `aws`, `gcp` or `azure`.
    pub source: String,
    /// What the cloud said: `terminate`, `stop`, `hibernate`, `preempted`, `Preempt`, `Reboot`…
    pub kind: String,
    /// When the cloud will act, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    pub noticed_at: Time,
}

/// Reads a JSON record, applies `f`, and writes it back only if nobody changed it meanwhile
/// (retrying on conflict). `f` returns `None` to leave the record as it is; the result is the
/// record as written (or as found, when `f` declined), or `None` when the key does not exist.
pub async fn update<T, F>(store: &dyn crate::store::Store, key: &str, f: F) -> crate::store::StoreResult<Option<T>>
where
    T: Serialize + serde::de::DeserializeOwned,
    F: FnMut(&T) -> Option<T>,
{
    Ok(update_at(store, key, f).await?.map(|(t, _)| t))
}

/// [`update`], with the revision the record has now (written or found).
pub async fn update_at<T, F>(
    store: &dyn crate::store::Store,
    key: &str,
    mut f: F,
) -> crate::store::StoreResult<Option<(T, crate::store::Revision)>>
where
    T: Serialize + serde::de::DeserializeOwned,
    F: FnMut(&T) -> Option<T>,
{
    use crate::store::{Compare, Op};
    loop {
        let Some(kv) = store.get(key).await? else { return Ok(None) };
        let cur: T = kv.json()?;
        let Some(next) = f(&cur) else { return Ok(Some((cur, kv.mod_revision))) };
        let res = store.txn(vec![Compare::unchanged(&kv)], vec![Op::put_json(key, &next)]).await?;
        if res.succeeded {
            return Ok(Some((next, res.revision)));
        }
    }
}

/// Why a spec was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(fleet_core::spec::SpecErrors),
    #[error(
        "this spec is for fleet `{spec}` but this fleetd runs fleet `{daemon}`: set [fleet] name = \"{daemon}\", or start fleetd with --fleet {spec}"
    )]
    WrongFleet { spec: String, daemon: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Checks a spec as a whole and stores it (the fleet actor picks it up on its next pass). Nothing
/// is written unless all of it is valid.
pub async fn apply_spec(
    store: &dyn crate::store::Store,
    keys: &fleet_core::keys::Keys,
    fleet: &str,
    toml: &str,
    now: Time,
) -> Result<fleet_core::spec::FleetSpec, ApplyError> {
    let spec = fleet_core::spec::FleetSpec::parse("spec", toml).map_err(ApplyError::Invalid)?;
    if spec.name != fleet {
        return Err(ApplyError::WrongFleet { spec: spec.name, daemon: fleet.to_string() });
    }
    // The same text again changes nothing: no new revision, no pass re-planning a spec it has.
    if let Some(kv) = store.get(&keys.spec()).await?
        && kv.json::<StoredSpec>().is_ok_and(|cur| cur.toml == toml)
    {
        return Ok(spec);
    }
    let rec = StoredSpec { toml: toml.to_string(), applied_at: now };
    store.put(&keys.spec(), crate::store::to_json(&rec), None).await?;
    Ok(spec)
}
