//! fleetd: the fleet daemon. With no flags it runs on the embedded store in `./fleetd-data`,
//! listening on 127.0.0.1:7070.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use fleet_core::keys::Keys;
use fleet_core::{Catalog, Cloud, Secret};
use fleet_orchestrator::access::AgentAccess;
#[cfg(feature = "etcd")]
use fleet_orchestrator::access::etcd::EtcdAgentAccess;
use fleet_orchestrator::actors::root::RootActor;
use fleet_orchestrator::actors::{Bootstrap, Config, Ctx, InstanceRunning};
use fleet_orchestrator::bootstrap::{SshBootstrap, SshBootstrapConfig};
use fleet_orchestrator::leader;
use fleet_orchestrator::sim_agents::{SimAgentConfig, SimAgents};
use fleet_providers::Provider;
use fleet_providers::fake::{FakeConfig, FakeProvider};
use fleet_state::clock::Clock;
use fleet_state::store::Store;
use fleet_state::store::embedded::EmbeddedStore;
#[cfg(feature = "etcd")]
use fleet_state::store::etcd::{EtcdAuth, EtcdStore};
use ractor::Actor;

// mimalloc: glibc's per-thread arenas left fleetd's RSS ~80 MB (35 %) above what it uses at
// 12,500 nodes / 100,000 runners (measured with MALLOC_ARENA_MAX=1); mimalloc returns freed
// memory to the system. Without transparent huge pages and with no purge delay:
// `fleet_orchestrator::allocator`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "fleetd",
    version,
    about = "The fleet daemon: rents GPUs across clouds for the applied spec and serves requests on them.",
    after_help = "Examples:\n  fleetd                                   embedded store in ./fleetd-data, 127.0.0.1:7070\n  fleetd --fake-clouds lambda,runpod,aws   try it without cloud accounts (simulated clouds and agents)\n  fleetd --etcd http://10.0.0.5:2379 --spec fleet.toml   etcd store; cloud accounts from the spec's [clouds.*]"
)]
struct Args {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Where the embedded store keeps its file, and where fleetd writes its admin API token
    /// (`admin.token`, mode 0600) at its first start.
    #[arg(long, default_value = "fleetd-data")]
    data_dir: PathBuf,
    /// The API's TLS certificate chain (PEM); with --tls-key, the API is served over HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the API in clear on a non-loopback address (tokens then cross the network unprotected).
    #[arg(long)]
    insecure_no_tls: bool,
    /// etcd endpoints, comma-separated (http://host:2379,...): use etcd instead of the embedded store.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// etcd user, when etcd has authentication on (password from FLEET_ETCD_PASSWORD).
    #[arg(long)]
    etcd_user: Option<String>,
    /// The fleet this daemon runs: its store keys and the tag on every instance.
    #[arg(long, default_value = "default")]
    fleet: String,
    /// Clouds whose nodes' records fleetd may close at start, the operator having terminated
    /// their instances by hand (fleetd refuses to start while nodes may bill on a cloud it has
    /// no account for). Comma-separated cloud names.
    #[arg(long, value_delimiter = ',')]
    forget_cloud: Vec<String>,
    /// Simulated clouds (prices from the built-in catalog, instances and agents simulated): for
    /// trying fleetd without cloud accounts. Comma-separated cloud names.
    #[arg(long, value_delimiter = ',')]
    fake_clouds: Vec<String>,
    /// The `local` provider: nodes on this machine, each a real fleet-agent (candle on CPU) that
    /// reaches this fleetd's store through its API. Needs fleet-agent (beside fleetd, or
    /// --agent-binary).
    #[arg(long)]
    local: bool,
    /// Local nodes at once, at most.
    #[arg(long, default_value_t = 4)]
    local_capacity: usize,
    /// Local nodes' push endpoints speak TLS, their certificate pinned by fleetd, as nodes off
    /// this machine always do (by default local nodes are pushed to in plain HTTP/2 on loopback).
    #[arg(long)]
    local_push_tls: bool,
    /// SSH-bootstrapped nodes take pushed requests on this port (TLS, the certificate each agent
    /// makes pinned by fleetd; the clouds' firewalls must let fleetd reach it). Without it their
    /// runners take work from the queue only.
    #[arg(long)]
    agent_push_port: Option<u16>,
    /// A fleet spec to apply at start; its [clouds.*] sections are the cloud accounts fleetd
    /// uses (without it, those of the spec last applied). API keys come from the environment.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Seconds between reconcile passes.
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    reconcile_every: f64,
    /// For apps with `keep_alive = "auto"`: what re-creating a runner costs, in seconds billed
    /// (provision + boot + model load, plus a new node's minimum billing).
    #[arg(long, default_value_t = 240.0, value_parser = seconds)]
    recreate_seconds: f64,
    /// For apps with `predict = true`: how long a runner started now takes to serve, in seconds
    /// (provision + boot + model load); scale-up sizes for the arrival rate this far ahead.
    #[arg(long, default_value_t = 180.0, value_parser = seconds)]
    cold_start_seconds: f64,
    /// Where a cloud reports instances' SSH host keys (AWS console output, GCP guest attributes)
    /// but has none yet for a booting one: seconds to wait for them before pinning the key seen
    /// at first contact (said in the node's events). 0: do not wait.
    #[arg(long, default_value_t = 300.0, value_parser = seconds)]
    host_key_wait_seconds: f64,
    /// Consolidation (moving runners to fewer or cheaper nodes) makes a move only when its
    /// saving over this many seconds (at most the node's age) exceeds what the move costs; 0
    /// turns consolidation off for every app.
    #[arg(long, default_value_t = 3600.0, value_parser = seconds)]
    consolidation_horizon_seconds: f64,
    /// Seconds between a node's instance checks.
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    node_poll: f64,
    /// Runs the simulated clouds and agents this many times faster than real ones (boot, launch,
    /// model load, service time).
    #[arg(long, default_value_t = 1.0, hide = true, value_parser = speed)]
    fake_speed: f64,
    /// Simulated clouds' capacity: `OFFERING=N` lets offering OFFERING (as `fleetctl catalog`
    /// names it, e.g. lambda/us-east-1/gpu_1x_h100_pcie/on-demand) have at most N instances at
    /// once; launches beyond it fail with the cloud's insufficient-capacity error. Comma-separated.
    #[arg(long, value_delimiter = ',')]
    fake_capacity: Vec<String>,
    /// Simulated spot interruptions: the first N spot nodes of the simulated clouds get the
    /// two-minute interruption notice once they have served for --fake-spot-notice-after seconds.
    #[arg(long, default_value_t = 0)]
    fake_spot_notices: u32,
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    fake_spot_notice_after: f64,
    /// Simulates the agents of every cloud's nodes, not only the simulated clouds': for tests
    /// against an emulated cloud (moto) whose machines run no agent.
    #[cfg(feature = "testing")]
    #[arg(long, hide = true)]
    simulate_agents: bool,
    /// How nodes get fleet's agent: `instance` (the machine image runs it; ready when the instance
    /// runs) or `ssh` (fleetd installs fleet-agent over SSH and waits for it to report healthy;
    /// needs --etcd, which the agents report to).
    #[arg(long, default_value = "instance", value_parser = ["instance", "ssh"])]
    bootstrap: String,
    /// SSH user on the nodes (with --bootstrap ssh).
    #[arg(long, default_value = "ubuntu")]
    ssh_user: String,
    /// The fleet's SSH private key (OpenSSH format), whose public half the nodes accept.
    #[arg(long)]
    ssh_key: Option<PathBuf>,
    /// The fleet-agent binary to install (default: fleet-agent beside this fleetd).
    #[arg(long)]
    agent_binary: Option<PathBuf>,
    /// Where the agent goes on each node (`{node}` is replaced by the node's id).
    #[arg(long, default_value = "/opt/fleet")]
    agent_dir: String,
    /// Connect to this address for every node's SSH instead of the instance's (tests that map
    /// emulated instances to one sshd on loopback).
    #[cfg(feature = "testing")]
    #[arg(long, hide = true)]
    ssh_connect_override: Option<std::net::SocketAddr>,
    /// etcd endpoints as the nodes reach them (default: --etcd).
    #[arg(long, value_delimiter = ',')]
    agent_endpoints: Vec<String>,
    /// A model for an app's runners, APP=FILE (safetensors), uploaded to every node; repeatable.
    #[arg(long = "model", value_name = "APP=FILE")]
    models: Vec<String>,
    /// More agent configuration (TOML: the burn_in and interruption tables) appended to each node's config
    /// (`{node}` is replaced by the node's id).
    #[arg(long)]
    agent_config: Option<PathBuf>,
    /// With --etcd: seconds the leader's lease lasts without renewal; a follower takes over within
    /// this long after the leader dies.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    leader_ttl: f64,
    /// Nodes bootstrapped at once.
    #[arg(long, default_value_t = 16)]
    bootstrap_concurrency: usize,
    /// Do not hold bootstrapped machines to the GPUs they were rented with (for machines whose
    /// agent cannot see them, e.g. a test on a CPU machine). By default an agent that finds
    /// fewer GPUs, another model, ECC errors or persistent throttling has its node replaced.
    #[arg(long)]
    skip_hardware_check: bool,
    /// API connections open at once; more are closed at once (agents hold one each).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a client has to send a whole request head (also how long an idle kept-alive
    /// connection stays open).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    header_read_timeout_seconds: f64,
}

/// The most seconds a duration flag takes: a year. Larger ones (or `inf`) cannot be a
/// `Duration` to sleep or add to a clock, and until 2026-12-03 fleetd panicked on them after
/// opening its store.
const MAX_FLAG_SECONDS: f64 = 365.0 * 86_400.0;

/// A duration flag in seconds: a finite number from 0 to a year.
fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=MAX_FLAG_SECONDS).contains(&v) {
        return Err(format!("{s} seconds: give a number from 0 to {MAX_FLAG_SECONDS} (a year)"));
    }
    Ok(v)
}

/// `--fake-speed`: a finite factor above zero.
fn speed(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a speed-up factor: give a number above 0")),
    }
}

/// The etcd client itself, when fleetd runs on etcd (agent users are made with it).
#[cfg(feature = "etcd")]
type Etcd = EtcdStore;
#[cfg(not(feature = "etcd"))]
type Etcd = std::convert::Infallible;

/// The store, and the etcd client itself when there is one.
async fn open_store(args: &Args) -> anyhow::Result<(Arc<dyn Store>, Option<Etcd>)> {
    if args.etcd.is_empty() {
        let s = EmbeddedStore::open(&args.data_dir)?;
        tracing::info!(dir = %args.data_dir.display(), "embedded store");
        return Ok((Arc::new(s), None));
    }
    open_etcd(args).await
}

#[cfg(not(feature = "etcd"))]
async fn open_etcd(_args: &Args) -> anyhow::Result<(Arc<dyn Store>, Option<Etcd>)> {
    bail!(
        "--etcd: this fleetd was built without the `etcd` feature (its build needs protoc); rebuild with `--features etcd`, or run on the embedded store"
    )
}

#[cfg(feature = "etcd")]
async fn open_etcd(args: &Args) -> anyhow::Result<(Arc<dyn Store>, Option<Etcd>)> {
    let auth = match &args.etcd_user {
        Some(user) => {
            let pw = std::env::var("FLEET_ETCD_PASSWORD")
                .context("--etcd-user needs the password in FLEET_ETCD_PASSWORD")?;
            Some(EtcdAuth { user: user.clone(), password: Secret::new(pw) })
        }
        None => None,
    };
    let s = EtcdStore::connect(&args.etcd, auth, Duration::from_secs(5)).await?;
    tracing::info!(endpoints = %args.etcd.join(","), "etcd store");
    Ok((Arc::new(s.clone()), Some(s)))
}

/// `--bootstrap ssh`: the SSH bootstrap, with per-node etcd users when etcd has authentication.
fn ssh_bootstrap(
    args: &Args,
    store: Arc<dyn Store>,
    access: Option<Arc<dyn AgentAccess>>,
) -> anyhow::Result<Arc<dyn Bootstrap>> {
    if args.etcd.is_empty() {
        bail!("--bootstrap ssh needs --etcd: the agents on the nodes report to etcd (the embedded store is local)");
    }
    let key_path = args.ssh_key.as_ref().context("--bootstrap ssh needs --ssh-key (the fleet's private key)")?;
    let key = std::fs::read_to_string(key_path).with_context(|| format!("--ssh-key {}", key_path.display()))?;
    let agent_binary = agent_binary(args)?;
    let models = models(args)?;
    let extra = match &args.agent_config {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("--agent-config {}", p.display()))?,
        None => String::new(),
    };
    let endpoints = if args.agent_endpoints.is_empty() { args.etcd.clone() } else { args.agent_endpoints.clone() };
    let cfg = SshBootstrapConfig {
        fleet: args.fleet.clone(),
        user: args.ssh_user.clone(),
        key: Secret::new(key),
        agent_binary,
        remote_dir: args.agent_dir.clone(),
        endpoints,
        lease_ttl: "10s".into(),
        models,
        extra_agent_config: extra,
        connect_timeout: Duration::from_secs(10),
        max_concurrent: args.bootstrap_concurrency,
        resolve: ssh_connect_override(args).map(|a| {
            let f: fleet_orchestrator::bootstrap::Resolve = Arc::new(move |_: &fleet_providers::Instance| Some(a));
            f
        }),
        credentials: access,
        check_hardware: !args.skip_hardware_check,
        push: match args.agent_push_port {
            Some(port) => Some(fleet_orchestrator::bootstrap::PushSetup { key: push_key(args)?, port }),
            None => None,
        },
    };
    Ok(Arc::new(SshBootstrap::new(cfg, store)?))
}

// Test hooks (the end-to-end and crash tests): flags only a fleetd built with `testing` has.
#[cfg(feature = "testing")]
fn ssh_connect_override(args: &Args) -> Option<SocketAddr> {
    args.ssh_connect_override
}
#[cfg(not(feature = "testing"))]
fn ssh_connect_override(_: &Args) -> Option<SocketAddr> {
    None
}
/// `--fake-clouds` and real accounts in one fleetd: refused. Simulated agents stand in for the
/// simulated clouds' nodes, and a fleet that also rents real machines must never have a request
/// "served" by a simulation or a node that bills judged by one.
fn mixes_simulation_with_real_accounts(
    fake_clouds: &[String],
    accounts: &fleet_core::accounts::CloudAccounts,
) -> Option<String> {
    let real = accounts.clouds();
    (!fake_clouds.is_empty() && !real.is_empty()).then(|| {
        let real: Vec<String> = real.iter().map(|c| c.to_string()).collect();
        format!(
            "--fake-clouds cannot run beside real cloud accounts (the spec's [clouds.{}]): simulated agents must never serve or vouch for machines that bill; run the simulation in a fleetd of its own",
            real.join("], [clouds.")
        )
    })
}

#[cfg(feature = "testing")]
fn simulate_agents(args: &Args) -> bool {
    args.simulate_agents
}
#[cfg(not(feature = "testing"))]
fn simulate_agents(_: &Args) -> bool {
    false
}

fn agent_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let p = match &args.agent_binary {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("fleet-agent"),
    };
    if !p.is_file() {
        bail!(
            "no fleet-agent binary at {} (build it: cargo build -p fleet-agent; or point --agent-binary at it)",
            p.display()
        );
    }
    Ok(p)
}

/// The fleet's push key (`DATA_DIR/push.key`, made on first use).
fn push_key(args: &Args) -> anyhow::Result<fleet_core::Secret> {
    fleet_orchestrator::push::load_or_make_key(&args.data_dir)
        .with_context(|| format!("{}: the push key", args.data_dir.join("push.key").display()))
}

fn models(args: &Args) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut models = BTreeMap::new();
    for m in &args.models {
        let (app, path) = m.split_once('=').with_context(|| {
            format!("--model {m}: write APP=PATH (e.g. --model llm=/models/llm.safetensors, or a model directory)")
        })?;
        models.insert(app.to_string(), PathBuf::from(path));
    }
    Ok(models)
}

/// The cloud accounts to run with: `--spec FILE`'s (applied now), else the stored spec's.
async fn cloud_accounts(
    args: &Args,
    store: &dyn fleet_state::store::Store,
    clock: Clock,
) -> anyhow::Result<fleet_core::spec::CloudAccounts> {
    let keys = Keys::new(&args.fleet);
    if let Some(path) = &args.spec {
        let text = std::fs::read_to_string(path).with_context(|| format!("--spec {}", path.display()))?;
        let name = path.display().to_string();
        // Parse under the file's own name first, so errors point into it.
        fleet_core::spec::FleetSpec::parse(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let spec = fleet_state::model::apply_spec(store, &keys, &args.fleet, &text, clock.now())
            .await
            .map_err(|e| anyhow::anyhow!("--spec {name}: {e}"))?;
        return Ok(spec.clouds);
    }
    let Some(kv) = store.get(&keys.spec()).await? else { return Ok(Default::default()) };
    let stored: fleet_state::model::StoredSpec = kv.json()?;
    Ok(fleet_core::spec::FleetSpec::parse("stored spec", &stored.toml).map(|s| s.clouds).unwrap_or_default())
}

async fn providers(
    args: &Args,
    clock: Clock,
    access: Option<Arc<dyn AgentAccess>>,
    store: Arc<dyn fleet_state::store::Store>,
) -> anyhow::Result<BTreeMap<Cloud, Arc<dyn Provider>>> {
    let mut out: BTreeMap<Cloud, Arc<dyn Provider>> = BTreeMap::new();
    if args.local {
        use fleet_orchestrator::bootstrap::local::LocalAgentStarter;
        use fleet_providers::local::{LocalConfig, LocalProvider, local_offerings};
        if args.tls_cert.is_some() {
            bail!("--local nodes reach fleetd over loopback HTTP: run the local provider without --tls-cert");
        }
        if args.etcd_user.is_some() {
            bail!("--local with --etcd-user is not supported: local nodes use fleetd's gateway tokens, not etcd users");
        }
        let access = access.context("--local needs agent credentials")?;
        let port = args.listen.port();
        let starter = LocalAgentStarter {
            fleet: args.fleet.clone(),
            gateway: format!("http://127.0.0.1:{port}"),
            agent_binary: agent_binary(args)?,
            models: models(args)?,
            access,
            extra_agent_config: match &args.agent_config {
                Some(p) => std::fs::read_to_string(p).with_context(|| format!("--agent-config {}", p.display()))?,
                None => String::new(),
            },
            push_key: Some(push_key(args)?),
            push_tls: args.local_push_tls,
            spec: Some((store.clone(), Keys::new(&args.fleet))),
        };
        let cfg = LocalConfig {
            fleet: args.fleet.clone(),
            dir: args.data_dir.join("local"),
            offerings: local_offerings(),
            capacity: args.local_capacity,
        };
        let p = LocalProvider::new(cfg, Arc::new(starter)).map_err(|e| anyhow::anyhow!("--local: {e}"))?;
        out.insert(Cloud::Local, Arc::new(p));
    }
    // Every --fake-capacity names an offering of a simulated cloud: checked once, for all of them.
    let fake_offerings: Vec<fleet_core::Offering> = Catalog::builtin()
        .offerings()
        .iter()
        .filter(|o| args.fake_clouds.iter().any(|c| c.parse::<Cloud>().ok() == Some(o.cloud)))
        .cloned()
        .collect();
    let capacity = fake_capacity(&args.fake_capacity, &fake_offerings)?;
    for name in &args.fake_clouds {
        let cloud: Cloud = name.parse().map_err(|e| anyhow::anyhow!("--fake-clouds: {e}"))?;
        let offerings: Vec<_> = Catalog::builtin().offerings().iter().filter(|o| o.cloud == cloud).cloned().collect();
        if offerings.is_empty() {
            bail!("--fake-clouds: the built-in catalog has no offerings for {cloud}");
        }
        let mut cfg = FakeConfig::new(cloud, &args.fleet, offerings);
        let speed = args.fake_speed.max(0.001);
        cfg.boot_after = Some(Duration::from_secs(20).div_f64(speed));
        cfg.launch_latency = Duration::from_secs(2).div_f64(speed);
        cfg.epoch = clock.now();
        // Its instances live in the data directory: a restarted fleetd finds them again, as it
        // would a real cloud's, instead of seeing every one vanish.
        cfg.persist = Some(args.data_dir.join(format!("fake-{cloud}.json")));
        cfg.capacity = capacity.iter().filter(|(k, _)| k.cloud == cloud).map(|(k, n)| (k.clone(), *n)).collect();
        out.insert(
            cloud,
            Arc::new(FakeProvider::open(cfg).map_err(|e| anyhow::anyhow!("--fake-clouds {cloud}: {e}"))?),
        );
    }
    Ok(out)
}

/// `--fake-capacity OFFERING=N` entries, each naming one of the simulated clouds' `offerings`.
fn fake_capacity(
    items: &[String],
    offerings: &[fleet_core::Offering],
) -> anyhow::Result<std::collections::HashMap<fleet_core::OfferingKey, u32>> {
    let names: Vec<String> = offerings.iter().map(|o| o.key().to_string()).collect();
    let mut out = std::collections::HashMap::new();
    for item in items {
        let Some((name, n)) = item.split_once('=') else {
            bail!("--fake-capacity {item}: write OFFERING=N, e.g. lambda/us-east-1/gpu_1x_h100_pcie/on-demand=0");
        };
        let name = name.trim();
        let Some(i) = names.iter().position(|k| k == name) else {
            let hint = fleet_core::names::closest(name, names.iter().map(String::as_str))
                .map(|c| format!("; did you mean {c}?"))
                .unwrap_or_default();
            bail!("--fake-capacity {item}: {name} is not an offering of the simulated clouds (--fake-clouds){hint}");
        };
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--fake-capacity {item}: `{n}` is not a count of instances"))?;
        out.insert(offerings[i].key(), n);
    }
    Ok(out)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // keep_alive = "auto" weighs a re-creation against keeping a runner; a re-creation is a cold
    // start and then some (the new node's minimum billing), never less.
    if args.recreate_seconds < args.cold_start_seconds {
        bail!(
            "--recreate-seconds {} is less than --cold-start-seconds {}: a re-creation is a cold start plus a new \
             node's minimum billing; raise --recreate-seconds or lower --cold-start-seconds",
            args.recreate_seconds,
            args.cold_start_seconds
        );
    }
    // The API spends money: off loopback, only over TLS unless the operator says otherwise.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(fleet_orchestrator::tls::server_config(c, k)?),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        if !args.insecure_no_tls {
            bail!(
                "refusing to serve the API on {} without TLS (its tokens would cross the network in clear): give \
                 --tls-cert and --tls-key, listen on 127.0.0.1, or pass --insecure-no-tls on a network you trust",
                args.listen
            );
        }
        tracing::warn!(listen = %args.listen, "serving the API without TLS (--insecure-no-tls)");
    }
    let clock = Clock::System;
    let (store, etcd) = open_store(&args).await?;
    let token_file = args.data_dir.join("admin.token");
    fleet_orchestrator::auth::admin_token(&*store, &Keys::new(&args.fleet), &args.data_dir, clock.now()).await?;
    tracing::info!(file = %token_file.display(), "admin API token (FLEET_TOKEN, or fleetctl's config)");
    // Agents get users of their own where etcd has authentication (fleetd's user needs root).
    // Without etcd users, agents that need credentials (local nodes) get gateway tokens.
    let access: Option<Arc<dyn AgentAccess>> = match (&etcd, &args.etcd_user) {
        #[cfg(feature = "etcd")]
        (Some(e), Some(_)) => Some(Arc::new(EtcdAgentAccess::new(e, &args.fleet))),
        _ if args.local => Some(Arc::new(fleet_orchestrator::access::gateway::GatewayAccess {
            store: store.clone(),
            keys: Keys::new(&args.fleet),
        })),
        _ => None,
    };
    let bootstrap: Arc<dyn Bootstrap> = match args.bootstrap.as_str() {
        "ssh" => ssh_bootstrap(&args, store.clone(), access.clone())?,
        _ => Arc::new(InstanceRunning),
    };
    let mut providers = providers(&args, clock, access.clone(), store.clone()).await?;
    let accounts = cloud_accounts(&args, &*store, clock).await?;
    if let Some(why) = mixes_simulation_with_real_accounts(&args.fake_clouds, &accounts) {
        bail!(why);
    }
    for (cloud, p) in
        fleet_orchestrator::clouds::build(&args.fleet, &accounts, Arc::new(Catalog::builtin().clone())).await?
    {
        if providers.contains_key(&cloud) {
            bail!(
                "{cloud} is configured twice: by a flag (--fake-clouds/--local) and by the spec's [clouds.{cloud}]; keep one"
            );
        }
        tracing::info!(%cloud, name = %p.name(), "cloud account from the spec");
        providers.insert(cloud, p);
    }
    // No node may be left billing on a cloud nothing here can manage.
    let enabled: std::collections::BTreeSet<fleet_core::Cloud> = providers.keys().copied().collect();
    let forget = args
        .forget_cloud
        .iter()
        .map(|c| c.parse::<fleet_core::Cloud>().map_err(|e| anyhow::anyhow!("--forget-cloud {c}: {e}")))
        .collect::<anyhow::Result<std::collections::BTreeSet<_>>>()?;
    let closed =
        fleet_orchestrator::clouds::check_stranded(&*store, &Keys::new(&args.fleet), &enabled, &forget, clock.now())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
    if !closed.is_empty() {
        tracing::warn!(nodes = ?closed, "records closed at the operator's word (--forget-cloud)");
    }
    if providers.is_empty() {
        tracing::warn!(
            "no cloud enabled: specs and requests are accepted but nothing is launched (give the spec [clouds.*] accounts, or try --fake-clouds lambda,runpod)"
        );
    }
    let keys = Keys::new(&args.fleet);
    let config = Config {
        reconcile_every: Duration::from_secs_f64(args.reconcile_every.max(0.05)),
        recreate: Duration::from_secs_f64(args.recreate_seconds),
        cold_start: Duration::from_secs_f64(args.cold_start_seconds),
        host_key_wait: Duration::from_secs_f64(args.host_key_wait_seconds.clamp(0.0, 86_400.0)),
        consolidation_horizon: (args.consolidation_horizon_seconds > 0.0)
            .then(|| Duration::from_secs_f64(args.consolidation_horizon_seconds)),
        ..Config::default()
    };
    let mut ctx = Ctx::new(&args.fleet, store.clone(), providers, bootstrap, config, clock);
    ctx.access = access;
    // Queue submits are committed in groups (fleet_orchestrator::submitter).
    ctx.submitter =
        Some(fleet_orchestrator::submitter::Submitter::start(store.clone(), Keys::new(&args.fleet), ctx.clock));
    // Local nodes take pushed requests, and bootstrapped ones with --agent-push-port (see
    // fleet_orchestrator::push).
    if args.local || args.agent_push_port.is_some() {
        ctx.push_key = Some(push_key(&args)?);
    }
    ctx.clouds = accounts;
    let ctx = Arc::new(ctx);
    // Simulated clouds have no real agent on their machines: simulate those too.
    let _agents = (!args.fake_clouds.is_empty() || simulate_agents(&args)).then(|| {
        let d = SimAgentConfig::default();
        let speed = args.fake_speed.max(0.001);
        // Only the simulated clouds' nodes (every node under the test hook, which drives real
        // adapters against emulators with no agent to run).
        let clouds =
            (!simulate_agents(&args)).then(|| args.fake_clouds.iter().filter_map(|c| c.parse().ok()).collect());
        let cfg = SimAgentConfig {
            clouds,
            poll: d.poll.div_f64(speed).max(Duration::from_millis(20)),
            load_time: d.load_time.div_f64(speed),
            service_time: d.service_time.div_f64(speed),
            spot_notices: args.fake_spot_notices,
            spot_notice_after: Duration::from_secs_f64(args.fake_spot_notice_after),
            ..d
        };
        SimAgents::spawn(store.clone(), keys.clone(), clock, cfg)
    });

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}: is another fleetd running? pick another --listen", args.listen)
    })?;
    // The API serves from the start (followers too: everything it does goes through the store).
    let (stop_api, mut api_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(fleet_orchestrator::serving::run(ctx.clone()));
    tokio::spawn(fleet_orchestrator::dashboard::run(ctx.clone()));
    let app = fleet_orchestrator::api::router(ctx.clone());
    let stopped = async move {
        let _ = api_stopped.changed().await;
    };
    let limits = fleet_orchestrator::serve::Limits {
        max_connections: args.max_connections,
        header_read_timeout: Duration::from_secs_f64(args.header_read_timeout_seconds.max(0.1)),
    };
    let server = match tls {
        Some(cfg) => {
            let listener = fleet_orchestrator::tls::TlsListener::new(listener, cfg)?;
            tokio::spawn(fleet_orchestrator::serve::serve(listener, app, limits, stopped))
        }
        None => tokio::spawn(fleet_orchestrator::serve::serve(listener, app, limits, stopped)),
    };
    let scheme = if args.tls_cert.is_some() { "https" } else { "http" };
    tracing::info!(url = %format!("{scheme}://{}", args.listen), fleet = %args.fleet, "API ready");

    // On etcd several fleetd may run: only the leader acts.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut leadership = None;
    if etcd.is_some() {
        let me = format!("fleetd pid {} on {}", std::process::id(), args.listen);
        tokio::select! {
            l = leader::acquire(store.clone(), &keys, &me, Duration::from_secs_f64(args.leader_ttl.max(1.0))) => leadership = Some(l?),
            _ = &mut shutdown => {
                let _ = stop_api.send(true);
                let _ = server.await;
                tracing::info!("stopped before leading");
                return Ok(());
            }
        }
    }
    let (root, root_done) = Actor::spawn(None, RootActor, ctx.clone()).await.context("starting the actor tree")?;
    tracing::info!(fleet = %args.fleet, "fleetd acting");
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let lost = tokio::select! {
        _ = &mut shutdown => false,
        _ = lost => true,
    };
    if lost {
        // Another fleetd may lead already: stop acting at once, launches included.
        root.stop_children(Some("leadership lost".into()));
        root.stop(Some("leadership lost".into()));
        let _ = stop_api.send(true);
        bail!(
            "lost the leadership lease (the store was out of reach too long); restart fleetd to follow the new leader"
        );
    }
    let _ = stop_api.send(true);
    server.await.context("HTTP server")?;

    tracing::info!(in_flight = ctx.launches.in_flight(), "shutting down: waiting for launch calls in flight");
    if tokio::time::timeout(Duration::from_secs(120), ctx.launches.close_and_wait()).await.is_err() {
        tracing::warn!("launch calls still unanswered after 120 s; their records keep their tokens for the next start");
    }
    root.stop_children(Some("shutdown".into()));
    root.stop(Some("shutdown".into()));
    let _ = root_done.await;
    tracing::info!("stopped");
    Ok(())
}

fn main() {
    fleet_orchestrator::allocator::restart_with_options();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,fleet_orchestrator=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("fleetd: {}", fleet_core::exit::one_line(e.as_ref()));
        std::process::exit(1);
    }
}
