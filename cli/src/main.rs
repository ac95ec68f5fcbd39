//! fleetctl: the operator CLI for fleet.

/// `println!` / `print!` that end quietly when the reader went away (`fleetctl get nodes | head`)
/// instead of panicking.
// Every line goes through `terminal::printable`: parts of it come from agents fleetctl does not trust.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let text = $crate::terminal::printable(&format!($($t)*));
        if let Err(e) = writeln!(std::io::stdout().lock(), "{text}") {
            $crate::stdout_failed(e)
        }
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let text = $crate::terminal::printable(&format!($($t)*));
        if let Err(e) = write!(std::io::stdout().lock(), "{text}") {
            $crate::stdout_failed(e)
        }
    }};
}

/// Output could not be written: a closed pipe ends the command quietly, anything else with a line.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("fleetctl: cannot write the output: {e}");
    std::process::exit(1);
}

mod catalog;
mod demo;
mod model;
mod nodes;
mod ops;
mod output;
mod plan;
mod server;
mod simulate;
mod table;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use server::{Server, ServerArgs};

#[derive(Debug, Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "Operate a fleet of rented GPUs across clouds.",
    after_help = "Examples:\n  fleetctl catalog --gpu H100 --min-gpus 8 --sort price\n  fleetctl apply -f fleet.toml --dry-run\n  fleetctl get nodes -o yaml\n  fleetctl submit llm --input '{\"x\": [1, 2, 3]}' --wait 180\n\nfleetd's address and token: --server / FLEET_SERVER, FLEET_TOKEN, or ~/.config/fleet/config.toml\n(server, token, ca_cert; FLEET_CONFIG names another file)."
)]
struct Cli {
    /// Output format (csv: catalog only).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,

    #[command(flatten)]
    server: ServerArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
    /// fleet's catalog CSV format (catalog only).
    Csv,
}

impl Output {
    /// JSON or YAML: the resource as fleetd gives it.
    pub fn structured(self) -> bool {
        matches!(self, Output::Json | Output::Yaml)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List rentable GPU offerings with prices, cheapest $/GPU-hour first.
    Catalog(catalog::CatalogArgs),
    /// Show what fleet would rent for a spec and a demand: ranked offerings, runners, nodes, costs.
    Plan(plan::PlanArgs),
    /// Simulate a fleet spec on a demand trace: cost, waits, preemptions, lower bound.
    Simulate(simulate::SimulateArgs),
    /// Apply a fleet spec to fleetd (shows what changes).
    #[command(after_help = "Examples:\n  fleetctl apply -f fleet.toml\n  fleetctl apply -f fleet.toml --dry-run")]
    Apply {
        /// The spec (TOML); `-` reads stdin.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Validate and show the diff; apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show what applying a spec would change (validated by fleetd).
    #[command(after_help = "Example:\n  fleetctl diff -f fleet.toml")]
    Diff {
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// List resources of a running fleetd.
    #[command(
        after_help = "Examples:\n  fleetctl get nodes\n  fleetctl get nodes -w\n  fleetctl get apps -o json\n  fleetctl get events --app llm -w\n  fleetctl get offerings"
    )]
    Get {
        #[command(subcommand)]
        what: GetWhat,
        /// Keep watching: print again each time fleetd says the listing changed (nodes, runners,
        /// apps), or each new event (events), until interrupted.
        #[arg(short = 'w', long, global = true)]
        watch: bool,
    },
    /// Show one resource of a running fleetd in detail.
    #[command(after_help = "Examples:\n  fleetctl describe node 12\n  fleetctl describe app llm")]
    Describe {
        #[command(subcommand)]
        what: DescribeWhat,
    },
    /// Drain a node: its replacement is launched first, then it is terminated.
    #[command(after_help = "Example:\n  fleetctl drain node 12   (or: fleetctl drain 12)")]
    Drain {
        /// `node ID` (as in `describe node ID`), or just the ID.
        #[arg(num_args = 1..=2, value_name = "node ID")]
        node: Vec<String>,
    },
    /// Stop placing new runners on a node (`uncordon`, or `--undo`, to resume).
    #[command(after_help = "Examples:\n  fleetctl cordon node 12\n  fleetctl uncordon node 12")]
    Cordon {
        /// `node ID` (as in `describe node ID`), or just the ID.
        #[arg(num_args = 1..=2, value_name = "node ID")]
        node: Vec<String>,
        #[arg(long)]
        undo: bool,
    },
    /// Place runners on a cordoned node again.
    #[command(after_help = "Example:\n  fleetctl uncordon node 12")]
    Uncordon {
        /// `node ID` (as in `describe node ID`), or just the ID.
        #[arg(num_args = 1..=2, value_name = "node ID")]
        node: Vec<String>,
    },
    /// The last lines of a node agent's log.
    #[command(after_help = "Examples:\n  fleetctl logs node 12\n  fleetctl logs node 12 --tail 20")]
    Logs {
        #[command(subcommand)]
        what: LogsWhat,
    },
    /// Spend: month to date, per hour now, forecast to month end, budget headroom.
    #[command(after_help = "Example:\n  fleetctl cost -o json")]
    Cost,
    /// Submit a request to an app.
    #[command(
        after_help = "Examples:\n  fleetctl submit llm --input '{\"x\": [1, 2, 3]}'\n  fleetctl submit llm --input '{\"x\": [1, 2, 3]}' --wait 180\n\nThe input is what the app's runners take: the demo's and --local's model takes {\"x\": [16 numbers]}."
    )]
    Submit {
        app: String,
        /// The request's input (JSON).
        #[arg(long)]
        input: String,
        /// Wait up to this many seconds for the result and print it.
        #[arg(long, value_parser = wait_seconds)]
        wait: Option<f64>,
    },
    /// Make or revoke API tokens (admin).
    #[command(
        after_help = "Examples:\n  fleetctl token create dashboard --scope read\n  fleetctl token create llm-client --scope submit:llm\n  fleetctl token revoke dashboard"
    )]
    Token {
        #[command(subcommand)]
        what: TokenWhat,
    },
    /// Run the whole system on this machine: fleetd, local nodes with real agents, two apps, a
    /// burst of requests, scale-up and back to zero, and a summary. No cloud account, no etcd.
    #[command(
        after_help = "Examples:\n  fleetctl demo\n  fleetctl demo --requests 100 --dir ./demo   (keeps the store and node logs)"
    )]
    Demo(demo::DemoArgs),
    /// Model artefacts: push a model directory to an origin, get the digest that pins it.
    #[command(
        after_help = "Examples:\n  fleetctl model push ./llama-3-8b s3://models/llama-3-8b\n  fleetctl model push ./tiny file:///srv/models --chunk-size 4MiB -o json"
    )]
    Model(model::ModelArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  fleetctl completion bash > /etc/bash_completion.d/fleetctl\n  fleetctl completion zsh > \"${fpath[1]}/_fleetctl\"\n  fleetctl completion fish > ~/.config/fish/completions/fleetctl.fish"
    )]
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
enum GetWhat {
    /// Apps: queue depth, in flight, runners, nodes, month to date.
    Apps,
    /// Nodes with their state, offering and what their agents report.
    Nodes,
    /// Runners that are not stopped.
    Runners,
    /// Enabled clouds with their nodes and $/hour.
    Clouds,
    /// What the enabled clouds sell now, cheapest $/GPU-hour first.
    Offerings,
    /// API tokens (names and scopes; admin).
    Tokens,
    /// The fleet's decisions with their reasons, oldest first: launches, failovers, drains, demand
    /// not placed, budgets holding back, orphans collected.
    #[command(
        after_help = "Examples:\n  fleetctl get events\n  fleetctl get events --app llm --last 20\n  fleetctl get events --node 3"
    )]
    Events {
        /// Only this app's events.
        #[arg(long)]
        app: Option<String>,
        /// Only this node's events.
        #[arg(long)]
        node: Option<u64>,
        /// Only the newest N.
        #[arg(long, default_value_t = 100)]
        last: usize,
    },
}

#[derive(Debug, Subcommand)]
enum DescribeWhat {
    /// A node: record, agent, GPUs, burn-in, runners, interruption notice.
    Node { id: String },
    /// An app: queue, spend, runners, nodes.
    App { name: String },
}

#[derive(Debug, Subcommand)]
enum LogsWhat {
    /// A node's agent.
    Node {
        id: String,
        /// Lines to show (the agent keeps its last 200).
        #[arg(long, default_value_t = 50)]
        tail: usize,
    },
}

#[derive(Debug, Subcommand)]
enum TokenWhat {
    /// Make a token (printed once) with a scope: admin, read, or submit:APP.
    Create {
        name: String,
        #[arg(long)]
        scope: String,
    },
    /// Revoke a token by name.
    Revoke { name: String },
}

/// `node 12` or `12`: the same syntax as `describe node 12` and `logs node 12`, or the short one.
/// `submit --wait`: a finite number of seconds from 0 to a day, checked before anything is sent
/// (until 2026-12-03 `inf`, a negative number or NaN panicked once the request was queued).
fn wait_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}`: give the seconds to wait, from 0 to 86400 (a day)")),
    }
}

fn node_id(words: &[String]) -> anyhow::Result<&str> {
    match words {
        [id] => Ok(id),
        [kind, id] if kind == "node" || kind == "nodes" => Ok(id),
        [kind, _] => anyhow::bail!(
            "`{kind}` is not something this command acts on: give `node ID` (fleetctl get nodes lists them)"
        ),
        _ => anyhow::bail!("give `node ID` (fleetctl get nodes lists them)"),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let o = cli.output;
    let server = || Server::from_args(&cli.server);
    match &cli.command {
        Command::Catalog(_) | Command::Plan(_) | Command::Simulate(_) | Command::Completion { .. } => {}
        Command::Model(_) if o == Output::Csv => anyhow::bail!("fleetctl model prints a table, json or yaml"),
        Command::Demo(_) if o == Output::Csv => anyhow::bail!("fleetctl demo prints a table, json or yaml"),
        _ if o == Output::Csv => anyhow::bail!("-o csv is for `fleetctl catalog`; use -o table, json or yaml"),
        _ => {}
    }
    match cli.command {
        Command::Catalog(catalog::CatalogArgs { cmd: Some(catalog::CatalogCmd::Refresh { file }), .. }) => {
            catalog::refresh(&server()?, file, o)
        }
        Command::Catalog(args) => catalog::run(args, o),
        Command::Plan(args) => plan::run(args, o, Server::from_args(&cli.server).ok()),
        Command::Simulate(args) => simulate::run(args, o),
        Command::Demo(args) => demo::run(args, o),
        Command::Model(args) => model::run(args, o),
        Command::Apply { file, dry_run } => ops::apply(&server()?, &file, dry_run, o),
        Command::Diff { file } => ops::diff(&server()?, &file),
        Command::Get { what, watch: true } => {
            let s = server()?;
            match what {
                GetWhat::Apps => ops::watch(&s, "apps", "", o),
                GetWhat::Nodes => ops::watch(&s, "nodes", "", o),
                GetWhat::Runners => ops::watch(&s, "runners", "", o),
                GetWhat::Events { app, node, .. } => {
                    let mut q = Vec::new();
                    if let Some(a) = app {
                        if !a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                            anyhow::bail!("`{a}` is not an app name (`fleetctl get apps` lists them)");
                        }
                        q.push(format!("app={a}"));
                    }
                    if let Some(n) = node {
                        q.push(format!("node={n}"));
                    }
                    let q = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
                    ops::watch(&s, "events", &q, o)
                }
                _ => anyhow::bail!("-w watches nodes, runners, apps or events"),
            }
        }
        Command::Get { what, watch: false } => {
            let s = server()?;
            match what {
                GetWhat::Apps => ops::get_apps(&s, o),
                GetWhat::Nodes => nodes::get(&s, o),
                GetWhat::Runners => ops::get_runners(&s, o),
                GetWhat::Clouds => ops::get_clouds(&s, o),
                GetWhat::Offerings => ops::get_offerings(&s, o),
                GetWhat::Tokens => ops::get_tokens(&s, o),
                GetWhat::Events { app, node, last } => nodes::get_events(&s, app.as_deref(), node, last, o),
            }
        }
        Command::Describe { what: DescribeWhat::Node { id } } => nodes::describe(&server()?, &id, o),
        Command::Describe { what: DescribeWhat::App { name } } => ops::describe_app(&server()?, &name, o),
        Command::Drain { node } => ops::node_action(&server()?, node_id(&node)?, "drain", o),
        Command::Cordon { node, undo } => {
            ops::node_action(&server()?, node_id(&node)?, if undo { "uncordon" } else { "cordon" }, o)
        }
        Command::Uncordon { node } => ops::node_action(&server()?, node_id(&node)?, "uncordon", o),
        Command::Cost => ops::cost(&server()?, o),
        Command::Logs { what: LogsWhat::Node { id, tail } } => ops::logs(&server()?, &id, tail, o),
        Command::Submit { app, input, wait } => ops::submit(&server()?, &app, &input, wait, o),
        Command::Token { what: TokenWhat::Create { name, scope } } => ops::create_token(&server()?, &name, &scope, o),
        Command::Token { what: TokenWhat::Revoke { name } } => ops::revoke_token(&server()?, &name),
        Command::Completion { shell } => {
            // Into a buffer first: clap_complete panics when its writer fails (`| head` closes
            // the pipe); written here, a closed pipe ends fleetctl quietly like every output.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fleetctl", &mut script);
            use std::io::Write as _;
            if let Err(e) = std::io::stdout().lock().write_all(&script) {
                stdout_failed(e)
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    fleet_core::exit::finish(run(Cli::parse()))
}
