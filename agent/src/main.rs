//! `fleet-agent`: `gpus`, `burn-in`, `run --config FILE`, `make-model`, `make-llm`, `generate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use fleet_agent::burnin::{self, BurnInConfig};
use fleet_agent::config::AgentConfig;
use fleet_agent::{gpu, model, serve};
use fleet_state::model::AgentHealth;
use fleet_state::store::Store;
#[cfg(feature = "etcd")]
use fleet_state::store::etcd::{EtcdAuth, EtcdStore};

#[derive(Parser)]
#[command(name = "fleet-agent", version, about = "fleet's agent on a rented GPU node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// What GPU discovery finds (CUDA driver + NVML).
    #[command(after_help = "Examples:\n  fleet-agent gpus\n  fleet-agent gpus -o json")]
    Gpus {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Runs the burn-in once and prints its figures (exit 1 when it fails).
    #[command(after_help = "Examples:\n  fleet-agent burn-in\n  fleet-agent burn-in --cpu-size 2048 -o json")]
    BurnIn {
        #[arg(long)]
        cpu_size: Option<usize>,
        #[arg(long)]
        gpu_size: Option<usize>,
        #[arg(long)]
        iterations: Option<u32>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Runs the agent: burn-in, registration, runners, health, interruption notices.
    #[command(after_help = "Example:\n  fleet-agent run --config /etc/fleet/agent.toml")]
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Writes a small MLP safetensors model with deterministic weights (for tests and demos).
    #[command(after_help = "Example:\n  fleet-agent make-model --dims 16,64,4 model.safetensors")]
    MakeModel {
        #[arg(long, value_delimiter = ',', default_value = "16,64,4")]
        dims: Vec<usize>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        path: PathBuf,
    },
    /// Runs one prompt through a language model directory here, alone (no batch), and prints the
    /// answer as a runner gives it (`{"text", "finish_reason", "usage"}`): to try a model.
    #[command(after_help = "Example:\n  fleet-agent generate --model ./tiny-qwen2 --max-tokens 8 \"hello world\"")]
    Generate {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 16)]
        max_tokens: u32,
        #[arg(long)]
        temperature: Option<f64>,
        #[arg(long)]
        seed: Option<u64>,
        prompt: String,
    },
    /// Writes a small random-weight language model as a hub lays it out (config.json,
    /// tokenizer.json, safetensors; sharded with an index when --shards > 1): for tests and demos.
    #[command(after_help = "Example:\n  fleet-agent make-llm --family qwen2 ./tiny-qwen2")]
    MakeLlm {
        #[arg(long, value_enum, default_value = "llama")]
        family: LlmFamily,
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// The same seed writes the same weights.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Hidden size (a multiple of 4: four attention heads); larger is slower per token.
        #[arg(long, default_value_t = 32)]
        hidden: usize,
        #[arg(long, default_value_t = 2)]
        layers: usize,
        /// Longest sequence, prompt and generated tokens together.
        #[arg(long, default_value_t = 256)]
        max_positions: usize,
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LlmFamily {
    Llama,
    Mistral,
    Qwen2,
}

fn main() -> ExitCode {
    fleet_agent::model::set_cpu_threads();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(fleet_agent::logtail::install())
        .with_ansi(false)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fleet-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_discovery(d: &gpu::Discovery) {
    println!("{}", d.summary());
    if let Some(v) = &d.cuda_driver {
        println!("CUDA driver {v}; NVML {}", if d.nvml { "available" } else { "unavailable" });
    }
    if !d.gpus.is_empty() {
        println!(
            "{:<5} {:<28} {:<10} {:>10} {:>9} {:>6} {:>6} {:>5}  THROTTLING",
            "GPU", "NAME", "MODEL", "MEMORY", "USED", "UTIL", "TEMP", "ECC"
        );
        for g in &d.gpus {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            println!(
                "{:<5} {:<28} {:<10} {:>7} MiB {:>9} {:>6} {:>6} {:>5}  {}",
                g.index,
                g.name,
                g.model.as_deref().unwrap_or("-"),
                g.memory_total_mib,
                opt(g.memory_used_mib.map(|m| format!("{m} MiB"))),
                opt(g.utilization_pct.map(|u| format!("{u}%"))),
                opt(g.temperature_c.map(|t| format!("{t}C"))),
                opt(g.ecc_uncorrected.map(|e| e.to_string())),
                if g.throttling.is_empty() { "-".into() } else { g.throttling.join(",") }
            );
        }
    }
    for n in &d.notes {
        println!("note: {n}");
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Gpus { output } => {
            let d = gpu::discover();
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&d)?),
                Output::Table => print_discovery(&d),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::BurnIn { cpu_size, gpu_size, iterations, output } => {
            let d = gpu::discover();
            let mut cfg = BurnInConfig::default();
            if let Some(n) = cpu_size {
                cfg.cpu_size = n;
            }
            if let Some(n) = gpu_size {
                cfg.gpu_size = n;
            }
            if let Some(n) = iterations {
                cfg.iterations = n;
                cfg.gpu_iterations = n;
            }
            let reports = burnin::run(&d, &cfg, chrono::Utc::now())?;
            let verdict = burnin::verdict(&reports);
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
                Output::Table => {
                    println!("{}", d.summary());
                    for r in &reports {
                        println!(
                            "{}: {} {}×{} matmul ×{}: {:.3} TFLOP/s{} (required {:.3}) {}",
                            r.device,
                            r.dtype,
                            r.size,
                            r.size,
                            r.iterations,
                            r.tflops,
                            r.expected_tflops
                                .map(|e| format!(", {:.0}% of the {e:.0} TFLOP/s peak", 100.0 * r.tflops / e))
                                .unwrap_or_default(),
                            r.required_tflops,
                            if r.passed { "PASS" } else { "FAIL" }
                        );
                    }
                }
            }
            if let Err(why) = verdict {
                eprintln!("fleet-agent: {why}");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::MakeModel { dims, seed, path } => {
            model::write_mlp(&path, &dims, seed)?;
            println!("wrote {} (layers {:?})", path.display(), dims);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Generate { model, max_tokens, temperature, seed, prompt } => {
            let llm = fleet_agent::llm::Llm::load(&model, &model::device())?;
            let params = fleet_agent::llm::Params { max_tokens, temperature, seed, ..Default::default() };
            let (tokens, finish) = llm.generate(llm.tokenize(&prompt)?, &params)?;
            let prompt_tokens = llm.tokenize(&prompt)?.len();
            let answer = serde_json::json!({
                "text": llm.detokenize(&tokens)?,
                "finish_reason": finish.reason(),
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens.len(),
                          "total_tokens": prompt_tokens + tokens.len()},
            });
            println!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::MakeLlm { family, shards, seed, hidden, layers, max_positions, dir } => {
            if hidden == 0 || hidden % 4 != 0 || layers == 0 || max_positions < 2 {
                anyhow::bail!(
                    "--hidden must be a positive multiple of 4 (it was {hidden}), --layers at least 1 ({layers}), --max-positions at least 2 ({max_positions})"
                );
            }
            let shape = fleet_agent::llm::testmodel::Shape {
                hidden,
                intermediate: hidden * 2,
                layers,
                max_positions,
                ..Default::default()
            };
            let family = match family {
                LlmFamily::Llama => fleet_agent::llm::Family::Llama,
                LlmFamily::Mistral => fleet_agent::llm::Family::Mistral,
                LlmFamily::Qwen2 => fleet_agent::llm::Family::Qwen2,
            };
            fleet_agent::llm::testmodel::write(&dir, family, shape, shards, seed)?;
            println!("wrote a random-weight {} model to {}", family.name(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { config } => {
            let cfg = AgentConfig::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(agent_main(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn agent_main(cfg: AgentConfig) -> anyhow::Result<()> {
    tracing::info!(node = cfg.node, fleet = %cfg.fleet, apps = ?serve::describe_apps(&cfg), version = serve::VERSION, "fleet-agent starting");
    // Discovery and burn-in first: a node that fails them registers as unhealthy and serves nothing.
    let burn = cfg.burn_in.clone();
    let (d, reports) = tokio::task::spawn_blocking(move || {
        let d = gpu::discover();
        let r = burnin::run(&d, &burn, chrono::Utc::now());
        (d, r)
    })
    .await?;
    tracing::info!(gpus = %d.summary(), "discovery");
    let mut health =
        AgentHealth { devices: d.gpus.clone(), updated_at: Some(chrono::Utc::now()), ..AgentHealth::default() };
    match reports {
        Ok(r) => {
            let verdict = burnin::verdict(&r);
            for x in &r {
                tracing::info!(device = %x.device, tflops = x.tflops, required = x.required_tflops, passed = x.passed, "burn-in");
            }
            health.burn_in = r.into_iter().min_by(|a, b| a.tflops.total_cmp(&b.tflops));
            match verdict {
                Ok(()) => health.ok = true,
                Err(why) => health.reason = Some(why),
            }
        }
        Err(e) => health.reason = Some(e.to_string()),
    }
    if let Some(why) = &health.reason {
        tracing::error!(%why, "node unhealthy: it will register but serve nothing");
    }
    let store: Arc<dyn Store> = match &cfg.gateway {
        Some((url, token)) => {
            tracing::info!(gateway = %url, "store through fleetd's gateway");
            Arc::new(fleet_state::store::http::HttpStore::new(url, token.clone()))
        }
        None => connect_etcd(&cfg).await?,
    };
    let agent = serve::Agent::start(cfg, store, d.gpus.len() as u32, health, Arc::new(gpu::fit::Nvml));
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    agent.run(shutdown, Duration::from_secs(30)).await;
    Ok(())
}

/// The store at the config's etcd endpoints, retried until it answers (etcd may start after us).
#[cfg(feature = "etcd")]
async fn connect_etcd(cfg: &AgentConfig) -> anyhow::Result<Arc<dyn Store>> {
    let auth = cfg.auth.clone().map(|(user, password)| EtcdAuth { user, password });
    loop {
        match EtcdStore::connect(&cfg.endpoints, auth.clone(), Duration::from_secs(5)).await {
            Ok(s) => return Ok(Arc::new(s)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the store yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(_cfg: &AgentConfig) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!(
        "this fleet-agent was built without the `etcd` feature: give it fleetd's store gateway (`gateway` and `token_file` in its config), or rebuild with `--features etcd`"
    )
}
