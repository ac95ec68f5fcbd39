//! The agent at work on its node: registers under `agents/{node}` on a lease it keeps alive,
//! loads the runners the orchestrator assigns to this node, claims requests for them (each claim
//! bound to the lease, so a dead agent's requests go back to the queue), runs them with candle,
//! writes the results, and reports interruption notices at once.
//!
//! It learns its runners and its apps' queued requests by watching the store
//! ([`fleet_state::work::NodeWork`]), never by reading whole prefixes on a timer: what it reads
//! follows what changes for this node, not the size of the fleet.
//!
//! Losing the store is survivable: every loop logs and retries; when the lease expired meanwhile
//! the agent takes a new one and registers again. Its claims, results and runner transitions are
//! the store operations the simulated agents of `fleetd --fake-clouds`
//! (`fleet_orchestrator::sim_agents`) use too.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::keys::Keys;
use fleet_core::{RequestId, RunnerId, Time};
use fleet_state::lifecycle::runner::{RunnerEvent, RunnerPhase, transition};
use fleet_state::model::{AgentHealth, AgentRecord, RunnerRecord, update};
use fleet_state::queue;
use fleet_state::store::{LeaseId, Store, StoreError, StoreResult, to_json};
use fleet_state::work::NodeWork;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::AgentConfig;
use crate::llm::worker::LlmRunner;
use crate::metadata::Poller;
use crate::model::Mlp;

/// A loaded runner: the tensor-in/tensor-out MLP (a `.safetensors` file), or a language model
/// (a model directory: `config.json`, `tokenizer.json`, weights) decoding in a batch.
#[derive(Clone)]
enum Loaded {
    Mlp(Arc<Mlp>),
    Llm(Arc<LlmRunner>),
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn now() -> Time {
    chrono::Utc::now()
}

/// What the agent publishes; `lease` and `since` are filled in when written.
#[derive(Clone)]
struct Published {
    gpus: u32,
    health: AgentHealth,
}

/// Keeps the agent's lease alive and its record written; takes a new lease when the old one is
/// gone (the store was away longer than the TTL). The current lease goes out on `lease_tx`.
async fn keep_lease(
    store: Arc<dyn Store>,
    keys: Keys,
    node: u64,
    ttl: Duration,
    published: Arc<Mutex<Published>>,
    lease_tx: watch::Sender<Option<LeaseId>>,
    mut republish: mpsc::Receiver<()>,
) {
    let mut lease: Option<LeaseId> = None;
    let mut since = now();
    let every = ttl / 3;
    let mut log_seen = 0;
    loop {
        let result: StoreResult<()> = async {
            match lease {
                Some(l) => store.keep_alive(l).await?,
                None => {
                    let l = store.grant_lease(ttl).await?;
                    since = now();
                    write_record(&*store, &keys, node, l, since, &published).await?;
                    tracing::info!(node, lease = l, "registered");
                    lease = Some(l);
                    let _ = lease_tx.send(Some(l));
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                // The log tail goes with the lease, when it moved.
                if let (Some(l), Some((seq, lines))) = (lease, crate::logtail::since(log_seen)) {
                    let v = serde_json::json!({ "lines": lines, "updated_at": now() });
                    match store.put(&keys.agent_log(node), to_json(&v), Some(l)).await {
                        Ok(_) => log_seen = seq,
                        Err(e) => tracing::debug!(node, error = %e, "log tail not written; the next tick retries"),
                    }
                }
            }
            Err(StoreError::LeaseNotFound(_)) => {
                tracing::warn!(node, "lease expired (the store was out of reach too long); registering again");
                lease = None;
                let _ = lease_tx.send(None);
                continue;
            }
            Err(e) => tracing::warn!(node, error = %e, "store unreachable; keeping on trying"),
        }
        // Wait for the next keep-alive, writing the record whenever the agent asks.
        let deadline = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                msg = republish.recv() => {
                    if msg.is_none() {
                        return;
                    }
                    if let Some(l) = lease
                        && let Err(e) = write_record(&*store, &keys, node, l, since, &published).await
                    {
                        tracing::warn!(node, error = %e, "cannot write the agent record; the next change retries");
                    }
                }
            }
        }
    }
}

async fn write_record(
    store: &dyn Store,
    keys: &Keys,
    node: u64,
    lease: LeaseId,
    since: Time,
    published: &Mutex<Published>,
) -> StoreResult<()> {
    let p = published.lock().expect("published lock").clone();
    let rec = AgentRecord { node, lease, version: VERSION.into(), gpus: p.gpus, since, health: p.health };
    store.put(&keys.agent(node), to_json(&rec), Some(lease)).await?;
    Ok(())
}

struct Job {
    app: String,
    runner: RunnerId,
    request: RequestId,
}

pub struct Agent {
    cfg: AgentConfig,
    keys: Keys,
    store: Arc<dyn Store>,
    published: Arc<Mutex<Published>>,
    republish: mpsc::Sender<()>,
    lease: watch::Receiver<Option<LeaseId>>,
    /// Loaded runners: model per runner id.
    loaded: HashMap<RunnerId, (String, Loaded)>,
    jobs: JoinSet<(Job, Result<serde_json::Value, String>)>,
    /// Requests being served (or with a result not yet written), per runner.
    serving: HashMap<RunnerId, u32>,
    /// Results computed while the store was away.
    unwritten: Vec<(Job, Result<serde_json::Value, String>)>,
    device: candle_core::Device,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Language-model runners, as the push endpoint sees them.
    push_runners: crate::push::Runners,
    /// This node's runners and its apps' queued requests, followed by watching the store.
    work: NodeWork,
    /// The node's model cache (`[cache]`), or why it could not be opened.
    cache: Option<Result<crate::cache::Cache, String>>,
    /// The cached models loaded runners use (kept from eviction while the runner lives).
    held: HashMap<RunnerId, crate::cache::Held>,
    /// Where this node's peer endpoint is reached (None: no peers; the origin only).
    peer_addr: Option<String>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Agent {
    /// `health`: discovery and burn-in as measured at start (`ok` false keeps the node from serving).
    /// `backend`: where GPU figures come from, for holding the machine to what was rented
    /// (`cfg.rented`), at once and every `check_every` after.
    pub fn start(
        cfg: AgentConfig,
        store: Arc<dyn Store>,
        gpus: u32,
        health: AgentHealth,
        backend: Arc<dyn crate::gpu::fit::GpuBackend>,
    ) -> Agent {
        let keys = Keys::new(&cfg.fleet);
        let mut health = health;
        let push_runners: crate::push::Runners = Default::default();
        let mut push_task = None;
        if let Some(p) = &cfg.push {
            // Bound before registering, so the record names an endpoint that answers.
            let identity = if p.tls { crate::push::Identity::new().map(Some) } else { Ok(None) };
            match identity.and_then(|id| {
                std::net::TcpListener::bind(p.listen)
                    .and_then(|l| l.set_nonblocking(true).map(|_| l))
                    .and_then(|l| Ok((l.local_addr()?, tokio::net::TcpListener::from_std(l)?)))
                    .map(|(addr, l)| (addr, l, id))
                    .map_err(|e| e.to_string())
            }) {
                Ok((addr, listener, identity)) => {
                    // Published: where fleetd reaches it (the bootstrap's `advertise` where the
                    // socket listens on every address), and the certificate to pin.
                    let published = p
                        .advertise
                        .map(|a| if a.port() == 0 { std::net::SocketAddr::new(a.ip(), addr.port()) } else { a });
                    let published = published.unwrap_or(addr);
                    tracing::info!(%addr, %published, tls = identity.is_some(), "push endpoint listening");
                    health.push_addr = Some(published.to_string());
                    health.push_cert_sha256 = identity.as_ref().map(|i| i.sha256.clone());
                    let acceptor = identity.map(|i| i.acceptor);
                    push_task = Some(tokio::spawn(crate::push::serve(
                        listener,
                        p.token.clone(),
                        push_runners.clone(),
                        acceptor,
                    )));
                }
                Err(e) => {
                    tracing::error!(listen = %p.listen, error = %e, "push endpoint cannot listen; runners take work from the queue only");
                }
            }
        }
        let published = Arc::new(Mutex::new(Published { gpus, health }));
        let (lease_tx, lease) = watch::channel(None);
        let (republish, rx) = mpsc::channel(16);
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = push_task.into_iter().collect();
        tasks.push(tokio::spawn(keep_lease(
            store.clone(),
            keys.clone(),
            cfg.node,
            cfg.lease_ttl,
            published.clone(),
            lease_tx,
            rx,
        )));
        if let Some(n) = cfg.interruption.clone() {
            let (published, republish) = (published.clone(), republish.clone());
            tasks.push(tokio::spawn(async move {
                let mut poller = Poller::new(n);
                // A tick per interval whatever a check takes, so a notice waits at most one poll.
                let mut tick = tokio::time::interval(poller.config().poll);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    match poller.check(now()).await {
                        Ok(Some(notice)) => {
                            let mut p = published.lock().expect("published lock");
                            if p.health.interruption.as_ref().map(|x| (&x.kind, &x.not_before))
                                != Some((&notice.kind, &notice.not_before))
                            {
                                tracing::warn!(kind = %notice.kind, not_before = ?notice.not_before, "interruption notice");
                                p.health.interruption = Some(notice);
                                p.health.updated_at = Some(now());
                                drop(p);
                                let _ = republish.try_send(());
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::debug!(error = %e, "metadata endpoint"),
                    }
                }
            }));
        }
        if let Some(rc) = cfg.rented {
            let (published, republish) = (published.clone(), republish.clone());
            tasks.push(tokio::spawn(async move {
                let mut check = crate::gpu::fit::FitCheck::new(rc.rented, rc.throttle_for);
                let mut tick = tokio::time::interval(rc.check_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    let b = backend.clone();
                    let Ok(d) = tokio::task::spawn_blocking(move || b.discover()).await else { continue };
                    let verdict = check.judge(&d, now());
                    let mut p = published.lock().expect("published lock");
                    p.health.devices = d.gpus;
                    // A machine found unfit stays so: fleetd replaces it.
                    if let Some(why) = verdict
                        && p.health.hardware.is_none()
                    {
                        tracing::error!(%why, "this machine is not what was rented: unhealthy, fleetd will replace it");
                        p.health.ok = false;
                        p.health.reason = Some(why.clone());
                        p.health.hardware = Some(why);
                        p.health.updated_at = Some(now());
                        drop(p);
                        let _ = republish.try_send(());
                    }
                }
            }));
        }
        let work = NodeWork::start(store.clone(), keys.clone(), cfg.node, cfg.apps.keys().cloned().collect());
        let cache =
            cfg.cache.as_ref().map(|c| crate::cache::Cache::open(&c.dir, c.max_bytes).map_err(|e| e.to_string()));
        // This node's chunks, served to its region's peers.
        let mut peer_addr = None;
        if let (Some(Ok(c)), Some(p)) = (&cache, cfg.cache.as_ref().and_then(|c| c.peers.as_ref())) {
            let bound = std::net::TcpListener::bind(p.listen).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            });
            match bound.and_then(|l| Ok((l.local_addr()?, tokio::net::TcpListener::from_std(l)?))) {
                Ok((at, listener)) => {
                    let limit = p.serve_bytes_per_s.map(|r| Arc::new(crate::cache::peers::RateLimit::new(r)));
                    let served = Arc::new(crate::cache::peers::Served::default());
                    tasks.push(tokio::spawn(crate::cache::peers::serve(
                        listener,
                        c.clone(),
                        p.token.clone(),
                        limit,
                        served,
                    )));
                    let addr = p.advertise.unwrap_or(at);
                    tracing::info!(%addr, region = %p.region, "serving cached chunks to the region's peers");
                    peer_addr = Some(addr.to_string());
                }
                Err(e) => {
                    tracing::error!(listen = %p.listen, error = %e, "cannot serve peers: fetching from the origin only")
                }
            }
        }
        Agent {
            peer_addr,
            cache,
            held: HashMap::new(),
            cfg,
            keys,
            work,
            store,
            published,
            republish,
            lease,
            loaded: HashMap::new(),
            jobs: JoinSet::new(),
            serving: HashMap::new(),
            unwritten: Vec::new(),
            device: crate::model::device(),
            tasks,
            push_runners,
        }
    }

    pub fn healthy(&self) -> bool {
        self.published.lock().expect("published lock").health.ok
    }

    /// Serves until `shutdown` resolves; then stops claiming, lets running requests finish (up to
    /// `grace`) and gives the lease up so the orchestrator knows at once.
    ///
    /// A step runs whenever the node's work changes (a runner placed, started or stopped, a
    /// request queued) and every `poll` besides; a step reads nothing from the store (the view
    /// is kept by watches), it only writes and claims.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>, grace: Duration) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.cfg.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.work.changed() => {
                    if let Err(e) = self.step().await {
                        tracing::warn!(error = %e, "agent step failed; retrying");
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.step().await {
                        tracing::warn!(error = %e, "agent step failed; retrying");
                    }
                }
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    if let Ok((job, out)) = done {
                        self.finish(job, out).await;
                    }
                }
            }
        }
        tracing::info!(in_flight = self.jobs.len(), "shutting down");
        let _ = tokio::time::timeout(grace, async {
            while let Some(done) = self.jobs.join_next().await {
                if let Ok((job, out)) = done {
                    self.finish(job, out).await;
                }
            }
        })
        .await;
        let lease = *self.lease.borrow();
        if let Some(l) = lease {
            let _ = self.store.revoke(l).await;
        }
    }

    async fn finish(&mut self, job: Job, out: Result<serde_json::Value, String>) {
        use fleet_state::queue::QueueError;
        let t = now();
        let mut outcome =
            match queue::complete(&*self.store, &self.keys, &job.app, job.request, job.runner, out.clone(), t).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
        if let Err(QueueError::Store(StoreError::Invalid(why))) = &outcome {
            // The store refused the result (too large, most likely): the request fails with the
            // reason instead of staying claimed for ever.
            let msg = format!("the result could not be stored: {why}");
            tracing::warn!(request = job.request, %msg, "request failed");
            outcome = queue::complete(&*self.store, &self.keys, &job.app, job.request, job.runner, Err(msg), t)
                .await
                .map(|_| ());
        }
        match outcome {
            Ok(()) => tracing::debug!(request = job.request, runner = job.runner, "served"),
            Err(QueueError::Store(StoreError::Unavailable(why))) => {
                // The store is away: keep the result and try again on the next steps (the claim
                // holds while the lease does).
                tracing::warn!(request = job.request, %why, "result kept until the store is back");
                self.unwritten.push((job, out));
                return;
            }
            // The claim expired (the lease was lost): the request went back to the queue and
            // someone else serves it; this result is dropped.
            Err(e) => tracing::warn!(request = job.request, error = %e, "result not written"),
        }
        if let Some(n) = self.serving.get_mut(&job.runner) {
            *n = n.saturating_sub(1);
        }
        if let Err(e) = self.runner_event(job.runner, RunnerEvent::Complete).await {
            tracing::warn!(runner = job.runner, error = %e, "runner record not updated");
        }
    }

    async fn runner_event(&self, runner: RunnerId, ev: RunnerEvent) -> StoreResult<Option<RunnerRecord>> {
        let t = now();
        update(&*self.store, &self.keys.runner(runner), |cur: &RunnerRecord| {
            let state = transition(&cur.state, ev.clone(), t).ok()?;
            Some(RunnerRecord { state, ..cur.clone() })
        })
        .await
    }

    async fn load(&mut self, runner: RunnerId, app: &str) -> Result<Loaded, String> {
        if let Some((_, m)) = self.loaded.get(&runner) {
            return Ok(m.clone());
        }
        let Some(a) = self.cfg.apps.get(app) else {
            return Err(format!("this agent has no model configured for app '{app}'"));
        };
        let (model, device, batch) = (a.model.clone(), self.device.clone(), a.max_concurrency as usize);
        let mut cold = fleet_state::model::ColdStart { runner, app: app.to_string(), ..Default::default() };
        let fetching = std::time::Instant::now();
        let path = match model {
            crate::config::ModelConfig::Path(p) => p,
            crate::config::ModelConfig::Artifact { origin, digest } => {
                let (held, report) = self.fetch_model(app, &origin, &digest).await?;
                cold.model = Some(digest.to_string());
                cold.bytes_origin = report.fetched - report.from_peers;
                cold.bytes_peers = report.from_peers;
                cold.bytes_cached = report.reused;
                let dir = held.dir.clone();
                self.held.insert(runner, held);
                model_in(&dir)?
            }
        };
        cold.fetch_s = fetching.elapsed().as_secs_f64();
        let loading = std::time::Instant::now();
        let m = if path.is_dir() {
            // The files read ahead at the disk's sequential speed while candle maps them.
            let _warming = crate::cache::warm(&path);
            let (llm, first_token) = tokio::task::spawn_blocking(move || {
                let llm = crate::llm::Llm::load(&path, &device)?;
                let loaded = std::time::Instant::now();
                let first = crate::llm::first_token(&llm)?;
                Ok::<_, crate::llm::LlmError>((llm, first.then(|| loaded.elapsed().as_secs_f64())))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            cold.first_token_s = first_token;
            tracing::info!(runner, app, family = ?llm.family(), batch, first_token_s = ?first_token, "LLM runner loaded");
            let r = Arc::new(LlmRunner::start(Arc::new(llm), batch));
            self.push_runners.lock().expect("runners lock").insert(runner, r.clone());
            Loaded::Llm(r)
        } else {
            let m = tokio::task::spawn_blocking(move || Mlp::load(&path, &device))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            tracing::info!(runner, app, dims = ?m.dims(), "runner loaded");
            Loaded::Mlp(Arc::new(m))
        };
        self.loaded.insert(runner, (app.to_string(), m.clone()));
        cold.load_s = (loading.elapsed().as_secs_f64() - cold.first_token_s.unwrap_or(0.0)).max(0.0);
        cold.at = now();
        {
            let mut p = self.published.lock().expect("published lock");
            let kept = &mut p.health.cold_starts;
            kept.push(cold);
            let extra = kept.len().saturating_sub(AgentHealth::COLD_STARTS_KEPT);
            kept.drain(..extra);
        }
        let _ = self.republish.try_send(());
        Ok(m)
    }

    /// One look at this node's runners: load, stop, claim.
    async fn step(&mut self) -> StoreResult<()> {
        for (job, out) in std::mem::take(&mut self.unwritten) {
            self.finish(job, out).await;
        }
        let lease = *self.lease.borrow();
        let Some(lease) = lease else { return Ok(()) };
        if !self.healthy() {
            return Ok(());
        }
        let node = self.cfg.node;
        let view = self.work.view();
        if !view.synced {
            // Not known right now (the watches are being set up again): keep what is loaded.
            return Ok(());
        }
        let mine: Vec<RunnerRecord> = view.runners.into_values().collect();
        let mut queued = view.queued;
        let live: std::collections::HashSet<RunnerId> = mine.iter().map(|r| r.id).collect();
        // Runners the orchestrator deleted or moved: unload.
        self.loaded.retain(|id, _| live.contains(id));
        self.held.retain(|id, _| live.contains(id));
        self.push_runners.lock().expect("runners lock").retain(|id, _| live.contains(id));
        for r in &mine {
            match &r.state {
                RunnerPhase::Starting { .. } => {
                    let ev = match self.load(r.id, &r.app).await {
                        Ok(_) => RunnerEvent::Started,
                        Err(why) => {
                            tracing::error!(runner = r.id, app = %r.app, %why, "runner cannot start");
                            RunnerEvent::StartFailed
                        }
                    };
                    self.runner_event(r.id, ev).await?;
                }
                RunnerPhase::Stopping { .. } => {
                    if self.serving.get(&r.id).copied().unwrap_or(0) == 0 {
                        self.loaded.remove(&r.id);
                        self.held.remove(&r.id);
                        self.push_runners.lock().expect("runners lock").remove(&r.id);
                        self.runner_event(r.id, RunnerEvent::Stopped).await?;
                    }
                }
                RunnerPhase::Idle { .. } | RunnerPhase::Busy { .. } => {
                    let mine_now = self.serving.get(&r.id).copied().unwrap_or(0);
                    // Requests the record counts but this agent is not serving (it restarted):
                    // their claims went with the old lease and they are queued again.
                    if r.state.in_flight() > mine_now {
                        self.runner_event(r.id, RunnerEvent::Complete).await?;
                        continue;
                    }
                    let model = match self.load(r.id, &r.app).await {
                        Ok(m) => m,
                        Err(why) => {
                            tracing::error!(runner = r.id, %why, "runner cannot be loaded again");
                            continue;
                        }
                    };
                    let max = self.cfg.apps.get(&r.app).map(|a| a.max_concurrency).unwrap_or(1);
                    let mut serving = mine_now;
                    let waiting = queued.entry(r.app.clone()).or_default();
                    while serving < max {
                        let Some(id) = waiting.pop_first() else { break };
                        // Whether it is won or was taken meanwhile, it leaves the view (the watch
                        // brings it back if it is queued again).
                        self.work.forget_queued(&r.app, id);
                        let Some(req) =
                            queue::claim_one(&*self.store, &self.keys, &r.app, id, r.id, node, lease, now()).await?
                        else {
                            continue;
                        };
                        self.runner_event(r.id, RunnerEvent::Claim { max }).await?;
                        serving += 1;
                        self.serving.insert(r.id, serving);
                        let job = Job { app: r.app.clone(), runner: r.id, request: req.id };
                        match &model {
                            Loaded::Mlp(m) => {
                                let (m, input) = (m.clone(), req.input);
                                self.jobs.spawn_blocking(move || {
                                    let out = m.infer(&input).map_err(|e| e.to_string());
                                    (job, out)
                                });
                            }
                            Loaded::Llm(l) => {
                                // Joins the runner's batch at its next step.
                                let answer = l.submit(&req.input);
                                self.jobs.spawn(async move {
                                    let out = answer.await.unwrap_or_else(|_| Err("the decode loop stopped".into()));
                                    (job, out)
                                });
                            }
                        }
                    }
                }
                RunnerPhase::Pending { .. } | RunnerPhase::Stopped { .. } => {}
            }
        }
        // Publish what changed (runners, load).
        let mut runners: Vec<RunnerId> = self.loaded.keys().copied().collect();
        runners.sort_unstable();
        let in_flight = self.jobs.len() as u32;
        let changed = {
            let mut p = self.published.lock().expect("published lock");
            if p.health.runners != runners || p.health.in_flight != in_flight {
                p.health.runners = runners;
                p.health.in_flight = in_flight;
                p.health.updated_at = Some(now());
                true
            } else {
                false
            }
        };
        if changed {
            let _ = self.republish.try_send(());
        }
        Ok(())
    }
}

impl Agent {
    /// Brings the model pinned by `digest` into the node's cache (what is there already is not
    /// fetched again) and holds it there for a runner.
    async fn fetch_model(
        &self,
        app: &str,
        origin: &fleet_core::artifact::Origin,
        digest: &fleet_core::artifact::Digest,
    ) -> Result<(crate::cache::Held, crate::cache::FetchReport), String> {
        let cache = match &self.cache {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(format!("app '{app}' names a model artefact, and this agent has no [cache]")),
        };
        // S3 is read through URLs fleetd signs for this agent (its gateway token names the app).
        let signer = self.cfg.gateway.clone().map(|(base, token)| {
            let app = app.to_string();
            let sign: crate::cache::source::Signer = Arc::new(move |key: &str| sign_read(&base, &token, &app, key));
            sign
        });
        let source = crate::cache::source::origin_source(origin, signer)?;
        let started = std::time::Instant::now();
        let manifest = crate::cache::source::fetch_manifest(std::slice::from_ref(&source), digest).await?;
        let peers = self.cfg.cache.as_ref().and_then(|c| c.peers.as_ref());
        let lease = *self.lease.borrow();
        let fetch_limit = self
            .cfg
            .cache
            .as_ref()
            .and_then(|c| c.fetch_bytes_per_s)
            .map(|r| Arc::new(crate::cache::peers::RateLimit::new(r)));
        let exchange: Box<dyn crate::cache::Exchange> = match (peers, &self.peer_addr, lease) {
            (Some(p), Some(addr), Some(lease)) => Box::new(crate::cache::peers::Swarm::new(
                self.store.clone(),
                self.keys.clone(),
                app,
                &p.region,
                self.cfg.node,
                lease,
                addr.clone(),
                p.token.clone(),
                source,
                fetch_limit,
            )),
            _ => Box::new(crate::cache::Direct(vec![source])),
        };
        let (held, report) = cache.ensure(digest, &manifest, &*exchange).await.map_err(|e| e.to_string())?;
        tracing::info!(
            app,
            model = %digest,
            fetched = report.fetched,
            from_peers = report.from_peers,
            reused = report.reused,
            evicted = report.evicted.len(),
            seconds = started.elapsed().as_secs_f64(),
            "model in the node cache"
        );
        Ok((held, report))
    }
}

/// Asks fleetd for a signed URL reading `key` of `app`'s model origin (blocking).
fn sign_read(base: &str, token: &fleet_core::Secret, app: &str, key: &str) -> Result<String, String> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .new_agent();
    let body = serde_json::json!({ "app": app, "key": key }).to_string();
    let mut res = agent
        .post(&format!("{}/v1/store/sign", base.trim_end_matches('/')))
        .header("authorization", format!("Bearer {}", token.expose()))
        .header("content-type", "application/json")
        .send(body)
        .map_err(|e| format!("asking fleetd to sign a read of {key}: {e}"))?;
    let status = res.status().as_u16();
    let text = res.body_mut().with_config().limit(64 << 10).read_to_string().map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    match (status, v["url"].as_str()) {
        (200, Some(url)) => Ok(url.to_string()),
        _ => Err(format!("fleetd would not sign a read of {key} ({status}): {}", v["error"].as_str().unwrap_or(&text))),
    }
}

/// What to load from a cached model's directory: the directory itself when it is a language
/// model (it has `config.json`), else its one `.safetensors` file (an MLP).
fn model_in(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    if dir.join("config.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    let tensors: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    match tensors.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "the model at {} has no config.json and not exactly one .safetensors file: neither a language model nor an MLP",
            dir.display()
        )),
    }
}

/// Apps with a model, for logs: name → model path.
pub fn describe_apps(cfg: &AgentConfig) -> BTreeMap<String, String> {
    cfg.apps.iter().map(|(k, v)| (k.clone(), v.model.to_string())).collect()
}
